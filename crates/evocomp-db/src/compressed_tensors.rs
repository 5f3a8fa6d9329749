//! A study's genome as a compressed-tensors checkpoint (the format of LLM
//! Compressor, read by transformers and vLLM).
//!
//! **Quantization** (`pack-quantized`): each quantized linear
//! layer as `weight_packed` (int32, codes packed densely along the row),
//! `weight_scale` (`[out, groups]`), `weight_zero_point` (asymmetric grids:
//! int32, packed along the output dimension) and `weight_shape`; one config
//! group per bit-width and group size naming its modules, so a mixed
//! 2/3/4-bit genome is one checkpoint; every other tensor dense.
//!
//! The codes come back from the database's dequantized values
//! ([`evocomp_compress::recover_codes`]), checked to give those values back.
//! The format needs the group size to divide a layer's columns: where the
//! database's does not (SmolLM2's 576 columns in groups of 128), the layer
//! is written in the largest group size that divides both, each of the
//! database's groups as several with the same scale: the same weights, more
//! scales.
//!
//! **Sparsity** (`sparse-bitmask`, the format's unstructured sparse layout,
//! which compressed-tensors up to 0.12 and the transformers of their day
//! read, 0.9.4 with 4.51.3 tested; 0.13 and later dropped it): each pruned
//! linear layer as
//! `<module>.compressed` (its non-zero values in row order),
//! `<module>.bitmask` (u8, one bit a weight, `ceil(cols / 8)` bytes a row,
//! least significant bit first), `<module>.row_offsets` (i64, where each
//! row's values begin) and `<module>.shape`; a layer is written so only where that is
//! smaller than dense (above about 1/16 sparse in f16).

use crate::apply::Database;
use crate::materialize::materialize;
use crate::spec::Compression;
use crate::units::UnitTarget;
use crate::{DbError, Result};
use evocomp_compress::{pack_columns, pack_rows, recover_codes};
use evocomp_model::{LinearKind, LlamaConfig, LlamaWeights, RawTensor, WeightDtype};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

/// What [`export_compressed_tensors`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedTensorsExport {
    /// model.safetensors' size in bytes.
    pub bytes: u64,
    /// `pack-quantized` or `sparse-bitmask`.
    pub format: &'static str,
    /// The compressed layers' weights, and the bytes they take (codes,
    /// scales, zero points and shapes; or values, bitmasks, offsets and
    /// shapes).
    pub compressed_weights: u64,
    pub compressed_bytes: u64,
    /// Sparse layers: the number written in the bitmask format, those left
    /// dense (too little sparsity for the bitmask to pay), and the share of
    /// zeros among the bitmask layers' weights.
    pub sparse_layers: usize,
    pub dense_layers: usize,
    pub sparsity: f64,
    /// The config groups: (bits, group size in the file (0: one per row),
    /// number of modules).
    pub groups: Vec<(u8, usize, usize)>,
    /// Layers written with a narrower group than the database's, as
    /// (module, database's group, file's group).
    pub regrouped: Vec<(String, usize, usize)>,
    /// Layers vLLM fuses (q/k/v, gate/up) whose schemes differ: transformers
    /// loads them, vLLM wants one scheme per fused layer.
    pub unfusable: Vec<String>,
    /// The grids have zero points (`weight_zero_point` is written).
    pub asymmetric: bool,
}

impl CompressedTensorsExport {
    /// Bits per weight of the compressed layers as written.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.compressed_bytes as f64 / self.compressed_weights.max(1) as f64
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The folder: the materialized weights with `replace`'s tensors in place of
/// theirs, config.json with `quantization_config`; `report` gets the file's
/// size.
fn write_folder(
    mat: &crate::materialize::Materialized,
    out: &Path,
    dtype: WeightDtype,
    replace: &BTreeMap<String, Vec<RawTensor>>,
    quantization_config: serde_json::Value,
    mut report: CompressedTensorsExport,
) -> Result<CompressedTensorsExport> {
    evocomp_model::save_hf_safetensors_with(
        &mat.config,
        &mat.weights,
        out,
        dtype,
        replace,
        quantization_config,
    )?;
    let st = out.join("model.safetensors");
    report.bytes = std::fs::metadata(&st).map_err(DbError::io(&st))?.len();
    Ok(report)
}

/// The HF module a linear layer's weight belongs to (`model.layers.3.mlp.up_proj`).
fn module_name(kind: LinearKind, layer: usize) -> String {
    kind.hf_name(layer)
        .strip_suffix(".weight")
        .expect("an HF weight name")
        .to_string()
}

fn empty_report(format: &'static str, asymmetric: bool) -> CompressedTensorsExport {
    CompressedTensorsExport {
        format,
        bytes: 0,
        compressed_weights: 0,
        compressed_bytes: 0,
        sparse_layers: 0,
        dense_layers: 0,
        sparsity: 0.0,
        groups: Vec::new(),
        regrouped: Vec::new(),
        unfusable: Vec::new(),
        asymmetric,
    }
}

/// Write `genome` of a quantization or sparsity database as a
/// compressed-tensors folder (config.json with its `quantization_config`,
/// model.safetensors) in `out`. Scales, sparse values and dense tensors are
/// stored in `dtype` (f32 keeps the study's values exactly; f16/bf16 round
/// them). The tokenizer is the caller's to write.
pub fn export_compressed_tensors(
    db: &Database,
    cfg: &LlamaConfig,
    weights: &LlamaWeights,
    genome: &[i64],
    out: &Path,
    dtype: WeightDtype,
) -> Result<CompressedTensorsExport> {
    let (bits_of, spec) = match &db.manifest.compression {
        Compression::Quantization { bits, spec, .. } => (bits.clone(), *spec),
        Compression::Sparsity { .. } => {
            return sparse_bitmask(db, cfg, weights, genome, out, dtype);
        }
        Compression::GgufTypes { .. } => {
            return Err(DbError::Unsupported(
                "compressed-tensors holds integer grids with scales; a GGUF-types study's \
                 tensors are llama.cpp's block types: export it with --format gguf"
                    .into(),
            ));
        }
        other => {
            return Err(DbError::Unsupported(format!(
                "compressed-tensors export is for quantization and sparsity databases (this one \
                 counts {}); \
                 export with --format hf{}",
                db.manifest.cost_unit,
                if matches!(other, Compression::Depth { .. }) {
                    " or --format gguf"
                } else {
                    ""
                }
            )));
        }
    };
    let mat = materialize(db, cfg, std::borrow::Cow::Borrowed(weights), genome)?;
    let mut replace: BTreeMap<String, Vec<RawTensor>> = BTreeMap::new();
    // (bits, the file's group size, 0 for one group per row) -> modules.
    let mut members: BTreeMap<(u8, usize), Vec<String>> = BTreeMap::new();
    let mut scheme: BTreeMap<(usize, LinearKind), (u8, usize)> = BTreeMap::new();
    let mut report = empty_report("pack-quantized", !spec.symmetric);
    let scale_dtype = match dtype {
        WeightDtype::F32 => Dtype::F32,
        WeightDtype::F16 => Dtype::F16,
        WeightDtype::Bf16 => Dtype::BF16,
    };
    for (ui, &g) in genome.iter().enumerate() {
        let u = &db.manifest.units[ui];
        let UnitTarget::Linear(kind) = u.unit.target else {
            return Err(DbError::Unsupported(format!(
                "{}: only linear layers can be written as compressed-tensors",
                u.name
            )));
        };
        let layer = u.unit.layer;
        let level = db
            .level(ui, g)
            .ok_or_else(|| DbError::BadGenome(format!("{}: no level {g}", u.name)))?;
        let bits = u8::try_from(level.param)
            .ok()
            .filter(|b| bits_of.contains(b) && (1..=8).contains(b))
            .ok_or_else(|| {
                DbError::Unsupported(format!(
                    "{}: {} bits cannot be packed (compressed-tensors packs 1 to 8 bits)",
                    u.name, level.param
                ))
            })?;
        let w = mat.weights.layers[layer].linear(kind);
        let [rows, cols] = [w.shape[0], w.shape[1]];
        let module = module_name(kind, layer);
        // The file's group: the database's, or the largest that divides the columns too.
        let (channel, group) = if spec.group_size == 0 || spec.group_size >= cols {
            (true, cols)
        } else {
            let g = gcd(spec.group_size, cols);
            if g != spec.group_size {
                report.regrouped.push((module.clone(), spec.group_size, g));
            }
            (false, g)
        };
        let codes = recover_codes(&w.data, rows, cols, group, bits, spec.symmetric)
            .map_err(|e| DbError::Unsupported(format!("{} (level {g}): {e}", u.name)))?;
        let groups = codes.groups();
        let packed = pack_rows(&codes.codes, rows, cols, bits);
        let mut tensors = vec![RawTensor {
            name: format!("{module}.weight_packed"),
            dtype: Dtype::I32,
            shape: vec![rows, packed.len() / rows],
            bytes: le_bytes(&packed, i32::to_le_bytes),
        }];
        let scales: Vec<u8> = match dtype {
            WeightDtype::F32 => le_bytes(&codes.scales, |s| (s as f32).to_le_bytes()),
            WeightDtype::F16 => le_bytes(&codes.scales, |s| half::f16::from_f64(s).to_le_bytes()),
            WeightDtype::Bf16 => le_bytes(&codes.scales, |s| half::bf16::from_f64(s).to_le_bytes()),
        };
        tensors.push(RawTensor {
            name: format!("{module}.weight_scale"),
            dtype: scale_dtype,
            shape: vec![rows, groups],
            bytes: scales,
        });
        if !spec.symmetric {
            let zp = pack_columns(&codes.zeros, rows, groups, bits);
            tensors.push(RawTensor {
                name: format!("{module}.weight_zero_point"),
                dtype: Dtype::I32,
                shape: vec![zp.len() / groups, groups],
                bytes: le_bytes(&zp, i32::to_le_bytes),
            });
        }
        tensors.push(RawTensor {
            name: format!("{module}.weight_shape"),
            dtype: Dtype::I64,
            shape: vec![2],
            bytes: le_bytes(&[rows as i64, cols as i64], i64::to_le_bytes),
        });
        report.compressed_weights += (rows * cols) as u64;
        report.compressed_bytes += tensors.iter().map(|t| t.bytes.len() as u64).sum::<u64>();
        let file_group = if channel { 0 } else { group };
        members.entry((bits, file_group)).or_default().push(module);
        scheme.insert((layer, kind), (bits, file_group));
        replace.insert(kind.hf_name(layer), tensors);
    }
    // vLLM runs q/k/v and gate/up as one fused layer each, with one scheme.
    for layer in 0..mat.config.n_layers {
        for fused in [
            &[LinearKind::Q, LinearKind::K, LinearKind::V][..],
            &[LinearKind::Gate, LinearKind::Up][..],
        ] {
            let s: Vec<_> = fused
                .iter()
                .filter_map(|k| scheme.get(&(layer, *k)))
                .collect();
            if s.windows(2).any(|w| w[0] != w[1]) {
                let names: Vec<&str> = fused.iter().map(|k| k.name()).collect();
                report
                    .unfusable
                    .push(format!("layer {layer}: {}", names.join("/")));
            }
        }
    }
    let mut config_groups = serde_json::Map::new();
    for (i, ((bits, group), modules)) in members.iter().enumerate() {
        let channel = *group == 0;
        let mut weights = serde_json::json!({
            "num_bits": bits,
            "type": "int",
            "symmetric": spec.symmetric,
            "strategy": if channel { "channel" } else { "group" },
            "dynamic": false,
        });
        if !channel {
            weights["group_size"] = (*group).into();
        }
        config_groups.insert(
            format!("group_{i}"),
            serde_json::json!({
                "targets": modules,
                "weights": weights,
                "input_activations": null,
                "output_activations": null,
                "format": "pack-quantized",
            }),
        );
        report.groups.push((*bits, *group, modules.len()));
    }
    let quantization_config = serde_json::json!({
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "quantization_status": "compressed",
            "config_groups": config_groups,
            "ignore": ["lm_head"],
            "kv_cache_scheme": null,
            "global_compression_ratio": null,
        }
    });
    write_folder(&mat, out, dtype, &replace, quantization_config, report)
}

/// A sparsity genome in the `sparse-bitmask` layout (see the module's
/// documentation).
fn sparse_bitmask(
    db: &Database,
    cfg: &LlamaConfig,
    weights: &LlamaWeights,
    genome: &[i64],
    out: &Path,
    dtype: WeightDtype,
) -> Result<CompressedTensorsExport> {
    let mat = materialize(db, cfg, std::borrow::Cow::Borrowed(weights), genome)?;
    let (value_dtype, size) = match dtype {
        WeightDtype::F32 => (Dtype::F32, 4),
        WeightDtype::F16 => (Dtype::F16, 2),
        WeightDtype::Bf16 => (Dtype::BF16, 2),
    };
    let mut report = empty_report("sparse-bitmask", false);
    let mut replace: BTreeMap<String, Vec<RawTensor>> = BTreeMap::new();
    let mut targets = Vec::new();
    let (mut zeros, mut total) = (0u64, 0u64);
    for u in &db.manifest.units {
        let UnitTarget::Linear(kind) = u.unit.target else {
            return Err(DbError::Unsupported(format!(
                "{}: only linear layers can be written as compressed-tensors",
                u.name
            )));
        };
        let layer = u.unit.layer;
        let w = mat.weights.layers[layer].linear(kind);
        let [rows, cols] = [w.shape[0], w.shape[1]];
        // Stored values are rounded to `dtype`: a weight that rounds to zero
        // is a zero of the file, so the mask is taken after rounding.
        let stored: Vec<u8> = match dtype {
            WeightDtype::F32 => le_bytes(&w.data, f32::to_le_bytes),
            WeightDtype::F16 => le_bytes(&w.data, |x| half::f16::from_f32(x).to_le_bytes()),
            WeightDtype::Bf16 => le_bytes(&w.data, |x| half::bf16::from_f32(x).to_le_bytes()),
        };
        let is_zero = |i: usize| match dtype {
            WeightDtype::F32 => w.data[i] == 0.0,
            WeightDtype::F16 => half::f16::from_f32(w.data[i]) == half::f16::ZERO,
            WeightDtype::Bf16 => half::bf16::from_f32(w.data[i]) == half::bf16::ZERO,
        };
        let stride = cols.div_ceil(8);
        let mut mask = vec![0u8; rows * stride];
        let mut values = Vec::new();
        let mut offsets = Vec::with_capacity(rows);
        for r in 0..rows {
            offsets.push((values.len() / size) as i64);
            for c in 0..cols {
                let i = r * cols + c;
                if !is_zero(i) {
                    mask[r * stride + c / 8] |= 1 << (c % 8);
                    values.extend_from_slice(&stored[i * size..(i + 1) * size]);
                }
            }
        }
        let nnz = values.len() / size;
        let sparse_bytes = (values.len() + mask.len() + 8 * rows + 16) as u64;
        if sparse_bytes >= (rows * cols * size) as u64 {
            report.dense_layers += 1;
            continue;
        }
        let module = module_name(kind, layer);
        zeros += (rows * cols - nnz) as u64;
        total += (rows * cols) as u64;
        report.sparse_layers += 1;
        report.compressed_weights += (rows * cols) as u64;
        report.compressed_bytes += sparse_bytes;
        replace.insert(
            kind.hf_name(layer),
            vec![
                RawTensor {
                    name: format!("{module}.shape"),
                    dtype: Dtype::I64,
                    shape: vec![2],
                    bytes: le_bytes(&[rows as i64, cols as i64], i64::to_le_bytes),
                },
                RawTensor {
                    name: format!("{module}.compressed"),
                    dtype: value_dtype,
                    shape: vec![nnz],
                    bytes: values,
                },
                RawTensor {
                    name: format!("{module}.bitmask"),
                    dtype: Dtype::U8,
                    shape: vec![rows, stride],
                    bytes: mask,
                },
                RawTensor {
                    name: format!("{module}.row_offsets"),
                    dtype: Dtype::I64,
                    shape: vec![rows],
                    bytes: le_bytes(&offsets, i64::to_le_bytes),
                },
            ],
        );
        targets.push(module);
    }
    report.sparsity = zeros as f64 / total.max(1) as f64;
    let quantization_config = serde_json::json!({
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "version": "0.12.2",
            "sparsity_config": {
                "format": "sparse-bitmask",
                "global_sparsity": report.sparsity,
                "sparsity_structure": "unstructured",
                "targets": targets,
                "ignore": ["lm_head"],
            },
        }
    });
    write_folder(&mat, out, dtype, &replace, quantization_config, report)
}
