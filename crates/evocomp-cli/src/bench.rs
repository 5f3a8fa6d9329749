//! `evocomp bench`: its arguments and its table (the library times).

use anyhow::{Context, Result};
use evocomp::BackendChoice;
use evocomp::bench::BenchRequest;
use evocomp_model::{Matmul, WeightDtype};
use std::path::PathBuf;

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
    /// Backends to time, comma-separated (cpu, wgpu, auto).
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
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

pub fn run(a: BenchArgs) -> Result<()> {
    let req = BenchRequest {
        model: a.model,
        text: a.text,
        sequences: a.sequences,
        seq_len: a.seq_len,
        batch_size: a.batch_size,
        top_k: a.top_k,
        repeats: a.repeats,
        backends: a.backends,
        dtypes: a.dtypes,
        matmuls: a.matmuls,
        seed: a.seed,
        python: a.python,
        torch_script: a.torch_script,
        torch_device: a.torch_device,
        concurrent_batches: a.concurrent_batches,
        no_fused_kernels: a.no_fused_kernels,
    };
    let r = evocomp::bench::bench(&req, &crate::note)?;
    println!(
        "KL-fitness throughput: {} x {} tokens, batch {}, top-{} teacher, mean of {} evaluations",
        r.sequences, r.seq_len, r.batch_size, r.top_k, r.repeats
    );
    println!(
        "{:<48} {:>16} {:>22}",
        "", "KL fitness", "perplexity forward"
    );
    for f in &r.figures {
        print!(
            "{:<48} {:>9.1} tokens/s {:>13.1} tokens/s",
            f.name, f.tokens_per_s, f.ppl_tokens_per_s
        );
        match &r.torch {
            Some(t) => println!(
                "  {:.2}x / {:.2}x PyTorch",
                f.tokens_per_s / t.tokens_per_s,
                f.ppl_tokens_per_s / t.ppl_tokens_per_s
            ),
            None => println!(),
        }
    }
    if let Some(t) = &r.torch {
        println!(
            "{:<48} {:>9.1} tokens/s {:>13.1} tokens/s",
            t.name, t.tokens_per_s, t.ppl_tokens_per_s
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
