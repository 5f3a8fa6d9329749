//! `evocomp bench`: KL-fitness throughput (tokens/s) on each backend, beside
//! the same forward pass and KL in PyTorch on the same tokens.

use crate::device::{self, BackendChoice};
use anyhow::{Context, Result, bail};
use evocomp_eval::{
    EvalOptions, TeacherMode, compute_teacher, kl_to_teacher, perplexity, token_progress,
};
use evocomp_model::{Matmul, WeightDtype};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to time.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRequest {
    /// A .gguf file or an HF folder.
    pub model: PathBuf,
    /// A text file or a folder of .txt files to draw the sequences from.
    pub text: PathBuf,
    /// Sequences in the fitness sample.
    pub sequences: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Teacher outputs kept per token.
    pub top_k: usize,
    /// Timed fitness evaluations per backend (after one untimed warm-up).
    pub repeats: usize,
    /// Backends to time.
    pub backends: Vec<BackendChoice>,
    /// Weight dtypes to time; each is scored against the f32 model's
    /// outputs, so its KL is its accuracy cost.
    pub dtypes: Vec<WeightDtype>,
    /// Matmul precisions to time with each dtype, scored like the dtypes.
    pub matmuls: Vec<Matmul>,
    /// Seed of the sequence sample.
    pub seed: u64,
    /// A Python with torch and transformers, to run `torch_script` on the
    /// same tokens; without it only evocomp is timed.
    pub python: Option<PathBuf>,
    pub torch_script: PathBuf,
    /// The device PyTorch runs on (`cpu`, `cuda`).
    pub torch_device: String,
    /// Batches evaluated at once (default: 2 on a CPU with two or more
    /// cores, 1 on a GPU).
    pub concurrent_batches: Option<usize>,
    /// burn's own attention and SiLU on the CPU instead of the fused kernels.
    pub no_fused_kernels: bool,
}

impl BenchRequest {
    /// The CLI's defaults: 8 sequences of 512 tokens, batches of 2, top-32,
    /// 2 timed evaluations, the CPU and wgpu, f32.
    pub fn new(model: impl Into<PathBuf>, text: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            text: text.into(),
            sequences: 8,
            seq_len: 512,
            batch_size: 2,
            top_k: 32,
            repeats: 2,
            backends: vec![BackendChoice::Cpu, BackendChoice::Wgpu],
            dtypes: vec![WeightDtype::F32],
            matmuls: vec![Matmul::F32],
            seed: 0,
            python: None,
            torch_script: PathBuf::from("scripts/reference/bench_torch.py"),
            torch_device: "cpu".into(),
            concurrent_batches: None,
            no_fused_kernels: false,
        }
    }
}

/// One timed configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    /// KL-fitness throughput.
    pub tokens_per_s: f64,
    pub seconds_per_eval: f64,
    pub warmup_s: f64,
    /// KL to the f32 model on the same backend.
    pub kl: f64,
    /// A plain perplexity forward (log-softmax and next-token NLL) on the
    /// same sequences.
    #[serde(default)]
    pub ppl_tokens_per_s: f64,
}

/// Every figure of a benchmark, and its scale.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub text: String,
    pub sequences: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    pub top_k: usize,
    pub repeats: usize,
    pub figures: Vec<Figure>,
    /// The PyTorch side, when a Python was given.
    pub torch: Option<Figure>,
}

#[derive(Serialize)]
struct TorchInput<'a> {
    sequences: &'a [Vec<u32>],
    batch_size: usize,
    top_k: usize,
    repeats: usize,
}

/// ```
/// # fn main() -> anyhow::Result<()> {
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let mut req = evocomp::bench::BenchRequest::new(&project.model, &project.text);
/// (req.sequences, req.seq_len, req.repeats) = (2, 32, 1);
/// req.backends = vec![evocomp::BackendChoice::Cpu];
/// let report = evocomp::bench::bench(&req, &|_| {})?;
/// assert_eq!(report.figures.len(), 1);
/// assert!(report.figures[0].tokens_per_s > 0.0 && report.figures[0].kl == 0.0);
/// # Ok(())
/// # }
/// ```
///
/// Time the KL fitness and a perplexity forward for every backend, dtype
/// and matmul `a` names (one that cannot run here is reported through
/// `notes` and skipped), and PyTorch on the same tokens when a Python is
/// given. `notes` receives progress lines.
pub fn bench(a: &BenchRequest, notes: &dyn Fn(&str)) -> Result<BenchReport> {
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let loaded = crate::score::load(&a.model)?;
    let set = evocomp_engine::token_set(&loaded, &a.text)?;
    let sample = set.sample(a.sequences, a.seq_len, a.seed)?;
    let n_tokens = sample.n_tokens();
    notes(&format!(
        "fitness sample: {} sequences x {} tokens = {n_tokens} tokens, batch {}, teacher top-{}",
        a.sequences, a.seq_len, a.batch_size, a.top_k
    ));
    let opts = EvalOptions {
        batch_size: a.batch_size,
        ..Default::default()
    };
    let mode = TeacherMode::TopK(a.top_k);

    let mut figures = Vec::new();
    for &choice in &a.backends {
        let chosen = match device::choose(choice) {
            Ok(c) => c,
            Err(e) => {
                notes(&format!("{choice:?}: skipped ({e:#})"));
                continue;
            }
        };
        let opts = EvalOptions {
            concurrent_batches: device::concurrent_batches(
                &chosen,
                device::cores(),
                a.concurrent_batches,
            ),
            ..opts
        };
        notes(&format!(
            "backend: {} ({} batch{} at once)",
            chosen.description,
            opts.concurrent_batches,
            if opts.concurrent_batches == 1 {
                ""
            } else {
                "es"
            }
        ));
        if let Err(e) = device::check_fits(
            &chosen,
            &a.model,
            loaded.config(),
            a.batch_size.min(a.sequences) * a.seq_len,
        ) {
            notes(&format!("  skipped: {e:#}"));
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
                        notes(&format!("  {dtype}: skipped ({e})"));
                        continue;
                    }
                },
            };
            if let Err(e) = m.set_matmul(matmul) {
                notes(&format!("  {dtype}, {matmul} matmul: skipped ({e})"));
                continue;
            }
            let f = time_model(a, &m, (&sample, &teacher), &opts, (dtype, matmul, &chosen))?;
            notes(&format!(
                "  {}: {:.1} tokens/s ({:.2} s per evaluation), KL to f32 {:.3e}",
                f.name, f.tokens_per_s, f.seconds_per_eval, f.kl
            ));
            figures.push(f);
        }
    }
    if figures.is_empty() {
        bail!("no backend could be timed");
    }

    let torch = match &a.python {
        None => None,
        Some(py) => Some(run_torch(py, a, &sample.sequences, notes)?),
    };
    Ok(BenchReport {
        model: a.model.display().to_string(),
        text: a.text.display().to_string(),
        sequences: a.sequences,
        seq_len: a.seq_len,
        batch_size: a.batch_size,
        top_k: a.top_k,
        repeats: a.repeats,
        figures,
        torch,
    })
}

/// One model timed: a warm-up, then `repeats` KL evaluations and
/// perplexity forwards on the sample.
fn time_model(
    a: &BenchRequest,
    m: &evocomp_model::LlamaModel,
    (sample, teacher): (&evocomp_data::Sample, &evocomp_eval::Teacher),
    opts: &EvalOptions,
    (dtype, matmul, chosen): (WeightDtype, Matmul, &device::Chosen),
) -> Result<Figure> {
    let n_tokens = sample.n_tokens();
    let label = match matmul {
        Matmul::F32 => dtype.to_string(),
        Matmul::Bf16 => format!("{dtype}, bf16 matmul"),
    };
    // One untimed evaluation: shader compilation and autotuning happen here.
    let t0 = Instant::now();
    let bar = token_progress(n_tokens as u64, "warm-up");
    kl_to_teacher(m, sample, teacher, opts, &bar)?;
    bar.finish_and_clear();
    let warmup_s = t0.elapsed().as_secs_f64();
    let bar = token_progress((n_tokens * a.repeats) as u64, "timed");
    let t1 = Instant::now();
    let mut kl = 0.0;
    for _ in 0..a.repeats {
        kl = kl_to_teacher(m, sample, teacher, opts, &bar)?.kl;
    }
    bar.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64() / a.repeats as f64;
    let bar = token_progress((n_tokens * a.repeats) as u64, "perplexity");
    let t2 = Instant::now();
    for _ in 0..a.repeats {
        perplexity(m, &sample.sequences, opts, &bar)?;
    }
    bar.finish_and_clear();
    let ppl_secs = t2.elapsed().as_secs_f64() / a.repeats as f64;
    Ok(Figure {
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
    })
}

/// Runs the PyTorch benchmark on exactly our token sequences.
fn run_torch(
    py: &Path,
    a: &BenchRequest,
    sequences: &[Vec<u32>],
    notes: &dyn Fn(&str),
) -> Result<Figure> {
    if !a.torch_script.is_file() {
        bail!(
            "the PyTorch benchmark script {} does not exist",
            a.torch_script.display()
        );
    }
    // A fresh folder with a random name, removed on every return (errors included).
    let dir = tempfile::Builder::new()
        .prefix("evocomp-bench-")
        .tempdir()
        .context("creating a temporary folder for the PyTorch benchmark")?;
    let input = dir.path().join("bench_tokens.json");
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
    notes(&format!(
        "running the PyTorch side: {} {}",
        py.display(),
        a.torch_script.display()
    ));
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
    drop(dir);
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
