//! Studies: run one (or a sweep) from a config, resume it, and turn finished
//! ones into a report. Reading a study's result is [`evocomp_study`]'s
//! (`StudyDir::summary`, re-exported as [`crate::StudyDir`]).

use crate::device::{self, BackendChoice, Chosen};
use anyhow::{Result, bail};
use evocomp_config::{Experiment, budget_label, load_experiments};
use evocomp_engine::{Outcome, RunOptions, WorkerDevice};
use evocomp_study::{Measured, StudyDir, Summary, SweepDir};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How studies are run (the results do not depend on any of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyOptions {
    /// Overrides the config's backend.
    pub backend: Option<BackendChoice>,
    /// Read and fill the fitness cache shared by the studies of a results folder.
    pub shared_cache: bool,
    /// On the CPU: this many workers, each on an equal share of the cores.
    pub cpu_workers: usize,
    /// Batches each worker evaluates at once (default: 2 on the CPU with at
    /// least two cores per worker, 1 on a GPU).
    pub concurrent_batches: Option<usize>,
    /// Evaluate on `evocomp worker` processes through this queue
    /// (nats://HOST:PORT, JetStream on) instead of threads of this process.
    pub queue: Option<crate::queue::Access>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for StudyOptions {
    fn default() -> Self {
        Self {
            backend: None,
            shared_cache: true,
            cpu_workers: 1,
            concurrent_batches: None,
            queue: None,
            progress: false,
        }
    }
}

/// How one study's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StudyEnd {
    Finished {
        summary: Box<Summary>,
        /// Evaluations this process did (0 for a study finished earlier).
        new_evaluations: usize,
        seconds: f64,
    },
    /// Stopped through the stop flag at a trial boundary; [`resume`]
    /// continues from `dir`.
    Stopped {
        step: u64,
        evaluations: usize,
        dir: PathBuf,
    },
}

/// The workers for the chosen device: one on a GPU; `cpu_workers` on the
/// CPU, each in a pool of an equal share of the cores.
fn worker_devices(
    chosen: &Chosen,
    cpu_workers: usize,
    concurrent: Option<usize>,
) -> Result<Vec<WorkerDevice>> {
    if cpu_workers == 0 {
        bail!("--cpu-workers must be at least 1");
    }
    let cores = device::cores();
    if !chosen.cpu || cpu_workers == 1 {
        return Ok(vec![WorkerDevice {
            name: "worker-0".into(),
            device: chosen.device.clone(),
            max_buffer_bytes: chosen.max_buffer_bytes,
            threads: None,
            concurrent_batches: device::concurrent_batches(chosen, cores, concurrent),
        }]);
    }
    let threads = (cores / cpu_workers).max(1);
    Ok((0..cpu_workers)
        .map(|i| WorkerDevice {
            name: format!("cpu-{i}"),
            device: chosen.device.clone(),
            max_buffer_bytes: None,
            threads: Some(threads),
            concurrent_batches: device::concurrent_batches(chosen, threads, concurrent),
        })
        .collect())
}

/// Run one study to its end or until `stop` is set.
pub fn run_experiment(
    exp: &Experiment,
    opts: &StudyOptions,
    stop: &Arc<AtomicBool>,
    notes: &dyn Fn(&str),
) -> Result<StudyEnd> {
    let chosen = device::choose(opts.backend.unwrap_or(exp.backend.into()))?;
    match &opts.queue {
        Some(q) => notes(&format!(
            "study {} on the workers of {} (prepared on {})",
            exp.output.display(),
            q.shown(),
            chosen.description
        )),
        None => notes(&format!(
            "study {} on {}",
            exp.output.display(),
            chosen.description
        )),
    }
    let run = RunOptions {
        progress: opts.progress,
        stop: stop.clone(),
        shared_cache: opts.shared_cache,
        devices: worker_devices(&chosen, opts.cpu_workers, opts.concurrent_batches)?,
        remote: opts.queue.clone().map(evocomp_queue::remote),
    };
    let t0 = std::time::Instant::now();
    Ok(match evocomp_engine::run(exp, &run)? {
        Outcome::Finished {
            summary,
            new_evaluations,
        } => StudyEnd::Finished {
            summary,
            new_evaluations,
            seconds: t0.elapsed().as_secs_f64(),
        },
        Outcome::Stopped { step, evaluations } => StudyEnd::Stopped {
            step,
            evaluations,
            dir: exp.sweep_dir().to_path_buf(),
        },
    })
}

/// Run every study in order (a sweep's share the fitness cache), until one
/// is stopped; `on_end` sees each as it ends.
pub fn run_experiments(
    exps: &[Experiment],
    opts: &StudyOptions,
    stop: &Arc<AtomicBool>,
    notes: &dyn Fn(&str),
    on_end: &mut dyn FnMut(&StudyEnd) -> Result<()>,
) -> Result<Vec<StudyEnd>> {
    let Some(first) = exps.first() else {
        bail!("no study to run");
    };
    if let Some(name) = &first.sweep {
        SweepDir::prepare(exps)?;
        notes(&format!(
            "sweep {name}: {} budgets ({})",
            exps.len(),
            exps.iter()
                .map(|e| budget_label(&e.budget))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut ends = Vec::new();
    for (i, exp) in exps.iter().enumerate() {
        if exps.len() > 1 {
            notes(&format!(
                "[{}/{}] budget {:?}",
                i + 1,
                exps.len(),
                exp.budget
            ));
        }
        let end = run_experiment(exp, opts, stop, notes)?;
        on_end(&end)?;
        let stopped = matches!(end, StudyEnd::Stopped { .. });
        ends.push(end);
        if stopped {
            break;
        }
    }
    Ok(ends)
}

/// Start (or continue, or re-open) the studies the config at `config`
/// describes (one, or one per budget of a sweep).
///
/// A study stopped through `stop` ends as [`StudyEnd::Stopped`] and
/// [`resume`] finishes it from its checkpoint:
///
/// ```
/// # use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
/// # fn main() -> anyhow::Result<()> {
/// use evocomp::study::{StudyEnd, StudyOptions};
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let stop = Arc::new(AtomicBool::new(true)); // stop at the first trial boundary
/// let opts = StudyOptions::default();
/// let ends = evocomp::study::run(&project.study, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
/// assert!(matches!(ends[0], StudyEnd::Stopped { .. }));
///
/// stop.store(false, Ordering::SeqCst);
/// let folder = dir.path().join("results/tiny");
/// let ends = evocomp::study::resume(&folder, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
/// assert!(matches!(ends[0], StudyEnd::Finished { .. }));
/// # Ok(())
/// # }
/// ```
pub fn run(
    config: &Path,
    opts: &StudyOptions,
    stop: &Arc<AtomicBool>,
    notes: &dyn Fn(&str),
    on_end: &mut dyn FnMut(&StudyEnd) -> Result<()>,
) -> Result<Vec<StudyEnd>> {
    run_experiments(&load_experiments(config)?, opts, stop, notes, on_end)
}

/// The studies of a study folder or a sweep folder, as saved there.
pub fn experiments_in(dir: &Path) -> Result<Vec<Experiment>> {
    match SweepDir::new(dir).members()? {
        Some(members) => Ok(members),
        None => Ok(vec![StudyDir::new(dir).experiment()?]),
    }
}

/// Continue the stopped, killed or crashed studies in `dir` (a study or a
/// sweep folder) from their last checkpoints.
pub fn resume(
    dir: &Path,
    opts: &StudyOptions,
    stop: &Arc<AtomicBool>,
    notes: &dyn Fn(&str),
    on_end: &mut dyn FnMut(&StudyEnd) -> Result<()>,
) -> Result<Vec<StudyEnd>> {
    run_experiments(&experiments_in(dir)?, opts, stop, notes, on_end)
}

fn report_input(dir: &Path, by_strategy: bool) -> Result<evocomp_report::StudyInput> {
    let d = StudyDir::new(dir);
    let s = d.summary()?;
    let exp = d.experiment()?;
    let db = exp
        .database
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let point = |m: &Measured| evocomp_report::MeasuredPoint {
        cost: m.cost,
        held_out_kl: m.held_out_kl,
        held_out_perplexity: m.held_out_perplexity,
        genome: m.genome.clone(),
        kl_windows: m.held_out_kl_windows.clone(),
    };
    Ok(evocomp_report::StudyInput {
        name: s.name.clone(),
        strategy: s.strategy.clone(),
        role: s.role,
        series: if by_strategy {
            s.strategy.clone()
        } else {
            exp.sweep.clone().unwrap_or_else(|| s.name.clone())
        },
        budget: format!("{db}/{}", budget_label(&exp.budget)),
        cost_unit: s.cost_unit.clone(),
        full_cost: s.full_cost,
        units: s.units.clone(),
        best: point(&s.best),
        front: s.front.iter().map(point).collect(),
        held_out_id: s.held_out_id.clone(),
        history: s
            .history
            .iter()
            .map(|h| evocomp_report::Progress {
                // Candidates scored so far, computed or served from a cache.
                evaluations: h.evaluations + h.cache_hits,
                seconds: h.seconds,
                best: h.best,
                front: h.front.clone(),
            })
            .collect(),
        evaluations: s.evaluations,
        cache_hits: s.cache_hits,
        seconds: s.seconds,
        // At the tokens where each measured genome became the best; NaN
        // where the best genome was never measured.
        anytime: s
            .anytime_steps()
            .into_iter()
            .map(|(t, kl)| (t, kl.unwrap_or(f64::NAN)))
            .collect(),
        // The database's weights, where it is at hand (bits per weight, % sparse).
        weights: evocomp_db::Manifest::read(&exp.database)
            .ok()
            .flatten()
            .map(|m| m.unit_numel().iter().sum()),
    })
}

/// Every configuration a study evaluated, in order, with its fitness, cost,
/// sample and tokens (Optuna's trials table), from the journal. A running
/// study holds its journal: stop it first (or wait for it to finish).
pub fn trials(dir: &Path) -> Result<Vec<evocomp_study::Trial>> {
    match StudyDir::new(dir).view()? {
        evocomp_study::View::Store(s) => Ok(s.trials()?),
        evocomp_study::View::Running { pid, .. } => anyhow::bail!(
            "{}: the study is running (pid {pid}) and holds its journal; read the trials when it stops",
            dir.display()
        ),
    }
}

/// Trials as CSV: a header, then one row per trial; the genome as its
/// levels joined by spaces.
pub fn trials_csv(trials: &[evocomp_study::Trial]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out =
        String::from("number,step,fitness,cost,tokens,sample,probe,cached,seconds,worker,genome\n");
    for t in trials {
        let genome: Vec<String> = t.genome.iter().map(|g| g.to_string()).collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            t.number,
            t.step,
            t.fitness,
            t.cost,
            t.tokens,
            quote(&t.sample),
            t.probe,
            t.cached,
            t.seconds,
            quote(&t.worker),
            genome.join(" ")
        ));
    }
    out
}

/// `report.md`, `report.html` and `plots/` in `out` over the finished
/// studies and sweeps in `dirs` (one series per study or sweep, or per
/// strategy); the plot files written.
///
/// ```
/// # use std::sync::{Arc, atomic::AtomicBool};
/// # fn main() -> anyhow::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let project = evocomp::demo::tiny_project(dir.path())?;
/// # let stop = Arc::new(AtomicBool::new(false));
/// # let opts = evocomp::study::StudyOptions::default();
/// evocomp::study::run(&project.study, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
/// let study = dir.path().join("results/tiny");
/// let out = dir.path().join("report");
/// let plots = evocomp::study::report(&[study], &out, false)?;
/// assert!(!plots.is_empty() && out.join("report.md").is_file());
/// # Ok(())
/// # }
/// ```
pub fn report(dirs: &[PathBuf], out: &Path, by_strategy: bool) -> Result<Vec<String>> {
    let mut studies = Vec::new();
    for d in dirs {
        match SweepDir::new(d).members()? {
            Some(members) => {
                for e in members {
                    studies.push(report_input(&e.output, by_strategy)?);
                }
            }
            None => studies.push(report_input(d, by_strategy)?),
        }
    }
    Ok(evocomp_report::write_report(&studies, out)?)
}
