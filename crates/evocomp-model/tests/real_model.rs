//! The real SmolLM2-135M-Instruct (GGUF Q4_1) against PyTorch + transformers.
//!
//! Needs `scripts/fetch-assets.sh` (CI runs it first). The fixture was made by
//! `scripts/reference/make_fixtures.py`: transformers' LlamaForCausalLM in
//! float32 on the first 1024 tokens of a held-back SOTU address, in two
//! windows of 512.

use burn::tensor::{Device, Tensor};
use evocomp_model::{LlamaModel, LoadedModel, load_model};
use std::path::PathBuf;
use std::sync::OnceLock;

fn root() -> PathBuf {
    manifest_dir().join("../..")
}

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        let path = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.is_file(),
            "{} is missing: run scripts/fetch-assets.sh first",
            path.display()
        );
        load_model(&path).expect("the real model loads")
    })
}

fn fixture() -> serde_json::Value {
    let p = root().join("crates/evocomp-model/tests/fixtures/smollm2_logits.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn architecture_matches_the_published_one() {
    let c = model().config();
    assert_eq!(
        (
            c.n_layers,
            c.hidden,
            c.intermediate,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab
        ),
        (30, 576, 1536, 9, 3, 64, 49152)
    );
    assert!(c.tied_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    let p = c.n_params();
    assert!((134_000_000..135_000_000).contains(&p), "{p} parameters");
}

#[test]
fn tokenizer_ids_equal_the_reference_tokenizer() {
    let p = root().join("crates/evocomp-model/tests/fixtures/tokenizer_ids.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let tk = &model().tokenizer;
    for (name, case) in fx.as_object().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tk.encode(text).unwrap();
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got == want,
            "{name}: {} ids vs {} in the fixture, first difference at {first_diff:?}",
            got.len(),
            want.len()
        );
        // Byte-level BPE round-trips the text.
        assert_eq!(tk.decode(&got).unwrap(), text, "{name}: decode");
    }
    // The fixture's logits were computed on these ids.
    let text =
        std::fs::read_to_string(root().join("assets/text/sotu/eval/2021_joseph_r_biden_d.txt"))
            .unwrap();
    let got = tk.encode(&text).unwrap();
    assert_eq!(got[..1024], ids(&fixture()["token_ids"])[..]);
}

struct Reference {
    top_idx: Vec<u32>,
    top_val: Vec<f32>,
    full: Vec<f32>,
    full_rows: Vec<usize>,
    top: usize,
}

fn reference() -> Reference {
    let fx = fixture();
    let top = fx["top"].as_u64().unwrap() as usize;
    let n = fx["n_tokens"].as_u64().unwrap() as usize;
    let vocab = fx["vocab"].as_u64().unwrap() as usize;
    let full_rows: Vec<usize> = ids(&fx["full_rows"])
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let bin = std::fs::read(root().join("crates/evocomp-model/tests/fixtures/smollm2_logits.bin"))
        .unwrap();
    let words: Vec<[u8; 4]> = bin
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    assert_eq!(
        words.len(),
        n * top * 2 + full_rows.len() * vocab,
        "fixture size"
    );
    let top_idx = words[..n * top]
        .iter()
        .map(|b| u32::from_le_bytes(*b))
        .collect();
    let top_val = words[n * top..2 * n * top]
        .iter()
        .map(|b| f32::from_le_bytes(*b))
        .collect();
    let full = words[2 * n * top..]
        .iter()
        .map(|b| f32::from_le_bytes(*b))
        .collect();
    Reference {
        top_idx,
        top_val,
        full,
        full_rows,
        top,
    }
}

#[test]
fn logits_and_perplexity_agree_with_pytorch() {
    let m = model();
    let fx = fixture();
    let tokens = ids(&fx["token_ids"]);
    let context = fx["context"].as_u64().unwrap() as usize;
    let vocab = m.config().vocab;
    let device = Device::flex();
    let net = LlamaModel::new(m.config(), m.weights().unwrap(), &device);
    let windows: Vec<Vec<u32>> = tokens.chunks(context).map(<[u32]>::to_vec).collect();
    let logits: Tensor<3> = net.forward(&windows).unwrap();
    let logits: Vec<f32> = logits.into_data().try_into_vec().unwrap();
    assert_eq!(logits.len(), tokens.len() * vocab);

    let r = reference();
    let want_argmax = ids(&fx["argmax"]);
    let (mut max_diff, mut same_argmax, mut nll) = (0.0f32, 0usize, 0.0f64);
    let mut predictions = 0usize;
    for (pos, row) in logits.chunks_exact(vocab).enumerate() {
        // The reference's 32 largest logits, position by position.
        for j in 0..r.top {
            let id = r.top_idx[pos * r.top + j] as usize;
            max_diff = max_diff.max((row[id] - r.top_val[pos * r.top + j]).abs());
        }
        let argmax = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        same_argmax += usize::from(argmax as u32 == want_argmax[pos]);
        if pos % context != context - 1 {
            let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
            nll += lse - row[tokens[pos + 1] as usize] as f64;
            predictions += 1;
        }
    }
    // Every logit of a few whole rows.
    for (i, &pos) in r.full_rows.iter().enumerate() {
        let want = &r.full[i * vocab..(i + 1) * vocab];
        let got = &logits[pos * vocab..(pos + 1) * vocab];
        for (a, b) in got.iter().zip(want) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    let ppl = (nll / predictions as f64).exp();
    let want_ppl = fx["perplexity"].as_f64().unwrap();
    let agree = same_argmax as f64 / tokens.len() as f64;
    eprintln!(
        "max |logit diff| {max_diff:.2e}, argmax agreement {agree:.4}, perplexity {ppl:.4} vs {want_ppl:.4}"
    );
    assert!(max_diff <= 1e-2, "max abs logit difference {max_diff}");
    assert!(agree >= 0.999, "argmax agreement {agree}");
    assert!(
        ((ppl - want_ppl) / want_ppl).abs() < 0.005,
        "perplexity {ppl} vs {want_ppl}"
    );
}

/// The crate's folder, read when the test runs (cargo sets it): a test
/// binary built from another checkout sharing the target folder (CI's
/// clone) must not point at that checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
