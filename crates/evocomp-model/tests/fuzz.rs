//! Fuzzing the model loaders: a GGUF model, an HF folder (config.json,
//! model.safetensors, tokenizer.json) and a tokenizer rebuilt from GGUF
//! metadata, each damaged by byte edits or built from random tokens, never
//! panic or abort: a bad file is an error. `EVOCOMP_FUZZ_CASES=100000` for a
//! long run (CI runs a few hundred with a fixed seed).

use evocomp_gguf::testing::{Edit, fuzz_cases, fuzz_seed, mutate};
use evocomp_gguf::{GgufFile, GgufWriter};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_model::{TextTokenizer, inspect_model, load_model, save_hf_safetensors};
use proptest::prelude::{ProptestConfig, Strategy, any};
use proptest::test_runner::{RngSeed, TestRunner};

fn runner(default: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: fuzz_cases(default),
        rng_seed: RngSeed::Fixed(fuzz_seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(any::<Edit>(), 1..6)
}

#[test]
fn damaged_gguf_models_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let good = dir.path().join("good.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 1), &good).unwrap();
    let seed = std::fs::read(&good).unwrap();
    let p = dir.path().join("case.gguf");
    runner(200)
        .run(&edits(), |e| {
            std::fs::write(&p, mutate(&seed, &e)).unwrap();
            let _ = inspect_model(&p);
            if let Ok(m) = load_model(&p) {
                let _ = m.tokenizer.encode("fuzz me: ĠÄ");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn damaged_hf_folders_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 2);
    let good = dir.path().join("good");
    save_hf_safetensors(&cfg, &w, &good).unwrap();
    // The tokenizer of the GGUF test model, as tokenizer.json.
    let g = dir.path().join("m.gguf");
    write_gguf(&cfg, &w, &g).unwrap();
    let tok = load_model(&g).unwrap().tokenizer.to_json().unwrap();
    std::fs::write(good.join("tokenizer.json"), tok).unwrap();
    load_model(&good).unwrap();
    let names = ["config.json", "model.safetensors", "tokenizer.json"];
    let seeds: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(good.join(n)).unwrap())
        .collect();
    let case = dir.path().join("case");
    std::fs::create_dir_all(&case).unwrap();
    runner(200)
        .run(&(0usize..3, edits()), |(which, e)| {
            for (i, n) in names.iter().enumerate() {
                let bytes = if i == which {
                    mutate(&seeds[i], &e)
                } else {
                    seeds[i].clone()
                };
                std::fs::write(case.join(n), bytes).unwrap();
            }
            let _ = inspect_model(&case);
            let _ = load_model(&case);
            Ok(())
        })
        .unwrap();
}

/// Tokens, merges, token types, pre-tokenizer name, tokenizer model.
type TokenizerCase = (
    Vec<String>,
    Vec<(String, String)>,
    Vec<i32>,
    &'static str,
    &'static str,
);

#[test]
fn tokenizers_from_random_gguf_metadata_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tok.gguf");
    let token = || proptest::string::string_regex("[a-zĠÄ<>|_ ]{0,4}").unwrap();
    let tokens = proptest::collection::vec(token(), 0..24);
    let merges = proptest::collection::vec((token(), token()), 0..12);
    let types = proptest::collection::vec(-2i32..8, 0..24);
    let pre = proptest::sample::select(vec!["smollm", "llama-bpe", "gpt2", "qwen2", "", "??"]);
    let model = proptest::sample::select(vec!["gpt2", "llama", ""]);
    runner(300)
        .run(
            &(tokens, merges, types, pre, model),
            |(tokens, merges, types, pre, model): TokenizerCase| {
                let mut w = GgufWriter::new();
                w.meta("tokenizer.ggml.model", model)
                    .meta("tokenizer.ggml.pre", pre)
                    .meta_strings("tokenizer.ggml.tokens", &tokens);
                let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
                w.meta_strings("tokenizer.ggml.merges", &merges);
                w.meta(
                    "tokenizer.ggml.token_type",
                    evocomp_gguf::Value::Array(
                        evocomp_gguf::ValueType::I32,
                        types.iter().map(|&t| evocomp_gguf::Value::I32(t)).collect(),
                    ),
                );
                w.write(&p).unwrap();
                let f = GgufFile::open(&p).unwrap();
                if let Ok(t) = TextTokenizer::from_gguf(&f) {
                    let _ = t.encode("a ab Ġ<|x|> Ä");
                    let _ = t.to_json();
                }
                Ok(())
            },
        )
        .unwrap();
}
