//! Helpers the model's integration tests share.
#![allow(dead_code)] // each test file uses its own subset

use burn::tensor::Tensor;
use evocomp_model::LlamaModel;
use evocomp_model::load_model;
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::Path;

pub fn logits(m: &LlamaModel, batch: &[Vec<u32>]) -> Vec<f32> {
    let t: Tensor<3> = m.forward(batch).unwrap();
    t.into_data().try_into_vec().unwrap()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 4 + (i * 37 + seed * 11) % 256)
        .collect()
}

/// A tokenizer.json for a folder that has none: the tiny GGUF's byte-level one.
pub fn add_tokenizer(dir: &Path) {
    let gguf = dir.join("tok.gguf");
    let cfg = tiny_config();
    write_gguf(&cfg, &random_weights(&cfg, 0), &gguf).unwrap();
    let tk = load_model(&gguf).unwrap().tokenizer.to_json().unwrap();
    std::fs::write(dir.join("tokenizer.json"), tk).unwrap();
    std::fs::remove_file(gguf).unwrap();
}
