//! Observers of a running study: the executor tells them about every
//! result, every step and the end; they draw the progress bar, write
//! `status.json` and record the history the reports plot. None of them
//! changes what the study computes.

use anyhow::Result;
use evocomp_search::{Best, FrontMember, Progress};
use evocomp_study::{StatusFile, StepRecord, StudyDir, Summary, best_genome_at};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the study stands: at the start of a run and after each step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// Steps completed.
    pub step: u64,
    pub progress: Progress,
    /// Evaluations computed (cache hits excluded), over every run.
    pub evaluations: usize,
    pub cache_hits: usize,
    /// Search seconds over every run.
    pub seconds: f64,
    pub best: Option<Best>,
    pub best_cost: Option<u64>,
    /// The current front, for strategies that search one.
    pub front: Vec<FrontMember>,
    /// Tokens scored (cache hits excluded), over every run.
    pub tokens: u64,
    /// The strategy's own figures.
    pub metrics: Vec<(String, f64)>,
}

/// One evaluation computed by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultEvent {
    pub fitness: f64,
    pub seconds: f64,
    pub worker: String,
    pub evaluations: usize,
    pub cache_hits: usize,
    /// Jobs of the current step answered so far (this one included), and
    /// how many the step has: a long step (a first step that scores
    /// thousands of candidates) shows its own progress.
    pub step_done: usize,
    pub step_jobs: usize,
}

/// Something that watches a study run.
pub trait Observer {
    /// The run begins (a resumed study: where it stood).
    fn on_start(&mut self, _at: &StepEvent) -> Result<()> {
        Ok(())
    }
    fn on_result(&mut self, _r: &ResultEvent) -> Result<()> {
        Ok(())
    }
    fn on_step(&mut self, _at: &StepEvent) -> Result<()> {
        Ok(())
    }
    /// The search is done; held-out measurement follows.
    fn on_search_end(&mut self) {}
    /// The run stopped early (Ctrl-C); `resume` continues.
    fn on_stop(&mut self) {}
    fn on_finish(&mut self, _summary: &Summary, _at: &StepEvent) -> Result<()> {
        Ok(())
    }
}

/// The progress bar: strategy step of total, evaluations, cache hits, best
/// fitness, ETA.
pub struct ProgressObserver {
    bar: ProgressBar,
    best: Option<f64>,
    /// When the current step began (its jobs' rate and ETA).
    step_started: std::time::Instant,
}

impl ProgressObserver {
    /// `label` names the strategy; a hidden bar when `show` is false.
    pub fn new(show: bool, label: &str) -> Self {
        let bar = if show {
            let b = ProgressBar::new(1);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:25.cyan/blue}] {pos}/{len}  {msg}  {elapsed_precise} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            // The clock moves while a long job (a first step's teacher
            // outputs over a large sample) has nothing to report yet.
            b.enable_steady_tick(std::time::Duration::from_secs(1));
            b
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            best: None,
            step_started: std::time::Instant::now(),
        }
    }

    fn message(&self, evaluations: usize, hits: usize) -> String {
        progress_message(evaluations, hits, self.best, None)
    }
}

/// The bar's message: evaluations, cache hits, the best fitness, and for a
/// step of many jobs `(answered, jobs, seconds so far)`, that step's own
/// count, rate and ETA.
pub fn progress_message(
    evaluations: usize,
    hits: usize,
    best: Option<f64>,
    step: Option<(usize, usize, f64)>,
) -> String {
    let mut m = format!(
        "evals {evaluations} (cache hits {hits})  best {}",
        best.map_or("-".into(), |f| format!("{f:.5}"))
    );
    if let Some((done, jobs, secs)) = step.filter(|&(d, j, _)| j > 1 && d < j) {
        let rate = done as f64 / secs.max(1e-9);
        let left = (jobs - done) as f64 / rate.max(1e-12);
        m.push_str(&format!(
            "  this step {done}/{jobs} ({rate:.2}/s, {} left)",
            indicatif::HumanDuration(std::time::Duration::from_secs_f64(left.min(1e9)))
        ));
    }
    m
}

impl Observer for ProgressObserver {
    fn on_start(&mut self, at: &StepEvent) -> Result<()> {
        self.bar
            .set_prefix(format!("{} {}", self.bar.prefix(), at.progress.label));
        self.bar.set_length(at.progress.total.max(1) as u64);
        self.bar.set_position(at.progress.step as u64);
        self.bar.reset_eta();
        self.best = at.best.as_ref().map(|b| b.fitness);
        self.step_started = std::time::Instant::now();
        Ok(())
    }

    fn on_result(&mut self, r: &ResultEvent) -> Result<()> {
        let secs = self.step_started.elapsed().as_secs_f64();
        self.bar.set_message(progress_message(
            r.evaluations,
            r.cache_hits,
            self.best,
            Some((r.step_done, r.step_jobs, secs)),
        ));
        Ok(())
    }

    fn on_step(&mut self, at: &StepEvent) -> Result<()> {
        self.bar.set_length(at.progress.total as u64);
        self.bar.set_position(at.progress.step as u64);
        self.best = at.best.as_ref().map(|b| b.fitness);
        self.bar
            .set_message(self.message(at.evaluations, at.cache_hits));
        self.step_started = std::time::Instant::now();
        Ok(())
    }

    fn on_search_end(&mut self) {
        self.bar.finish_and_clear();
    }

    fn on_stop(&mut self) {
        self.bar.abandon();
    }
}

/// Keeps `status.json` current, so `evocomp status` can read a study that
/// another process holds.
pub struct StatusWriter {
    dir: StudyDir,
    name: String,
    strategy: String,
}

impl StatusWriter {
    pub fn new(dir: StudyDir, name: &str, strategy: &str) -> Self {
        Self {
            dir,
            name: name.into(),
            strategy: strategy.into(),
        }
    }

    fn write(&self, at: &StepEvent, finished: bool) -> Result<()> {
        self.dir.write_status(&StatusFile {
            name: self.name.clone(),
            strategy: self.strategy.clone(),
            pid: std::process::id(),
            step: at.step,
            progress: at.progress.step,
            total_steps: at.progress.total,
            step_label: at.progress.label.clone(),
            evaluations: at.evaluations,
            cache_hits: at.cache_hits,
            best: at.best.clone(),
            finished,
        })
    }
}

impl Observer for StatusWriter {
    fn on_start(&mut self, at: &StepEvent) -> Result<()> {
        self.write(at, false)
    }

    fn on_step(&mut self, at: &StepEvent) -> Result<()> {
        self.write(at, false)
    }

    fn on_finish(&mut self, _summary: &Summary, at: &StepEvent) -> Result<()> {
        self.write(at, true)
    }
}

/// Records where the search stood after every step (convergence and
/// hypervolume plots, anytime curves); the executor stores the records with
/// each checkpoint.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub records: Vec<StepRecord>,
}

impl Observer for History {
    fn on_step(&mut self, at: &StepEvent) -> Result<()> {
        let genome = at.best.as_ref().map(|b| &b.genome);
        let best_genome = match genome {
            Some(g) if best_genome_at(&self.records, u64::MAX) != Some(g) => Some(g.clone()),
            _ => None,
        };
        self.records.push(StepRecord {
            step: at.step,
            evaluations: at.evaluations,
            cache_hits: at.cache_hits,
            seconds: at.seconds,
            best: at.best.as_ref().map(|b| b.fitness),
            best_cost: at.best_cost,
            front: at.front.iter().map(|m| (m.fitness, m.cost)).collect(),
            tokens: at.tokens,
            best_genome,
            metrics: at.metrics.iter().cloned().collect(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::progress_message;

    #[test]
    fn a_long_step_shows_its_own_count_rate_and_time_left() {
        let m = progress_message(250, 3, Some(0.123456), Some((250, 10_000, 50.0)));
        assert!(
            m.starts_with("evals 250 (cache hits 3)  best 0.12346"),
            "{m}"
        );
        // 5 a second: 9,750 left take 32.5 minutes (rounded).
        assert!(
            m.contains("this step 250/10000 (5.00/s, 33 minutes left)"),
            "{m}"
        );
    }

    #[test]
    fn a_step_of_one_job_or_a_finished_step_says_nothing_more() {
        let plain = "evals 7 (cache hits 0)  best -";
        assert_eq!(progress_message(7, 0, None, Some((1, 1, 3.0))), plain);
        assert_eq!(progress_message(7, 0, None, Some((40, 40, 3.0))), plain);
        assert_eq!(progress_message(7, 0, None, None), plain);
    }
}
