//! `evocomp export`: its arguments and what it prints (the library writes).

use anyhow::Result;
use evocomp::export::{CtLayout, ExportDetail, ExportFormat, ExportRequest};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A finished study, or a sweep folder.
    pub dir: PathBuf,
    /// Which result: a sweep's budget label (e.g. `level-2`, `dropped6`), or
    /// for an NSGA-II front the most it may cost, in the database's cost unit
    /// or as a percentage of the least compressed configuration (`60%`).
    #[arg(long)]
    pub budget: Option<String>,
    /// The folder to write (new or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the files of a folder that is not empty (never the study's,
    /// its model's or its database's own folder).
    #[arg(long)]
    pub replace: bool,
    /// The dtype of model.safetensors: f32 (default, exact), bf16 or f16
    /// (half the size; sparse zeros stay zeros, other values are rounded).
    #[arg(long, default_value = "f32")]
    pub dtype: evocomp_model::WeightDtype,
    /// `hf`: config.json + model.safetensors + tokenizer.json. `gguf`:
    /// model.gguf for llama.cpp, from a GGUF model's GGUF-types study (every
    /// tensor in its searched type, llama.cpp's own bytes) or depth study
    /// (dropped blocks removed), with the source's metadata and tokenizer.
    /// `compressed-tensors`: a quantization study's packed integer weights
    /// with scales and zero points (LLM Compressor's format, for
    /// transformers and vLLM), or a sparsity study's non-zero weights with
    /// bitmasks (its `sparse-bitmask` layout); `--dtype` is then the scales',
    /// sparse values' and dense tensors' (f32 keeps the study's values
    /// exactly).
    #[arg(long, default_value = "hf")]
    pub format: ExportFormat,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let e = evocomp::export::export(&ExportRequest {
        dir: args.dir,
        budget: args.budget,
        out: args.out,
        replace: args.replace,
        dtype: args.dtype,
        format: args.format,
    })?;
    let files = e.files.join(", ");
    match &e.detail {
        ExportDetail::Gguf {
            tensors,
            bytes,
            bits_per_weight,
            weights_by_type,
            llama_quantize,
        } => {
            let types: Vec<String> = weights_by_type
                .iter()
                .map(|(t, p)| format!("{t} {p:.1}%"))
                .collect();
            println!(
                "wrote {}: {tensors} tensors, {:.2} MiB, {bits_per_weight:.4} bits per weight ({}); {files}",
                e.out.join("model.gguf").display(),
                *bytes as f64 / (1 << 20) as f64,
                types.join(", ")
            );
            if let Some(q) = llama_quantize {
                println!(
                    "the same mix from your own F16/BF16 file, with llama.cpp ({} arguments in {}):\n  \
                     llama-quantize $(cat {}){} MODEL-F16.gguf OUT.gguf {}",
                    q.args.len(),
                    q.args_file.display(),
                    q.args_file.display(),
                    if q.imatrix {
                        " --imatrix IMATRIX.gguf"
                    } else {
                        ""
                    },
                    q.base_type
                );
                if q.imatrix {
                    println!(
                        "  (the database quantized with an importance matrix: pass llama-imatrix's for your file, \
                         or `evocomp db imatrix` for this database's model)"
                    );
                }
            }
        }
        ExportDetail::CompressedTensors {
            bytes,
            bits_per_weight,
            layout,
            notes,
        } => {
            let what = match layout {
                CtLayout::Packed {
                    study_bits_per_weight,
                    groups,
                } => {
                    let groups: Vec<String> = groups
                        .iter()
                        .map(|(b, g, n)| {
                            let layers = if *n == 1 { "layer" } else { "layers" };
                            match g {
                                0 => format!("{n} {layers} {b}-bit per row"),
                                g => format!("{n} {layers} {b}-bit in groups of {g}"),
                            }
                        })
                        .collect();
                    format!(
                        "quantized layers {bits_per_weight:.4} bits per weight as written \
                         ({study_bits_per_weight:.4} as the study counts them); {}",
                        groups.join(", ")
                    )
                }
                CtLayout::Bitmask {
                    layers,
                    dense_layers,
                    sparsity,
                    study_sparsity,
                } => format!(
                    "{layers} layers as sparse bitmasks, {:.2}% zeros, {bits_per_weight:.4} bits \
                     per weight as written (the study: {:.2}% sparse); {dense_layers} left dense",
                    100.0 * sparsity,
                    100.0 * study_sparsity
                ),
            };
            println!(
                "wrote {}: {:.2} MiB; {what}; {files}",
                e.out.join("model.safetensors").display(),
                *bytes as f64 / (1 << 20) as f64,
            );
            for n in notes {
                println!("note: {n}");
            }
        }
        ExportDetail::Hf {
            layers,
            removed_layers,
            ..
        } => println!(
            "wrote {} ({layers} layers{}): {files}",
            e.out.display(),
            if removed_layers.is_empty() {
                String::new()
            } else {
                format!(", blocks {removed_layers:?} removed")
            }
        ),
    }
    let (m, exp) = (&e.measured, &e.experiment);
    println!(
        "the study measured held-out perplexity {:.4} (KL {:.6}) on {} tokens of {} (windows of {})",
        m.held_out_perplexity,
        m.held_out_kl,
        m.held_out_tokens,
        exp.data.evaluation.display(),
        exp.data.held_out_context
    );
    if let ExportDetail::Hf { runtime_only, .. } = e.detail
        && runtime_only > 0
    {
        println!(
            "note: {runtime_only} KV-cache settings are a runtime policy, not weights; they are in levels.txt/levels.ron"
        );
    }
    Ok(())
}
