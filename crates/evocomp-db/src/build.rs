//! Building a database: every (unit, level) variant, block by block, with
//! calibration inputs captured from the uncompressed model. Each finished
//! unit's file and the manifest entry naming it are written atomically, so a
//! killed build continues where it stopped.

use crate::capture::{INPUT_GROUPS, XtxCapture, input_group};
use crate::manifest::{FORMAT_VERSION, Manifest, UnitEntry, sha256_file, write_atomic};
use crate::spec::Compression;
use crate::units::{Level, UnitTarget, cost_unit, plan};
use crate::{DbError, Result};
use burn::tensor::{Device, Tensor};
use evocomp_compress::{Hessian, Matrix, QuantSpec, prune, quantize};
use evocomp_data::Sample;
use evocomp_model::{LinearKind, LlamaModel, LoadedModel, NoHook};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

/// Settings of one build run.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Stop (as if killed) after this many units were written: for tests.
    pub stop_after_units: Option<usize>,
    /// Draw a progress bar.
    pub progress: bool,
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

fn bar(total: u64, show: bool) -> ProgressBar {
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
    b.set_message("db build");
    b
}

/// The manifest this build must produce, or the existing one if it matches.
fn start_manifest(
    dir: &Path,
    model: &LoadedModel,
    fingerprint: &str,
    calib: Option<&Sample>,
    compression: &Compression,
) -> Result<Manifest> {
    let cfg = model.config();
    let planned = plan(cfg, compression).map_err(DbError::Plan)?;
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
            shape: match unit.target {
                UnitTarget::Linear(k) => Some(k.shape(cfg)),
                _ => None,
            },
            levels,
            file: None,
            bytes: None,
            sha256: None,
            errors: None,
        })
        .collect();
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        model_fingerprint: fingerprint.to_string(),
        calibration_id,
        compression: compression.clone(),
        cost_unit: cost_unit(compression).to_string(),
        units,
        complete: false,
    })
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
    let mut manifest = start_manifest(dir, model, fingerprint, calib, compression)?;
    if let Some(sample) = calib.filter(|_| compression.needs_calibration()) {
        let path = dir.join(CALIBRATION_FILE);
        if !path.exists() {
            let text = serde_json::to_vec(sample).map_err(|e| {
                DbError::Backend(format!("serialising the calibration sample: {e}"))
            })?;
            write_atomic(&path, &text)?;
        }
    }
    // Leftovers of a killed write are never trusted.
    for e in std::fs::read_dir(&units_dir)
        .map_err(DbError::io(&units_dir))?
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    // A unit counts as built only if its file is intact.
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
    let last_layer = todo
        .iter()
        .map(|&i| manifest.units[i].unit.layer)
        .max()
        .expect("non-empty");
    let net = LlamaModel::new(cfg, &model.weights, device);
    let needs_h = compression.needs_calibration();
    let batch_size = 4usize;
    let mut hs: Vec<Tensor<3>> = Vec::new();
    if needs_h {
        let sample = calib.expect("checked in start_manifest");
        for batch in sample.sequences.chunks(batch_size) {
            hs.push(net.embed(net.tokens_to_device(batch)?));
        }
    }
    let progress = bar(todo.len() as u64, opts.progress);
    for layer in 0..=last_layer {
        let layer_todo: Vec<usize> = todo
            .iter()
            .copied()
            .filter(|&i| manifest.units[i].unit.layer == layer)
            .collect();
        let mut hessians: Option<Vec<Hessian>> = None;
        if needs_h {
            if layer_todo.is_empty() {
                for h in hs.iter_mut() {
                    *h = net.forward_layers(h.clone(), layer..layer + 1, &mut NoHook)?;
                }
            } else {
                let mut cap = XtxCapture::new(layer);
                for h in hs.iter_mut() {
                    *h = net.forward_layers(h.clone(), layer..layer + 1, &mut cap)?;
                }
                hessians = Some(cap.finish().map_err(DbError::Backend)?);
            }
        }
        if layer_todo.is_empty() {
            continue;
        }
        // Every (unit, level) of this block, in parallel.
        let tasks: Vec<(usize, usize)> = layer_todo
            .iter()
            .flat_map(|&u| (0..manifest.units[u].levels.len()).map(move |l| (u, l)))
            .collect();
        type Built = Result<(usize, usize, Matrix, Option<f64>)>;
        let results: Vec<Built> = tasks
            .par_iter()
            .map(|&(ui, li)| {
                let entry = &manifest.units[ui];
                let UnitTarget::Linear(kind) = entry.unit.target else {
                    unreachable!("only linear units have files")
                };
                let w = original(model, layer, kind);
                let h = hessians.as_ref().map(|hs| {
                    &hs[INPUT_GROUPS
                        .iter()
                        .position(|&g| g == input_group(kind))
                        .expect("a group")]
                });
                let v = compress_one(&w, h, compression, &entry.levels[li])
                    .map_err(|e| DbError::Compress(format!("{}: {e}", entry.name)))?;
                let err = h.map(|h| w.reconstruction_error(&v, h));
                Ok((ui, li, v, err))
            })
            .collect();
        let mut per_unit: std::collections::BTreeMap<usize, Vec<(usize, Matrix, Option<f64>)>> =
            Default::default();
        for r in results {
            let (ui, li, m, e) = r?;
            per_unit.entry(ui).or_default().push((li, m, e));
        }
        for (ui, mut variants) in per_unit {
            variants.sort_by_key(|v| v.0);
            let entry = &mut manifest.units[ui];
            let rel = format!("{UNITS_DIR}/{}.safetensors", entry.name);
            let bytes = variants_file(&entry.name, &entry.levels, &variants)?;
            let path = dir.join(&rel);
            write_atomic(&path, &bytes)?;
            entry.sha256 = Some(sha256_file(&path)?);
            entry.bytes = Some(bytes.len() as u64);
            entry.file = Some(rel);
            entry.errors = if variants.iter().all(|v| v.2.is_some()) {
                Some(variants.iter().map(|v| v.2.expect("checked")).collect())
            } else {
                None
            };
            manifest.write(dir)?;
            report.built += 1;
            progress.inc(1);
            if opts.stop_after_units.is_some_and(|n| report.built >= n) {
                progress.abandon();
                report.stopped = true;
                report.seconds = t0.elapsed().as_secs_f64();
                return Ok(report);
            }
        }
    }
    progress.finish_and_clear();
    manifest.complete = manifest.units.iter().all(UnitEntry::is_built);
    manifest.write(dir)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn original(model: &LoadedModel, layer: usize, kind: LinearKind) -> Matrix {
    let t = model.weights.layers[layer].linear(kind);
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
            let s = QuantSpec {
                bits: level.param as u8,
                ..*spec
            };
            quantize(w, h, *method, &s, obs)
        }
        Compression::Depth { .. } | Compression::KvBudget { .. } | Compression::KvBits { .. } => {
            unreachable!("depth and KV units have no stored variants")
        }
    }
}

/// Tensor name of a level inside a unit's file.
pub fn level_tensor(level: i64) -> String {
    format!("level_{level}")
}

fn variants_file(
    name: &str,
    levels: &[Level],
    variants: &[(usize, Matrix, Option<f64>)],
) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = variants
        .iter()
        .map(|(li, m, _)| {
            (
                level_tensor(levels[*li].level),
                m.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![m.rows, m.cols],
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
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
