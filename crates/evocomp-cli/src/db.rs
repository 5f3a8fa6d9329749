//! `evocomp db ...`: build, describe and check a variant database.

use crate::backend::{self, BackendChoice};
use anyhow::{Context, Result};
use clap::Subcommand;
use evocomp_db::Database;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Build every (unit, level) variant described by CONFIG.ron; a killed
    /// build continues where it stopped, a finished one does nothing.
    Build {
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
    /// Print a database's units, levels and costs.
    Info {
        dir: PathBuf,
        /// Every level of every unit, with its reconstruction error.
        #[arg(long)]
        levels: bool,
    },
    /// Check every variant file against the manifest's sha256.
    Verify { dir: PathBuf },
    /// Write the variants in EvoPress's layout for PyTorch scripts:
    /// OUT/<HF module>/<level>.safetensors (one f32 tensor `weight`) and
    /// OUT/index.json (units, modules, levels, costs).
    Dump {
        dir: PathBuf,
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
        dir: PathBuf,
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
    /// Perplexity of the model with a genome from the database applied, and
    /// how long applying takes.
    Eval {
        dir: PathBuf,
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
        DbCommand::Build { config, backend } => build(config, backend),
        DbCommand::Info { dir, levels } => info(dir, levels),
        DbCommand::Verify { dir } => {
            let db = Database::open(&dir)?;
            db.verify()?;
            println!(
                "ok: {} units, every file matches its sha256",
                db.manifest.units.len()
            );
            Ok(())
        }
        DbCommand::Dump { dir, out, levels } => {
            let db = Database::open(&dir)?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let files = evocomp_db::dump_levels(&db, &out, levels.as_deref(), progress)
                .with_context(|| format!("dumping {} to {}", dir.display(), out.display()))?;
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
        } => eval(dir, model, windows, level, genome),
        DbCommand::Imatrix {
            dir,
            model,
            out,
            backend,
        } => imatrix(dir, model, out, backend),
    }
}

fn imatrix(dir: PathBuf, model: PathBuf, out: PathBuf, backend: BackendChoice) -> Result<()> {
    let db = Database::open(&dir)?;
    if !matches!(
        db.manifest.compression,
        evocomp_db::Compression::GgufTypes { imatrix: true, .. }
    ) {
        anyhow::bail!(
            "{}: not a GGUF-types database built with an importance matrix (imatrix: true)",
            dir.display()
        );
    }
    let loaded = crate::load(&model)?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let chosen = backend::choose(backend)?;
    eprintln!("backend: {}", chosen.description);
    let im = evocomp_db::importance_matrix(&dir, &loaded, &chosen.device)?;
    evocomp_db::write_imatrix(&im, &out)?;
    println!(
        "wrote {}: {} tensors, {} calibration tokens",
        out.display(),
        im.entries.len(),
        im.chunks * im.chunk_size
    );
    Ok(())
}

fn eval(
    dir: PathBuf,
    model: PathBuf,
    windows: crate::WindowArgs,
    level: i64,
    genome: Option<Vec<i64>>,
) -> Result<()> {
    let crate::WindowArgs {
        text,
        tokens,
        context,
        backend,
        dtype,
    } = windows;
    use evocomp_eval::{EvalOptions, perplexity, token_progress};
    use std::time::Instant;
    let db = Database::open(&dir)?;
    let loaded = crate::load(&model)?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let genome = genome.unwrap_or_else(|| vec![level; db.manifest.units.len()]);
    db.manifest.check_genome(&genome)?;
    let windows = crate::load_windows(&loaded, &text, tokens, context)?;
    let chosen = backend::choose(backend)?;
    eprintln!("backend: {}", chosen.description);
    let opts = EvalOptions {
        concurrent_batches: backend::concurrent_batches(&chosen, crate::cores(), None),
        ..Default::default()
    };
    let per_batch = windows.len().min(opts.batch_size) * context;
    backend::check_fits(&chosen, &model, loaded.config(), per_batch)?;
    let mut m = loaded.to_device(&chosen.device, dtype)?;
    let mut ap = evocomp_db::Applier::new(&db);
    let t0 = Instant::now();
    let all = ap.apply(&db, &mut m, &genome)?;
    chosen.device.sync().ok();
    let apply_all = t0.elapsed().as_secs_f64();
    let bar = token_progress(tokens as u64, "perplexity");
    let t1 = Instant::now();
    let r = perplexity(&m, &windows, &opts, &bar)?;
    bar.finish_and_clear();
    let eval_s = t1.elapsed().as_secs_f64();
    // A child that differs in two units, as in one mutation step.
    let mut child = genome.clone();
    let mut switched = 0;
    for (i, u) in db.manifest.units.iter().enumerate() {
        if switched == 2 {
            break;
        }
        if let Some(other) = u.levels.iter().map(|l| l.level).find(|&l| l != genome[i]) {
            child[i] = other;
            switched += 1;
        }
    }
    let t2 = Instant::now();
    let two = ap.apply(&db, &mut m, &child)?;
    chosen.device.sync().ok();
    let apply_two = t2.elapsed().as_secs_f64();
    println!(
        "cost: {} {}",
        db.manifest.cost(&genome)?,
        db.manifest.cost_unit
    );
    println!(
        "apply: {} units in {:.3} s; a child differing in {} units: {:.1} ms",
        all.changed,
        apply_all,
        two.changed,
        apply_two * 1e3
    );
    println!(
        "evaluation: {} predictions in {:.2} s",
        r.predictions, eval_s
    );
    println!("perplexity: {:.4}", r.perplexity);
    Ok(())
}

fn build(config: PathBuf, backend: BackendChoice) -> Result<()> {
    let cfg = evocomp_config::load_database_config(&config)?;
    let loaded = crate::load(&cfg.model)?;
    eprintln!("hashing {}", cfg.model.display());
    let fingerprint = loaded.info.fingerprint()?;
    let chosen = backend::choose(backend)?;
    eprintln!("backend: {}", chosen.description);
    let r = evocomp_engine::build_from_config(&cfg, &loaded, &fingerprint, &chosen.device, true)?;
    println!(
        "database {}: built {} units, {} already built, {:.1} s",
        cfg.output.display(),
        r.built,
        r.skipped,
        r.seconds
    );
    Ok(())
}

fn info(dir: PathBuf, levels: bool) -> Result<()> {
    let m = evocomp_db::Manifest::read(&dir)?.with_context(|| {
        format!(
            "{}: no manifest.json: not an evocomp database",
            dir.display()
        )
    })?;
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
