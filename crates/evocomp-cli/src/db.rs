//! `evocomp db ...`: build, describe and check a variant database (its
//! arguments and what it prints; the library does the work).

use anyhow::Result;
use clap::Subcommand;
use evocomp::BackendChoice;
use evocomp::database;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Build every (unit, level) variant described by CONFIG.ron; a killed
    /// build continues where it stopped, a finished one does nothing.
    Build {
        /// The database config (a `DatabaseSpec` RON file).
        config: PathBuf,
        /// auto, wgpu or cpu.
        #[arg(long, default_value = "auto")]
        backend: BackendChoice,
    },
    /// Print a database's units, levels and costs.
    Info {
        /// A database folder (its `output`).
        dir: PathBuf,
        /// Every level of every unit, with its reconstruction error.
        #[arg(long)]
        levels: bool,
        /// Print the manifest (every unit, level, cost and error) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check every variant file against the manifest's sha256.
    Verify {
        /// A database folder.
        dir: PathBuf,
    },
    /// Write the variants in EvoPress's layout for PyTorch scripts:
    /// OUT/<HF module>/<level>.safetensors (one f32 tensor `weight`) and
    /// OUT/index.json (units, modules, levels, costs).
    Dump {
        /// A database folder.
        dir: PathBuf,
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Only these levels (comma-separated); every level by default.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        levels: Option<Vec<i64>>,
    },
    /// A GGUF-types database's importance matrix as the GGUF file
    /// llama-quantize reads (`--imatrix FILE`): Σx² of every block tensor's
    /// inputs over the database's calibration tokens, recomputed on MODEL
    /// exactly as the build computed them, so llama-quantize with this file
    /// writes the database's bytes.
    Imatrix {
        /// A GGUF-types database folder.
        dir: PathBuf,
        /// The database's model (.gguf).
        #[arg(long)]
        model: PathBuf,
        /// The imatrix GGUF file to write.
        #[arg(long)]
        out: PathBuf,
        /// auto, wgpu or cpu.
        #[arg(long, default_value = "auto")]
        backend: BackendChoice,
    },
    /// Perplexity of the model with a genome from the database applied, and
    /// how long applying takes.
    Eval {
        /// A database folder.
        dir: PathBuf,
        /// The database's model (.gguf or HF folder).
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        windows: crate::WindowArgs,
        /// The same level in every unit.
        #[arg(long, default_value_t = 0, conflicts_with = "genome")]
        level: i64,
        /// One level per unit, comma-separated, in the manifest's unit order.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        genome: Option<Vec<i64>>,
    },
}

pub fn run(cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Build { config, backend } => {
            let b = database::build(&config, backend, &crate::note)?;
            println!(
                "database {}: built {} units, {} already built, {:.1} s",
                b.output.display(),
                b.report.built,
                b.report.skipped,
                b.report.seconds
            );
            Ok(())
        }
        DbCommand::Info { dir, levels, json } => {
            if json {
                let m = database::manifest(&dir)?;
                let v = serde_json::json!({"database": dir, "manifest": m});
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            info(dir, levels)
        }
        DbCommand::Verify { dir } => {
            let units = database::verify(&dir)?;
            println!(
                "ok: {units} units, every cost agrees with its unit's shape and setting, every \
                 file matches its sha256"
            );
            Ok(())
        }
        DbCommand::Dump { dir, out, levels } => {
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let files = database::dump(&dir, &out, levels.as_deref(), progress)?;
            println!(
                "wrote {files} weight files and index.json to {}",
                out.display()
            );
            Ok(())
        }
        DbCommand::Eval {
            dir,
            model,
            windows,
            level,
            genome,
        } => {
            use evocomp::score::{Configuration, ScoreOptions, perplexity_with};
            let config = match genome {
                Some(g) => Configuration::Genome(g),
                None => Configuration::Level(level),
            };
            let run = ScoreOptions {
                backend: windows.backend,
                dtype: windows.dtype,
                ..ScoreOptions::default()
            };
            let r = perplexity_with(&dir, &model, &config, &windows.windows(), &run)?;
            eprintln!("backend: {}", r.scored.backend);
            println!("cost: {} {}", r.cost, r.cost_unit);
            println!(
                "apply: {} units in {:.3} s; a child differing in {} units: {:.1} ms",
                r.applied.0,
                r.applied.1,
                r.child.0,
                r.child.1 * 1e3
            );
            println!(
                "evaluation: {} predictions in {:.2} s",
                r.scored.predictions, r.scored.seconds
            );
            println!("perplexity: {:.4}", r.scored.perplexity);
            Ok(())
        }
        DbCommand::Imatrix {
            dir,
            model,
            out,
            backend,
        } => {
            let w = database::imatrix(&dir, &model, &out, backend, &crate::note)?;
            println!(
                "wrote {}: {} tensors, {} calibration tokens",
                out.display(),
                w.tensors,
                w.calibration_tokens
            );
            Ok(())
        }
    }
}

fn info(dir: PathBuf, levels: bool) -> Result<()> {
    let m = database::manifest(&dir)?;
    println!("database: {}", dir.display());
    println!("model: {}", m.model_fingerprint);
    println!(
        "calibration: {}",
        m.calibration_id.as_deref().unwrap_or("none")
    );
    println!("compression: {:?}", m.compression);
    println!("cost unit: {}", m.cost_unit);
    let built = m.units.iter().filter(|u| u.is_built()).count();
    println!(
        "units: {} ({built} built{})",
        m.units.len(),
        if m.complete { ", complete" } else { "" }
    );
    // GGUF types whose level is the source's weights exactly (a Q4_1 file's
    // Q5_1 with an importance matrix): a search would put them everywhere.
    if matches!(
        m.compression,
        evocomp::database::Compression::GgufTypes { .. }
    ) {
        let mut exact: std::collections::BTreeMap<&str, usize> = Default::default();
        for u in &m.units {
            for (l, e) in u.levels.iter().zip(u.errors.iter().flatten()) {
                if *e == 0.0 {
                    *exact.entry(l.label.as_str()).or_default() += 1;
                }
            }
        }
        for (label, n) in exact {
            println!(
                "warning: {label} reproduces the source's weights exactly in {n} of {} units (zero \
                 error): a search will choose it wherever it can, which compares nothing; leave it \
                 out of `types` (for a Q4_1 source, Q5_1), or build from an F16/BF16 file",
                m.units.len()
            );
        }
    }
    for u in &m.units {
        let lv: Vec<i64> = u.levels.iter().map(|l| l.level).collect();
        println!(
            "  {:<10} levels {:?}  cost {}..{}",
            u.name,
            (
                lv.first().copied().unwrap_or(0),
                lv.last().copied().unwrap_or(0)
            ),
            u.levels.iter().map(|l| l.cost).min().unwrap_or(0),
            u.levels.iter().map(|l| l.cost).max().unwrap_or(0)
        );
        if levels {
            for (i, l) in u.levels.iter().enumerate() {
                let mut err = u
                    .errors
                    .as_ref()
                    .map(|e| match u.output_energy.filter(|&x| x > 0.0) {
                        Some(energy) => {
                            format!("  error {:.4e} (normalised {:.4})", e[i], e[i] / energy)
                        }
                        None => format!("  error {:.4e}", e[i]),
                    })
                    .unwrap_or_default();
                if let Some(h) = &u.held_out_errors {
                    err.push_str(&format!("  held-out {:.4}", h[i]));
                }
                println!(
                    "      level {:>3}: {:<16} cost {}{err}",
                    l.level, l.label, l.cost
                );
            }
        }
    }
    Ok(())
}
