//! Gemma 3: its GGUF and HF round trips, what the sliding window means, and
//! what is refused (the match with transformers is in `families.rs`).

mod common;

use burn::tensor::Device;
use common::{add_tokenizer, logits, max_diff, tokens};
use evocomp_model::testing::{random_weights, tiny_gemma3_config, write_gguf};
use evocomp_model::{
    AttentionKind, ForwardError, KvPolicy, LlamaModel, load_model, save_hf_safetensors,
};
use std::path::{Path, PathBuf};

/// The transformers fixture copied into a temporary folder with a tokenizer.
fn fixture_folder() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_tiny");
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("gemma3");
    std::fs::create_dir(&hf).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), hf.join(f)).unwrap();
    }
    add_tokenizer(&hf);
    (dir, hf)
}

#[test]
fn gemma3_gguf_and_hf_round_trips_give_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_gemma3_config(5);
    let w = random_weights(&cfg, 3);
    let gguf = dir.path().join("g.gguf");
    write_gguf(&cfg, &w, &gguf).unwrap();
    let from_gguf = load_model(&gguf).unwrap();
    assert_eq!(from_gguf.config(), &cfg);
    // No Q/K permutation for Gemma, and norms read as written (1 + w in llama.cpp's files).
    assert_eq!(*from_gguf.weights().unwrap(), w);

    // HF: norms are stored as w (the model multiplies by 1 + w) and come back the same.
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    add_tokenizer(&hf);
    let text = std::fs::read_to_string(hf.join("config.json")).unwrap();
    assert!(text.contains("\"gemma3_text\"") && text.contains("sliding_attention"));
    let from_hf = load_model(&hf).unwrap();
    assert_eq!(from_hf.config(), &cfg);
    let d = Device::flex();
    let batch = vec![tokens(1, 16), tokens(2, 16)];
    let a = logits(
        &LlamaModel::new(&cfg, from_gguf.weights().unwrap(), &d),
        &batch,
    );
    let b = logits(
        &LlamaModel::new(&cfg, from_hf.weights().unwrap(), &d),
        &batch,
    );
    // f32 norms through `w - 1` and `+ 1`: equal to rounding.
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
}

#[test]
fn a_sliding_block_sees_only_its_window() {
    // One sliding block: the output at position i depends on tokens
    // i-w+1..=i only, and RoPE is relative, so running just those tokens gives
    // the same last-position logits.
    let mut cfg = tiny_gemma3_config(4);
    cfg = cfg.without_layers(&[false, true]);
    assert_eq!(cfg.n_layers, 1);
    assert_eq!(cfg.layer_types, [AttentionKind::Sliding]);
    let w = {
        let mut w = random_weights(&tiny_gemma3_config(4), 5);
        w.layers.truncate(1);
        w
    };
    let m = LlamaModel::new(&cfg, &w, &Device::flex());
    let seq = tokens(3, 10);
    let vocab = cfg.vocab;
    let full = logits(&m, std::slice::from_ref(&seq));
    let last_full = &full[9 * vocab..];
    let tail = logits(&m, &[seq[6..].to_vec()]);
    let last_tail = &tail[3 * vocab..];
    assert!(max_diff(last_full, last_tail) < 1e-4);
    // With a window of the whole sequence the earlier tokens do matter.
    let mut global = cfg.clone();
    global.sliding_window = Some(64);
    let g = logits(
        &LlamaModel::new(&global, &w, &Device::flex()),
        std::slice::from_ref(&seq),
    );
    assert!(max_diff(&g[9 * vocab..], last_tail) > 1e-3);
    // Within the window, the window changes nothing.
    assert_eq!(&g[..4 * vocab], &full[..4 * vocab]);
}

#[test]
fn kv_policies_on_sliding_blocks_need_sequences_within_the_window() {
    let cfg = tiny_gemma3_config(8);
    let w = random_weights(&cfg, 9);
    let mut m = LlamaModel::new(&cfg, &w, &Device::flex());
    let plain = logits(&m, &[tokens(1, 8)]);
    m.set_kv_policy(0, Some(KvPolicy::FULL));
    // Within the window the chunked prefill is the plain forward pass.
    let (kv, _) = m.forward_kv(&[tokens(1, 8)]).unwrap();
    let kv: Vec<f32> = kv.into_data().try_into_vec().unwrap();
    assert!(max_diff(&plain, &kv) < 1e-4);
    let e = m.forward_kv(&[tokens(1, 9)]).unwrap_err();
    assert!(
        matches!(
            e,
            ForwardError::WindowedKv {
                window: 8,
                len: 9,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let (_d, hf) = fixture_folder();
    let text = std::fs::read_to_string(hf.join("config.json")).unwrap();
    std::fs::write(
        hf.join("config.json"),
        text.replace("\"gemma3_text\"", "\"gemma4_text\""),
    )
    .unwrap();
    let e = load_model(&hf).unwrap_err().to_string();
    assert!(
        e.contains("gemma4_text") && e.contains("config.json"),
        "{e}"
    );
    std::fs::write(
        hf.join("config.json"),
        text.replace("\"gemma3_text\"", "\"gemma3\""),
    )
    .unwrap();
    let e = load_model(&hf).unwrap_err().to_string();
    assert!(e.contains("image-text"), "{e}");
}
