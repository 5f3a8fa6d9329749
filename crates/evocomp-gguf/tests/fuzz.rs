//! Fuzzing the GGUF reader: byte edits of a valid file (flips, cuts,
//! insertions, huge counts) never panic or abort; a damaged file is an
//! error. `EVOCOMP_FUZZ_CASES=100000` for a long run (CI runs a few hundred
//! with a fixed seed).

use evocomp_gguf::testing::{Edit, fuzz_cases, fuzz_seed, mutate};
use evocomp_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::{ProptestConfig, any};
use proptest::test_runner::{RngSeed, TestRunner};

/// A file with metadata of every common kind and tensors of several types.
fn seed_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", "llama")
        .meta("llama.block_count", 2u32)
        .meta("llama.rope.freq_base", 10000.0f32)
        .meta("general.flag", Value::Bool(true))
        .meta_strings("tokenizer.ggml.tokens", &["a", "b", "ab", "<s>"]);
    w.tensor_f32("blk.0.w", &[8, 4], &[0.25; 32]);
    w.tensor_raw("blk.0.h", &[4, 2], GgmlType::F16, vec![0x3c; 16])
        .unwrap();
    w.tensor_raw("blk.1.q", &[32, 1], GgmlType::Q8_0, vec![1; 34])
        .unwrap();
    w.to_bytes()
}

#[test]
fn damaged_gguf_files_are_errors_never_panics() {
    let seed = seed_file();
    GgufFile::open(write_tmp(&seed).path()).unwrap();
    let cfg = ProptestConfig {
        cases: fuzz_cases(300),
        rng_seed: RngSeed::Fixed(fuzz_seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let edits = proptest::collection::vec(any::<Edit>(), 1..6);
    TestRunner::new(cfg)
        .run(&edits, |edits| {
            let f = write_tmp(&mutate(&seed, &edits));
            if let Ok(g) = GgufFile::open(f.path()) {
                for t in g.tensors() {
                    let _ = g.dequantize(&t.name);
                }
                for (k, _) in g.metadata() {
                    let _ = (g.get_str(k), g.get_u64(k), g.get_f64(k), g.get_str_array(k));
                }
            }
            Ok(())
        })
        .unwrap();
}

fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}
