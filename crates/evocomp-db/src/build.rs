//! Building a database: every (unit, level) variant, block by block, with
//! calibration inputs captured from the uncompressed model. Each finished
//! unit's file and the manifest entry naming it are written atomically, so a
//! killed build continues where it stopped.

use crate::capture::{INPUT_GROUPS, XtxCapture, input_group};
use crate::codec;
use crate::manifest::{FORMAT_VERSION, Manifest, UnitEntry, sha256_file, write_atomic};
use crate::spec::{Compression, Propagation};
use crate::units::{
    Level, UnitTarget, cost_unit, gguf_rope_heads, level_type, plan, tensor_role, unit_shape,
};
use crate::{DbError, Result};
use burn::tensor::{Device, Tensor};
use evocomp_compress::{Hessian, Matrix, QuantConfig, prune, quantize};
use evocomp_data::Sample;
use evocomp_gguf::{GgmlType, GgufFile};
use evocomp_model::{
    HostTensor, LayerWeights, LinearKind, LlamaConfig, LlamaModel, LoadedModel, NoHook,
};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Settings of one build run.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Stop (as if killed) after this many units were written: for tests.
    pub stop_after_units: Option<usize>,
    /// Draw a progress bar.
    pub progress: bool,
    /// Held-out inputs (windows disjoint from the calibration sample): each
    /// unit's normalised error on them is recorded next to its fitted error.
    pub held_out: Option<Sample>,
}

/// What a build run did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// Units built by this run.
    pub built: usize,
    /// Units found already built.
    pub skipped: usize,
    /// True when the run stopped early (`stop_after_units`).
    pub stopped: bool,
    pub seconds: f64,
}

pub const UNITS_DIR: &str = "units";
/// The calibration token ids a build used (`{id, seq_len, sequences}`), so that
/// an independent implementation can be checked on exactly the same inputs.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// A bar over `total` units with rate and ETA, labelled `message`.
pub(crate) fn bar(total: u64, show: bool, message: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30.cyan/blue}] {pos}/{len} units  {per_sec}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(message);
    b
}

/// The manifest this build must produce, or the existing one if it matches.
fn start_manifest(
    dir: &Path,
    model: &LoadedModel,
    fingerprint: &str,
    calib: Option<&Sample>,
    held_out_id: Option<String>,
    compression: &Compression,
) -> Result<Manifest> {
    let cfg = model.config();
    let planned = plan(cfg, compression).map_err(DbError::Plan)?;
    if let Some(level) = compression.propagation().level()
        && let Some((u, _)) = planned
            .iter()
            .find(|(_, levels)| !levels.iter().any(|l| l.level == level))
    {
        return Err(DbError::Plan(format!(
            "calibration level {level} (the level calibration inputs propagate through) \
             is not a level of unit {}",
            u.name()
        )));
    }
    let calibration_id = if compression.needs_calibration() {
        Some(
            calib
                .ok_or(DbError::Plan("this method needs calibration data".into()))?
                .id
                .clone(),
        )
    } else {
        None
    };
    let path = Manifest::path(dir);
    if let Some(m) = Manifest::read(dir)? {
        if m.model_fingerprint != fingerprint {
            return Err(DbError::Mismatch {
                path,
                what: "model",
                in_db: m.model_fingerprint,
                given: fingerprint.to_string(),
            });
        }
        if m.calibration_id != calibration_id {
            return Err(DbError::Mismatch {
                path,
                what: "calibration data",
                in_db: m.calibration_id.unwrap_or_else(|| "none".into()),
                given: calibration_id.unwrap_or_else(|| "none".into()),
            });
        }
        if m.held_out_id != held_out_id {
            return Err(DbError::Mismatch {
                path,
                what: "held-out data",
                in_db: m.held_out_id.unwrap_or_else(|| "none".into()),
                given: held_out_id.unwrap_or_else(|| "none".into()),
            });
        }
        if m.compression != *compression {
            return Err(DbError::Mismatch {
                path,
                what: "compression settings",
                in_db: format!("{:?}", m.compression),
                given: format!("{compression:?}"),
            });
        }
        return Ok(m);
    }
    let units = planned
        .into_iter()
        .map(|(unit, levels)| UnitEntry {
            unit,
            name: unit.name(),
            shape: unit_shape(cfg, unit.target),
            levels,
            file: None,
            bytes: None,
            sha256: None,
            errors: None,
            output_energy: None,
            held_out_errors: None,
        })
        .collect();
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        model_fingerprint: fingerprint.to_string(),
        calibration_id,
        held_out_id,
        compression: compression.clone(),
        cost_unit: cost_unit(compression).to_string(),
        units,
        complete: false,
    })
}

/// The file whose lock a builder holds.
pub const BUILD_LOCK: &str = ".build.lock";

/// Hold `dir`'s build lock, waiting (and saying so) while another process
/// holds it.
fn lock_build(dir: &Path) -> Result<std::fs::File> {
    let p = dir.join(BUILD_LOCK);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(DbError::io(&p))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "database {}: another process is building it; waiting for it to finish",
                dir.display()
            );
            f.lock().map_err(DbError::io(&p))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(DbError::io(&p)(e)),
    }
    Ok(f)
}

/// Build (or continue building) the database in `dir`.
pub fn build_database(
    model: &LoadedModel,
    fingerprint: &str,
    calib: Option<&Sample>,
    compression: &Compression,
    dir: &Path,
    device: &Device,
    opts: &BuildOptions,
) -> Result<BuildReport> {
    let t0 = Instant::now();
    let units_dir = dir.join(UNITS_DIR);
    std::fs::create_dir_all(&units_dir).map_err(DbError::io(&units_dir))?;
    // One builder at a time: a second `db build` (or a `run` that builds)
    // waits for the first, then finds its units built. The lock goes with
    // the process, however it ends.
    let _lock = lock_build(dir)?;
    let held_out_id = opts.held_out.as_ref().map(|s| s.id.clone());
    let mut manifest = start_manifest(dir, model, fingerprint, calib, held_out_id, compression)?;
    if let Some(sample) = calib.filter(|_| compression.needs_calibration()) {
        keep_calibration(dir, sample)?;
    }
    forget_damaged(dir, &units_dir, &mut manifest)?;
    let skipped = manifest
        .units
        .iter()
        .filter(|u| u.needs_file() && u.is_built())
        .count();
    let todo: Vec<usize> = (0..manifest.units.len())
        .filter(|&i| !manifest.units[i].is_built())
        .collect();
    let mut report = BuildReport {
        built: 0,
        skipped,
        stopped: false,
        seconds: 0.0,
    };
    if todo.is_empty() {
        if !manifest.complete {
            manifest.complete = true;
            manifest.write(dir)?;
        }
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    manifest.write(dir)?;

    let cfg = model.config();
    let is_table =
        |u: &UnitEntry| matches!(u.unit.target, UnitTarget::Embedding | UnitTarget::Head);
    let tables: Vec<usize> = todo
        .iter()
        .copied()
        .filter(|&i| is_table(&manifest.units[i]))
        .collect();
    let progress = bar(todo.len() as u64, opts.progress, "db build");
    let source = gguf_source(model, compression)?;
    let imatrix_file = match compression {
        Compression::GgufTypes {
            imatrix_file: Some(f),
            ..
        } => {
            let sha = crate::manifest::sha256_file(&f.path)?;
            if sha != f.sha256 {
                return Err(DbError::Mismatch {
                    path: f.path.clone(),
                    what: "importance matrix",
                    in_db: f.sha256.clone(),
                    given: sha,
                });
            }
            Some(crate::gguf::read_imatrix(&f.path)?)
        }
        _ => None,
    };
    if !tables.is_empty() {
        for &ui in &tables {
            build_table(
                &mut manifest,
                ui,
                model,
                compression,
                source.as_ref(),
                cfg,
                dir,
            )?;
            report.built += 1;
            progress.inc(1);
            if opts.stop_after_units.is_some_and(|n| report.built >= n) {
                return finish(report, &mut manifest, dir, &progress, t0, true);
            }
        }
    }
    let Some(last_layer) = todo
        .iter()
        .filter(|&&i| !is_table(&manifest.units[i]))
        .map(|&i| manifest.units[i].unit.layer)
        .max()
    else {
        return finish(report, &mut manifest, dir, &progress, t0, false);
    };
    // Only weight units have files, and every weight method calibrates.
    let calib = calib.ok_or(DbError::Plan("this method needs calibration data".into()))?;
    // The network in f32, streamed block by block from the file (or from
    // the host weights if something read them): no whole f32 host copy
    // beside it. Each block's original weights are read when it is built.
    let mut net = model.to_device(device, evocomp_model::WeightDtype::F32)?;
    let batch_size = 4usize;
    let embed = |s: &Sample| -> Result<Vec<Tensor<3>>> {
        s.sequences
            .chunks(batch_size)
            .map(|b| Ok(net.embed(net.tokens_to_device(b)?)))
            .collect()
    };
    let mut hs = embed(calib)?;
    let mut ho = match &opts.held_out {
        Some(s) => embed(s)?,
        None => Vec::new(),
    };
    let mut ctx = BuildCtx {
        model,
        source: source.as_ref(),
        imatrix: imatrix_file.as_ref(),
        cfg,
        compression,
        dir,
        opts,
        built: &mut report.built,
        progress: &progress,
    };
    let mut stopped = false;
    for layer in 0..=last_layer {
        if ctx.build_block(&mut manifest, &mut net, layer, (&mut hs, &mut ho))? {
            stopped = true;
            break;
        }
    }
    finish(report, &mut manifest, dir, &progress, t0, stopped)
}

/// The calibration sample written beside the manifest (once), so an
/// independent implementation can be checked on the same inputs.
fn keep_calibration(dir: &Path, sample: &Sample) -> Result<()> {
    let path = dir.join(CALIBRATION_FILE);
    if !path.exists() {
        let text = serde_json::to_vec(sample)
            .map_err(|e| DbError::Backend(format!("serialising the calibration sample: {e}")))?;
        write_atomic(&path, &text)?;
    }
    Ok(())
}

/// Leftovers of a killed write are removed, and a unit whose file is
/// missing or damaged is marked unbuilt: a unit counts as built only if its
/// file is intact.
fn forget_damaged(dir: &Path, units_dir: &Path, manifest: &mut Manifest) -> Result<()> {
    for e in std::fs::read_dir(units_dir)
        .map_err(DbError::io(units_dir))?
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    for u in &mut manifest.units {
        if let (Some(f), Some(sha)) = (&u.file, &u.sha256) {
            let p = dir.join(f);
            if !p.exists() || sha256_file(&p)? != *sha {
                tracing::warn!(
                    "{}: variant file missing or damaged; rebuilding it",
                    p.display()
                );
                u.file = None;
                u.sha256 = None;
                u.bytes = None;
            }
        }
    }
    Ok(())
}

/// The end of a build run: stopped early (`stop_after_units`), or with the
/// manifest marked complete when every unit is built; timed.
fn finish(
    mut report: BuildReport,
    manifest: &mut Manifest,
    dir: &Path,
    progress: &ProgressBar,
    t0: Instant,
    stopped: bool,
) -> Result<BuildReport> {
    if stopped {
        progress.abandon();
        report.stopped = true;
    } else {
        progress.finish_and_clear();
        manifest.complete = manifest.units.iter().all(UnitEntry::is_built);
        manifest.write(dir)?;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The Hessians of a block's four input groups, indexed like [`INPUT_GROUPS`]
/// (`None` for a group not captured).
type Hessians = [Option<Hessian>; 4];

/// One built variant.
struct Variant {
    /// Index into the unit's levels.
    li: usize,
    /// The weights it holds.
    m: Matrix,
    /// Fitted (and held-out) reconstruction errors.
    err: f64,
    held: Option<f64>,
    /// Its ggml blocks, for GGUF types (what is stored, instead of `m`).
    ggml: Option<Blocks>,
}

/// A variant as ggml blocks: its type and bytes.
type Blocks = (GgmlType, Vec<u8>);

/// One unit's inputs to compressing it at every level.
struct Prepared<'a> {
    w: Matrix,
    h: &'a Hessian,
    /// ‖WX‖² on the calibration inputs.
    energy: f64,
    /// The held-out Hessian and ‖WX‖² on those inputs.
    held: Option<(&'a Hessian, f64)>,
    /// Its entry of an importance matrix read from a file.
    imatrix: Option<&'a [f32]>,
}

/// What building one group of units needs.
struct BuildCtx<'a> {
    model: &'a LoadedModel,
    /// The model's GGUF file, for GGUF-types databases ([`gguf_source`]).
    source: Option<&'a GgufFile>,
    /// A GGUF-types database's importance matrix from a file, by tensor name.
    imatrix: Option<&'a BTreeMap<String, Vec<f32>>>,
    cfg: &'a LlamaConfig,
    compression: &'a Compression,
    dir: &'a Path,
    opts: &'a BuildOptions,
    built: &'a mut usize,
    progress: &'a ProgressBar,
}

impl BuildCtx<'_> {
    /// Block `layer`'s unbuilt units, fitted to the inputs `hs` (and the
    /// held-out `ho`) bring, which then go on through the block (with
    /// sequential calibration, through its units at the calibration level,
    /// one input group at a time). True when the build stopped early.
    fn build_block(
        &mut self,
        manifest: &mut Manifest,
        net: &mut LlamaModel,
        layer: usize,
        (hs, ho): (&mut Vec<Tensor<3>>, &mut Vec<Tensor<3>>),
    ) -> Result<bool> {
        let in_layer: Vec<usize> = (0..manifest.units.len())
            .filter(|&i| {
                let u = &manifest.units[i];
                u.unit.layer == layer
                    && u.needs_file()
                    && !matches!(u.unit.target, UnitTarget::Embedding | UnitTarget::Head)
            })
            .collect();
        let layer_todo: Vec<usize> = in_layer
            .iter()
            .copied()
            .filter(|&i| !manifest.units[i].is_built())
            .collect();
        // The block's original weights, read (from the file) only if a
        // unit of it is to be built.
        let original_block = || self.model.layer(layer);
        match self.compression.propagation() {
            Propagation::Uncompressed => {
                if layer_todo.is_empty() {
                    forward_block(net, layer, hs, ho)?;
                    return Ok(false);
                }
                let (cal, held) = capture(net, layer, &INPUT_GROUPS, hs, ho, true)?;
                let block = original_block()?;
                self.build_units(manifest, &layer_todo, &block, &cal, &held)
            }
            Propagation::Blockwise { level } => {
                if !layer_todo.is_empty() {
                    let (cal, held) = capture(net, layer, &INPUT_GROUPS, hs, ho, false)?;
                    let block = original_block()?;
                    if self.build_units(manifest, &layer_todo, &block, &cal, &held)? {
                        return Ok(true);
                    }
                }
                // The next block sees this one compressed at `level`.
                self.set_at_level(manifest, net, layer, &in_layer, level)?;
                forward_block(net, layer, hs, ho)?;
                Ok(false)
            }
            Propagation::Sequential { level } => {
                let block = match layer_todo.is_empty() {
                    true => None,
                    false => Some(original_block()?),
                };
                for group in INPUT_GROUPS {
                    let members: Vec<usize> = in_layer
                        .iter()
                        .copied()
                        .filter(|&i| input_group(linear_kind(&manifest.units[i])) == group)
                        .collect();
                    let group_todo: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|i| layer_todo.contains(i))
                        .collect();
                    // A group with units to build is in `layer_todo`, so `block` is read.
                    if let (false, Some(block)) = (group_todo.is_empty(), &block) {
                        let (cal, held) = capture(net, layer, &[group], hs, ho, false)?;
                        if self.build_units(manifest, &group_todo, block, &cal, &held)? {
                            return Ok(true);
                        }
                    }
                    // The block's later units see this group compressed at `level`.
                    self.set_at_level(manifest, net, layer, &members, level)?;
                }
                forward_block(net, layer, hs, ho)?;
                Ok(false)
            }
        }
    }

    /// Put `units` of block `layer` into the network at `level`, as built.
    fn set_at_level(
        &self,
        manifest: &Manifest,
        net: &mut LlamaModel,
        layer: usize,
        units: &[usize],
        level: i64,
    ) -> Result<()> {
        for &ui in units {
            let v = read_variant(self.dir, &manifest.units[ui], level)?;
            net.set_linear(layer, linear_kind(&manifest.units[ui]), &v)
                .map_err(|e| DbError::Backend(e.to_string()))?;
        }
        Ok(())
    }

    /// Compress `units` (of the block whose original weights are `block`)
    /// at every level (in parallel) against the calibration
    /// Hessians `cal`, record errors (held-out ones against `held`), and write
    /// each unit's file and manifest entry. True when `stop_after_units` says
    /// to stop.
    fn build_units(
        &mut self,
        manifest: &mut Manifest,
        units: &[usize],
        block: &LayerWeights,
        cal: &Hessians,
        held: &Hessians,
    ) -> Result<bool> {
        let group_of = |kind: LinearKind| {
            INPUT_GROUPS
                .iter()
                .position(|&g| g == input_group(kind))
                .expect("a group")
        };
        // Per unit, once: its weights, its calibration Hessian and its output
        // energies ‖WX‖² on the calibration and held-out inputs.
        let prepared: BTreeMap<usize, Prepared> = units
            .par_iter()
            .map(|&ui| {
                let entry = &manifest.units[ui];
                let kind = linear_kind(entry);
                let h = cal[group_of(kind)].as_ref().ok_or_else(|| {
                    DbError::Backend(format!("{}: no calibration input was captured", entry.name))
                })?;
                let w = original(block, kind);
                let held = held[group_of(kind)].as_ref();
                let held = held.map(|hh| (hh, w.output_energy(hh).max(f64::MIN_POSITIVE)));
                let imatrix = match self.imatrix {
                    Some(m) => Some(imatrix_entry(m, entry, w.cols)?),
                    None => None,
                };
                Ok((
                    ui,
                    Prepared {
                        energy: w.output_energy(h),
                        w,
                        h,
                        held,
                        imatrix,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let tasks: Vec<(usize, usize)> = units
            .iter()
            .flat_map(|&u| (0..manifest.units[u].levels.len()).map(move |l| (u, l)))
            .collect();
        let results: Vec<Result<(usize, Variant)>> = tasks
            .par_iter()
            .map(|&(ui, li)| {
                let entry = &manifest.units[ui];
                let p = &prepared[&ui];
                let level = &entry.levels[li];
                let kept = match level_type(level) {
                    Some(ty) => source_blocks(self.source, self.cfg, entry, ty)?,
                    None => None,
                };
                let (v, ggml) =
                    compress_variant(&p.w, Some(p.h), self.compression, level, kept, p.imatrix)
                        .map_err(|e| DbError::Compress(format!("{}: {e}", entry.name)))?;
                let err = p.w.reconstruction_error(&v, p.h);
                let held = p
                    .held
                    .map(|(hh, energy)| p.w.reconstruction_error(&v, hh) / energy);
                Ok((
                    ui,
                    Variant {
                        li,
                        m: v,
                        err,
                        held,
                        ggml,
                    },
                ))
            })
            .collect();
        let mut per_unit: BTreeMap<usize, Vec<Variant>> = Default::default();
        for r in results {
            let (ui, variant) = r?;
            per_unit.entry(ui).or_default().push(variant);
        }
        for (ui, mut variants) in per_unit {
            variants.sort_by_key(|v| v.li);
            write_unit(manifest, ui, variants, prepared[&ui].energy, self.dir)?;
            *self.built += 1;
            self.progress.inc(1);
            if self.opts.stop_after_units.is_some_and(|n| *self.built >= n) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Write unit `ui`'s file and its manifest entry (errors, energy).
fn write_unit(
    manifest: &mut Manifest,
    ui: usize,
    variants: Vec<Variant>,
    energy: f64,
    dir: &Path,
) -> Result<()> {
    let entry = &mut manifest.units[ui];
    let rel = format!("{UNITS_DIR}/{}.safetensors", entry.name);
    let bytes = variants_file(&entry.name, &entry.levels, &variants)?;
    let path = dir.join(&rel);
    write_atomic(&path, &bytes)?;
    entry.sha256 = Some(sha256_file(&path)?);
    entry.bytes = Some(bytes.len() as u64);
    entry.file = Some(rel);
    entry.errors = Some(variants.iter().map(|v| v.err).collect());
    entry.output_energy = Some(energy);
    entry.held_out_errors = variants.iter().map(|v| v.held).collect();
    manifest.write(dir)
}

/// A token embedding or untied head unit of a GGUF-types database: every
/// level quantized without an importance matrix (llama-imatrix collects none
/// for these tensors by default); its error is ‖W − Ŵ‖² against ‖W‖² (no
/// calibration inputs weigh an embedding's rows).
fn build_table(
    manifest: &mut Manifest,
    ui: usize,
    model: &LoadedModel,
    compression: &Compression,
    source: Option<&GgufFile>,
    cfg: &LlamaConfig,
    dir: &Path,
) -> Result<()> {
    let entry = &manifest.units[ui];
    let t = match entry.unit.target {
        UnitTarget::Head => model.lm_head()?.ok_or_else(|| {
            DbError::Plan("the database plans an output head, but the model ties it".into())
        })?,
        _ => model.embed()?,
    };
    let [rows, cols] = [t.shape[0], t.shape[1]];
    let energy: f64 = t.data.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mut variants = Vec::with_capacity(entry.levels.len());
    for (li, level) in entry.levels.iter().enumerate() {
        let ty = gguf_type(compression, level)?;
        let bytes = level_blocks(
            source_blocks(source, cfg, entry, ty)?,
            ty,
            &t.data,
            cols,
            None,
        )
        .map_err(|e| DbError::Compress(format!("{}: {e}", entry.name)))?;
        let m = evocomp_gguf::dequantize(ty, &bytes, rows * cols)
            .map_err(|e| DbError::Compress(format!("{}: {e}", entry.name)))?;
        let err: f64 = t
            .data
            .iter()
            .zip(&m)
            .map(|(&a, &b)| {
                let d = a as f64 - b as f64;
                d * d
            })
            .sum();
        variants.push(Variant {
            li,
            m: Matrix::new(0, 0, Vec::new()),
            err,
            held: None,
            ggml: Some((ty, bytes)),
        });
    }
    write_unit(manifest, ui, variants, energy, dir)
}

/// The model's own GGUF file, when it is one and the database holds GGUF
/// types: llama-quantize keeps a tensor whose type already is the target
/// type as it is, and so does a GGUF-types database (that level is then
/// exactly the model's weights).
fn gguf_source(model: &LoadedModel, compression: &Compression) -> Result<Option<GgufFile>> {
    if !matches!(compression, Compression::GgufTypes { .. })
        || model.info.format != evocomp_model::ModelFormat::Gguf
    {
        return Ok(None);
    }
    let path = &model.info.path;
    GgufFile::open(path)
        .map(Some)
        .map_err(|e| DbError::Backend(format!("{}: {e}", path.display())))
}

/// A unit's tensor as the source file stores it, if its type is `ty`: the
/// blocks in evocomp's row order (Q/K rows back from llama.cpp's RoPE order).
fn source_blocks(
    source: Option<&GgufFile>,
    cfg: &LlamaConfig,
    unit: &UnitEntry,
    ty: GgmlType,
) -> Result<Option<Vec<u8>>> {
    let Some(source) = source else {
        return Ok(None);
    };
    let Some(name) = tensor_role(unit.unit.target).map(|r| r.gguf_name(unit.unit.layer)) else {
        return Ok(None);
    };
    let (Some(info), Some(shape)) = (source.tensor_info(&name), unit.shape) else {
        return Ok(None);
    };
    if info.ty != ty || info.shape() != shape.to_vec() {
        return Ok(None);
    }
    let bytes = source.tensor_bytes(info);
    let blocks = match gguf_rope_heads(cfg, unit.unit.target) {
        Some(heads) => evocomp_model::permute_rope_row_bytes(bytes, shape[0], heads, false),
        None => bytes.to_vec(),
    };
    // Cut short under the map while copied: not the file's blocks.
    source.intact(&name)?;
    Ok(Some(blocks))
}

/// The GGUF type of `level` in a GGUF-types database.
fn gguf_type(c: &Compression, level: &Level) -> Result<GgmlType> {
    match c {
        Compression::GgufTypes { .. } => level_type(level).ok_or_else(|| {
            DbError::Plan(format!(
                "level {}: no ggml type {}",
                level.level, level.param
            ))
        }),
        _ => Err(DbError::Plan("not a GGUF-types database".into())),
    }
}

/// `quantize`, rows in parallel (each row is quantized on its own, so the
/// bytes are the same as in one call).
fn quantize_rows(
    ty: GgmlType,
    data: &[f32],
    cols: usize,
    imatrix: Option<&[f32]>,
) -> std::result::Result<Vec<u8>, evocomp_gguf::QuantizeError> {
    const ROWS: usize = 64;
    let parts: Vec<Vec<u8>> = data
        .par_chunks(ROWS * cols)
        .map(|chunk| evocomp_gguf::quantize(ty, chunk, cols, imatrix))
        .collect::<std::result::Result<_, _>>()?;
    Ok(parts.concat())
}

/// A GGUF-types level's blocks: the source's own (`kept`), else llama.cpp's
/// quantizer on `data`.
fn level_blocks(
    kept: Option<Vec<u8>>,
    ty: GgmlType,
    data: &[f32],
    cols: usize,
    imatrix: Option<&[f32]>,
) -> std::result::Result<Vec<u8>, evocomp_gguf::QuantizeError> {
    match kept {
        Some(b) => Ok(b),
        None => quantize_rows(ty, data, cols, imatrix),
    }
}

/// One unit at one level, and its ggml blocks for GGUF types.
///
/// `entry`'s values in an importance matrix read from a file (by its
/// tensor's GGUF name), checked to have one per column.
fn imatrix_entry<'a>(
    m: &'a BTreeMap<String, Vec<f32>>,
    entry: &UnitEntry,
    cols: usize,
) -> Result<&'a [f32]> {
    let name = tensor_role(entry.unit.target)
        .map(|r| r.gguf_name(entry.unit.layer))
        .unwrap_or_default();
    let v = m.get(&name).ok_or_else(|| {
        DbError::Compress(format!(
            "{}: the importance matrix file has no entry {name}",
            entry.name
        ))
    })?;
    if v.len() != cols {
        return Err(DbError::Compress(format!(
            "{}: the importance matrix file's {name} has {} values, the tensor {cols} columns",
            entry.name,
            v.len()
        )));
    }
    Ok(v)
}

/// `kept`: the source's own blocks for this level ([`source_blocks`]),
/// used as they are.
fn compress_variant(
    w: &Matrix,
    h: Option<&Hessian>,
    c: &Compression,
    level: &Level,
    kept: Option<Vec<u8>>,
    imatrix_from_file: Option<&[f32]>,
) -> evocomp_compress::Result<(Matrix, Option<Blocks>)> {
    let Compression::GgufTypes { imatrix, .. } = c else {
        return Ok((compress_one(w, h, c, level)?, None));
    };
    let bad = |m: String| evocomp_compress::CompressError::BadSpec(m);
    let ty = level_type(level).ok_or_else(|| bad(format!("no ggml type {}", level.param)))?;
    // llama.cpp's importance matrix: each input's mean square, H = 2XᵀX/n.
    let im: Option<Vec<f32>> = match (imatrix, h, &kept) {
        (_, _, Some(_)) | (false, _, _) => None,
        (true, _, None) if imatrix_from_file.is_some() => imatrix_from_file.map(<[f32]>::to_vec),
        (true, Some(h), None) => Some(ImatrixEntry::of(h).values()),
        (true, None, None) => {
            return Err(bad("an importance matrix needs calibration inputs".into()));
        }
    };
    let bytes =
        level_blocks(kept, ty, &w.data, w.cols, im.as_deref()).map_err(|e| bad(e.to_string()))?;
    let data = evocomp_gguf::dequantize(ty, &bytes, w.numel()).map_err(|e| bad(e.to_string()))?;
    Ok((Matrix::new(w.rows, w.cols, data), Some((ty, bytes))))
}

/// One tensor's entry of llama.cpp's importance matrix: Σx² of each input
/// over the calibration tokens, and their count (what llama-imatrix writes
/// as `<tensor>.in_sum2` and `<tensor>.counts`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    pub sums: Vec<f32>,
    pub count: f32,
}

impl ImatrixEntry {
    /// From a unit's calibration Hessian `H = 2XᵀX/n`.
    pub fn of(h: &Hessian) -> Self {
        let n = h.n_tokens as f64;
        Self {
            sums: (0..h.dim).map(|j| (h.diag(j) / 2.0 * n) as f32).collect(),
            count: h.n_tokens as f32,
        }
    }

    /// The weights the quantizers get: each sum over the count, in f32, as
    /// llama-quantize computes them from the file.
    pub fn values(&self) -> Vec<f32> {
        self.sums.iter().map(|s| s / self.count).collect()
    }
}

/// An importance matrix: one entry per block tensor (named as in the
/// model's GGUF file), and the calibration it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    pub entries: Vec<(String, ImatrixEntry)>,
    /// The calibration sample's id.
    pub dataset: String,
    pub chunks: usize,
    pub chunk_size: usize,
}

/// The calibration tokens a build wrote to `calibration.json` in `db_dir`.
pub(crate) fn read_calibration(db_dir: &Path) -> Result<Sample> {
    let path = db_dir.join(CALIBRATION_FILE);
    let text = std::fs::read(&path).map_err(DbError::io(&path))?;
    serde_json::from_slice(&text).map_err(|e| DbError::Corrupt {
        path,
        message: e.to_string(),
    })
}

/// The importance matrix a GGUF-types build used, recomputed from the
/// calibration tokens it wrote (`calibration.json`) on the uncompressed
/// model, block by block as the build captures them.
pub fn importance_matrix(db_dir: &Path, model: &LoadedModel, device: &Device) -> Result<Imatrix> {
    let calib = read_calibration(db_dir)?;
    let cfg = model.config();
    let net = model.to_device(device, evocomp_model::WeightDtype::F32)?;
    let mut hs: Vec<Tensor<3>> = calib
        .sequences
        .chunks(4)
        .map(|b| Ok(net.embed(net.tokens_to_device(b)?)))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for layer in 0..cfg.n_layers {
        let (cal, _) = capture(&net, layer, &INPUT_GROUPS, &mut hs, &mut [], true)?;
        for kind in LinearKind::ALL {
            let g = INPUT_GROUPS
                .iter()
                .position(|&g| g == input_group(kind))
                .expect("a group");
            let h = cal[g].as_ref().ok_or_else(|| {
                DbError::Backend(format!("layer {layer}: no calibration input was captured"))
            })?;
            let role = tensor_role(UnitTarget::Linear(kind)).expect("a linear layer");
            out.push((role.gguf_name(layer), ImatrixEntry::of(h)));
        }
    }
    Ok(Imatrix {
        entries: out,
        chunks: calib.sequences.len(),
        chunk_size: calib.seq_len,
        dataset: calib.id,
    })
}

/// The linear layer a weight unit is.
fn linear_kind(entry: &UnitEntry) -> LinearKind {
    match entry.unit.target {
        UnitTarget::Linear(k) => k,
        _ => unreachable!("only linear units have files"),
    }
}

/// Run block `layer` over the calibration (`cal`) and held-out (`held`)
/// hidden states, capturing the inputs of `groups`; the hidden states move
/// on to the block's outputs when `advance`. Returns the Hessians of the
/// four input groups (`None` for those not asked for).
fn capture(
    net: &LlamaModel,
    layer: usize,
    groups: &[LinearKind],
    cal: &mut [Tensor<3>],
    held: &mut [Tensor<3>],
    advance: bool,
) -> Result<(Hessians, Hessians)> {
    let one = |hs: &mut [Tensor<3>]| -> Result<Hessians> {
        if hs.is_empty() {
            return Ok([None, None, None, None]);
        }
        let mut cap = XtxCapture::only(layer, groups);
        for h in hs.iter_mut() {
            let out = net.forward_layers(h.clone(), layer..layer + 1, &mut cap)?;
            if advance {
                *h = out;
            }
        }
        cap.finish().map_err(DbError::Backend)
    };
    Ok((one(cal)?, one(held)?))
}

/// Move the hidden states through block `layer` as the network now is.
fn forward_block(
    net: &LlamaModel,
    layer: usize,
    cal: &mut [Tensor<3>],
    held: &mut [Tensor<3>],
) -> Result<()> {
    for h in cal.iter_mut().chain(held.iter_mut()) {
        *h = net.forward_layers(h.clone(), layer..layer + 1, &mut NoHook)?;
    }
    Ok(())
}

/// A built unit's variant at `level`, read back from its file.
fn read_variant(dir: &Path, entry: &UnitEntry, level: i64) -> Result<HostTensor> {
    let rel = entry.file.as_deref().expect("a built unit");
    let path = dir.join(rel);
    let bad = |message: String| DbError::Corrupt {
        path: path.clone(),
        message,
    };
    let bytes = std::fs::read(&path).map_err(DbError::io(&path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let shape = entry.shape.expect("a linear unit");
    let data = codec::decode(&st, &level_tensor(level), shape).map_err(|e| {
        bad(format!(
            "{}: the calibration level {level}: {e}",
            entry.name
        ))
    })?;
    Ok(HostTensor::new(shape.to_vec(), data))
}

fn original(block: &LayerWeights, kind: LinearKind) -> Matrix {
    let t = block.linear(kind);
    Matrix::new(t.shape[0], t.shape[1], t.data.clone())
}

/// One unit at one level.
pub fn compress_one(
    w: &Matrix,
    h: Option<&Hessian>,
    c: &Compression,
    level: &Level,
) -> evocomp_compress::Result<Matrix> {
    match c {
        Compression::Sparsity { method, obs, .. } => {
            prune(w, h, *method, level.param as usize, obs)
        }
        Compression::Quantization {
            method, spec, obs, ..
        } => {
            let s = QuantConfig {
                bits: level.param as u8,
                ..*spec
            };
            quantize(w, h, *method, &s, obs)
        }
        Compression::GgufTypes { .. } => Ok(compress_variant(w, h, c, level, None, None)?.0),
        Compression::Depth { .. } | Compression::KvBudget { .. } | Compression::KvBits { .. } => {
            unreachable!("depth and KV units have no stored variants")
        }
    }
}

/// Tensor name of a level inside a unit's file.
pub fn level_tensor(level: i64) -> String {
    format!("level_{level}")
}

/// A unit's file: each variant in the smallest exact encoding (`codec`).
fn variants_file(name: &str, levels: &[Level], variants: &[Variant]) -> Result<Vec<u8>> {
    let data: codec::Tensors = variants
        .iter()
        .flat_map(|v| {
            let name = level_tensor(levels[v.li].level);
            match &v.ggml {
                Some((ty, bytes)) => codec::encode_ggml(&name, *ty, bytes.clone()),
                None => codec::encode(&name, &v.m.data, v.m.rows, v.m.cols),
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .expect("byte count matches the shape"),
            )
        })
        .collect();
    // One metadata entry: a HashMap of several would serialise in a random
    // order, and the files must be byte-identical from run to run.
    let mut meta = std::collections::HashMap::new();
    meta.insert("evocomp".to_string(), format!("variants-1 unit={name}"));
    safetensors::serialize(views, Some(meta))
        .map_err(|e| DbError::Backend(format!("serialising {name}: {e}")))
}
