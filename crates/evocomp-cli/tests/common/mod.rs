//! Helpers shared by the end-to-end test files: the binary, a small random
//! model with a text and database configs, experiment configs, and reading
//! a study's summary and journal back.
#![allow(dead_code)]

use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_store::Trial;
use evocomp_study::{StudyDir, View};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_evocomp"));
    c.env("RUST_LOG", "warn");
    c
}

pub fn evocomp(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A 4-layer random model, a text, and database configs (sparsity grid,
/// blocks, KV budgets) in `dir`; paths in configs are relative to `dir`.
pub fn setup(dir: &Path) {
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    write_gguf(&cfg, &random_weights(&cfg, 5), &dir.join("tiny.gguf")).unwrap();
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    ];
    let body: Vec<&str> = (0..1500)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect();
    std::fs::write(dir.join("text.txt"), body.join(" ")).unwrap();
    let db = |name: &str, compression: &str| {
        std::fs::write(
            dir.join(format!("{name}.ron")),
            format!(
                r#"DatabaseSpec(
    model: "tiny.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: {compression},
)"#
            ),
        )
        .unwrap();
    };
    db(
        "grid",
        "Sparsity(method: SparseGpt, target: 0.5, step_fraction: 0.1, max_levels: 2)",
    );
    db("blocks", "Depth(unit: Block)");
    db("subblocks", "Depth(unit: SubBlock)");
    db(
        "kv",
        "KvBudget(budgets: [64, 32, 16, 8], eviction: Streaming(sinks: 2), chunk: 16)",
    );
}

pub fn experiment(dir: &Path, name: &str, db: &str, budget: &str, strategy: &str) -> PathBuf {
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(
        &p,
        format!(
            r#"Experiment(
    name: "{name}",
    model: "tiny.gguf",
    database: "{db}.ron",
    data: (calibration: "text.txt", evaluation: "text.txt", held_out_tokens: 256, held_out_context: 64),
    budget: {budget},
    strategy: {strategy},
    fitness: (metric: Kl, teacher: TopK(16), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 11,
)"#
        ),
    )
    .unwrap();
    p
}

pub const EVO: &str = "EvoPress(preset: Sparsity, generations: Some(40), offspring: Some(8), stages: Some([(2, 64), (1, 128)]))";

pub fn summary(dir: &Path, study: &str) -> serde_json::Value {
    let out = ok(&evocomp(dir, &["best", study, "--json"]));
    serde_json::from_str(&out).unwrap()
}

pub fn journal(dir: &Path) -> Vec<Trial> {
    match StudyDir::new(dir).view().unwrap() {
        View::Store(s) => s.store().trials().unwrap(),
        View::Running { pid, .. } => panic!("{} is held by {pid}", dir.display()),
    }
}

/// (sample, genome) of every evaluation that was computed, not served from a cache.
pub fn computed(trials: &[Trial]) -> Vec<(String, Vec<i64>)> {
    trials
        .iter()
        .filter(|t| !t.cached)
        .map(|t| (t.sample.clone(), t.genome.clone()))
        .collect()
}

/// Copy a folder (replacing `to`).
pub fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let q = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &q);
        } else {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

/// The step a running study's status.json reports (0 before there is one).
pub fn study_step(study: &Path) -> u64 {
    std::fs::read(study.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["step"].as_u64())
        .unwrap_or(0)
}
