//! Export: the compressed model at a study's configuration, as an HF folder
//! (config.json + model.safetensors + tokenizer.json) that the model loader
//! (and transformers) can read, a compressed-tensors folder (a quantization
//! study's packed integer weights, for transformers and vLLM), or a GGUF
//! file for llama.cpp, plus its per-unit level list.

use anyhow::{Context, Result, bail};
use evocomp_config::{Experiment, budget_label};
use evocomp_db::{Database, materialize};
use evocomp_study::{Measured, StudyDir, Summary, SweepDir};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What to export, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    /// A finished study, or a sweep folder.
    pub dir: PathBuf,
    /// Which result: a sweep's budget label (e.g. `level-2`, `dropped6`), or
    /// for an NSGA-II front the most it may cost, in the database's cost unit
    /// or as a percentage of the least compressed configuration (`60%`).
    pub budget: Option<String>,
    /// The folder to write (new or empty).
    pub out: PathBuf,
    /// Replace the files of a folder that is not empty (never the study's,
    /// its model's or its database's own folder).
    pub replace: bool,
    /// The dtype of model.safetensors (HF only).
    pub dtype: evocomp_model::WeightDtype,
    pub format: ExportFormat,
}

impl ExportRequest {
    /// The study (or sweep) in `dir`, as an HF folder in `out`, f32.
    pub fn new(dir: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            budget: None,
            out: out.into(),
            replace: false,
            dtype: evocomp_model::WeightDtype::F32,
            format: ExportFormat::Hf,
        }
    }
}

/// The exported file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// config.json + model.safetensors + tokenizer.json.
    #[default]
    Hf,
    /// model.gguf for llama.cpp, from a GGUF model's GGUF-types study (every
    /// tensor in its searched type, llama.cpp's own bytes) or depth study
    /// (dropped blocks removed), with the source's metadata and tokenizer.
    Gguf,
    /// A quantization study as compressed-tensors (LLM Compressor's format,
    /// loaded by transformers and vLLM): packed integer weights with their
    /// scales and zero points, one config group per bit-width; or a sparsity
    /// study in its `sparse-bitmask` layout.
    CompressedTensors,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hf" => Ok(ExportFormat::Hf),
            "gguf" => Ok(ExportFormat::Gguf),
            "compressed-tensors" | "compressed_tensors" => Ok(ExportFormat::CompressedTensors),
            other => Err(format!(
                "unknown export format {other:?} (hf, gguf or compressed-tensors)"
            )),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The study the configuration came from (a sweep's member).
    pub study: PathBuf,
    pub experiment: Experiment,
    /// The configuration written, with the study's held-out measurements.
    pub measured: Measured,
    /// The folder written.
    pub out: PathBuf,
    /// Every file written in it, by name.
    pub files: Vec<String>,
    pub detail: ExportDetail,
}

/// What depends on the format.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportDetail {
    Hf {
        /// Blocks of the model, after dropped ones are removed.
        layers: usize,
        removed_layers: Vec<usize>,
        /// Settings that are a runtime policy, not weights (KV-cache budgets).
        runtime_only: usize,
    },
    Gguf {
        tensors: usize,
        bytes: u64,
        bits_per_weight: f64,
        /// Share of the weights in each GGUF type, in percent.
        weights_by_type: Vec<(String, f64)>,
        /// A GGUF-types study: the llama-quantize arguments (written to
        /// `llama-quantize.args`) that make the same mix from the user's
        /// F16/BF16 file, the positional type to pass, and whether the
        /// database used an importance matrix (pass the same one).
        llama_quantize: Option<LlamaQuantize>,
    },
    CompressedTensors {
        /// model.safetensors' size.
        bytes: u64,
        /// Bits per weight of the compressed layers as written.
        bits_per_weight: f64,
        layout: CtLayout,
        /// What a user should know: narrower groups than the database's,
        /// layers vLLM cannot fuse, which loaders read the layout.
        notes: Vec<String>,
    },
}

/// How a compressed-tensors export stores its compressed layers.
#[derive(Debug, Clone, PartialEq)]
pub enum CtLayout {
    /// `pack-quantized` (a quantization study).
    Packed {
        /// Bits per weight as the study's cost counts them (16-bit scales,
        /// groups as built).
        study_bits_per_weight: f64,
        /// (bits, group size in the file (0: per row), modules).
        groups: Vec<(u8, usize, usize)>,
    },
    /// `sparse-bitmask` (a sparsity study).
    Bitmask {
        /// Layers in the bitmask layout, and those left dense (too little
        /// sparsity for a bitmask to pay).
        layers: usize,
        dense_layers: usize,
        /// Zeros among the bitmask layers' weights, and the study's
        /// sparsity over all its layers.
        sparsity: f64,
        study_sparsity: f64,
    },
}

/// How to make a GGUF-types study's mix with llama.cpp's own tool.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaQuantize {
    /// `llama-quantize.args` in the export folder: one argument and its value per line.
    pub args_file: PathBuf,
    pub args: Vec<String>,
    /// The positional type (the mix's most common).
    pub base_type: String,
    /// The database quantized with an importance matrix: pass the same one
    /// (`evocomp db imatrix` writes it).
    pub imatrix: bool,
}

/// Whether `a` and `b` are the same folder or one holds the other.
fn overlaps(a: &Path, b: &Path) -> bool {
    let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize()) else {
        return false;
    };
    a.starts_with(&b) || b.starts_with(&a)
}

/// Refuse to write where the export would destroy something: the study's
/// inputs (its folder, the model, the database) always; any folder that is
/// not empty unless `--replace`.
fn check_out(out: &Path, replace: bool, inputs: &[(&str, &Path)]) -> Result<()> {
    for (what, p) in inputs {
        // A folder (study, database, HF model) may neither hold nor lie in
        // the output; a file (a GGUF model) may not lie in it.
        let clash = if p.is_file() {
            match (p.canonicalize(), out.canonicalize()) {
                (Ok(f), Ok(o)) => f.starts_with(&o),
                _ => false,
            }
        } else {
            overlaps(out, p)
        };
        if out.exists() && clash {
            bail!(
                "--out {}: that is (or holds, or is inside) the {what} {}; export somewhere else",
                out.display(),
                p.display()
            );
        }
    }
    if out.is_file() {
        bail!("--out {}: a file, not a folder", out.display());
    }
    // What an export killed midway left: removed, whatever else is there.
    let partial = out.join(evocomp_model::PARTIAL_DIR);
    if partial.is_dir() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing an unfinished export's {}", partial.display()))?;
    }
    let stale_gguf = out.join("model.gguf.tmp");
    if stale_gguf.is_file() {
        std::fs::remove_file(&stale_gguf)
            .with_context(|| format!("removing an unfinished export's {}", stale_gguf.display()))?;
    }
    let non_empty = out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some();
    if non_empty && !replace {
        bail!(
            "--out {} is not empty; choose a new folder, or pass --replace to overwrite its files",
            out.display()
        );
    }
    Ok(())
}

/// The front member with the lowest held-out KL within `limit`.
fn pick<'a>(s: &'a Summary, limit: &str) -> Result<&'a Measured> {
    let cap = match limit.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p
                .trim()
                .parse()
                .with_context(|| format!("--budget {limit}: not a percentage"))?;
            (p / 100.0 * s.full_cost as f64).floor() as u64
        }
        None => limit.trim().parse().with_context(|| {
            format!(
                "--budget {limit}: expected a cost in {} or a percentage like 60%",
                s.cost_unit
            )
        })?,
    };
    s.front
        .iter()
        .filter(|m| m.cost <= cap)
        .min_by(|a, b| a.held_out_kl.total_cmp(&b.held_out_kl))
        .with_context(|| {
            format!(
                "no front member costs at most {cap} {} (the cheapest costs {})",
                s.cost_unit,
                s.front.iter().map(|m| m.cost).min().unwrap_or(0)
            )
        })
}

/// The study folder and the configuration `args` name.
pub(crate) fn choose(args: &ExportRequest) -> Result<(PathBuf, Summary, Measured)> {
    // In a sweep, --budget names the study; otherwise it picks a front member.
    let sweep = SweepDir::new(&args.dir).members()?;
    let dir = match &sweep {
        Some(members) => {
            let labels: Vec<String> = members.iter().map(|e| budget_label(&e.budget)).collect();
            let Some(b) = &args.budget else {
                bail!(
                    "{} is a sweep: choose a budget with --budget ({})",
                    args.dir.display(),
                    labels.join(", ")
                );
            };
            match labels.iter().position(|l| l == b) {
                Some(i) => members[i].output.clone(),
                None => bail!(
                    "{}: no budget {b} in this sweep (it has {})",
                    args.dir.display(),
                    labels.join(", ")
                ),
            }
        }
        None => args.dir.clone(),
    };
    let s = StudyDir::new(&dir).summary()?;
    let m = match (&args.budget, s.front.len() > 1) {
        (Some(b), true) if sweep.is_none() => pick(&s, b)?.clone(),
        (Some(b), false) if sweep.is_none() => bail!(
            "--budget {b}: {} is neither a sweep nor a front; it holds one configuration (export it without --budget)",
            dir.display()
        ),
        (None, true) => bail!(
            "{} holds a front of {} configurations: choose one with --budget (a cost, or a percentage like 60%)",
            dir.display(),
            s.front.len()
        ),
        _ => s.best.clone(),
    };
    Ok((dir, s, m))
}

/// Export the configuration `args` names (an HF folder by default; see the
/// crate's example for a whole run). Refuses to write into the study's
/// inputs, or into a folder that is not empty without `replace`:
///
/// ```
/// # use std::sync::{Arc, atomic::AtomicBool};
/// # fn main() -> anyhow::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let project = evocomp::demo::tiny_project(dir.path())?;
/// # let stop = Arc::new(AtomicBool::new(false));
/// # let opts = evocomp::study::StudyOptions::default();
/// # evocomp::study::run(&project.study, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
/// use evocomp::export::{ExportRequest, export};
/// let mut req = ExportRequest::new(dir.path().join("results/tiny"), dir.path().join("out"));
/// let first = export(&req)?;
/// assert!(first.files.contains(&"model.safetensors".to_string()));
/// assert!(export(&req).is_err()); // not empty
/// req.replace = true;
/// export(&req)?;
/// # Ok(())
/// # }
/// ```
pub fn export(args: &ExportRequest) -> Result<Exported> {
    let (dir, s, m) = choose(args)?;
    let exp = StudyDir::new(&dir).experiment()?;
    check_out(
        &args.out,
        args.replace,
        &[
            ("study folder", &args.dir),
            ("study folder", &dir),
            ("model", &exp.model),
            ("database", &exp.database),
        ],
    )?;
    tracing::info!("loading {}", exp.model.display());
    let loaded = evocomp_model::load_model(&exp.model)?;
    let db = Database::open(&exp.database)?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let written = match args.format {
        ExportFormat::Gguf => write_gguf(args, &s, &m, &db, &exp, &loaded)?,
        ExportFormat::Hf => write_hf(args, &m, &db, &exp, &loaded)?,
        ExportFormat::CompressedTensors => write_compressed_tensors(args, &m, &db, &exp, &loaded)?,
    };
    write_levels(&dir, &s, &m, &db, &args.out, &exp, written.meta)?;
    let mut files: Vec<String> = written.files.iter().map(|f| f.to_string()).collect();
    if let ExportDetail::Gguf {
        llama_quantize: Some(_),
        ..
    } = &written.detail
    {
        files.push("llama-quantize.args".into());
    }
    files.extend(["levels.txt", "levels.ron", "evocomp.json"].map(String::from));
    Ok(Exported {
        study: dir,
        experiment: exp,
        measured: m,
        out: args.out.clone(),
        files,
        detail: written.detail,
    })
}

/// What one format wrote: its files, what `evocomp.json` adds for it, and
/// the details reported.
struct Written {
    files: &'static [&'static str],
    meta: serde_json::Value,
    detail: ExportDetail,
}

/// model.gguf from the source GGUF with each unit at its level.
fn write_gguf(
    args: &ExportRequest,
    s: &Summary,
    m: &Measured,
    db: &Database,
    exp: &Experiment,
    loaded: &evocomp_model::LoadedModel,
) -> Result<Written> {
    let out = &args.out;
    if args.dtype != evocomp_model::WeightDtype::F32 {
        bail!("--dtype applies to --format hf; a GGUF export keeps each tensor's searched type");
    }
    let source = evocomp_gguf::GgufFile::open(&exp.model).with_context(|| {
        format!(
            "--format gguf copies the source model's metadata and tokenizer, so the study's \
             model must be a .gguf file ({} is not one)",
            exp.model.display()
        )
    })?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let file = out.join("model.gguf");
    let genome: Vec<String> = m.genome.iter().map(|g| g.to_string()).collect();
    let extra = vec![
        (
            "general.quantized_by".to_string(),
            evocomp_gguf::Value::String(format!("evocomp {}", env!("CARGO_PKG_VERSION"))),
        ),
        (
            "evocomp.study".to_string(),
            evocomp_gguf::Value::String(format!("{} ({})", s.name, s.strategy)),
        ),
        (
            "evocomp.genome".to_string(),
            evocomp_gguf::Value::String(genome.join(",")),
        ),
    ];
    let report = evocomp_db::export_gguf(db, loaded.config(), &source, &m.genome, &file, extra)?;
    let llama_quantize = match &db.manifest.compression {
        evocomp_db::Compression::GgufTypes { imatrix, .. } => {
            let (args, base) = evocomp_db::llama_quantize_args(db, &m.genome)?;
            let args_file = out.join("llama-quantize.args");
            write(&args_file, &(args.join("\n") + "\n"))?;
            Some(LlamaQuantize {
                args_file,
                args,
                base_type: base.to_string(),
                imatrix: *imatrix,
            })
        }
        _ => None,
    };
    let total = report.weights_by_type.values().sum::<u64>().max(1) as f64;
    let weights_by_type = report
        .weights_by_type
        .iter()
        .map(|(t, n)| (t.to_string(), 100.0 * *n as f64 / total))
        .collect();
    Ok(Written {
        files: &["model.gguf"],
        meta: serde_json::json!({"format": "gguf", "bits_per_weight": report.bits_per_weight, "bytes": report.bytes}),
        detail: ExportDetail::Gguf {
            tensors: report.tensors,
            bytes: report.bytes,
            bits_per_weight: report.bits_per_weight,
            weights_by_type,
            llama_quantize,
        },
    })
}

/// A compressed-tensors folder: config.json (with its quantization_config),
/// model.safetensors, tokenizer.json.
fn write_compressed_tensors(
    args: &ExportRequest,
    m: &Measured,
    db: &Database,
    exp: &Experiment,
    loaded: &evocomp_model::LoadedModel,
) -> Result<Written> {
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let r = evocomp_db::export_compressed_tensors(
        db,
        loaded.config(),
        loaded.weights()?,
        &m.genome,
        out,
        args.dtype,
    )?;
    share(&out.join("model.safetensors"))?;
    write_tokenizer(out, exp, loaded)?;
    let mut notes = Vec::new();
    if let Some((_, from, to)) = r.regrouped.first() {
        notes.push(format!(
            "{} layers are written in groups of {to} (the database's {from} does not divide their \
             columns, and the format needs it to): the same weights, {}x the scales",
            r.regrouped.len(),
            from / to
        ));
    }
    if !r.unfusable.is_empty() {
        let shown: Vec<&str> = r.unfusable.iter().take(3).map(String::as_str).collect();
        notes.push(format!(
            "vLLM fuses q/k/v and gate/up into one layer with one scheme; {} of these groups differ \
             in bits or group ({}{}; all in evocomp.json): transformers loads them as they are",
            r.unfusable.len(),
            shown.join(", "),
            if r.unfusable.len() > 3 { ", ..." } else { "" }
        ));
    }
    if r.asymmetric {
        notes.push(
            "asymmetric grids: the zero points are packed as compressed-tensors writes them; \
             transformers 5.24 with compressed-tensors 0.20 does not load packed zero points (it \
             expects them unpacked), the library's own decompressor does; for transformers, build \
             the database with `symmetric: true`"
                .to_string(),
        );
    }
    let numel = db.unit_numel().iter().sum::<u64>().max(1) as f64;
    let (layout, study) = if r.format == "sparse-bitmask" {
        notes.push(
            "sparse-bitmask is compressed-tensors' unstructured sparse layout: releases up to \
             0.12 read it (compressed-tensors 0.9.4 with transformers 4.51.3 loads this folder), \
             0.13 and later dropped it; transformers and vLLM decompress it to dense weights"
                .to_string(),
        );
        let study_sparsity = 1.0 - m.cost as f64 / numel;
        (
            CtLayout::Bitmask {
                layers: r.sparse_layers,
                dense_layers: r.dense_layers,
                sparsity: r.sparsity,
                study_sparsity,
            },
            serde_json::json!({"study_sparsity": study_sparsity, "sparsity": r.sparsity,
                "bitmask_layers": r.sparse_layers, "dense_layers": r.dense_layers}),
        )
    } else {
        let study_bits_per_weight = m.cost as f64 / numel;
        (
            CtLayout::Packed {
                study_bits_per_weight,
                groups: r.groups.clone(),
            },
            serde_json::json!({"study_bits_per_weight": study_bits_per_weight}),
        )
    };
    let mut meta = serde_json::json!({
        "format": "compressed-tensors",
        "layout": r.format,
        "bytes": r.bytes,
        "bits_per_weight": r.bits_per_weight(),
        "weights_dtype": args.dtype.to_string(),
        "regrouped": r.regrouped,
        "vllm_unfusable": r.unfusable,
    });
    if let (Some(meta), Some(study)) = (meta.as_object_mut(), study.as_object()) {
        meta.extend(study.clone());
    }
    Ok(Written {
        files: &["config.json", "model.safetensors", "tokenizer.json"],
        meta,
        detail: ExportDetail::CompressedTensors {
            bytes: r.bytes,
            bits_per_weight: r.bits_per_weight(),
            layout,
            notes,
        },
    })
}

/// safetensors creates the file owner-only; a model folder is for sharing.
fn share(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("{}: setting permissions", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn write_tokenizer(
    out: &Path,
    exp: &Experiment,
    loaded: &evocomp_model::LoadedModel,
) -> Result<()> {
    let tok = loaded
        .tokenizer
        .to_json()
        .map_err(|e| anyhow::anyhow!("{}: tokenizer: {e}", exp.model.display()))?;
    write(&out.join("tokenizer.json"), &tok)
}

/// An HF folder: config.json, model.safetensors, tokenizer.json.
fn write_hf(
    args: &ExportRequest,
    m: &Measured,
    db: &Database,
    exp: &Experiment,
    loaded: &evocomp_model::LoadedModel,
) -> Result<Written> {
    let out = &args.out;
    // Read for this alone (not kept): the genome is applied in place.
    let weights = std::borrow::Cow::Owned(loaded.read_weights()?);
    let mat = materialize(db, loaded.config(), weights, &m.genome)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    evocomp_model::save_hf_safetensors_as(&mat.config, &mat.weights, out, args.dtype)?;
    share(&out.join("model.safetensors"))?;
    write_tokenizer(out, exp, loaded)?;
    Ok(Written {
        files: &["config.json", "model.safetensors", "tokenizer.json"],
        meta: serde_json::json!({
            "format": "hf",
            "removed_layers": mat.removed_layers,
            "runtime_only": mat.runtime_only,
            "weights_dtype": args.dtype.to_string(),
        }),
        detail: ExportDetail::Hf {
            layers: mat.config.n_layers,
            removed_layers: mat.removed_layers.clone(),
            runtime_only: mat.runtime_only.len(),
        },
    })
}

/// levels.txt, levels.ron and evocomp.json (with `more` fields) in `out`.
fn write_levels(
    dir: &Path,
    s: &Summary,
    m: &Measured,
    db: &Database,
    out: &Path,
    exp: &evocomp_config::Experiment,
    more: serde_json::Value,
) -> Result<()> {
    // The level list, as text and as RON.
    let mut txt = String::new();
    let _ = writeln!(
        txt,
        "# evocomp export of {} ({})",
        dir.display(),
        s.strategy
    );
    let _ = writeln!(
        txt,
        "# cost {} {} ({:.2}% of the least compressed); held-out KL {:.6}, perplexity {:.4} on {} tokens",
        m.cost,
        s.cost_unit,
        100.0 * m.cost as f64 / s.full_cost.max(1) as f64,
        m.held_out_kl,
        m.held_out_perplexity,
        m.held_out_tokens
    );
    let _ = writeln!(txt, "# unit level setting");
    let mut ron = format!(
        "// evocomp export of {} ({}); level per unit, with its setting\nLevels(\n    study: {:?},\n    cost: {},\n    cost_unit: {:?},\n    units: [\n",
        dir.display(),
        s.strategy,
        s.name,
        m.cost,
        s.cost_unit
    );
    for (ui, (name, &g)) in s.units.iter().zip(&m.genome).enumerate() {
        let param = db
            .level(ui, g)
            .with_context(|| format!("{name}: level {g} is not in the database"))?
            .param;
        let _ = writeln!(txt, "{name} {g} {param}");
        let _ = writeln!(ron, "        ({name:?}, {g}, {param}),");
    }
    ron.push_str("    ],\n)\n");
    write(&out.join("levels.txt"), &txt)?;
    write(&out.join("levels.ron"), &ron)?;
    let mut meta = serde_json::json!({
        "format_version": evocomp_study::FORMAT_VERSION,
        // Lossy: a path need not be UTF-8, JSON strings must be.
        "study": dir.to_string_lossy(),
        "strategy": s.strategy,
        "model": exp.model.to_string_lossy(),
        "database": exp.database.to_string_lossy(),
        "genome": m.genome,
        "cost": m.cost,
        "cost_unit": s.cost_unit,
        "held_out_kl": m.held_out_kl,
        "held_out_perplexity": m.held_out_perplexity,
        "held_out_tokens": m.held_out_tokens,
    });
    if let (Some(meta), serde_json::Value::Object(more)) = (meta.as_object_mut(), more) {
        meta.extend(more);
    }
    write(
        &out.join("evocomp.json"),
        &serde_json::to_string_pretty(&meta)?,
    )?;
    Ok(())
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("writing {} (is the disk full?)", p.display()))
}
