//! A tiny project to try the API on (and what the documentation's examples
//! run): a 4-block random Llama, a text, a depth and a sparsity database
//! config and an EvoPress study config, written into a folder. Its numbers mean nothing;
//! it runs in seconds.

use anyhow::{Context, Result};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::{Path, PathBuf};

/// Paths of a [`tiny_project`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyProject {
    /// The model (`tiny.gguf`).
    pub model: PathBuf,
    /// The text (`text.txt`), for calibration and evaluation alike.
    pub text: PathBuf,
    /// A depth database config (`blocks.ron`: whole blocks; it stores
    /// nothing, a dropped block is the variant).
    pub database: PathBuf,
    /// A sparsity database config (`grid.ron`: SparseGPT around 50%, two
    /// levels either side, on 4 calibration windows of 64 tokens).
    pub sparsity_database: PathBuf,
    /// A study config (`study.ron`): EvoPress dropping 1 of 4 blocks, its
    /// results in `results/tiny` under the folder. The configs name every
    /// file by its absolute path.
    pub study: PathBuf,
}

/// Write a tiny project into `dir` (created if missing).
pub fn tiny_project(dir: &Path) -> Result<TinyProject> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Paths in configs are relative to the working folder: written absolute.
    let dir = &std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let at = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    let model = dir.join("tiny.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 5), &model)
        .with_context(|| format!("writing {}", model.display()))?;
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    ];
    let body: Vec<&str> = (0..1500)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect();
    let text = dir.join("text.txt");
    let write = |p: &Path, s: &str| {
        std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))
    };
    write(&text, &body.join(" "))?;
    let database = dir.join("blocks.ron");
    write(
        &database,
        &format!(
            r#"DatabaseSpec(
    model: {model},
    output: {output},
    calibration: (text: {text}, sequences: 4, seq_len: 64, seed: 0),
    compression: Depth(unit: Block),
)"#,
            model = at("tiny.gguf"),
            output = at("db/blocks"),
            text = at("text.txt"),
        ),
    )?;
    let sparsity_database = dir.join("grid.ron");
    write(
        &sparsity_database,
        &format!(
            r#"DatabaseSpec(
    model: {model},
    output: {output},
    calibration: (text: {text}, sequences: 4, seq_len: 64, seed: 0),
    compression: Sparsity(method: SparseGpt, target: 0.5, step_fraction: 0.1, max_levels: 2),
)"#,
            model = at("tiny.gguf"),
            output = at("db/grid"),
            text = at("text.txt"),
        ),
    )?;
    let study = dir.join("study.ron");
    write(
        &study,
        &format!(
            r#"Experiment(
    name: "tiny",
    model: {model},
    database: {database},
    data: (calibration: {text}, evaluation: {text}, held_out_tokens: 256, held_out_context: 64),
    budget: Dropped(1),
    strategy: EvoPress(preset: Depth, generations: Some(3), offspring: Some(4), stages: Some([(1, 64)])),
    fitness: (metric: Kl, teacher: TopK(16), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 11,
    output: {output},
)"#,
            model = at("tiny.gguf"),
            database = at("blocks.ron"),
            text = at("text.txt"),
            output = at("results/tiny"),
        ),
    )?;
    Ok(TinyProject {
        model,
        text,
        database,
        sparsity_database,
        study,
    })
}
