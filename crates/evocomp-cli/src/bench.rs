//! `evocomp bench`: KL-fitness throughput (tokens/s) on each backend, beside
//! the same forward pass and KL in PyTorch on the same tokens.

use crate::backend::{self, BackendChoice};
use anyhow::{Context, Result, bail};
use evocomp_eval::{
    EvalOptions, TeacherMode, compute_teacher, kl_to_teacher, perplexity, token_progress,
};
use evocomp_model::{Matmul, WeightDtype};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A .gguf file or an HF folder.
    #[arg(long)]
    model: PathBuf,
    /// A text file or a folder of .txt files to draw the sequences from.
    #[arg(long)]
    text: PathBuf,
    /// Sequences in the fitness sample.
    #[arg(long, default_value_t = 8)]
    sequences: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 2)]
    batch_size: usize,
    /// Teacher outputs kept per token.
    #[arg(long, default_value_t = 32)]
    top_k: usize,
    /// Timed fitness evaluations per backend (after one untimed warm-up).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Backends to time, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu,wgpu")]
    backends: Vec<BackendChoice>,
    /// Weight dtypes to time, comma-separated (f32, bf16, f16). Each is
    /// scored against the f32 model's outputs, so its KL is its accuracy cost.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    dtypes: Vec<WeightDtype>,
    /// Matmul precisions to time with each dtype, comma-separated (f32,
    /// bf16: bf16 products summed in f32, CPU only), scored against the f32
    /// model's outputs like the dtypes.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    matmuls: Vec<Matmul>,
    /// Seed of the sequence sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A Python with torch and transformers; runs scripts/reference/bench_torch.py
    /// on the same tokens. Without it only evocomp is timed.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The PyTorch side of the benchmark.
    #[arg(long, default_value = "scripts/reference/bench_torch.py")]
    torch_script: PathBuf,
    /// The device PyTorch runs on (`cpu`, `cuda`).
    #[arg(long, default_value = "cpu")]
    torch_device: String,
    /// Batches evaluated at once; by default 2 on the CPU (with at least two
    /// cores), 1 on a GPU.
    #[arg(long)]
    concurrent_batches: Option<usize>,
    /// Attention and SiLU through burn's own operations on the CPU instead
    /// of the fused kernels (the figures without them).
    #[arg(long)]
    no_fused_kernels: bool,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figure {
    name: String,
    tokens_per_s: f64,
    seconds_per_eval: f64,
    warmup_s: f64,
    kl: f64,
    /// A plain perplexity forward (log-softmax and next-token NLL) on the
    /// same sequences.
    #[serde(default)]
    ppl_tokens_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    text: String,
    sequences: usize,
    seq_len: usize,
    batch_size: usize,
    top_k: usize,
    repeats: usize,
    figures: Vec<Figure>,
    torch: Option<Figure>,
}

#[derive(Serialize)]
struct TorchInput<'a> {
    sequences: &'a [Vec<u32>],
    batch_size: usize,
    top_k: usize,
    repeats: usize,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let loaded = crate::load(&a.model)?;
    let set = evocomp_engine::token_set(&loaded, &a.text)?;
    let sample = set.sample(a.sequences, a.seq_len, a.seed)?;
    let n_tokens = sample.n_tokens();
    eprintln!(
        "fitness sample: {} sequences x {} tokens = {n_tokens} tokens, batch {}, teacher top-{}",
        a.sequences, a.seq_len, a.batch_size, a.top_k
    );
    let opts = EvalOptions {
        batch_size: a.batch_size,
        ..Default::default()
    };
    let mode = TeacherMode::TopK(a.top_k);

    let mut figures = Vec::new();
    for &choice in &a.backends {
        let chosen = match backend::choose(choice) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{choice:?}: skipped ({e:#})");
                continue;
            }
        };
        let opts = EvalOptions {
            concurrent_batches: backend::concurrent_batches(
                &chosen,
                crate::cores(),
                a.concurrent_batches,
            ),
            ..opts
        };
        eprintln!(
            "backend: {} ({} batch{} at once)",
            chosen.description,
            opts.concurrent_batches,
            if opts.concurrent_batches == 1 {
                ""
            } else {
                "es"
            }
        );
        if let Err(e) = backend::check_fits(
            &chosen,
            &a.model,
            loaded.config(),
            a.batch_size.min(a.sequences) * a.seq_len,
        ) {
            eprintln!("  skipped: {e:#}");
            continue;
        }
        let mut f32_model = loaded.to_device(&chosen.device, WeightDtype::F32)?;
        f32_model.set_fused_kernels(!a.no_fused_kernels);
        let bar = token_progress(n_tokens as u64, "teacher");
        let teacher = compute_teacher(&f32_model, &sample, mode, &opts, &bar)?;
        bar.finish_and_clear();
        let runs = a
            .dtypes
            .iter()
            .flat_map(|&d| a.matmuls.iter().map(move |&mm| (d, mm)));
        for (dtype, matmul) in runs {
            let mut m = match dtype {
                WeightDtype::F32 => f32_model.clone(),
                _ => match loaded.to_device(&chosen.device, dtype) {
                    Ok(mut m) => {
                        m.set_fused_kernels(!a.no_fused_kernels);
                        m
                    }
                    // A dtype the device cannot compute in is reported, not fatal.
                    Err(e) => {
                        eprintln!("  {dtype}: skipped ({e})");
                        continue;
                    }
                },
            };
            if let Err(e) = m.set_matmul(matmul) {
                eprintln!("  {dtype}, {matmul} matmul: skipped ({e})");
                continue;
            }
            let label = match matmul {
                Matmul::F32 => dtype.to_string(),
                Matmul::Bf16 => format!("{dtype}, bf16 matmul"),
            };
            // One untimed evaluation: shader compilation and autotuning happen here.
            let t0 = Instant::now();
            let bar = token_progress(n_tokens as u64, "warm-up");
            kl_to_teacher(&m, &sample, &teacher, &opts, &bar)?;
            bar.finish_and_clear();
            let warmup_s = t0.elapsed().as_secs_f64();
            let bar = token_progress((n_tokens * a.repeats) as u64, "timed");
            let t1 = Instant::now();
            let mut kl = 0.0;
            for _ in 0..a.repeats {
                kl = kl_to_teacher(&m, &sample, &teacher, &opts, &bar)?.kl;
            }
            bar.finish_and_clear();
            let secs = t1.elapsed().as_secs_f64() / a.repeats as f64;
            let bar = token_progress((n_tokens * a.repeats) as u64, "perplexity");
            let t2 = Instant::now();
            for _ in 0..a.repeats {
                perplexity(&m, &sample.sequences, &opts, &bar)?;
            }
            bar.finish_and_clear();
            let ppl_secs = t2.elapsed().as_secs_f64() / a.repeats as f64;
            let f = Figure {
                name: format!(
                    "evocomp {label} {}{}",
                    chosen.description,
                    if a.no_fused_kernels {
                        ", no fused kernels"
                    } else {
                        ""
                    }
                ),
                tokens_per_s: n_tokens as f64 / secs,
                seconds_per_eval: secs,
                warmup_s,
                kl,
                ppl_tokens_per_s: n_tokens as f64 / ppl_secs,
            };
            eprintln!(
                "  {label}: {:.1} tokens/s ({secs:.2} s per evaluation), KL to f32 {kl:.3e}",
                f.tokens_per_s
            );
            figures.push(f);
        }
    }
    if figures.is_empty() {
        bail!("no backend could be timed");
    }

    let torch = match &a.python {
        None => None,
        Some(py) => Some(run_torch(py, &a, &sample.sequences)?),
    };

    println!(
        "KL-fitness throughput: {} x {} tokens, batch {}, top-{} teacher, mean of {} evaluations",
        a.sequences, a.seq_len, a.batch_size, a.top_k, a.repeats
    );
    println!(
        "{:<48} {:>16} {:>22}",
        "", "KL fitness", "perplexity forward"
    );
    for f in &figures {
        print!(
            "{:<48} {:>9.1} tokens/s {:>13.1} tokens/s",
            f.name, f.tokens_per_s, f.ppl_tokens_per_s
        );
        match &torch {
            Some(t) => println!(
                "  {:.2}x / {:.2}x PyTorch",
                f.tokens_per_s / t.tokens_per_s,
                f.ppl_tokens_per_s / t.ppl_tokens_per_s
            ),
            None => println!(),
        }
    }
    if let Some(t) = &torch {
        println!(
            "{:<48} {:>9.1} tokens/s {:>13.1} tokens/s",
            t.name, t.tokens_per_s, t.ppl_tokens_per_s
        );
    }
    if let Some(path) = &a.json {
        let report = Report {
            model: a.model.display().to_string(),
            text: a.text.display().to_string(),
            sequences: a.sequences,
            seq_len: a.seq_len,
            batch_size: a.batch_size,
            top_k: a.top_k,
            repeats: a.repeats,
            figures,
            torch,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the PyTorch benchmark on exactly our token sequences.
fn run_torch(py: &PathBuf, a: &BenchArgs, sequences: &[Vec<u32>]) -> Result<Figure> {
    if !a.torch_script.is_file() {
        bail!(
            "the PyTorch benchmark script {} does not exist",
            a.torch_script.display()
        );
    }
    let dir = tempfile_dir()?;
    let input = dir.join("bench_tokens.json");
    std::fs::write(
        &input,
        serde_json::to_string(&TorchInput {
            sequences,
            batch_size: a.batch_size,
            top_k: a.top_k,
            repeats: a.repeats,
        })?,
    )
    .with_context(|| format!("writing {}", input.display()))?;
    eprintln!(
        "running the PyTorch side: {} {}",
        py.display(),
        a.torch_script.display()
    );
    let out = Command::new(py)
        .arg(&a.torch_script)
        .arg("--model")
        .arg(&a.model)
        .arg("--input")
        .arg(&input)
        .arg("--device")
        .arg(&a.torch_device)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", py.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        bail!("the PyTorch benchmark failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the PyTorch benchmark printed no JSON result")?;
    serde_json::from_str(last).context("parsing the PyTorch benchmark's result")
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("evocomp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
