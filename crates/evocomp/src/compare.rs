//! Held-out comparisons that say how sure they are: several studies' chosen
//! configurations scored on the same windows of one or more texts (genres),
//! full-vocabulary KL to the uncompressed model and perplexity per window,
//! and each configuration's difference from the first one with its paired
//! bootstrap interval (win, loss or tie).

use crate::device;
use crate::export::{ExportRequest, choose};
use crate::score::{ScoreOptions, load, load_windows};
use anyhow::{Context, Result, bail};
use evocomp_db::{Applier, Database};
use evocomp_eval::{EvalOptions, WindowScore, standard_error, token_progress, window_scores};
use evocomp_report::stats::{Difference, Verdict, paired_bootstrap};
use evocomp_study::StudyDir;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The database of the study in `folder`, checked to be its model's
/// (`fingerprint`) and to hold weights: a KV-cache study's configuration is
/// a runtime policy, which `compare` and `kld` cannot score as weights.
pub(crate) fn weight_database(
    folder: &std::path::Path,
    exp: &evocomp_config::Experiment,
    fingerprint: &str,
) -> Result<Database> {
    let db = Database::open(&exp.database)
        .with_context(|| format!("{}: its database", folder.display()))?;
    db.check_model(fingerprint)?;
    if db.is_kv() {
        bail!(
            "{}: a KV-cache study's configuration is a runtime policy; only weight configurations are scored",
            folder.display()
        );
    }
    Ok(db)
}

/// What to compare, on what.
#[derive(Debug, Clone)]
pub struct CompareRequest {
    /// Study or sweep folders, each with the budget that picks its
    /// configuration where it holds several (as `export --budget`). The
    /// first is the reference the others are compared with.
    pub studies: Vec<(PathBuf, Option<String>)>,
    /// Named texts (a file or a folder of `.txt` files), e.g. one per genre.
    pub texts: Vec<(String, PathBuf)>,
    /// Tokens scored per text: the first N, in windows of `context`.
    pub tokens: usize,
    pub context: usize,
    pub run: ScoreOptions,
    /// Bootstrap resamples (the interval is 95%).
    pub resamples: usize,
    pub seed: u64,
}

impl CompareRequest {
    pub fn new(studies: Vec<(PathBuf, Option<String>)>, texts: Vec<(String, PathBuf)>) -> Self {
        Self {
            studies,
            texts,
            tokens: 16384,
            context: 512,
            run: ScoreOptions::default(),
            resamples: 10_000,
            seed: 0,
        }
    }
}

/// One configuration compared.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// `<study name> (<strategy>)`.
    pub label: String,
    pub study: PathBuf,
    pub strategy: String,
    pub cost: u64,
    pub cost_unit: String,
    pub genome: Vec<i64>,
}

/// A configuration's numbers on one text (or all of them pooled).
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub kl: f64,
    /// The standard error of the mean KL over windows.
    pub kl_se: f64,
    pub perplexity: f64,
    pub top1_agree: f64,
    /// KL minus the reference's, with its 95% interval (none for the reference).
    pub kl_difference: Option<Interval>,
    pub verdict: Option<String>,
}

/// A difference and its bootstrap interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl From<Difference> for Interval {
    fn from(d: Difference) -> Self {
        Self {
            mean: d.mean,
            lo: d.lo,
            hi: d.hi,
        }
    }
}

/// One text, or the pooled windows of all.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub text: String,
    pub windows: usize,
    /// The uncompressed model's perplexity on these windows.
    pub base_perplexity: f64,
    /// Per entry, in order.
    pub lines: Vec<Line>,
}

/// The comparison: entries, one table per text and the pooled table, and
/// every window's scores (`scores[text][entry][window]`).
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub entries: Vec<Entry>,
    pub tables: Vec<Table>,
    pub pooled: Table,
    pub tokens_per_text: usize,
    pub context: usize,
    pub resamples: usize,
    pub scores: Vec<Vec<Vec<WindowScore>>>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Better => "better",
        Verdict::Worse => "worse",
        Verdict::Tie => "tie",
    }
}

/// The table of `scores[entry][window]`.
fn table(text: &str, scores: &[Vec<WindowScore>], resamples: usize, seed: u64) -> Table {
    let kl = |e: usize| scores[e].iter().map(|w| w.kl).collect::<Vec<f64>>();
    let reference = kl(0);
    let base_nll = mean(&scores[0].iter().map(|w| w.teacher_nll).collect::<Vec<_>>());
    Table {
        text: text.to_string(),
        windows: scores[0].len(),
        base_perplexity: base_nll.exp(),
        lines: (0..scores.len())
            .map(|e| {
                let k = kl(e);
                let d = (e > 0)
                    .then(|| paired_bootstrap(&k, &reference, resamples, 0.95, seed))
                    .flatten();
                Line {
                    kl: mean(&k),
                    kl_se: standard_error(&k),
                    perplexity: mean(&scores[e].iter().map(|w| w.nll).collect::<Vec<_>>()).exp(),
                    top1_agree: mean(&scores[e].iter().map(|w| w.top1_agree).collect::<Vec<_>>()),
                    kl_difference: d.map(Interval::from),
                    verdict: d.map(|d| verdict_word(d.verdict()).to_string()),
                }
            })
            .collect(),
    }
}

/// Score every study's configuration on every text's windows, beside the
/// uncompressed model (all held in memory at once: one model per entry plus
/// the teacher), and compare each with the first. A progress bar on stderr.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// use std::sync::{Arc, atomic::AtomicBool};
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let stop = Arc::new(AtomicBool::new(false));
/// let opts = evocomp::study::StudyOptions::default();
/// evocomp::study::run(&project.study, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
/// let study = dir.path().join("results/tiny");
/// let mut req = evocomp::compare::CompareRequest::new(
///     vec![(study.clone(), None), (study, None)],
///     vec![("text".into(), project.text.clone())],
/// );
/// (req.tokens, req.context, req.resamples) = (256, 64, 200);
/// req.run.backend = evocomp::BackendChoice::Cpu;
/// let c = evocomp::compare::compare(&req)?;
/// // A configuration against itself: no difference, a tie.
/// let line = &c.pooled.lines[1];
/// assert_eq!(line.kl_difference.unwrap().mean, 0.0);
/// assert_eq!(line.verdict.as_deref(), Some("tie"));
/// assert!(c.pooled.lines[0].kl > 0.0); // one block dropped
/// # Ok(())
/// # }
/// ```
pub fn compare(req: &CompareRequest) -> Result<Compared> {
    if req.studies.is_empty() || req.texts.is_empty() {
        bail!("compare needs at least one study and one text");
    }
    let mut entries = Vec::new();
    let mut picks = Vec::new();
    for (dir, budget) in &req.studies {
        let mut er = ExportRequest::new(dir, dir);
        er.budget = budget.clone();
        let (folder, s, m) = choose(&er)?;
        let exp = StudyDir::new(&folder).experiment()?;
        entries.push(Entry {
            label: format!("{} ({})", s.name, s.strategy),
            study: folder,
            strategy: s.strategy.clone(),
            cost: m.cost,
            cost_unit: s.cost_unit.clone(),
            genome: m.genome.clone(),
        });
        picks.push(exp);
    }
    let model = &picks[0].model;
    let loaded = load(model)?;
    let fingerprint = loaded.info.fingerprint()?;
    let chosen = device::choose(req.run.backend)?;
    device::check_fits(
        &chosen,
        model,
        loaded.config(),
        req.run.batch_size.max(1) * req.context,
    )?;
    let teacher = loaded.to_device(&chosen.device, req.run.dtype)?;
    let mut students = Vec::new();
    for (e, exp) in entries.iter().zip(&picks) {
        if exp.model != *model {
            bail!(
                "{}: its model is {}, the first study's {}: compare configurations of one model",
                e.study.display(),
                exp.model.display(),
                model.display()
            );
        }
        let db = weight_database(&e.study, exp, &fingerprint)?;
        let mut m = loaded.to_device(&chosen.device, req.run.dtype)?;
        Applier::new(&db).apply(&db, &mut m, &e.genome)?;
        students.push(m);
    }
    let refs: Vec<&evocomp_model::LlamaModel> = students.iter().collect();
    let opts = EvalOptions {
        batch_size: req.run.batch_size.max(1),
        ..Default::default()
    };
    let bar = token_progress(
        (req.tokens * req.texts.len() * (entries.len() + 1)) as u64,
        "compare",
    );
    let mut scores = Vec::new();
    for (name, text) in &req.texts {
        let w = load_windows(&loaded, text, req.tokens, req.context)
            .with_context(|| format!("text {name}"))?;
        scores.push(window_scores(&teacher, &refs, &w, &opts, &bar)?);
    }
    bar.finish_and_clear();
    let tables: Vec<Table> = req
        .texts
        .iter()
        .zip(&scores)
        .map(|((name, _), s)| table(name, s, req.resamples, req.seed))
        .collect();
    let pooled_scores: Vec<Vec<WindowScore>> = (0..entries.len())
        .map(|e| scores.iter().flat_map(|s| s[e].iter().copied()).collect())
        .collect();
    let pooled = table("pooled", &pooled_scores, req.resamples, req.seed);
    Ok(Compared {
        entries,
        tables,
        pooled,
        tokens_per_text: req.tokens,
        context: req.context,
        resamples: req.resamples,
        scores,
    })
}

impl Compared {
    /// Markdown: one table per text and the pooled one: KL ± its standard
    /// error (the lowest in **bold**: KL is the objective), perplexity, and
    /// the difference from the first entry with its 95% interval and verdict.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Held-out: the first {} tokens of each text in windows of {}; KL is full-vocabulary \
             KL to the uncompressed model (nats per token); differences are KL minus the first \
             row's, with a paired bootstrap 95% interval over windows ({} resamples).\n",
            self.tokens_per_text, self.context, self.resamples
        );
        for t in self.tables.iter().chain(std::iter::once(&self.pooled)) {
            let _ = writeln!(
                out,
                "**{}** ({} windows; uncompressed perplexity {:.2})\n",
                t.text, t.windows, t.base_perplexity
            );
            let _ = writeln!(
                out,
                "| configuration | cost | KL ± s.e. | perplexity | top-1 agree | ΔKL vs first [95%] | verdict |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|");
            let best = (0..t.lines.len())
                .min_by(|&a, &b| t.lines[a].kl.total_cmp(&t.lines[b].kl))
                .unwrap_or(0);
            for (e, l) in self.entries.iter().zip(&t.lines) {
                let kl = format!("{:.4} ± {:.4}", l.kl, l.kl_se);
                let kl = if std::ptr::eq(l, &t.lines[best]) {
                    format!("**{kl}**")
                } else {
                    kl
                };
                let diff = l.kl_difference.map_or("–".to_string(), |d| {
                    format!("{:+.4} [{:+.4}, {:+.4}]", d.mean, d.lo, d.hi)
                });
                let _ = writeln!(
                    out,
                    "| {} | {} {} | {} | {:.2} | {:.3} | {} | {} |",
                    e.label,
                    e.cost,
                    e.cost_unit,
                    kl,
                    l.perplexity,
                    l.top1_agree,
                    diff,
                    l.verdict.as_deref().unwrap_or("reference")
                );
            }
            out.push('\n');
        }
        out
    }
}
