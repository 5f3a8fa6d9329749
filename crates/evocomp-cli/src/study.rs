//! `evocomp run | resume | status | best`: search studies.

use crate::backend::{self, BackendChoice};
use anyhow::{Context, Result, bail};
use evocomp_config::{BackendSpec, Experiment, load_experiment};
use evocomp_engine::{Outcome, RunOptions, StatusFile, Summary, saved_experiment};
use evocomp_store::{StoreError, Study};
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
    // A second Ctrl-C kills at once.
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the evaluation in progress (Ctrl-C again to kill)...");
    });
    stop
}

fn execute(exp: &Experiment, args: &RunArgs) -> Result<()> {
    let chosen = backend::choose(choice(exp, args))?;
    eprintln!("study {} on {}", exp.output.display(), chosen.description);
    let opts = RunOptions {
        progress: std::io::stderr().is_terminal() || std::env::var_os("EVOCOMP_PROGRESS").is_some(),
        stop: stop_flag(),
        shared_cache: !args.no_shared_cache,
        devices: vec![("worker-0".into(), chosen.device)],
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
        }
        Outcome::Stopped { step, evaluations } => {
            eprintln!(
                "stopped at step {step} after {evaluations} evaluations; continue with `evocomp resume {}`",
                exp.output.display()
            );
            std::process::exit(130);
        }
    }
    Ok(())
}

pub fn run(config: &Path, args: RunArgs) -> Result<()> {
    let exp = load_experiment(config)?;
    execute(&exp, &args)
}

pub fn resume(dir: &Path, args: RunArgs) -> Result<()> {
    let exp = saved_experiment(dir)?;
    let exp = Experiment {
        output: dir.to_path_buf(),
        ..exp
    };
    execute(&exp, &args)
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

/// The study's store, or its status file when another process holds it.
enum View {
    Store(Study),
    Running(StatusFile),
}

fn open_view(dir: &Path) -> Result<View> {
    match Study::open(dir, false) {
        Ok(s) => Ok(View::Store(s)),
        Err(StoreError::InUse { pid, .. }) => {
            let p = dir.join("status.json");
            let st: StatusFile = serde_json::from_slice(
                &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{}: corrupt", p.display()))?;
            eprintln!("(study is in use by pid {pid}; showing its last status)");
            Ok(View::Running(st))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn status(dir: &Path) -> Result<()> {
    let exp = saved_experiment(dir)?;
    match open_view(dir)? {
        View::Running(st) => {
            println!(
                "study: {} ({}) running as pid {}",
                st.name, st.strategy, st.pid
            );
            println!(
                "{}: {}/{}  evaluations: {}  cache hits: {}",
                st.step_label, st.step, st.total_steps, st.evaluations, st.cache_hits
            );
            if let Some((g, f)) = st.best {
                println!("best so far: fitness {f:.6}  genome {g:?}");
            }
        }
        View::Store(study) => {
            if let Some(s) = evocomp_engine::summary_of(&study)? {
                println!("finished");
                print_summary(&s, false);
                return Ok(());
            }
            let trials = study.trials()?;
            let fresh = trials.iter().filter(|t| !t.cached).count();
            println!(
                "study: {} ({}) not finished",
                exp.name,
                exp.strategy.label()
            );
            match evocomp_engine::state_of(&study)? {
                Some(st) => {
                    let p = st.strategy.progress();
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
                    if let Some((g, f)) = st.strategy.best() {
                        println!("best so far: fitness {f:.6}");
                        println!("  {g:?}");
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
    saved_experiment(dir)?;
    let study = match open_view(dir)? {
        View::Store(s) => s,
        View::Running(st) => {
            match st.best {
                Some((g, f)) => println!("best so far (running): fitness {f:.6}\n{g:?}"),
                None => println!("no result yet"),
            }
            return Ok(());
        }
    };
    let Some(s) = evocomp_engine::summary_of(&study)? else {
        match evocomp_engine::state_of(&study)?.and_then(|st| st.strategy.best()) {
            Some((g, f)) => {
                println!("not finished; best so far: fitness {f:.6}");
                println!("{g:?}");
                return Ok(());
            }
            None => bail!("{}: no result yet", dir.display()),
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print_summary(&s, true);
    if s.front.len() > 1 {
        for (i, m) in s.front.iter().enumerate() {
            println!("front point {i}: cost {}", m.cost);
            print_genome(&s.units, &m.genome);
        }
    }
    Ok(())
}

fn study_input(dir: &Path) -> Result<evocomp_report::StudyInput> {
    let p = dir.join("summary.json");
    let bytes = std::fs::read(&p).with_context(|| {
        format!(
            "{}: no summary.json: the study is not finished (evocomp status {})",
            dir.display(),
            dir.display()
        )
    })?;
    let s: Summary =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: corrupt", p.display()))?;
    let point = |m: &evocomp_engine::Measured| evocomp_report::MeasuredPoint {
        cost: m.cost,
        held_out_kl: m.held_out_kl,
        held_out_perplexity: m.held_out_perplexity,
        genome: m.genome.clone(),
    };
    Ok(evocomp_report::StudyInput {
        name: s.name.clone(),
        strategy: s.strategy.clone(),
        cost_unit: s.cost_unit.clone(),
        full_cost: s.full_cost,
        units: s.units.clone(),
        best: point(&s.best),
        front: s.front.iter().map(point).collect(),
        history: s
            .history
            .iter()
            .map(|h| evocomp_report::Progress {
                evaluations: h.evaluations,
                seconds: h.seconds,
                best: h.best,
            })
            .collect(),
        evaluations: s.evaluations,
        cache_hits: s.cache_hits,
        seconds: s.seconds,
    })
}

pub fn report(dirs: &[std::path::PathBuf], out: Option<std::path::PathBuf>) -> Result<()> {
    let studies = dirs
        .iter()
        .map(|d| study_input(d))
        .collect::<Result<Vec<_>>>()?;
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
