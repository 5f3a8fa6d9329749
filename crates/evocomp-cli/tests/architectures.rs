//! Every compression kind on every architecture: tiny random Gemma 3 (a
//! sliding window shorter than the held-out windows), Qwen 2 (q/k/v biases)
//! and Qwen 3 (q/k norms) models get a sparsity, a quantization, a depth and
//! a KV database, a study on each, and an export whose perplexity is the one
//! the study measured.

use evocomp_model::testing::{random_weights, tiny_config, tiny_gemma3_config, write_gguf};
use evocomp_model::{Family, LlamaConfig};

mod common;
use common::{evocomp, ok};

fn number_after(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.split(key).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key:?} in {text}"))
        .parse()
        .unwrap()
}

fn run_all(cfg: &LlamaConfig) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_gguf(cfg, &random_weights(cfg, 5), &d.join("m.gguf")).unwrap();
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ];
    let body: Vec<&str> = (0..1500)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect();
    std::fs::write(d.join("text.txt"), body.join(" ")).unwrap();
    let kinds = [
        (
            "grid",
            "Sparsity(method: SparseGpt, target: 0.5, step_fraction: 0.1, max_levels: 2)",
            "UniformLevel(1)",
            64,
        ),
        (
            "quant",
            "Quantization(method: Gptq, bits: [2, 3, 4], group_size: 16)",
            "UniformLevel(0)",
            64,
        ),
        ("blocks", "Depth(unit: Block)", "Dropped(1)", 64),
        (
            "kv",
            "KvBudget(budgets: [32, 16, 8], eviction: Streaming(sinks: 2), chunk: 8)",
            "UniformLevel(0)",
            32,
        ),
    ];
    for (name, compression, budget, context) in kinds {
        std::fs::write(
            d.join(format!("{name}.ron")),
            format!(
                r#"DatabaseSpec(
    model: "m.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: {compression},
)"#
            ),
        )
        .unwrap();
        let strategy = if name == "blocks" {
            "ShortGpt"
        } else {
            "Uniform"
        };
        std::fs::write(
            d.join(format!("s-{name}.ron")),
            format!(
                r#"Experiment(
    name: "s-{name}",
    model: "m.gguf",
    database: "{name}.ron",
    data: (calibration: "text.txt", evaluation: "text.txt", held_out_tokens: 256, held_out_context: {context}),
    budget: {budget},
    strategy: {strategy},
    fitness: (metric: Kl, teacher: TopK(16), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 3,
)"#
            ),
        )
        .unwrap();
        let out = ok(&evocomp(
            d,
            &["run", &format!("s-{name}.ron"), "--no-shared-cache"],
        ));
        let study_ppl = number_after(&out, "perplexity");
        assert!(study_ppl.is_finite() && study_ppl > 1.0, "{name}: {out}");
        if name == "kv" {
            continue; // a runtime policy: nothing to export into weights
        }
        let export = format!("x-{name}");
        ok(&evocomp(
            d,
            &["export", &format!("results/s-{name}"), "--out", &export],
        ));
        let info = ok(&evocomp(d, &["inspect", "--model", &export]));
        assert!(
            info.contains(&format!("architecture: {}", cfg.family.name())),
            "{info}"
        );
        let p = ok(&evocomp(
            d,
            &[
                "perplexity",
                "--model",
                &export,
                "--text",
                "text.txt",
                "--tokens",
                "256",
                "--context",
                "64",
                "--backend",
                "cpu",
            ],
        ));
        let got = number_after(&p, "perplexity:");
        eprintln!("{:?} {name}: study {study_ppl}, export {got}", cfg.family);
        assert!(
            (got - study_ppl).abs() / study_ppl < 1e-3,
            "{:?} {name}: exported {got} vs study {study_ppl}",
            cfg.family
        );
    }
}

#[test]
fn gemma3_every_compression_kind_and_export() {
    // A window of 48: the 64-token held-out windows are masked, the 32-token
    // KV windows are within it.
    // (A gemma3 GGUF makes every sixth block global: all four are sliding.)
    let mut cfg = tiny_gemma3_config(48);
    cfg.n_layers = 4;
    cfg.layer_types = vec![evocomp_model::AttentionKind::Sliding; 4];
    run_all(&cfg);
}

#[test]
fn qwen2_and_qwen3_every_compression_kind_and_export() {
    for family in [Family::Qwen2, Family::Qwen3] {
        let mut cfg = tiny_config();
        cfg.n_layers = 4;
        cfg.family = family;
        cfg.qkv_bias = family == Family::Qwen2;
        cfg.qk_norm = family == Family::Qwen3;
        run_all(&cfg);
    }
}
