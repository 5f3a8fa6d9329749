//! `evocomp run | resume | status | best | report`: their arguments and
//! what they print (the library runs the studies).

use anyhow::{Result, bail};
use evocomp::BackendChoice;
use evocomp::study::{StudyEnd, StudyOptions};
use evocomp_config::{Experiment, budget_label};
use evocomp_study::{StudyDir, Summary, SweepDir, View};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Override the config's backend (auto, wgpu or cpu).
    #[arg(long)]
    pub backend: Option<BackendChoice>,
    /// Do not read or fill the fitness cache shared by studies in the same results folder.
    #[arg(long)]
    pub no_shared_cache: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// On the CPU backend: this many workers, each evaluating its own
    /// candidates on an equal share of the cores (default 1: one worker
    /// using every core). Results do not depend on it.
    #[arg(long, default_value_t = 1)]
    pub cpu_workers: usize,
    /// Batches each worker evaluates at once; by default 2 on the CPU (with
    /// at least two cores per worker), 1 on a GPU. Results do not depend on
    /// it; memory grows with it.
    #[arg(long)]
    pub concurrent_batches: Option<usize>,
    /// Evaluate on `evocomp worker` processes through this queue
    /// (nats://HOST:PORT, JetStream on) instead of threads of this process.
    #[arg(long)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub auth: crate::remote::QueueAuth,
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<StudyOptions> {
        Ok(StudyOptions {
            backend: self.backend,
            shared_cache: !self.no_shared_cache,
            cpu_workers: self.cpu_workers,
            concurrent_batches: self.concurrent_batches,
            queue: self
                .queue
                .as_deref()
                .map(|url| self.auth.access(url))
                .transpose()?,
            progress: std::io::stderr().is_terminal()
                || std::env::var_os("EVOCOMP_PROGRESS").is_some(),
        })
    }
}

fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Ctrl-C, SIGTERM (job schedulers) and SIGHUP stop at the next trial
    // boundary; a second one kills at once.
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the evaluation in progress (interrupt again to kill)...");
    });
    stop
}

/// Print each study's end as it comes; exit 130 after a stopped one.
fn print_end(end: &StudyEnd, json: bool) -> Result<()> {
    match end {
        StudyEnd::Finished {
            summary,
            new_evaluations,
            seconds,
        } => {
            eprintln!("{new_evaluations} new evaluations in {seconds:.1} s");
            if json {
                println!("{}", serde_json::to_string_pretty(summary)?);
            } else {
                print_summary(summary, false);
            }
        }
        StudyEnd::Stopped {
            step,
            evaluations,
            dir,
        } => eprintln!(
            "stopped at step {step} after {evaluations} evaluations; continue with `evocomp resume {}`",
            dir.display()
        ),
    }
    Ok(())
}

fn finish(ends: &[StudyEnd]) -> Result<()> {
    if ends
        .last()
        .is_some_and(|e| matches!(e, StudyEnd::Stopped { .. }))
    {
        std::process::exit(130);
    }
    Ok(())
}

pub fn run(config: &Path, args: RunArgs) -> Result<()> {
    let stop = stop_flag();
    let ends = evocomp::study::run(config, &args.options()?, &stop, &crate::note, &mut |e| {
        print_end(e, args.json)
    })?;
    finish(&ends)
}

pub fn resume(dir: &Path, args: RunArgs) -> Result<()> {
    let stop = stop_flag();
    let ends = evocomp::study::resume(dir, &args.options()?, &stop, &crate::note, &mut |e| {
        print_end(e, args.json)
    })?;
    finish(&ends)
}

/// The sweep's studies, when `dir` holds one.
fn sweep_members(dir: &Path) -> Result<Option<Vec<Experiment>>> {
    SweepDir::new(dir).members()
}

fn print_genome(units: &[String], g: &[i64]) {
    let parts: Vec<String> = units
        .iter()
        .zip(g)
        .map(|(u, l)| format!("{u}={l}"))
        .collect();
    for chunk in parts.chunks(8) {
        println!("  {}", chunk.join(" "));
    }
}

pub fn print_summary(s: &Summary, genomes: bool) {
    println!("study: {} ({})", s.name, s.strategy);
    println!(
        "budget: {:?} {} (every unit at its least compressed level: {})",
        s.budget, s.cost_unit, s.full_cost
    );
    println!(
        "steps: {}  evaluations: {}  cache hits: {}  search time: {:.1} s",
        s.steps, s.evaluations, s.cache_hits, s.seconds
    );
    if let Some(f) = s.layers_run_fraction {
        println!("prefix reuse: {:.1}% of layers run", 100.0 * f);
    }
    let b = &s.best;
    println!(
        "best: cost {} ({:.2}% of the least compressed), search fitness {:.6}",
        b.cost,
        100.0 * b.cost as f64 / s.full_cost.max(1) as f64,
        b.search_fitness
    );
    let se = b.held_out_kl_standard_error();
    println!(
        "held-out: KL {:.6}{}  perplexity {:.4}  ({} tokens)",
        b.held_out_kl,
        if se.is_finite() {
            format!(
                " ± {se:.6} (s.e. over {} windows)",
                b.held_out_kl_windows.len()
            )
        } else {
            String::new()
        },
        b.held_out_perplexity,
        b.held_out_tokens
    );
    if genomes {
        println!("genome:");
        print_genome(&s.units, &b.genome);
    }
    if s.front.len() > 1 {
        println!("front ({} points, cheapest first):", s.front.len());
        println!(
            "  {:>14} {:>10} {:>12} {:>12}",
            "cost", "% max", "held-out KL", "perplexity"
        );
        for m in &s.front {
            println!(
                "  {:>14} {:>9.2}% {:>12.6} {:>12.4}",
                m.cost,
                100.0 * m.cost as f64 / s.full_cost.max(1) as f64,
                m.held_out_kl,
                m.held_out_perplexity
            );
        }
    }
}

fn open_view(dir: &Path) -> Result<View> {
    let v = StudyDir::new(dir).view()?;
    if let View::Running { pid, .. } = &v {
        eprintln!("(study is in use by pid {pid}; showing its last status)");
    }
    Ok(v)
}

/// Run `f` on every started study of a sweep, under a heading each.
fn each_member(members: &[Experiment], f: impl Fn(&Path) -> Result<()>) -> Result<()> {
    for e in members {
        println!("== {} ({})", e.output.display(), budget_label(&e.budget));
        if StudyDir::new(&e.output).is_started() {
            f(&e.output)?;
        } else {
            println!("not started");
        }
    }
    Ok(())
}

/// A study's state as JSON: `finished` (with its summary), `running`
/// (what the running process last wrote) or `stopped` (its progress and best
/// so far); a sweep gives its members' in a list.
pub fn status_json(dir: &Path) -> Result<serde_json::Value> {
    if let Some(members) = sweep_members(dir)? {
        return members
            .iter()
            .map(|e| status_json(&e.output))
            .collect::<Result<Vec<_>>>()
            .map(serde_json::Value::Array);
    }
    let d = StudyDir::new(dir);
    let exp = d.experiment()?;
    if let Ok(s) = d.summary() {
        return Ok(serde_json::json!({"dir": dir, "state": "finished", "summary": s}));
    }
    Ok(match open_view(dir)? {
        View::Running { pid, status } => {
            serde_json::json!({"dir": dir, "state": "running", "pid": pid, "status": status})
        }
        View::Store(study) => {
            let (fresh, cached) = study.trial_counts()?;
            let mut v = serde_json::json!({
                "dir": dir,
                "state": "stopped",
                "name": exp.name,
                "strategy": exp.strategy.label(),
                "evaluations": fresh,
                "cache_hits": cached,
            });
            if let Some(st) = study.state()? {
                let p = st.progress();
                v["step"] = st.step.into();
                v["seconds"] = st.seconds.into();
                v["progress"] =
                    serde_json::json!({"label": p.label, "done": p.step, "total": p.total});
                if let Some(b) = st.best() {
                    v["best"] = serde_json::json!({"fitness": b.fitness, "genome": b.genome});
                }
            }
            v
        }
    })
}

pub fn status(dir: &Path) -> Result<()> {
    if let Some(members) = sweep_members(dir)? {
        return each_member(&members, status);
    }
    let d = StudyDir::new(dir);
    let exp = d.experiment()?;
    // A finished study is read from its files: the store is not opened.
    if let Ok(s) = d.summary() {
        println!("finished");
        print_summary(&s, false);
        return Ok(());
    }
    match open_view(dir)? {
        View::Running { status: st, .. } => {
            println!(
                "study: {} ({}) running as pid {}",
                st.name, st.strategy, st.pid
            );
            println!(
                "{}: {}/{}  steps: {}  evaluations: {}  cache hits: {}",
                st.step_label, st.progress, st.total_steps, st.step, st.evaluations, st.cache_hits
            );
            if let Some(b) = st.best {
                println!(
                    "best so far: fitness {:.6}  genome {:?}",
                    b.fitness, b.genome
                );
            }
        }
        View::Store(study) => {
            let (fresh, cached) = study.trial_counts()?;
            println!(
                "study: {} ({}) not finished",
                exp.name,
                exp.strategy.label()
            );
            match study.state()? {
                Some(st) => {
                    let p = st.progress();
                    println!(
                        "{}: {}/{}  steps: {}  evaluations: {}  cache hits: {}  search time: {:.1} s",
                        p.label, p.step, p.total, st.step, fresh, cached, st.seconds
                    );
                    if let Some(b) = st.best() {
                        println!("best so far: fitness {:.6}", b.fitness);
                        println!("  {:?}", b.genome);
                    }
                }
                None => println!("no step finished yet"),
            }
            println!("continue with: evocomp resume {}", dir.display());
        }
    }
    Ok(())
}

pub fn best(dir: &Path, json: bool) -> Result<()> {
    if let Some(members) = sweep_members(dir)? {
        if json {
            // The finished members (read once each).
            let v: Vec<Summary> = members
                .iter()
                .filter_map(|e| StudyDir::new(&e.output).summary().ok())
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        return each_member(&members, |d| best(d, false));
    }
    let d = StudyDir::new(dir);
    d.experiment()?;
    // A finished study is read from its files: the store is not opened.
    if let Ok(s) = d.summary() {
        return print_best(&s, json);
    }
    let study = match open_view(dir)? {
        View::Store(s) => s,
        View::Running { status, .. } => {
            match status.best {
                Some(b) => println!(
                    "best so far (running): fitness {:.6}\n{:?}",
                    b.fitness, b.genome
                ),
                None => println!("no result yet"),
            }
            return Ok(());
        }
    };
    // Not finished (`summary` above looked in the store too).
    match study.state()?.and_then(|st| st.best()) {
        Some(b) => {
            println!("not finished; best so far: fitness {:.6}", b.fitness);
            println!("{:?}", b.genome);
            Ok(())
        }
        None => bail!("{}: no result yet", dir.display()),
    }
}

fn print_best(s: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    print_summary(s, true);
    if s.front.len() > 1 {
        for (i, m) in s.front.iter().enumerate() {
            println!("front point {i}: cost {}", m.cost);
            print_genome(&s.units, &m.genome);
        }
    }
    Ok(())
}

pub fn report(
    dirs: &[std::path::PathBuf],
    out: Option<std::path::PathBuf>,
    by_strategy: bool,
) -> Result<()> {
    let out = out.unwrap_or_else(|| dirs[0].clone());
    let plots = evocomp::study::report(dirs, &out, by_strategy)?;
    println!(
        "wrote {}/report.md, report.html and {} plots under {}/plots",
        out.display(),
        plots.len(),
        out.display()
    );
    Ok(())
}
