//! `evocomp kld`: how far a compressed model is from its base, as llama.cpp
//! users read it (`llama-perplexity --kl-divergence`): both perplexities with
//! their standard errors, the KL divergence per prediction (mean ± standard
//! error, median, 90th and 99th percentiles, maximum), how often the two
//! models' most likely tokens agree, and the change in the probability of
//! the true next token. The other model is a file or folder, or a study's
//! configuration; the base's log-probabilities can be saved once and reused.

use crate::compare::weight_database;
use crate::device;
use crate::export::{ExportRequest, choose};
use crate::score::{ScoreOptions, Windows, load, load_windows};
use anyhow::{Context, Result, bail};
use evocomp_db::Applier;
use evocomp_eval::{Base, BaseLogits, EvalOptions, KldSummary, token_progress, token_scores};
use evocomp_study::StudyDir;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The model compared with the base.
#[derive(Debug, Clone, PartialEq)]
pub enum Other {
    /// A `.gguf` file or an HF folder (an export).
    Model(PathBuf),
    /// A study's configuration (its model with the genome applied); `budget`
    /// picks it in a sweep or front, as `export --budget` does.
    Study {
        dir: PathBuf,
        budget: Option<String>,
    },
}

/// What to compare, on what.
#[derive(Debug, Clone)]
pub struct KldRequest {
    /// The base model; may be left out when `base_logits` is given.
    pub base: Option<PathBuf>,
    pub other: Other,
    pub windows: Windows,
    pub run: ScoreOptions,
    /// Write the base's log-probabilities here (f32: predictions × vocabulary × 4 bytes).
    pub save_base: Option<PathBuf>,
    /// Read the base's log-probabilities from here instead of running it.
    pub base_logits: Option<PathBuf>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct KldReport {
    /// The base, as given (or as the saved file names it).
    pub base: String,
    pub other: String,
    pub text: PathBuf,
    pub windows: usize,
    pub context: usize,
    #[serde(flatten)]
    pub summary: KldSummary,
    /// The device, as a line.
    pub backend: String,
}

/// Compare `req.other` with the base on every prediction of the windows.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// use evocomp::kld::{KldRequest, Other, kld};
/// use evocomp::score::{ScoreOptions, Windows};
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let req = KldRequest {
///     base: Some(project.model.clone()),
///     other: Other::Model(project.model.clone()),
///     windows: Windows { text: project.text.clone(), tokens: 128, context: 64 },
///     run: ScoreOptions { backend: evocomp::BackendChoice::Cpu, ..Default::default() },
///     save_base: None,
///     base_logits: None,
/// };
/// let r = kld(&req)?; // a model against itself
/// assert!(r.summary.kld.mean.abs() < 1e-6 && r.summary.same_top.mean == 1.0);
/// # Ok(())
/// # }
/// ```
pub fn kld(req: &KldRequest) -> Result<KldReport> {
    if req.base.is_none() && req.base_logits.is_none() {
        bail!("give the base model (--base), or its saved log-probabilities (--base-logits)");
    }
    if req.save_base.is_some() && req.base_logits.is_some() {
        bail!(
            "--save-base writes the base's log-probabilities and --base-logits reads them: give one"
        );
    }
    if req.save_base.is_some() && req.base.is_none() {
        bail!("--save-base needs the base model (--base)");
    }
    let chosen = device::choose(req.run.backend)?;
    // The other model: a file, or a study's model with its genome applied.
    let (other_loaded, other_path, genome, other_name) = match &req.other {
        Other::Model(p) => (load(p)?, p.clone(), None, p.display().to_string()),
        Other::Study { dir, budget } => {
            let mut er = ExportRequest::new(dir, dir);
            er.budget = budget.clone();
            let (folder, s, m) = choose(&er)?;
            let exp = StudyDir::new(&folder).experiment()?;
            let loaded = load(&exp.model)?;
            let db = weight_database(&folder, &exp, &loaded.info.fingerprint()?)?;
            let name = format!(
                "{} ({}, cost {} {})",
                folder.display(),
                s.strategy,
                m.cost,
                s.cost_unit
            );
            (loaded, exp.model.clone(), Some((db, m.genome)), name)
        }
    };
    let base_loaded = match &req.base {
        Some(p) => Some(load(p)?),
        None => None,
    };
    // Tokens: the base's tokenizer when there is a base model, else the other's.
    let tok_model = base_loaded.as_ref().unwrap_or(&other_loaded);
    let w = load_windows(
        tok_model,
        &req.windows.text,
        req.windows.tokens,
        req.windows.context,
    )
    .with_context(|| format!("text {}", req.windows.text.display()))?;
    let batch = w.len().min(req.run.batch_size.max(1));
    device::check_fits(
        &chosen,
        &other_path,
        other_loaded.config(),
        batch * req.windows.context,
    )?;
    let mut other = other_loaded.to_device(&chosen.device, req.run.dtype)?;
    if let Some((db, genome)) = &genome {
        Applier::new(db).apply(db, &mut other, genome)?;
    }
    let vocab = other_loaded.config().vocab;
    let opts = EvalOptions {
        batch_size: req.run.batch_size.max(1),
        ..Default::default()
    };
    let passes = if req.base_logits.is_some() { 1 } else { 2 };
    let bar = token_progress(
        (w.iter().map(Vec::len).sum::<usize>() * passes) as u64,
        "kld",
    );
    let (scores, base_name) = match (&req.base_logits, &base_loaded) {
        (Some(file), _) => {
            let saved = BaseLogits::open(file, &w, vocab)?;
            let name = format!("{} (saved in {})", saved.model(), file.display());
            (
                token_scores(Base::Saved(&saved), &other, &w, &opts, &bar)
                    .with_context(|| format!("scoring {other_name}"))?,
                name,
            )
        }
        (None, Some(b)) => {
            let base_path = req.base.as_ref().expect("checked");
            device::check_fits(&chosen, base_path, b.config(), batch * req.windows.context)?;
            let bm = b.to_device(&chosen.device, req.run.dtype)?;
            let name = base_path.display().to_string();
            let save = req.save_base.as_deref().map(|p| (p, name.as_str()));
            (
                token_scores(Base::Model { model: &bm, save }, &other, &w, &opts, &bar)
                    .with_context(|| format!("scoring {other_name} against {name}"))?,
                name.clone(),
            )
        }
        (None, None) => unreachable!("checked above"),
    };
    bar.finish_and_clear();
    Ok(KldReport {
        base: base_name,
        other: other_name,
        text: req.windows.text.clone(),
        windows: w.len(),
        context: req.windows.context,
        summary: scores.summary(req.windows.context - 1),
        backend: chosen.description,
    })
}

impl KldReport {
    /// The report as text, in llama-perplexity's terms.
    pub fn text(&self) -> String {
        let s = &self.summary;
        let mut o = String::new();
        let _ = writeln!(o, "base:  {}", self.base);
        let _ = writeln!(o, "model: {}", self.other);
        let _ = writeln!(
            o,
            "{} predictions in {} windows of {} tokens from {} ({})",
            s.predictions,
            self.windows,
            self.context,
            self.text.display(),
            self.backend
        );
        let pm = |e: evocomp_eval::Estimate, d: usize| {
            format!("{:.d$} ± {:.d$}", e.mean, e.standard_error, d = d)
        };
        let pct = |e: evocomp_eval::Estimate| {
            format!("{:.3} ± {:.3} %", 100.0 * e.mean, 100.0 * e.standard_error)
        };
        let _ = writeln!(o, "perplexity (base)      {}", pm(s.base_perplexity, 4));
        let _ = writeln!(o, "perplexity (model)     {}", pm(s.perplexity, 4));
        let _ = writeln!(o, "mean ln(PPL ratio)     {}", pm(s.ln_ppl_ratio, 6));
        let _ = writeln!(
            o,
            "mean KLD               {} (± {:.6} over windows)",
            pm(s.kld, 6),
            s.kld_window_standard_error
        );
        let _ = writeln!(
            o,
            "KLD median / 90% / 99% / max   {:.6} / {:.6} / {:.6} / {:.6}",
            s.kld_median, s.kld_p90, s.kld_p99, s.kld_max
        );
        let _ = writeln!(o, "same top token         {}", pct(s.same_top));
        let _ = writeln!(
            o,
            "mean Δp (true token)   {}, RMS {:.3} %",
            pct(s.delta_p),
            100.0 * s.delta_p_rms
        );
        o
    }
}
