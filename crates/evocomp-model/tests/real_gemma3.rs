//! The real Gemma 3 270M (GGUF Q4_K_M: Q5_0, Q8_0, Q4_K and Q6_K tensors)
//! against PyPI's transformers reading the same file.
//!
//! Needs `scripts/fetch-assets.sh` (CI runs it first). The fixture was made by
//! `scripts/reference/make_fixtures.py gemma3`: transformers' tokenizer and
//! Gemma3ForCausalLM in float32 on the first 1024 tokens of a held-back SOTU
//! address (no BOS, as evocomp scores text), in two windows of 512.

use burn::tensor::{Device, Tensor};
use evocomp_model::{AttentionKind, Family, LlamaModel, LoadedModel, load_model};
use std::path::PathBuf;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        let path = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run scripts/fetch-assets.sh first",
            path.display()
        );
        load_model(&path).expect("Gemma 3 270M loads")
    })
}

fn fixture() -> &'static serde_json::Value {
    static F: OnceLock<serde_json::Value> = OnceLock::new();
    F.get_or_init(|| {
        let p = root().join("crates/evocomp-model/tests/fixtures/gemma3_270m.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    })
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn architecture_is_read_as_llama_cpp_and_transformers_read_it() {
    let c = model().config();
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!(
        (
            c.n_layers,
            c.hidden,
            c.intermediate,
            c.n_heads,
            c.n_kv_heads
        ),
        (18, 640, 2048, 4, 1)
    );
    assert_eq!((c.head_dim, c.vocab), (256, 262_144));
    assert_eq!(
        (c.sliding_window, c.rope_theta_local),
        (Some(512), Some(1e4))
    );
    assert_eq!(c.rope_theta, 1e6);
    let globals: Vec<usize> = (0..c.n_layers)
        .filter(|&l| c.layer_kind(l) == AttentionKind::Global)
        .collect();
    assert_eq!(globals, [5, 11, 17]);
    assert_eq!(c.attn_scale, Some(1.0 / 16.0));
    assert_eq!(c.n_params(), 268_098_176);
}

#[test]
fn tokenizer_matches_transformers() {
    let f = fixture();
    let tk = &model().tokenizer;
    let text = std::fs::read_to_string(root().join(f["text"].as_str().unwrap())).unwrap();
    let ids = tk.encode(&text).unwrap();
    let want = u32s(&f["token_ids"]);
    assert_eq!(&ids[..want.len()], &want[..]);
    // Spaces, tabs, newlines, accents, an emoji (byte fallback) and a control token.
    let sample = f["sample"].as_str().unwrap();
    assert_eq!(tk.encode(sample).unwrap(), u32s(&f["sample_ids"]));
    assert_eq!(tk.decode(&u32s(&f["sample_ids"])).unwrap(), sample);
}

#[test]
fn logits_and_perplexity_match_transformers() {
    let f = fixture();
    let m = model();
    let lm = LlamaModel::new(m.config(), m.weights().unwrap(), &Device::flex());
    let ids = u32s(&f["token_ids"]);
    let ctx = f["context"].as_u64().unwrap() as usize;
    let top_idx: Vec<Vec<u32>> = serde_json::from_value(f["top_idx"].clone()).unwrap();
    let top_val: Vec<Vec<f32>> = serde_json::from_value(f["top_val"].clone()).unwrap();
    let lse_ref: Vec<f64> = serde_json::from_value(f["logsumexp"].clone()).unwrap();
    let vocab = m.config().vocab;
    let (mut nll, mut n) = (0.0f64, 0usize);
    let (mut worst, mut argmax_agree) = (0.0f32, 0usize);
    for (w, window) in ids.chunks(ctx).enumerate() {
        let t: Tensor<3> = lm.forward(&[window.to_vec()]).unwrap();
        let logits: Vec<f32> = t.into_data().try_into_vec().unwrap();
        for (i, row) in logits.chunks(vocab).enumerate() {
            let pos = w * ctx + i;
            for (&j, &v) in top_idx[pos].iter().zip(&top_val[pos]) {
                worst = worst.max((row[j as usize] - v).abs());
            }
            let am = (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            argmax_agree += (am as u32 == top_idx[pos][0]) as usize;
            let mx = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
            assert!((lse - lse_ref[pos]).abs() < 2e-3, "logsumexp at {pos}");
            if i + 1 < window.len() {
                nll += lse - row[window[i + 1] as usize] as f64;
                n += 1;
            }
        }
    }
    let ppl = (nll / n as f64).exp();
    let want = f["perplexity"].as_f64().unwrap();
    eprintln!(
        "gemma3 270m: perplexity {ppl:.4} (transformers {want:.4}), top-8 logits within {worst:.2e}, \
         argmax agrees at {argmax_agree}/{}",
        ids.len()
    );
    assert!(
        (ppl - want).abs() / want < 1e-4,
        "perplexity {ppl} vs transformers {want}"
    );
    // f32 on both sides, different summation orders: logits agree to a few 1e-4.
    assert!(worst < 2e-3, "largest top-8 logit difference {worst}");
    assert!(
        argmax_agree >= ids.len() - 2,
        "argmax agrees at {argmax_agree}"
    );
}
