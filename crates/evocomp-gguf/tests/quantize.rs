//! evocomp's GGUF encoders against llama.cpp's own quantizer, byte for byte,
//! and its decoder against the `gguf` Python package's, bit for bit. The
//! fixture (rows of both shipped models and constructed rows; hashes of
//! llama.cpp's bytes and of gguf's dequantisation) is made by
//! scripts/reference/gguf_quant_fixtures.py.

use evocomp_gguf::{GgmlType, QuantizeError, dequantize, quantize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const ROWS: &[u8] = include_bytes!("fixtures/quantize/rows.bin");
const CASES: &str = include_str!("fixtures/quantize/cases.json");

/// The committed fixture, or a wider one from `EVOCOMP_QUANT_FIXTURE` (a
/// folder the fixture script wrote with `--many`).
fn fixture() -> (Vec<u8>, serde_json::Value) {
    match std::env::var_os("EVOCOMP_QUANT_FIXTURE") {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir);
            let rows = std::fs::read(dir.join("rows.bin")).unwrap();
            let cases = std::fs::read_to_string(dir.join("cases.json")).unwrap();
            (rows, serde_json::from_str(&cases).unwrap())
        }
        None => (ROWS.to_vec(), serde_json::from_str(CASES).unwrap()),
    }
}

fn ty(name: &str) -> GgmlType {
    match name {
        "Q4_0" => GgmlType::Q4_0,
        "Q4_1" => GgmlType::Q4_1,
        "Q5_0" => GgmlType::Q5_0,
        "Q5_1" => GgmlType::Q5_1,
        "Q8_0" => GgmlType::Q8_0,
        "Q2_K" => GgmlType::Q2_K,
        "Q3_K" => GgmlType::Q3_K,
        "Q4_K" => GgmlType::Q4_K,
        "Q5_K" => GgmlType::Q5_K,
        "Q6_K" => GgmlType::Q6_K,
        "IQ4_NL" => GgmlType::IQ4_NL,
        other => panic!("fixture names an unknown type {other}"),
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Row name -> (values, importance weights).
fn rows(bytes: &[u8], fixture: &serde_json::Value) -> BTreeMap<String, (Vec<f32>, Vec<f32>)> {
    fixture["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let n = i["n"].as_u64().unwrap() as usize;
            let at = i["offset"].as_u64().unwrap() as usize;
            let x = f32s(&bytes[at..at + 4 * n]);
            let w = f32s(&bytes[at + 4 * n..at + 8 * n]);
            (i["name"].as_str().unwrap().to_string(), (x, w))
        })
        .collect()
}

#[test]
fn every_encoder_writes_llama_cpps_bytes_and_decodes_like_gguf_py() {
    let (bytes, fixture) = fixture();
    let rows = rows(&bytes, &fixture);
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "the fixture lost its cases");
    let mut failures = Vec::new();
    let mut seen_types = std::collections::BTreeSet::new();
    for c in cases {
        let (x, w) = &rows[c["row"].as_str().unwrap()];
        let t = ty(c["type"].as_str().unwrap());
        seen_types.insert(c["type"].as_str().unwrap().to_string());
        let weighted = c["imatrix"].as_bool().unwrap();
        let bytes = quantize(t, x, x.len(), weighted.then_some(w.as_slice())).unwrap();
        let label = format!("{} {t} imatrix={weighted}", c["row"]);
        if sha(&bytes) != c["bytes_sha256"].as_str().unwrap() {
            let head = hex::encode(&bytes[..bytes.len().min(48)]);
            failures.push(format!(
                "{label}: bytes differ from llama.cpp's\n  ours   {head}\n  theirs {}",
                c["bytes_head"].as_str().unwrap()
            ));
            continue;
        }
        let decoded = dequantize(t, &bytes, x.len()).unwrap();
        let decoded: Vec<u8> = decoded.iter().flat_map(|v| v.to_le_bytes()).collect();
        if sha(&decoded) != c["gguf_dequant_sha256"].as_str().unwrap() {
            failures.push(format!("{label}: our decoder differs from gguf-py's"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(seen_types.len(), 11, "types covered: {seen_types:?}");
}

#[test]
fn bad_rows_are_errors_that_say_what_is_wrong() {
    let x = vec![0.5f32; 576];
    let e = quantize(GgmlType::Q4_K, &x, 576, None).unwrap_err();
    assert!(
        matches!(
            e,
            QuantizeError::RowLength {
                block: 256,
                n_per_row: 576,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("whole blocks of 256"), "{e}");
    let e = quantize(GgmlType::Q8_0, &x[..100], 64, None).unwrap_err();
    assert!(e.to_string().contains("not whole rows of 64"), "{e}");
    let e = quantize(GgmlType::Q4_0, &x, 576, Some(&[1.0; 32])).unwrap_err();
    assert!(
        e.to_string().contains("importance matrix has 32 values"),
        "{e}"
    );
    let mut bad = x.clone();
    bad[300] = f32::NAN;
    let e = quantize(GgmlType::Q5_0, &bad, 576, None).unwrap_err();
    assert!(e.to_string().contains("value 300 is not finite"), "{e}");
    let e = quantize(GgmlType::IQ2_XXS, &x[..256], 256, None).unwrap_err();
    assert!(e.to_string().contains("IQ2_XXS is not supported"), "{e}");
}

#[test]
fn float_types_round_as_their_decoders_read() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.0123).collect();
    for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let b = quantize(t, &x, 64, None).unwrap();
        let back = dequantize(t, &b, 64).unwrap();
        let again = quantize(t, &back, 64, None).unwrap();
        assert_eq!(
            b, again,
            "{t}: a decoded value re-encodes to the same bytes"
        );
    }
}
