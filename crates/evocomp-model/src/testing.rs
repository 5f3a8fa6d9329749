//! Small seeded random models for tests that need no download, written as
//! real GGUF files so that the loaders are exercised too.

use crate::config::{Activation, Family, LlamaConfig, RopeScaling};
use crate::weights::{HostTensor, LayerWeights, LinearKind, LlamaWeights, permute_rope_rows};
use evocomp_gguf::GgufWriter;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::Path;

/// A tiny Llama: 2 layers, hidden 32, 4 query heads over 2 KV heads, and a
/// byte-level vocabulary of 256 bytes plus 4 special tokens.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        hidden: 32,
        intermediate: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        vocab: 260,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        rms_eps: 1e-5f32 as f64,
        max_context: 128,
        tied_embeddings: true,
        family: Family::Llama,
        activation: Activation::Silu,
        qk_norm: false,
        qkv_bias: false,
        post_norms: false,
        embed_scale: None,
        attn_scale: None,
        sliding_window: None,
        layer_types: Vec::new(),
        rope_theta_local: None,
    }
}

/// [`tiny_config`] as a Gemma 3: q/k norms, post-norms, embedding scale,
/// GeGLU, a local RoPE base and a window of `window` positions on every
/// block but each sixth (so both blocks of the tiny model are sliding), as a
/// gemma3 GGUF is read.
pub fn tiny_gemma3_config(window: usize) -> LlamaConfig {
    let mut cfg = tiny_config();
    cfg.family = Family::Gemma3;
    cfg.rope_theta = 1_000_000.0;
    cfg.sliding_window = Some(window);
    cfg.gemma3(6, 10_000.0);
    cfg.attn_scale = Some(1.0 / (cfg.head_dim as f64).sqrt());
    cfg
}

fn random(rng: &mut StdRng, shape: Vec<usize>, scale: f32) -> HostTensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    HostTensor::new(shape, data)
}

fn norm(rng: &mut StdRng, n: usize) -> HostTensor {
    HostTensor::new(
        vec![n],
        (0..n).map(|_| 0.8 + 0.4 * rng.random::<f32>()).collect(),
    )
}

/// Random weights for `cfg`, the same for the same seed.
pub fn random_weights(cfg: &LlamaConfig, seed: u64) -> LlamaWeights {
    let mut rng = StdRng::seed_from_u64(seed);
    let layers = (0..cfg.n_layers)
        .map(|_| {
            let attn_norm = norm(&mut rng, cfg.hidden);
            let mlp_norm = norm(&mut rng, cfg.hidden);
            let linears = LinearKind::ALL.map(|k| {
                let [o, i] = k.shape(cfg);
                random(&mut rng, vec![o, i], 1.0 / (i as f32).sqrt())
            });
            // Drawn after the linears, so Llama weights keep their stream.
            let post_norms = cfg
                .post_norms
                .then(|| [norm(&mut rng, cfg.hidden), norm(&mut rng, cfg.hidden)]);
            let qk_norms = cfg
                .qk_norm
                .then(|| [norm(&mut rng, cfg.head_dim), norm(&mut rng, cfg.head_dim)]);
            let qkv_bias = cfg.qkv_bias.then(|| {
                [cfg.q_dim(), cfg.kv_dim(), cfg.kv_dim()].map(|n| random(&mut rng, vec![n], 0.5))
            });
            LayerWeights {
                attn_norm,
                mlp_norm,
                linears,
                post_norms,
                qk_norms,
                qkv_bias,
            }
        })
        .collect();
    let embed = random(&mut rng, vec![cfg.vocab, cfg.hidden], 1.0);
    let final_norm = norm(&mut rng, cfg.hidden);
    let lm_head = (!cfg.tied_embeddings).then(|| {
        random(
            &mut rng,
            vec![cfg.vocab, cfg.hidden],
            1.0 / (cfg.hidden as f32).sqrt(),
        )
    });
    LlamaWeights {
        embed,
        layers,
        final_norm,
        lm_head,
    }
}

/// GPT-2's byte-to-character map, which byte-level BPE vocabularies use.
pub fn byte_level_alphabet() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).expect("valid char");
    }
    map
}

/// Write `weights` as a GGUF file in llama.cpp's layout (Q/K rows permuted,
/// F32 tensors), with a byte-level tokenizer: ids 0..4 are special, then one
/// token per byte, and no merges.
pub fn write_gguf(cfg: &LlamaConfig, w: &LlamaWeights, path: &Path) -> std::io::Result<()> {
    write_gguf_filtered(cfg, w, path, |_| true)
}

/// [`write_gguf`], keeping only the tensors whose GGUF name passes `keep`
/// (to make broken files in tests).
pub fn write_gguf_filtered(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<()> {
    if cfg.vocab < 260 {
        return Err(std::io::Error::other(
            "the test tokenizer needs a vocab of at least 260",
        ));
    }
    let arch = cfg.family.name();
    let key = |k: &str| format!("{arch}.{k}");
    let mut g = GgufWriter::new();
    g.meta("general.architecture", arch)
        .meta("general.name", "evocomp-tiny-random")
        .meta(key("block_count"), cfg.n_layers as u32)
        .meta(key("embedding_length"), cfg.hidden as u32)
        .meta(key("feed_forward_length"), cfg.intermediate as u32)
        .meta(key("attention.head_count"), cfg.n_heads as u32)
        .meta(key("attention.head_count_kv"), cfg.n_kv_heads as u32)
        .meta(key("attention.key_length"), cfg.head_dim as u32)
        .meta(key("rope.freq_base"), cfg.rope_theta as f32)
        .meta(key("attention.layer_norm_rms_epsilon"), cfg.rms_eps as f32)
        .meta(key("context_length"), cfg.max_context as u32)
        .meta(key("vocab_size"), cfg.vocab as u32);
    if let Some(w) = cfg.sliding_window {
        g.meta(key("attention.sliding_window"), w as u32);
    }
    g.meta("tokenizer.ggml.model", "gpt2")
        .meta("tokenizer.ggml.pre", "smollm");
    let alphabet = byte_level_alphabet();
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    let mut types = vec![3i32; 4];
    types.extend(std::iter::repeat_n(1, 256));
    while tokens.len() < cfg.vocab {
        types.push(5);
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    g.meta_strings("tokenizer.ggml.tokens", &tokens);
    g.meta(
        "tokenizer.ggml.token_type",
        evocomp_gguf::Value::Array(
            evocomp_gguf::ValueType::I32,
            types.into_iter().map(evocomp_gguf::Value::I32).collect(),
        ),
    );
    g.meta_strings::<&str>("tokenizer.ggml.merges", &[]);
    g.meta("tokenizer.ggml.bos_token_id", 1u32)
        .meta("tokenizer.ggml.eos_token_id", 0u32);

    let mut put = |name: String, t: &HostTensor| {
        if keep(&name) {
            g.tensor_f32(name, &t.shape, &t.data);
        }
    };
    put("token_embd.weight".into(), &w.embed);
    put("output_norm.weight".into(), &w.final_norm);
    if let Some(h) = &w.lm_head {
        put("output.weight".into(), h);
    }
    for (l, layer) in w.layers.iter().enumerate() {
        put(format!("blk.{l}.attn_norm.weight"), &layer.attn_norm);
        put(format!("blk.{l}.ffn_norm.weight"), &layer.mlp_norm);
        if let Some([a, m]) = &layer.post_norms {
            put(format!("blk.{l}.post_attention_norm.weight"), a);
            put(format!("blk.{l}.post_ffw_norm.weight"), m);
        }
        if let Some([q, k]) = &layer.qk_norms {
            put(format!("blk.{l}.attn_q_norm.weight"), q);
            put(format!("blk.{l}.attn_k_norm.weight"), k);
        }
        if let Some([q, k, v]) = &layer.qkv_bias {
            put(format!("blk.{l}.attn_q.bias"), q);
            put(format!("blk.{l}.attn_k.bias"), k);
            put(format!("blk.{l}.attn_v.bias"), v);
        }
        // llama.cpp permutes Q/K rows for its Llama-style RoPE only.
        let permuted = cfg.family.gguf_permutes_qk();
        for k in LinearKind::ALL {
            let t = match k {
                LinearKind::Q if permuted => permute_rope_rows(layer.linear(k), cfg.n_heads),
                LinearKind::K if permuted => permute_rope_rows(layer.linear(k), cfg.n_kv_heads),
                _ => layer.linear(k).clone(),
            };
            put(k.gguf_name(l), &t);
        }
    }
    g.write(path)
}
