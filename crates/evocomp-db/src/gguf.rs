//! What GGUF-types databases add: llama.cpp's presets as genomes, and a
//! genome written as a GGUF file llama.cpp runs.

use crate::apply::Database;
use crate::spec::Compression;
use crate::units::{UnitTarget, gguf_rope_heads, level_type, tensor_role};
use crate::{DbError, Result};
use evocomp_gguf::{GgmlType, GgufFile, GgufWriter, Preset, TensorRole, Value};
use evocomp_model::{LlamaConfig, permute_rope_row_bytes};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// Every llama.cpp preset the database can express, by name (none on a
/// database of another kind).
pub fn preset_genomes(db: &Database) -> Vec<(String, Vec<i64>)> {
    Preset::ALL
        .iter()
        .filter_map(|&p| Some((p.to_string(), preset_genome(db, p).ok()?)))
        .collect()
}

/// The genome that gives every unit the type llama.cpp's `preset` gives its
/// tensor (without an importance matrix changing any rule: none of these
/// presets' rules depend on one). An error names a unit whose type the
/// database lacks.
pub fn preset_genome(db: &Database, preset: Preset) -> Result<Vec<i64>> {
    let m = &db.manifest;
    if !matches!(m.compression, Compression::GgufTypes { .. }) {
        return Err(DbError::Unsupported(format!(
            "llama.cpp presets are genomes of a GGUF-types database; {} is not one",
            db.dir().display()
        )));
    }
    let n_layers = m.units.iter().map(|u| u.unit.layer + 1).max().unwrap_or(0);
    let tied = !m.units.iter().any(|u| u.unit.target == UnitTarget::Head);
    m.units
        .iter()
        .map(|u| {
            let role = tensor_role(u.unit.target)
                .ok_or_else(|| DbError::Unsupported(format!("{}: not a tensor", u.name)))?;
            let [_, cols] = u
                .shape
                .ok_or_else(|| DbError::Unsupported(format!("{}: no shape", u.name)))?;
            let want = preset.tensor_type(role, u.unit.layer, n_layers, cols, tied);
            u.levels
                .iter()
                .find(|l| level_type(l) == Some(want))
                .map(|l| l.level)
                .ok_or_else(|| {
                    let have: Vec<String> = u
                        .levels
                        .iter()
                        .filter_map(level_type)
                        .map(|t| t.to_string())
                        .collect();
                    DbError::Unsupported(format!(
                        "llama.cpp's {preset} gives {} ({}) type {want}, which the database does \
                         not have (it has {}); add {want} to the database's types",
                        u.name,
                        role.gguf_name(u.unit.layer),
                        have.join(", ")
                    ))
                })
        })
        .collect()
}

/// Write `entries` as the GGUF importance-matrix file llama-quantize reads
/// with `--imatrix` (llama-imatrix's format: `<tensor>.in_sum2` and
/// `<tensor>.counts`, F32, and the `imatrix.*` keys), atomically.
pub fn write_imatrix(im: &crate::build::Imatrix, out: &Path) -> Result<()> {
    let mut w = GgufWriter::new();
    w.meta("general.type", Value::String("imatrix".into()));
    w.meta_strings("imatrix.datasets", &[&im.dataset]);
    w.meta("imatrix.chunk_count", Value::U32(im.chunks as u32));
    w.meta("imatrix.chunk_size", Value::U32(im.chunk_size as u32));
    for (name, e) in &im.entries {
        w.tensor_f32(format!("{name}.in_sum2"), &[1, e.sums.len()], &e.sums);
        w.tensor_f32(format!("{name}.counts"), &[1, 1], &[e.count]);
    }
    let tmp = out.with_extension("gguf.tmp");
    w.write(&tmp).map_err(DbError::io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(DbError::io(out))
}

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufExport {
    pub tensors: usize,
    /// The file's size in bytes.
    pub bytes: u64,
    /// Weights per type, over every tensor.
    pub weights_by_type: BTreeMap<GgmlType, u64>,
    /// Bits per weight over every tensor (norms included), as llama.cpp
    /// reports a model's size.
    pub bits_per_weight: f64,
}

/// llama.cpp's `general.file_type` for a file mostly of `ty` (the _M
/// variant for K-quants).
fn file_type(ty: GgmlType) -> u32 {
    use GgmlType as T;
    match ty {
        T::F32 => 0,
        T::F16 => 1,
        T::Q4_0 => 2,
        T::Q4_1 => 3,
        T::Q8_0 => 7,
        T::Q5_0 => 8,
        T::Q5_1 => 9,
        T::Q2_K => 10,
        T::Q3_K => 12,
        T::Q4_K => 15,
        T::Q5_K => 17,
        T::Q6_K => 18,
        T::IQ4_NL => 25,
        T::BF16 => 32,
        _ => 1024,
    }
}

/// What a depth genome does to the blocks of a GGUF file: which are
/// removed, and whose attention or MLP output projection is zeroed.
struct DepthPlan {
    removed: Vec<bool>,
    zero_attn: Vec<bool>,
    zero_mlp: Vec<bool>,
}

impl DepthPlan {
    fn new(db: &Database, genome: &[i64], n_layers: usize) -> Self {
        let mut p = DepthPlan {
            removed: vec![false; n_layers],
            zero_attn: vec![false; n_layers],
            zero_mlp: vec![false; n_layers],
        };
        for (u, &g) in db.manifest.units.iter().zip(genome) {
            if g != 1 {
                continue;
            }
            match u.unit.target {
                UnitTarget::Block => p.removed[u.unit.layer] = true,
                UnitTarget::Attention => p.zero_attn[u.unit.layer] = true,
                UnitTarget::Mlp => p.zero_mlp[u.unit.layer] = true,
                _ => {}
            }
        }
        p
    }

    /// A block tensor's new name (`None`: its block is removed).
    fn rename(&self, name: &str) -> Option<String> {
        let Some((layer, rest)) = block_of(name) else {
            return Some(name.to_string());
        };
        if self.removed[layer] {
            return None;
        }
        let before = self.removed[..layer].iter().filter(|&&r| r).count();
        Some(format!("blk.{}.{rest}", layer - before))
    }
}

/// `blk.<layer>.<rest>` split into the layer and the rest.
fn block_of(name: &str) -> Option<(usize, &str)> {
    let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, rest))
}

/// Write `genome` as a GGUF v3 file at `out`, from the source GGUF file:
/// its metadata (tokenizer included) and tensor order.
/// - A GGUF-types study: each unit's tensor as the database's blocks of its
///   level (llama.cpp's bytes), every other tensor copied. Q and K rows go
///   back to llama.cpp's RoPE order where its converter permutes them
///   (`cfg`'s family).
/// - A depth study: dropped blocks removed (later blocks renumbered, the
///   block count and per-layer metadata arrays rewritten), a dropped
///   attention or MLP sub-block's output projection written as zeros in its
///   own type; every tensor kept is the source's bytes. Gemma 3 is refused
///   when blocks are removed: llama.cpp derives its sliding-window blocks
///   from their index.
///
/// `extra` metadata is added (evocomp's provenance). The file is written to a
/// temporary name and renamed, so `out` is either the whole export or absent.
pub fn export_gguf(
    db: &Database,
    cfg: &LlamaConfig,
    source: &GgufFile,
    genome: &[i64],
    out: &Path,
    extra: Vec<(String, Value)>,
) -> Result<GgufExport> {
    db.manifest.check_genome(genome)?;
    let src = source.path().display().to_string();
    let depth = depth_plan(db, cfg, genome)?;
    let arch = match source.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        _ => {
            return Err(DbError::Unsupported(format!(
                "{src}: no general.architecture"
            )));
        }
    };
    let removed = depth
        .as_ref()
        .map_or(0, |d| d.removed.iter().filter(|&&r| r).count());
    if removed > 0 && arch == "gemma3" {
        return Err(DbError::Unsupported(format!(
            "{src}: llama.cpp derives Gemma 3's sliding-window blocks from their index, so a \
             GGUF with blocks removed would attend differently; export it as an HF folder \
             (--format hf), whose layer_types keep each block's window"
        )));
    }
    // Unit per tensor name (GGUF types).
    let mut by_name = BTreeMap::new();
    if depth.is_none() {
        for (ui, u) in db.manifest.units.iter().enumerate() {
            let role = tensor_role(u.unit.target)
                .ok_or_else(|| DbError::Unsupported(format!("{}: not a tensor", u.name)))?;
            by_name.insert(role.gguf_name(u.unit.layer), ui);
        }
    }
    let mut w = GgufWriter::new();
    if let Some(a) = source.get("general.alignment") {
        let Value::U32(a) = a else {
            return Err(DbError::Unsupported(format!(
                "{src}: general.alignment is not a u32"
            )));
        };
        w = w.alignment(*a as u64);
    }
    let mut weights_by_type: BTreeMap<GgmlType, u64> = BTreeMap::new();
    let mut tensors = Vec::new();
    for info in source.tensors() {
        let mut name = info.name.clone();
        if let Some(d) = &depth {
            let Some(renamed) = d.rename(&info.name) else {
                continue;
            };
            name = renamed;
        }
        let (ty, bytes) = match by_name.remove(&info.name) {
            Some(ui) => unit_tensor(db, cfg, genome, ui, info, &src)?,
            None => source_tensor(source, depth.as_ref(), info, &src)?,
        };
        *weights_by_type.entry(ty).or_default() += info.n_elements();
        tensors.push((name, info.dims.clone(), ty, bytes));
    }
    if let Some((name, _)) = by_name.into_iter().next() {
        return Err(DbError::Unsupported(format!(
            "{src} has no tensor {name}, which the database quantizes: not the database's model"
        )));
    }
    let mostly = weights_by_type
        .iter()
        .filter(|(t, _)| !matches!(t, GgmlType::F32))
        .max_by_key(|(_, n)| **n)
        .map_or(GgmlType::F32, |(t, _)| *t);
    copy_metadata(&mut w, source, &arch, cfg.n_layers, depth.as_ref());
    if depth.is_none() {
        w.meta("general.file_type", Value::U32(file_type(mostly)));
    }
    imatrix_metadata(&mut w, db)?;
    for (k, v) in extra {
        w.meta(k, v);
    }
    for (name, dims, ty, bytes) in &tensors {
        w.tensor_borrowed(name.clone(), dims, *ty, bytes.as_ref())
            .map_err(|e| DbError::Unsupported(e.to_string()))?;
    }
    // Every tensor came from a map: written only if none was cut short meanwhile.
    let bytes = write_file(&w, out, || {
        source.intact("(copied into the export)")?;
        db.intact()
    })?;
    let total: u64 = weights_by_type.values().sum();
    let bits: f64 = tensors
        .iter()
        .map(|(_, _, _, b)| b.len() as f64 * 8.0)
        .sum();
    Ok(GgufExport {
        tensors: tensors.len(),
        bytes,
        weights_by_type,
        bits_per_weight: bits / total.max(1) as f64,
    })
}

/// For a depth study, which blocks go and which sub-blocks are zeroed;
/// None for a GGUF-types study; an error for a database GGUF cannot hold.
fn depth_plan(db: &Database, cfg: &LlamaConfig, genome: &[i64]) -> Result<Option<DepthPlan>> {
    let why = match &db.manifest.compression {
        Compression::GgufTypes { .. } => return Ok(None),
        Compression::Depth { .. } => return Ok(Some(DepthPlan::new(db, genome, cfg.n_layers))),
        Compression::Sparsity { .. } => {
            "llama.cpp has no sparse tensors: the zeros would be stored, quantized, at full cost"
        }
        Compression::Quantization { .. } => {
            "GPTQ/RTN grids with groups of 128 are not ggml types (a GGUF-types database searches llama.cpp's own)"
        }
        _ => "KV-cache settings are a runtime policy, not weights",
    };
    Err(DbError::Unsupported(format!(
        "GGUF export writes GGUF-types studies and depth studies; {} holds {}: {why}; \
         export it as an HF folder (--format hf)",
        db.dir().display(),
        crate::units::cost_unit(&db.manifest.compression)
    )))
}

/// Unit `ui`'s tensor at its level: the database's stored ggml blocks, Q/K
/// rows put back into llama.cpp's RoPE order.
fn unit_tensor<'a>(
    db: &'a Database,
    cfg: &LlamaConfig,
    genome: &[i64],
    ui: usize,
    info: &evocomp_gguf::TensorInfo,
    src: &str,
) -> Result<(GgmlType, Cow<'a, [u8]>)> {
    let u = &db.manifest.units[ui];
    let shape = u.shape.ok_or_else(|| DbError::Corrupt {
        path: crate::manifest::Manifest::path(db.dir()),
        message: format!("{} has no weight shape", u.name),
    })?;
    if info.shape() != shape.to_vec() {
        return Err(DbError::Unsupported(format!(
            "{src}: {} has shape {:?}, the database's {} {:?}: not the database's model",
            info.name,
            info.shape(),
            u.name,
            shape
        )));
    }
    let (ty, bytes) = db
        .ggml_variant(ui, genome[ui])?
        .ok_or_else(|| DbError::Corrupt {
            path: db.dir().join(u.file.as_deref().unwrap_or("?")),
            message: format!("{}: level {} has no ggml blocks", u.name, genome[ui]),
        })?;
    Ok(match gguf_rope_heads(cfg, u.unit.target) {
        Some(n) => (
            ty,
            Cow::Owned(permute_rope_row_bytes(bytes, shape[0], n, true)),
        ),
        None => (ty, Cow::Borrowed(bytes)),
    })
}

/// A tensor the database does not hold: the source's bytes, or zeros in
/// its own type for the output projection of a dropped sub-block.
fn source_tensor<'a>(
    source: &'a GgufFile,
    depth: Option<&DepthPlan>,
    info: &evocomp_gguf::TensorInfo,
    src: &str,
) -> Result<(GgmlType, Cow<'a, [u8]>)> {
    let zeroed = depth.is_some_and(|d| match block_of(&info.name) {
        Some((l, "attn_output.weight")) => d.zero_attn[l],
        Some((l, "ffn_down.weight")) => d.zero_mlp[l],
        _ => false,
    });
    if !zeroed {
        return Ok((info.ty, Cow::Borrowed(source.tensor_bytes(info))));
    }
    let zeros = vec![0.0f32; info.n_elements() as usize];
    let bytes =
        evocomp_gguf::quantize(info.ty, &zeros, info.dims[0] as usize, None).map_err(|e| {
            DbError::Unsupported(format!(
                "{src}: {}: zeroing a dropped sub-block: {e}",
                info.name
            ))
        })?;
    Ok((info.ty, Cow::Owned(bytes)))
}

/// The source's metadata (its alignment aside, and its file type for a
/// GGUF-types export, which gets its own): for depth, the block count and
/// every per-block array without the removed blocks.
fn copy_metadata(
    w: &mut GgufWriter,
    source: &GgufFile,
    arch: &str,
    n_layers: usize,
    depth: Option<&DepthPlan>,
) {
    let removed = depth.map_or(0, |d| d.removed.iter().filter(|&&r| r).count());
    let block_count = format!("{arch}.block_count");
    for (k, v) in source.metadata() {
        if k == "general.alignment" || (k == "general.file_type" && depth.is_none()) {
            continue;
        }
        let v = match (depth, v) {
            (Some(_), _) if *k == block_count => Value::U32((n_layers - removed) as u32),
            // A per-layer array (one entry per block) loses the removed blocks' entries.
            (Some(d), Value::Array(t, items))
                if k.starts_with(&format!("{arch}.")) && items.len() == n_layers =>
            {
                let kept = items
                    .iter()
                    .zip(&d.removed)
                    .filter(|(_, r)| !**r)
                    .map(|(x, _)| x.clone())
                    .collect();
                Value::Array(*t, kept)
            }
            _ => v.clone(),
        };
        w.meta(k.clone(), v);
    }
}

/// What llama-quantize records of an importance matrix (the dataset, the
/// tensors it covers, its chunks), for the database's own.
fn imatrix_metadata(w: &mut GgufWriter, db: &Database) -> Result<()> {
    if let Compression::GgufTypes {
        imatrix: true,
        imatrix_file: Some(f),
        ..
    } = &db.manifest.compression
    {
        // As llama-quantize records a file it was given.
        w.meta(
            "quantize.imatrix.file",
            Value::String(f.path.display().to_string()),
        );
        return Ok(());
    }
    if let Compression::GgufTypes { imatrix: true, .. } = db.manifest.compression {
        let calib = crate::build::read_calibration(db.dir())?;
        let linear = db
            .manifest
            .units
            .iter()
            .filter(|u| matches!(u.unit.target, UnitTarget::Linear(_)))
            .count();
        w.meta("quantize.imatrix.dataset", Value::String(calib.id));
        w.meta("quantize.imatrix.entries_count", Value::I32(linear as i32));
        w.meta(
            "quantize.imatrix.chunks_count",
            Value::I32(calib.sequences.len() as i32),
        );
    }
    Ok(())
}

/// `w` written to a temporary name beside `out`, synced, and renamed if
/// `verify` (asked once the bytes are written) finds nothing wrong; the
/// file's size.
fn write_file(w: &GgufWriter, out: &Path, verify: impl FnOnce() -> Result<()>) -> Result<u64> {
    let tmp = out.with_extension("gguf.tmp");
    let io = |e| DbError::Io {
        path: tmp.clone(),
        source: e,
    };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut buf = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_to(&mut buf).map_err(io)?;
    let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    if let Err(e) = verify() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(DbError::io(out))?;
    Ok(std::fs::metadata(out).map_err(DbError::io(out))?.len())
}

/// llama-quantize's arguments that make `genome`'s mix from the user's own
/// F16/BF16 (or F32) GGUF file: `--token-embedding-type` and
/// `--output-tensor-type` for those two tensors (they override any
/// `--tensor-type`), and for every block tensor `--tensor-type` with an
/// anchored regular expression naming exactly it (llama-quantize matches
/// the pattern anywhere in the name, and `blk.1.` would also match
/// `blk.10.`). One argument and its value per line, in the units' order;
/// the positional type to pass is the mix's most common type, which the
/// second value names. A GGUF-types database only.
pub fn llama_quantize_args(db: &Database, genome: &[i64]) -> Result<(Vec<String>, GgmlType)> {
    if !matches!(db.manifest.compression, Compression::GgufTypes { .. }) {
        return Err(DbError::Unsupported(
            "llama-quantize arguments exist for GGUF-types studies (llama.cpp's own tensor types)"
                .into(),
        ));
    }
    db.manifest.check_genome(genome)?;
    let mut lines = Vec::with_capacity(genome.len());
    let mut weights: BTreeMap<GgmlType, u64> = BTreeMap::new();
    for (ui, &g) in genome.iter().enumerate() {
        let u = &db.manifest.units[ui];
        let level = db
            .level(ui, g)
            .ok_or_else(|| DbError::BadGenome(format!("{}: no level {g}", u.name)))?;
        let ty = level_type(level).ok_or_else(|| DbError::Corrupt {
            path: crate::manifest::Manifest::path(db.dir()),
            message: format!("{}: level {g} names no ggml type", u.name),
        })?;
        let role = tensor_role(u.unit.target)
            .ok_or_else(|| DbError::Unsupported(format!("{}: not a tensor", u.name)))?;
        let numel = u.shape.map_or(0, |[r, c]| (r * c) as u64);
        *weights.entry(ty).or_default() += numel;
        let t = ty.to_string().to_ascii_lowercase();
        lines.push(match role {
            TensorRole::TokenEmbd => format!("--token-embedding-type {t}"),
            TensorRole::Output => format!("--output-tensor-type {t}"),
            _ => {
                let pattern = role.gguf_name(u.unit.layer).replace('.', "\\.");
                format!("--tensor-type ^{pattern}$={t}")
            }
        });
    }
    let mostly = weights
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or(GgmlType::Q4_K, |(t, _)| *t);
    Ok((lines, mostly))
}

/// An importance matrix file made by llama-imatrix: per tensor (named as
/// in the model's GGUF file), each input's mean square, the weights
/// llama-quantize gives its quantizers. Both formats: GGUF
/// (`<tensor>.in_sum2` over `<tensor>.counts`) and the legacy `.dat` (an
/// i32 entry count, then per entry an i32 name length, the name, i32 calls,
/// i32 values and the f32 values, which llama-quantize divides by the calls).
pub fn read_imatrix(path: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let bad = |m: String| DbError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not an importance matrix: {m}"),
    };
    let bytes = std::fs::read(path).map_err(DbError::io(path))?;
    let mut out = BTreeMap::new();
    if bytes.starts_with(b"GGUF") {
        let f = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
        for t in f.tensors() {
            let Some(name) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let (_, sums) = f.dequantize(&t.name).map_err(|e| bad(e.to_string()))?;
            let counts_name = format!("{name}.counts");
            let (_, counts) = f
                .dequantize(&counts_name)
                .map_err(|_| bad(format!("{} has no {counts_name}", t.name)))?;
            let count = counts.first().copied().unwrap_or(0.0);
            if !count.is_finite() || count <= 0.0 || counts.iter().any(|&c| c != count) {
                return Err(bad(format!(
                    "{counts_name}: {counts:?} (one positive count per tensor is read)"
                )));
            }
            out.insert(name.to_string(), sums.iter().map(|s| s / count).collect());
        }
    } else {
        let mut at = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8]> {
            let end = at
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| {
                    bad(format!(
                        "the file ends inside {what} (byte {at} of {})",
                        bytes.len()
                    ))
                })?;
            let s = &bytes[at..end];
            at = end;
            Ok(s)
        };
        let i32_of = |b: &[u8]| i32::from_le_bytes(b.try_into().expect("4 bytes"));
        let n = i32_of(take(4, "the entry count")?);
        if !(1..=1_000_000).contains(&n) {
            return Err(bad(format!("{n} entries")));
        }
        for e in 0..n {
            let len = i32_of(take(4, "a name length")?);
            if !(1..=4096).contains(&len) {
                return Err(bad(format!("entry {e}: a name of {len} bytes")));
            }
            let name = String::from_utf8(take(len as usize, "a name")?.to_vec())
                .map_err(|_| bad(format!("entry {e}: the name is not UTF-8")))?;
            let calls = i32_of(take(4, "a call count")?);
            let nval = i32_of(take(4, "a value count")?);
            if !(1..=1 << 24).contains(&nval) {
                return Err(bad(format!("{name}: {nval} values")));
            }
            let values = take(4 * nval as usize, "the values")?;
            let div = if calls > 0 { calls as f32 } else { 1.0 };
            let v: Vec<f32> = values
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) / div)
                .collect();
            out.insert(name, v);
        }
    }
    if out.is_empty() {
        return Err(bad("no entries".into()));
    }
    if let Some((name, _)) = out
        .iter()
        .find(|(_, v)| v.iter().any(|x| !x.is_finite() || *x < 0.0))
    {
        return Err(bad(format!("{name}: a value is negative or not finite")));
    }
    Ok(out)
}
