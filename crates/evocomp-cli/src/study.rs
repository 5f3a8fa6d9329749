//! `evocomp run | resume | status | best`: search studies.

use crate::backend::{self, BackendChoice};
use anyhow::{Result, bail};
use evocomp_config::{BackendSpec, Experiment, budget_label, load_experiments};
use evocomp_engine::{Outcome, RunOptions};
use evocomp_study::{Measured, StudyDir, Summary, SweepDir, View};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Override the config's backend.
    #[arg(long, value_enum)]
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
}

fn choice(exp: &Experiment, args: &RunArgs) -> BackendChoice {
    args.backend.unwrap_or(match exp.backend {
        BackendSpec::Auto => BackendChoice::Auto,
        BackendSpec::Wgpu => BackendChoice::Wgpu,
        BackendSpec::Cpu => BackendChoice::Cpu,
    })
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

/// The workers for the chosen device: one on a GPU; `cpu_workers` on the
/// CPU, each in a pool of an equal share of the cores.
fn worker_devices(
    chosen: &backend::Chosen,
    cpu_workers: usize,
    concurrent: Option<usize>,
) -> Result<Vec<evocomp_engine::WorkerDevice>> {
    if cpu_workers == 0 {
        bail!("--cpu-workers must be at least 1");
    }
    let cores = crate::cores();
    if !chosen.cpu || cpu_workers == 1 {
        return Ok(vec![evocomp_engine::WorkerDevice {
            name: "worker-0".into(),
            device: chosen.device.clone(),
            max_buffer_bytes: chosen.max_buffer_bytes,
            threads: None,
            concurrent_batches: backend::concurrent_batches(chosen, cores, concurrent),
        }]);
    }
    let threads = (cores / cpu_workers).max(1);
    Ok((0..cpu_workers)
        .map(|i| evocomp_engine::WorkerDevice {
            name: format!("cpu-{i}"),
            device: chosen.device.clone(),
            max_buffer_bytes: None,
            threads: Some(threads),
            concurrent_batches: backend::concurrent_batches(chosen, threads, concurrent),
        })
        .collect())
}

/// Run one study; false when it was stopped (Ctrl-C) before finishing.
fn execute(exp: &Experiment, args: &RunArgs, stop: &Arc<AtomicBool>) -> Result<bool> {
    let chosen = backend::choose(choice(exp, args))?;
    match &args.queue {
        Some(url) => eprintln!(
            "study {} on the workers of {url} (prepared on {})",
            exp.output.display(),
            chosen.description
        ),
        None => eprintln!("study {} on {}", exp.output.display(), chosen.description),
    }
    let opts = RunOptions {
        progress: std::io::stderr().is_terminal() || std::env::var_os("EVOCOMP_PROGRESS").is_some(),
        stop: stop.clone(),
        shared_cache: !args.no_shared_cache,
        devices: worker_devices(&chosen, args.cpu_workers, args.concurrent_batches)?,
        remote: args.queue.clone().map(evocomp_queue::remote),
    };
    let t0 = std::time::Instant::now();
    match evocomp_engine::run(exp, &opts)? {
        Outcome::Finished {
            summary,
            new_evaluations,
        } => {
            eprintln!(
                "{} new evaluations in {:.1} s",
                new_evaluations,
                t0.elapsed().as_secs_f64()
            );
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary, false);
            }
            Ok(true)
        }
        Outcome::Stopped { step, evaluations } => {
            eprintln!(
                "stopped at step {step} after {evaluations} evaluations; continue with `evocomp resume {}`",
                exp.sweep_dir().display()
            );
            Ok(false)
        }
    }
}

/// The sweep's studies, when `dir` holds one.
fn sweep_members(dir: &Path) -> Result<Option<Vec<Experiment>>> {
    SweepDir::new(dir).members()
}

/// Run every study in order (a sweep's share the fitness cache).
fn execute_all(exps: &[Experiment], args: &RunArgs) -> Result<()> {
    let stop = stop_flag();
    if let Some(name) = &exps[0].sweep {
        SweepDir::prepare(exps)?;
        eprintln!(
            "sweep {name}: {} budgets ({})",
            exps.len(),
            exps.iter()
                .map(|e| budget_label(&e.budget))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (i, exp) in exps.iter().enumerate() {
        if exps.len() > 1 {
            eprintln!("[{}/{}] budget {:?}", i + 1, exps.len(), exp.budget);
        }
        if !execute(exp, args, &stop)? {
            std::process::exit(130);
        }
    }
    Ok(())
}

pub fn run(config: &Path, args: RunArgs) -> Result<()> {
    let exps = load_experiments(config)?;
    execute_all(&exps, &args)
}

pub fn resume(dir: &Path, args: RunArgs) -> Result<()> {
    if let Some(members) = sweep_members(dir)? {
        return execute_all(&members, &args);
    }
    let exp = StudyDir::new(dir).experiment()?;
    execute_all(&[exp], &args)
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
    println!(
        "held-out: KL {:.6}  perplexity {:.4}  ({} tokens)",
        b.held_out_kl, b.held_out_perplexity, b.held_out_tokens
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
            let trials = study.store().trials()?;
            let fresh = trials.iter().filter(|t| !t.cached).count();
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
                        p.label,
                        p.step,
                        p.total,
                        st.step,
                        fresh,
                        trials.len() - fresh,
                        st.seconds
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

fn study_input(dir: &Path, by_strategy: bool) -> Result<evocomp_report::StudyInput> {
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
    })
}

pub fn report(
    dirs: &[std::path::PathBuf],
    out: Option<std::path::PathBuf>,
    by_strategy: bool,
) -> Result<()> {
    let mut studies = Vec::new();
    for d in dirs {
        match sweep_members(d)? {
            Some(members) => {
                for e in members {
                    studies.push(study_input(&e.output, by_strategy)?);
                }
            }
            None => studies.push(study_input(d, by_strategy)?),
        }
    }
    let out = out.unwrap_or_else(|| dirs[0].clone());
    let plots = evocomp_report::write_report(&studies, &out)?;
    println!(
        "wrote {}/report.md, report.html and {} plots under {}/plots",
        out.display(),
        plots.len(),
        out.display()
    );
    Ok(())
}
