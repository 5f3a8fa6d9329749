//! GGUF files written by the tests themselves: every supported dtype against
//! the `gguf` Python package's dequantisation, metadata round trips, and each
//! kind of broken file giving one clear error.

use evocomp_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueType};
use std::path::Path;

fn reference() -> serde_json::Value {
    let text = include_str!("fixtures/dequant_reference.json");
    serde_json::from_str(text).unwrap()
}

fn write(dir: &Path, name: &str, w: &GgufWriter) -> std::path::PathBuf {
    let p = dir.join(name);
    w.write(&p).unwrap();
    p
}

#[test]
fn every_supported_dtype_matches_the_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = reference();
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    for (name, ty) in [
        ("F32", GgmlType::F32),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q2_K", GgmlType::Q2_K),
        ("Q3_K", GgmlType::Q3_K),
        ("Q4_K", GgmlType::Q4_K),
        ("Q5_K", GgmlType::Q5_K),
        ("Q6_K", GgmlType::Q6_K),
    ] {
        let entry = &fixture[name];
        let bytes = hex::decode(entry["bytes"].as_str().unwrap()).unwrap();
        let values: Vec<f32> = entry["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let (block, _) = ty.block_geometry();
        // Two rows, to exercise the row-major shape.
        let n = values.len() as u64;
        let dims = if (n / 2).is_multiple_of(block as u64) {
            vec![n / 2, 2]
        } else {
            vec![n]
        };
        w.tensor_raw(format!("t.{name}"), &dims, ty, bytes).unwrap();
        expected.push((name, dims, values));
    }
    let path = write(dir.path(), "all.gguf", &w);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensors().len(), expected.len());
    for (name, dims, values) in expected {
        let (shape, got) = f.dequantize(&format!("t.{name}")).unwrap();
        let want_shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(shape, want_shape, "{name}");
        assert_eq!(got.len(), values.len(), "{name}");
        for (i, (a, b)) in got.iter().zip(&values).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: got {a}, python gguf says {b}"
            );
        }
    }
}

#[test]
fn metadata_round_trips_with_custom_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new().alignment(64);
    w.meta("general.architecture", "llama")
        .meta("llama.block_count", 2u32)
        .meta("llama.rope.freq_base", 10000.0f32)
        .meta("some.i64", -5i64)
        .meta("some.bool", true)
        .meta_strings("tokenizer.ggml.tokens", &["a", "b", "ünï"]);
    w.meta("empty", Value::Array(ValueType::U32, vec![]));
    w.tensor_f32("x", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    w.tensor_f32("y", &[5], &[9.0; 5]);
    let path = write(dir.path(), "meta.gguf", &w);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    // ggml reads every tensor padded to the alignment, the last one too (y
    // is 20 bytes at offset 64 of the data: the file runs to 128).
    let y = f.tensor_info("y").unwrap();
    let data_end = std::fs::metadata(&path).unwrap().len() - f.tensor_data_start();
    assert_eq!((y.offset, data_end), (64, 128));
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(f.get("some.i64").unwrap().as_i64(), Some(-5));
    assert_eq!(f.get("some.bool").unwrap().as_bool(), Some(true));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "b", "ünï"]
    );
    assert_eq!(f.get("empty").unwrap().as_array().unwrap().len(), 0);
    let (shape, x) = f.dequantize("x").unwrap();
    assert_eq!(shape, [3, 2]);
    assert_eq!(x, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(f.dequantize("y").unwrap().1, [9.0; 5]);
    // Typed getters name the key and what was found.
    let e = f.get_u64("general.architecture").unwrap_err().to_string();
    assert!(
        e.contains("general.architecture") && e.contains("llama"),
        "{e}"
    );
    let e = f.get_u64("nope").unwrap_err().to_string();
    assert!(
        e.contains("meta.gguf") && e.contains("\"nope\" is missing"),
        "{e}"
    );
    let e = f.dequantize("missing.weight").unwrap_err().to_string();
    assert!(
        e.contains("meta.gguf") && e.contains("missing.weight"),
        "{e}"
    );
}

fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", "llama");
    w.tensor_f32("w", &[4, 8], &[0.5; 32]);
    w.to_bytes()
}

fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<GgufFile, GgufError>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, bytes).unwrap();
    let r = GgufFile::open(&p);
    (dir, r)
}

#[test]
fn truncated_file_is_a_clear_error_at_every_length() {
    let bytes = small_file();
    // Cut anywhere: header, metadata, tensor table, data. Never a panic.
    for cut in 0..bytes.len() {
        let (_d, r) = open_bytes(&bytes[..cut]);
        let e = r.expect_err("a truncated file must not open");
        let msg = e.to_string();
        assert!(msg.contains("model.gguf"), "cut {cut}: {msg}");
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::TensorOutOfBounds { .. }
                    | GgufError::BadMagic { .. }
            ),
            "cut {cut}: {msg}"
        );
    }
    let (_d, r) = open_bytes(&bytes[..bytes.len() - 1]);
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("tensor \"w\"") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn wrong_magic_and_version_are_refused() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    let (_d, r) = open_bytes(&bytes);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");

    let mut bytes = small_file();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let (_d, r) = open_bytes(&bytes);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("version 1 is not supported"), "{msg}");
}

#[test]
fn unknown_dtype_is_refused_and_unsupported_dtype_fails_on_dequantize() {
    // Patch the type id of the only tensor: it sits right after the tensor
    // name, n_dims and two u64 dims, just before the u64 offset.
    let mut bytes = small_file();
    let name_at = bytes.windows(3).position(|w| w == b"\x00\x00w").unwrap() + 3;
    let ty_at = name_at + 4 + 16;
    assert_eq!(
        u32::from_le_bytes(bytes[ty_at..ty_at + 4].try_into().unwrap()),
        0
    );
    bytes[ty_at..ty_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let (_d, r) = open_bytes(&bytes);
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("unknown ggml type id 77") && msg.contains("\"w\""),
        "{msg}"
    );

    // A known type we cannot dequantise opens, but dequantising names it.
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new();
    w.tensor_raw("k", &[256], GgmlType::IQ4_XS, vec![0; 136])
        .unwrap();
    let p = write(dir.path(), "iq4xs.gguf", &w);
    let f = GgufFile::open(&p).unwrap();
    let msg = f.dequantize("k").unwrap_err().to_string();
    assert!(
        msg.contains("iq4xs.gguf") && msg.contains("IQ4_XS") && msg.contains("not supported"),
        "{msg}"
    );
}

#[test]
fn row_length_must_fit_the_block_size() {
    let dir = tempfile::tempdir().unwrap();
    // 40 values of Q8_0 is not a whole number of 32-blocks in a row of 40.
    let mut bytes = {
        let mut w = GgufWriter::new();
        w.tensor_raw("q", &[64], GgmlType::Q8_0, vec![0; 68])
            .unwrap();
        w.to_bytes()
    };
    let name_at = bytes.windows(1).position(|w| w == b"q").unwrap() + 1;
    let dim_at = name_at + 4;
    bytes[dim_at..dim_at + 8].copy_from_slice(&40u64.to_le_bytes());
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let msg = GgufFile::open(&p).unwrap_err().to_string();
    assert!(
        msg.contains("not a multiple") && msg.contains("Q8_0"),
        "{msg}"
    );
}

/// A metadata count smaller than the entries written: the entry after the
/// announced ones is a metadata key, and the error says so (it used to call
/// it a tensor with an unknown ggml type id).
#[test]
fn a_wrong_metadata_count_names_the_key_as_a_key() {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", "llama");
    w.meta("general.quantization_version", 2u32);
    w.tensor_f32("w", &[4, 8], &[0.5; 32]);
    let mut bytes = w.to_bytes();
    // Header: magic (4), version (4), tensor count (8), metadata count (8).
    let n_kv = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    assert!(n_kv >= 2, "the test file needs two metadata entries");
    bytes[16..24].copy_from_slice(&(n_kv - 1).to_le_bytes());
    let (_d, r) = open_bytes(&bytes);
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("metadata count")
            && e.contains("\"general.quantization_version\"")
            && !e.contains("ggml type"),
        "{e}"
    );
}

/// A GGUF v3 header with no tensors and one metadata key whose value is
/// `depth` arrays, each holding the next, the innermost one u8.
fn nested(depth: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    let key = b"deep";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(9u32.to_le_bytes()); // ARRAY
    for i in 0..depth {
        let inner = if i + 1 == depth { 0u32 } else { 9u32 }; // U8, or ARRAY
        b.extend(inner.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    b.push(7);
    b
}

#[test]
fn metadata_arrays_nested_past_the_bound_are_refused_not_a_stack_overflow() {
    // 50,000 deep once aborted every command with a stack overflow.
    for depth in [50_000, evocomp_gguf::MAX_ARRAY_DEPTH + 1] {
        let (_d, r) = open_bytes(&nested(depth));
        let Err(e) = r else { panic!("refused") };
        let e = e.to_string();
        assert!(e.contains("\"deep\"") && e.contains("nests arrays"), "{e}");
    }
    let (_d, r) = open_bytes(&nested(evocomp_gguf::MAX_ARRAY_DEPTH));
    let f = r.expect("the bound itself is read");
    let mut v = f.get("deep").expect("the key");
    for _ in 1..evocomp_gguf::MAX_ARRAY_DEPTH {
        match v {
            Value::Array(ValueType::Array, items) => v = &items[0],
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(v, &Value::Array(ValueType::U8, vec![Value::U8(7)]));
}

#[cfg(unix)]
#[test]
fn a_fifo_or_folder_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for p in [fifo.as_path(), dir.path()] {
        let Err(e) = GgufFile::open(p) else {
            panic!("refused")
        };
        let e = e.to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}

/// A GGUF of two tensors larger than a page ("a", then "b"), opened; and a
/// function that cuts the file 1,024 bytes into its data, so that whole
/// pages of the map, "b"'s among them, are lost.
fn two_tensors(dir: &std::path::Path) -> (GgufFile, impl Fn(&GgufFile)) {
    let p = dir.join("model.gguf");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", "llama");
    w.tensor_f32("a", &[1024, 8], &[0.5; 8192]);
    w.tensor_f32("b", &[1024, 8], &[0.25; 8192]);
    w.write(&p).unwrap();
    let cut = move |f: &GgufFile| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(f.tensor_data_start() + 1024)
            .unwrap()
    };
    (GgufFile::open(dir.join("model.gguf")).unwrap(), cut)
}

#[test]
fn a_file_truncated_while_open_is_an_error_naming_it_not_a_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let (f, cut) = two_tensors(dir.path());
    assert_eq!(f.dequantize("a").unwrap().1[0], 0.5);
    cut(&f);
    let Err(e) = f.dequantize("b") else {
        panic!("read past the new end")
    };
    let e = e.to_string();
    assert!(e.contains("model.gguf") && e.contains("shrank"), "{e}");
}

#[test]
fn a_file_cut_between_the_check_and_the_read_is_an_error_too() {
    // What a reader that borrows the map's bytes meets when the cut lands
    // after its check: the lost pages read as zeros (no SIGBUS), and
    // `intact` afterwards names the file.
    let dir = tempfile::tempdir().unwrap();
    let (f, cut) = two_tensors(dir.path());
    f.intact("b").unwrap();
    cut(&f);
    let b = f.tensor_info("b").unwrap();
    let last = *f.tensor_bytes(b).last().unwrap();
    assert_eq!(last, 0, "a lost page reads as zeros");
    let e = f.intact("b").unwrap_err().to_string();
    assert!(
        e.contains("model.gguf") && e.contains("tensor \"b\"") && e.contains("shrank"),
        "{e}"
    );
}
