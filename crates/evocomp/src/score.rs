//! Scoring a model: perplexity on a text, with or without a database's
//! configuration applied.

use crate::device::{self, Chosen};
use anyhow::{Context, Result};
use evocomp_db::Database;
use evocomp_eval::{EvalOptions, perplexity as eval_perplexity, token_progress};
use evocomp_model::{LoadedModel, WeightDtype};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Load a `.gguf` file or an HF folder.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let t0 = Instant::now();
    let m = evocomp_model::load_model(path)?;
    tracing::info!(
        "loaded {} in {:.1} s",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// The first `tokens` tokens of `text` (a file or a folder of `.txt` files),
/// tokenised without special tokens, in windows of `context`.
pub fn load_windows(
    m: &LoadedModel,
    text: &Path,
    tokens: usize,
    context: usize,
) -> Result<Vec<Vec<u32>>> {
    let set = evocomp_engine::token_set(m, text)?;
    Ok(set.windows(tokens, context)?)
}

/// The scored text and how it is cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    /// A text file, or a folder of `.txt` files.
    pub text: PathBuf,
    /// Tokens scored: the first N of the text.
    pub tokens: usize,
    /// Window length C; each window gives C−1 predictions.
    pub context: usize,
}

impl Windows {
    /// The first 1024 tokens of `text` in windows of 512 (the CLI's defaults).
    pub fn new(text: impl Into<PathBuf>) -> Self {
        Self {
            text: text.into(),
            tokens: 1024,
            context: 512,
        }
    }
}

/// How a model is run for scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreOptions {
    pub backend: device::BackendChoice,
    /// The dtype weight matrices are held in on the device (activations and
    /// accumulation stay f32).
    pub dtype: WeightDtype,
    /// Windows per forward pass.
    pub batch_size: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            backend: device::BackendChoice::Auto,
            dtype: WeightDtype::F32,
            batch_size: 2,
        }
    }
}

/// A perplexity and how it was computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub perplexity: f64,
    pub predictions: usize,
    pub windows: usize,
    /// The device, as a line.
    pub backend: String,
    pub seconds: f64,
}

/// The model's perplexity on `windows`, with a progress bar on stderr.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let windows = evocomp::score::Windows {
///     text: project.text.clone(),
///     tokens: 128,
///     context: 64,
/// };
/// let run = evocomp::score::ScoreOptions {
///     backend: evocomp::BackendChoice::Cpu,
///     ..Default::default()
/// };
/// let s = evocomp::score::perplexity(&project.model, &windows, &run)?;
/// assert_eq!((s.windows, s.predictions), (2, 126));
/// # Ok(())
/// # }
/// ```
pub fn perplexity(model: &Path, windows: &Windows, run: &ScoreOptions) -> Result<Scored> {
    let chosen = device::choose(run.backend)?;
    let loaded = load(model)?;
    let w = load_windows(&loaded, &windows.text, windows.tokens, windows.context)?;
    device::check_fits(
        &chosen,
        model,
        loaded.config(),
        w.len().min(run.batch_size.max(1)) * windows.context,
    )?;
    let m = loaded.to_device(&chosen.device, run.dtype)?;
    let (r, seconds) = score(&chosen, &m, &w, windows.tokens, run.batch_size)
        .with_context(|| format!("scoring {}", model.display()))?;
    Ok(Scored {
        perplexity: r.perplexity,
        predictions: r.predictions,
        windows: w.len(),
        backend: chosen.description,
        seconds,
    })
}

fn score(
    chosen: &Chosen,
    m: &evocomp_model::LlamaModel,
    windows: &[Vec<u32>],
    tokens: usize,
    batch_size: usize,
) -> Result<(evocomp_eval::PplResult, f64)> {
    let bar = token_progress(tokens as u64, "perplexity");
    let t0 = Instant::now();
    let opts = EvalOptions {
        batch_size,
        concurrent_batches: device::concurrent_batches(chosen, device::cores(), None),
        ..Default::default()
    };
    let r = eval_perplexity(m, windows, &opts, &bar)?;
    bar.finish_and_clear();
    Ok((r, t0.elapsed().as_secs_f64()))
}

/// Which of a database's configurations to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Configuration {
    /// The same level in every unit.
    Level(i64),
    /// One level per unit, in the manifest's unit order.
    Genome(Vec<i64>),
}

/// [`perplexity`] with a database's configuration applied, and the time
/// applying takes.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedScore {
    pub scored: Scored,
    pub cost: u64,
    pub cost_unit: String,
    /// Units changed by applying the configuration, and the seconds it took.
    pub applied: (usize, f64),
    /// A child differing in two units (one mutation step): units changed
    /// and seconds.
    pub child: (usize, f64),
}

/// The model's perplexity with `config` from the database in `db` applied.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// use evocomp::score::{Configuration, ScoreOptions, Windows, perplexity_with};
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let db = evocomp::database::build(
///     &project.sparsity_database,
///     evocomp::BackendChoice::Cpu,
///     &|_| {},
/// )?;
/// let windows = Windows { text: project.text.clone(), tokens: 128, context: 64 };
/// let run = ScoreOptions { backend: evocomp::BackendChoice::Cpu, ..Default::default() };
/// let dense = perplexity_with(&db.output, &project.model, &Configuration::Level(-2), &windows, &run)?;
/// let sparse = perplexity_with(&db.output, &project.model, &Configuration::Level(2), &windows, &run)?;
/// assert!(sparse.cost < dense.cost); // level 2 keeps fewer weights
/// # Ok(())
/// # }
/// ```
pub fn perplexity_with(
    db: &Path,
    model: &Path,
    config: &Configuration,
    windows: &Windows,
    run: &ScoreOptions,
) -> Result<AppliedScore> {
    let db = Database::open(db)?;
    let loaded = load(model)?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let genome = match config {
        Configuration::Level(l) => vec![*l; db.manifest.units.len()],
        Configuration::Genome(g) => g.clone(),
    };
    db.manifest.check_genome(&genome)?;
    let w = load_windows(&loaded, &windows.text, windows.tokens, windows.context)?;
    let chosen = device::choose(run.backend)?;
    let per_batch = w.len().min(EvalOptions::default().batch_size) * windows.context;
    device::check_fits(&chosen, model, loaded.config(), per_batch)?;
    let mut m = loaded.to_device(&chosen.device, run.dtype)?;
    let mut ap = evocomp_db::Applier::new(&db);
    let t0 = Instant::now();
    let all = ap.apply(&db, &mut m, &genome)?;
    chosen.device.sync().ok();
    let apply_all = t0.elapsed().as_secs_f64();
    let (r, seconds) = score(
        &chosen,
        &m,
        &w,
        windows.tokens,
        EvalOptions::default().batch_size,
    )?;
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
    Ok(AppliedScore {
        scored: Scored {
            perplexity: r.perplexity,
            predictions: r.predictions,
            windows: w.len(),
            backend: chosen.description,
            seconds,
        },
        cost: db.manifest.cost(&genome)?,
        cost_unit: db.manifest.cost_unit.clone(),
        applied: (all.changed, apply_all),
        child: (two.changed, apply_two),
    })
}
