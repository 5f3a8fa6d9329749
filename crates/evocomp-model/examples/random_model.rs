//! A Llama of a known shape with seeded random weights, written as an F32
//! GGUF file: what a machine without Python (a rented GPU) runs to measure
//! memory and speed at a size no real model here has (issue 31). Its
//! quality means nothing; its memory and time are real.
//!
//! ```text
//! cargo run --release -p evocomp-model --example random_model -- SHAPE OUT.gguf [SEED]
//! ```
//!
//! SHAPE: `tinyllama-1b` (hidden 2048, 22 blocks, 32 heads over 4 KV heads,
//! FFN 5632, vocabulary 32,000, untied head: 1,100,048,384 parameters, a
//! 4.1 GiB file) or `small` (the same layout at hidden 256, 8 blocks, to try
//! a script). The tokenizer is evocomp's test tokenizer (4 special tokens
//! and one token per byte; the other ids are never produced), so a text's
//! tokens are its bytes. `scripts/reference/make_1b.py` makes the same
//! shape with transformers' initialisation and a real BPE tokenizer where
//! Python is at hand.

use evocomp_model::testing::{random_weights, tiny_config, write_gguf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: random_model tinyllama-1b|small OUT.gguf [SEED]";
    let mut args = std::env::args().skip(1);
    let shape = args.next().ok_or(usage)?;
    let out = args.next().ok_or(usage)?;
    let seed: u64 = args.next().map_or(Ok(0), |s| s.parse())?;
    let mut cfg = tiny_config();
    let (hidden, layers, heads, kv_heads, ffn) = match shape.as_str() {
        "tinyllama-1b" => (2048, 22, 32, 4, 5632),
        "small" => (256, 8, 8, 2, 704),
        other => return Err(format!("unknown shape {other:?}; {usage}").into()),
    };
    cfg.hidden = hidden;
    cfg.n_layers = layers;
    cfg.n_heads = heads;
    cfg.n_kv_heads = kv_heads;
    cfg.head_dim = hidden / heads;
    cfg.intermediate = ffn;
    cfg.vocab = 32_000;
    cfg.max_context = 2048;
    cfg.tied_embeddings = false;
    let w = random_weights(&cfg, seed);
    write_gguf(&cfg, &w, std::path::Path::new(&out))?;
    println!("{out}: {shape}, {} parameters, seed {seed}", cfg.n_params());
    Ok(())
}
