//! `evocomp`: find the best non-uniform compression of a language model.

mod bench;
mod db;
mod export;
mod remote;
mod studies;

use anyhow::Result;
use clap::{Parser, Subcommand};
use evocomp::BackendChoice;
use evocomp_model::inspect_model;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "evocomp",
    version,
    about = "Non-uniform compression search for LLMs"
)]
struct Cli {
    /// CPU threads to compute on (default: every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// The scored text and how it is cut, shared by `perplexity` and `db eval`.
#[derive(clap::Args, Debug)]
pub(crate) struct WindowArgs {
    /// A text file, or a folder of .txt files.
    #[arg(long)]
    pub text: PathBuf,
    /// Tokens scored: the first N of the text.
    #[arg(long, default_value_t = 1024)]
    pub tokens: usize,
    /// Window length C; each window gives C-1 predictions.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
    /// auto (a GPU through wgpu if there is one, else the CPU), wgpu or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// The dtype weight matrices are held in on the device: f32, bf16 or
    /// f16 (activations and accumulation stay f32).
    #[arg(long, default_value = "f32")]
    pub dtype: evocomp_model::WeightDtype,
}

impl WindowArgs {
    pub(crate) fn windows(&self) -> evocomp::score::Windows {
        evocomp::score::Windows {
            text: self.text.clone(),
            tokens: self.tokens,
            context: self.context,
        }
    }
}

/// A progress line on stderr (the library's `notes`).
pub(crate) fn note(line: &str) {
    eprintln!("{line}");
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture and its tensors' dtypes.
    Inspect {
        /// A .gguf file or an HF folder (config.json + safetensors + tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// List every tensor, not only the count per dtype.
        #[arg(long)]
        tensors: bool,
        /// Print it as JSON (the architecture, parameter count, dtype
        /// counts, and every tensor with --tensors).
        #[arg(long)]
        json: bool,
    },
    /// Perplexity of a model on a text: the first N tokens in windows of C.
    Perplexity {
        /// A .gguf file or an HF folder.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        windows: WindowArgs,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
    },
    /// KL-fitness throughput (tokens/s) on each backend, beside PyTorch.
    Bench(bench::BenchArgs),
    /// The per-layer variant database.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Start (or continue, or re-open) the study CONFIG.ron describes, in
    /// results/<name>/. Ctrl-C stops at the next trial boundary.
    Run {
        /// The experiment config (an `Experiment` or a list of them, RON).
        config: PathBuf,
        #[command(flatten)]
        args: studies::RunArgs,
    },
    /// Continue a stopped or killed study.
    Resume {
        /// A study or sweep folder (results/<name>).
        dir: PathBuf,
        #[command(flatten)]
        args: studies::RunArgs,
    },
    /// A study's progress and its best configuration so far (and, with
    /// --queue, the workers the queue has seen).
    Status {
        /// A study or sweep folder.
        dir: PathBuf,
        /// Also list the workers of this queue (nats://HOST:PORT).
        #[arg(long)]
        queue: Option<String>,
        #[command(flatten)]
        auth: remote::QueueAuth,
        /// Print the state as JSON: finished (with the summary), running
        /// (the running process's last status) or stopped (progress, best so far).
        #[arg(long, conflicts_with = "queue")]
        json: bool,
    },
    /// Evaluate jobs from a queue (nats://HOST:PORT with JetStream) for
    /// `evocomp run --queue` coordinators, until interrupted.
    Worker(remote::WorkerArgs),
    /// A study's best configuration(s), and the front for NSGA-II.
    Best {
        /// A study or sweep folder.
        dir: PathBuf,
        /// Print the summary (or a sweep's summaries) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every configuration a study evaluated, with its fitness, cost,
    /// sample and tokens, in order (Optuna's trials table).
    Trials {
        /// A study folder (stopped or finished).
        dir: PathBuf,
        /// As CSV (a header and one row per trial).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// As JSON (a list of trials).
        #[arg(long)]
        json: bool,
    },
    /// Write the compressed model at a study's configuration (HF folder:
    /// config.json, model.safetensors, tokenizer.json) and its level list.
    Export(export::ExportArgs),
    /// Held-out comparison with error bars: each study's configuration on
    /// the same windows of one or more texts, full-vocabulary KL to the
    /// uncompressed model and perplexity, and each one's difference from the
    /// first with a paired bootstrap 95% interval (better, worse or tie).
    Compare {
        /// Study or sweep folders; DIR@BUDGET picks a sweep's budget or a
        /// front's member (as export --budget). The first is the reference.
        #[arg(required = true)]
        studies: Vec<String>,
        /// A named text, NAME=PATH (a file or a folder of .txt files);
        /// repeat it for several genres.
        #[arg(long = "text", required = true)]
        texts: Vec<String>,
        /// Tokens scored per text: the first N, in windows of --context.
        #[arg(long, default_value_t = 16384)]
        tokens: usize,
        /// Window length C; each window gives C-1 predictions.
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// auto (a GPU through wgpu if there is one, else the CPU), wgpu or cpu.
        #[arg(long, default_value = "auto")]
        backend: BackendChoice,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
        /// Bootstrap resamples.
        #[arg(long, default_value_t = 10000)]
        resamples: usize,
        /// Also write the comparison (with every window's scores) as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// How far a model is from a base model, as llama-perplexity
    /// --kl-divergence reports it: both perplexities ± standard error, the
    /// KL divergence per prediction (mean ± s.e., median, 90%, 99%, max),
    /// how often the most likely tokens agree and the change in the
    /// probability of the true token.
    Kld {
        /// The base model (.gguf or HF folder); optional with --base-logits.
        #[arg(long)]
        base: Option<PathBuf>,
        /// The model compared: a .gguf file or an HF folder (an export).
        #[arg(long, conflicts_with = "study", required_unless_present = "study")]
        model: Option<PathBuf>,
        /// Or a study's configuration (its model with the genome applied).
        #[arg(long)]
        study: Option<PathBuf>,
        /// With --study: a sweep's budget or a front's member, as export --budget.
        #[arg(long, requires = "study")]
        budget: Option<String>,
        #[command(flatten)]
        windows: WindowArgs,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
        /// Save the base's log-probabilities here, to reuse with
        /// --base-logits (f32: predictions x vocabulary x 4 bytes).
        #[arg(long)]
        save_base: Option<PathBuf>,
        /// Read the base's log-probabilities from a --save-base file instead
        /// of running the base (the text, --tokens and --context must match).
        #[arg(long)]
        base_logits: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// report.md, report.html and plots/ (PNG + SVG) over finished studies
    /// and sweeps: fronts on shared axes, convergence, hypervolume, where the
    /// budget went, tables per budget.
    Report {
        /// Study and sweep folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write (default: the first study's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// One series per strategy (joining studies at different budgets)
        /// instead of one per study or sweep.
        #[arg(long)]
        by_strategy: bool,
    },
}

fn main() {
    // A closed pipe (`evocomp inspect | head`) ends the command quietly, as
    // for any Unix tool, instead of a panic on the next print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    evocomp::device::quiet_vulkan_environment();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// glibc's malloc gives every allocation above 128 KiB its own `mmap` and
/// returns it on `free`, so each forward pass page-faults its activations
/// and logits in afresh (the kernel zeroes every page): 12% of an
/// evaluation's time in a profile. Served from the heap and kept there, the
/// same buffers are reused pass after pass (SmolLM2 KL fitness 408 -> 504
/// tokens/s). The cost: memory freed after a peak stays with the process.
/// One arena: a thread's own arena is a 64 MiB heap, so a larger buffer
/// (a batch's logits) made on a rayon thread would still be `mmap`ed and
/// page-faulted in anew every pass.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's settings; called before
    // any other thread exists. A value glibc refuses leaves its default.
    unsafe {
        let max = libc::c_int::MAX;
        libc::mallopt(libc::M_MMAP_THRESHOLD, max);
        libc::mallopt(libc::M_TRIM_THRESHOLD, max);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// An error and its causes on one line, each cause once: our error types
/// already put their source's text in their message, so a cause whose text
/// the line holds is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        evocomp::device::set_threads(n)?;
    }
    match cli.command {
        Command::Inspect {
            model,
            tensors,
            json,
        } => inspect(&model, tensors, json),
        Command::Perplexity {
            model,
            windows,
            batch_size,
        } => {
            let run = evocomp::score::ScoreOptions {
                backend: windows.backend,
                dtype: windows.dtype,
                batch_size,
            };
            let r = evocomp::score::perplexity(&model, &windows.windows(), &run)?;
            eprintln!("backend: {}", r.backend);
            eprintln!(
                "{} predictions in {} windows, {:.1} s",
                r.predictions, r.windows, r.seconds
            );
            println!("perplexity: {:.4}", r.perplexity);
            Ok(())
        }
        Command::Compare {
            studies,
            texts,
            tokens,
            context,
            backend,
            batch_size,
            resamples,
            json,
        } => {
            let studies = studies
                .iter()
                .map(|s| match s.rsplit_once('@') {
                    Some((d, b)) => (PathBuf::from(d), Some(b.to_string())),
                    None => (PathBuf::from(s), None),
                })
                .collect();
            let texts = texts
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
                        .ok_or_else(|| anyhow::anyhow!("--text {t}: write NAME=PATH"))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut req = evocomp::compare::CompareRequest::new(studies, texts);
            req.tokens = tokens;
            req.context = context;
            req.resamples = resamples;
            req.run.backend = backend;
            req.run.batch_size = batch_size;
            let c = evocomp::compare::compare(&req)?;
            print!("{}", c.markdown());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&c)?;
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Kld {
            base,
            model,
            study,
            budget,
            windows,
            batch_size,
            save_base,
            base_logits,
            json,
        } => {
            let other = match (model, study) {
                (Some(m), _) => evocomp::kld::Other::Model(m),
                (None, Some(dir)) => evocomp::kld::Other::Study { dir, budget },
                (None, None) => anyhow::bail!("give the model compared: --model or --study"),
            };
            let req = evocomp::kld::KldRequest {
                base,
                other,
                windows: windows.windows(),
                run: evocomp::score::ScoreOptions {
                    backend: windows.backend,
                    dtype: windows.dtype,
                    batch_size,
                },
                save_base: save_base.clone(),
                base_logits,
            };
            let r = evocomp::kld::kld(&req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.text());
            }
            if let Some(p) = save_base {
                eprintln!("wrote the base's log-probabilities to {}", p.display());
            }
            Ok(())
        }
        Command::Trials { dir, csv, json } => {
            let trials = evocomp::study::trials(&dir)?;
            if csv {
                print!("{}", evocomp::study::trials_csv(&trials));
            } else if json {
                println!("{}", serde_json::to_string_pretty(&trials)?);
            } else {
                println!(
                    "{:>6} {:>5} {:>12} {:>14} {:>7}  cached",
                    "trial", "step", "fitness", "cost", "tokens"
                );
                for t in &trials {
                    println!(
                        "{:>6} {:>5} {:>12.6} {:>14} {:>7}  {}",
                        t.number, t.step, t.fitness, t.cost, t.tokens, t.cached
                    );
                }
                println!(
                    "{} trials ({} from a cache)",
                    trials.len(),
                    trials.iter().filter(|t| t.cached).count()
                );
            }
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
        Command::Db { command } => db::run(command),
        Command::Run { config, args } => studies::run(&config, args),
        Command::Resume { dir, args } => studies::resume(&dir, args),
        Command::Status {
            dir,
            queue,
            auth,
            json,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&studies::status_json(&dir)?)?
                );
                return Ok(());
            }
            studies::status(&dir)?;
            match queue {
                Some(url) => remote::print_workers(&auth.access(&url)?),
                None => Ok(()),
            }
        }
        Command::Worker(args) => remote::worker(args, cli.threads),
        Command::Best { dir, json } => studies::best(&dir, json),
        Command::Report {
            dirs,
            out,
            by_strategy,
        } => studies::report(&dirs, out, by_strategy),
        Command::Export(args) => export::run(args),
    }
}

fn inspect(path: &Path, list: bool, json: bool) -> Result<()> {
    let info = inspect_model(path)?;
    let c = &info.config;
    if json {
        let mut v = serde_json::json!({
            "model": path,
            "format": format!("{:?}", info.format),
            "architecture": c.family.name(),
            "config": c,
            "parameters": c.n_params(),
            "tensor_count": info.tensors.len(),
            "dtypes": info.dtype_counts(),
        });
        if list {
            v["tensors"] = info
                .tensors
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "dtype": t.dtype, "shape": t.shape}))
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model: {}", path.display());
    println!("format: {:?}", info.format);
    println!("architecture: {}", c.family.name());
    println!("layers: {}", c.n_layers);
    println!("hidden: {}", c.hidden);
    println!("intermediate: {}", c.intermediate);
    println!("heads: {}", c.n_heads);
    println!("kv heads: {}", c.n_kv_heads);
    println!("head dim: {}", c.head_dim);
    println!("vocab: {}", c.vocab);
    println!("context: {}", c.max_context);
    println!("rope theta: {}", c.rope_theta);
    println!("rope scaling: {:?}", c.rope_scaling);
    if let Some(t) = c.rope_theta_local {
        println!("rope theta (sliding-window blocks): {t}");
    }
    if let Some(w) = c.sliding_window {
        let kinds: String = (0..c.n_layers)
            .map(|l| match c.window(l) {
                Some(_) => 'S',
                None => 'G',
            })
            .collect();
        println!("sliding window: {w} (blocks: {kinds}; S sliding, G global)");
    }
    if c.family != evocomp_model::Family::Llama {
        println!("activation: {:?}", c.activation);
        println!(
            "q/k norms: {}, post-norms: {}, embedding scale: {}, attention scale: {}",
            c.qk_norm,
            c.post_norms,
            c.embed_scale.map_or("none".into(), |s| format!("{s:.4}")),
            c.attn_scale
                .map_or("1/sqrt(head dim)".into(), |s| format!("{s:.6}")),
        );
    }
    println!("rms eps: {:e}", c.rms_eps);
    println!("tied embeddings: {}", c.tied_embeddings);
    println!(
        "parameters: {} ({:.1}M)",
        c.n_params(),
        c.n_params() as f64 / 1e6
    );
    println!("tensors: {}", info.tensors.len());
    for (dtype, n) in info.dtype_counts() {
        println!("  {dtype}: {n}");
    }
    if list {
        for t in &info.tensors {
            println!("  {:<40} {:<6} {:?}", t.name, t.dtype, t.shape);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "evocomp", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
