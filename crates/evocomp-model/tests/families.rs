//! Every architecture evocomp runs, on a tiny random model built and run by
//! transformers (`scripts/reference/make_fixtures.py tiny`): the logits match,
//! and the model survives evocomp's GGUF writer and HF export unchanged.

mod common;

use burn::tensor::Device;
use common::{add_tokenizer, logits, max_diff};
use evocomp_model::testing::write_gguf;
use evocomp_model::{
    AttentionKind, Family, LlamaModel, LoadedModel, WeightDtype, load_model, save_hf_safetensors,
};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Load fixture `name` from a temporary copy with a tokenizer; check its
/// logits against transformers', then its GGUF and HF round trips.
fn check(name: &str, family: Family) -> LoadedModel {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join(name);
    std::fs::create_dir(&hf).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join(name).join(f), hf.join(f)).unwrap();
    }
    add_tokenizer(&hf);
    let m = load_model(&hf).unwrap();
    let cfg = m.config().clone();
    assert_eq!(cfg.family, family, "{name}");

    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(name).join("logits.json")).unwrap(),
    )
    .unwrap();
    let batch: Vec<Vec<u32>> = serde_json::from_value(fixture["tokens"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(fixture["logits"].clone()).unwrap();
    let d = Device::flex();
    assert!(!m.weights_on_host(), "{name}: opening reads no weights");
    let got = logits(&LlamaModel::new(&cfg, m.weights().unwrap(), &d), &batch);
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
    let diff = max_diff(&got, &want);
    assert!(
        diff <= 1e-5 * scale,
        "{name}: max |diff| {diff} (largest logit {scale})"
    );

    // Streamed to the device a block at a time, with no host copy kept: the
    // same model, in f32 and in bf16.
    let fresh = load_model(&hf).unwrap();
    for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
        let streamed = logits(&fresh.to_device(&d, dtype).unwrap(), &batch);
        let from_host = logits(
            &LlamaModel::with_dtype(&cfg, m.weights().unwrap(), &d, dtype).unwrap(),
            &batch,
        );
        assert_eq!(streamed, from_host, "{name}: streamed {dtype}");
    }
    assert!(
        !fresh.weights_on_host(),
        "{name}: streaming keeps no host copy"
    );

    // GGUF as llama.cpp lays it out for this family, read back. A gemma3
    // GGUF holds no layer pattern or query scalar (llama.cpp fixes them, and
    // this fixture departs from both), so only the weights are compared there.
    let gguf = dir.path().join(format!("{name}.gguf"));
    write_gguf(&cfg, m.weights().unwrap(), &gguf).unwrap();
    let g = load_model(&gguf).unwrap();
    assert_eq!(
        g.weights().unwrap(),
        m.weights().unwrap(),
        "{name}: GGUF round trip"
    );
    if family != Family::Gemma3 {
        // GGUF stores the RMS epsilon as f32.
        let mut gc = g.config().clone();
        assert_eq!(gc.rms_eps, cfg.rms_eps as f32 as f64);
        gc.rms_eps = cfg.rms_eps;
        assert_eq!(gc, cfg, "{name}: GGUF config");
        let again = logits(
            &LlamaModel::new(g.config(), g.weights().unwrap(), &d),
            &batch,
        );
        assert!(max_diff(&again, &got) < 1e-5, "{name}: GGUF logits");
    }

    // HF export, read back.
    let out = dir.path().join(format!("{name}-export"));
    save_hf_safetensors(&cfg, m.weights().unwrap(), &out).unwrap();
    add_tokenizer(&out);
    let e = load_model(&out).unwrap();
    assert_eq!(e.config(), &cfg, "{name}: HF config round trip");
    assert_eq!(
        e.weights().unwrap(),
        m.weights().unwrap(),
        "{name}: HF export round trip"
    );
    m
}

#[test]
fn qwen2_with_qkv_biases_matches_transformers() {
    let m = check("qwen2_tiny", Family::Qwen2);
    let c = m.config();
    assert!(c.qkv_bias && !c.qk_norm && c.sliding_window.is_none());
    assert!(m.weights().unwrap().layers[0].qkv_bias.is_some());
}

#[test]
fn qwen3_with_qk_norms_matches_transformers() {
    let m = check("qwen3_tiny", Family::Qwen3);
    let c = m.config();
    assert!(c.qk_norm && !c.qkv_bias && !c.tied_embeddings);
    // head_dim 16 with hidden 32 over 4 heads: q_proj is [64, 32].
    assert_eq!((c.head_dim, c.q_dim()), (16, 64));
}

#[test]
fn mistral_with_a_sliding_window_matches_transformers() {
    let m = check("mistral_tiny", Family::Mistral);
    // A window of 4 on every block, shorter than the 12 tokens compared.
    assert_eq!(m.config().sliding_window, Some(4));
    assert!((0..3).all(|l| m.config().window(l) == Some(4)));
}

#[test]
fn gemma3_matches_transformers() {
    // 12 tokens, window 4: the sliding blocks mask positions the global one sees.
    let m = check("gemma3_tiny", Family::Gemma3);
    let cfg = m.config();
    assert_eq!(
        cfg.layer_types,
        [
            AttentionKind::Sliding,
            AttentionKind::Global,
            AttentionKind::Sliding
        ]
    );
    assert_eq!(
        (cfg.sliding_window, cfg.rope_theta_local),
        (Some(4), Some(1e4))
    );
    assert_eq!(cfg.attn_scale, Some(1.0 / 6f64.sqrt()));
    assert!(cfg.qk_norm && cfg.post_norms && cfg.tied_embeddings);
}

#[test]
fn qwen_with_sliding_windows_or_o_bias_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("q");
    std::fs::create_dir(&hf).unwrap();
    let text = std::fs::read_to_string(fixtures().join("qwen3_tiny/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["use_sliding_window"] = true.into();
    v["sliding_window"] = 8.into();
    std::fs::write(hf.join("config.json"), v.to_string()).unwrap();
    let e = load_model(&hf).unwrap_err().to_string();
    assert!(
        e.contains("use_sliding_window") && e.contains("config.json"),
        "{e}"
    );
    v["use_sliding_window"] = false.into();
    v["attention_bias"] = true.into();
    std::fs::write(hf.join("config.json"), v.to_string()).unwrap();
    let e = load_model(&hf).unwrap_err().to_string();
    assert!(e.contains("biases"), "{e}");
}
