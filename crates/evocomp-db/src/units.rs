//! Units (what one genome entry controls), their levels and exact costs.

use crate::spec::{Compression, DepthUnit};
use evocomp_compress::{SparsityGrid, quant_cost_bits};
use evocomp_gguf::{GgmlType, TensorRole, fallback};
use evocomp_model::KvGroup;
use evocomp_model::{LinearKind, LlamaConfig};
use serde::{Deserialize, Serialize};

/// What one unit of the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnitTarget {
    /// One linear layer of a block.
    Linear(LinearKind),
    /// A block's attention sub-block (norm, q, k, v, o).
    Attention,
    /// A block's MLP sub-block (norm, gate, up, down).
    Mlp,
    /// A whole block.
    Block,
    /// A layer's KV-cache token budget.
    KvBudget,
    /// The bits of a layer's cached keys.
    KvKeys,
    /// The bits of a layer's cached values.
    KvValues,
    /// The token embedding table (and the head, when the model ties them).
    Embedding,
    /// An untied output head.
    Head,
}

/// One unit: a layer index and a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnitId {
    pub layer: usize,
    pub target: UnitTarget,
}

impl UnitId {
    /// A stable, file-name-safe name: `L03.q`, `L03.attn`, `L03.block`.
    pub fn name(&self) -> String {
        let t = match self.target {
            UnitTarget::Embedding => return "token_embd".into(),
            UnitTarget::Head => return "output".into(),
            UnitTarget::Linear(k) => k.name(),
            UnitTarget::Attention => "attn",
            UnitTarget::Mlp => "mlp",
            UnitTarget::Block => "block",
            UnitTarget::KvBudget => "kv",
            UnitTarget::KvKeys => "kbits",
            UnitTarget::KvValues => "vbits",
        };
        format!("L{:02}.{t}", self.layer)
    }
}

/// One level of one unit and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Higher means more compressed.
    pub level: i64,
    /// The unit's exact cost at this level, in the kind's cost unit.
    pub cost: u64,
    /// A human label: `52.4% sparse`, `3 bits`, `dropped`.
    pub label: String,
    /// Weights zeroed (sparsity) or bit-width (quantization), for the builder.
    pub param: u64,
}

/// The unit a kind's costs are counted in.
pub fn cost_unit(c: &Compression) -> &'static str {
    match c {
        Compression::Sparsity { .. } => "non-zero weights",
        Compression::Quantization { .. } | Compression::GgufTypes { .. } => "bits",
        Compression::Depth { .. } => "parameters",
        Compression::KvBudget { .. } => "cached tokens",
        Compression::KvBits { .. } => "bits per cached token",
    }
}

fn linear_units(cfg: &LlamaConfig) -> Vec<UnitId> {
    (0..cfg.n_layers)
        .flat_map(|layer| {
            LinearKind::ALL.map(|k| UnitId {
                layer,
                target: UnitTarget::Linear(k),
            })
        })
        .collect()
}

fn numel(cfg: &LlamaConfig, k: LinearKind) -> usize {
    let [o, i] = k.shape(cfg);
    o * i
}

/// Parameters of a sub-block, norms included (post-norms and q/k norms where
/// the architecture has them).
pub fn sub_block_params(cfg: &LlamaConfig, t: UnitTarget) -> u64 {
    let norm = if cfg.post_norms { 2 } else { 1 } * cfg.hidden;
    let qk_norms = if cfg.qk_norm { 2 * cfg.head_dim } else { 0 };
    let qkv_bias = if cfg.qkv_bias {
        cfg.q_dim() + 2 * cfg.kv_dim()
    } else {
        0
    };
    let attn = norm
        + qk_norms
        + qkv_bias
        + [LinearKind::Q, LinearKind::K, LinearKind::V, LinearKind::O]
            .iter()
            .map(|&k| numel(cfg, k))
            .sum::<usize>();
    let mlp = norm
        + [LinearKind::Gate, LinearKind::Up, LinearKind::Down]
            .iter()
            .map(|&k| numel(cfg, k))
            .sum::<usize>();
    (match t {
        UnitTarget::Attention => attn,
        UnitTarget::Mlp => mlp,
        UnitTarget::Block => attn + mlp,
        UnitTarget::Linear(k) => numel(cfg, k),
        UnitTarget::Embedding | UnitTarget::Head => cfg.vocab * cfg.hidden,
        UnitTarget::KvBudget | UnitTarget::KvKeys | UnitTarget::KvValues => 0,
    }) as u64
}

/// Every unit of `cfg` under `c`, with its levels, lowest (least compressed) first.
pub fn plan(cfg: &LlamaConfig, c: &Compression) -> Result<Vec<(UnitId, Vec<Level>)>, String> {
    match c {
        Compression::Sparsity {
            target,
            step_fraction,
            max_sparsity,
            max_levels,
            ..
        } => sparsity_plan(cfg, *target, *step_fraction, *max_sparsity, *max_levels),
        Compression::Quantization { bits, spec, .. } => Ok(quantization_plan(cfg, bits, spec)),
        Compression::GgufTypes { types, .. } => Ok(gguf_units(cfg)
            .into_iter()
            .map(|u| {
                let [rows, cols] = unit_shape(cfg, u.target).expect("a weight unit");
                (u, gguf_levels(types, rows, cols))
            })
            .collect()),
        Compression::Depth { unit } => Ok(depth_plan(cfg, *unit)),
        Compression::KvBudget { budgets, .. } => Ok((0..cfg.n_layers)
            .map(|layer| {
                let levels = budgets
                    .iter()
                    .enumerate()
                    .map(|(lv, &b)| Level {
                        level: lv as i64,
                        cost: b as u64,
                        label: format!("{b} tokens"),
                        param: b as u64,
                    })
                    .collect();
                (
                    UnitId {
                        layer,
                        target: UnitTarget::KvBudget,
                    },
                    levels,
                )
            })
            .collect()),
        Compression::KvBits {
            bits,
            keys,
            values,
            group_size,
            chunk,
        } => Ok(kv_bits_plan(
            cfg,
            bits,
            (*keys, *values),
            *group_size,
            *chunk,
        )),
    }
}

/// Every linear layer on EvoPress's sparsity grid around `target`.
fn sparsity_plan(
    cfg: &LlamaConfig,
    target: f64,
    step_fraction: f64,
    max_sparsity: f64,
    max_levels: usize,
) -> Result<Vec<(UnitId, Vec<Level>)>, String> {
    let units = linear_units(cfg);
    let numels: Vec<usize> = units
        .iter()
        .map(|u| match u.target {
            UnitTarget::Linear(k) => numel(cfg, k),
            _ => unreachable!("linear units"),
        })
        .collect();
    let grid = SparsityGrid::fit(&numels, target, step_fraction, max_sparsity, max_levels)
        .map_err(|e| e.to_string())?;
    Ok(units
        .into_iter()
        .zip(numels)
        .map(|(u, n)| {
            let levels = grid
                .unit_levels(n)
                .into_iter()
                .map(|l| {
                    let z = grid.zeros(n, l).expect("unit_levels are valid");
                    Level {
                        level: l,
                        cost: (n - z) as u64,
                        label: format!("{:.2}% sparse", 100.0 * z as f64 / n as f64),
                        param: z as u64,
                    }
                })
                .collect();
            (u, levels)
        })
        .collect())
}

/// Every linear layer at each bit-width, most bits first (level 0).
fn quantization_plan(
    cfg: &LlamaConfig,
    bits: &[u8],
    spec: &evocomp_compress::QuantConfig,
) -> Vec<(UnitId, Vec<Level>)> {
    linear_units(cfg)
        .into_iter()
        .map(|u| {
            let UnitTarget::Linear(k) = u.target else {
                unreachable!()
            };
            let [o, i] = k.shape(cfg);
            let levels = bits
                .iter()
                .rev()
                .enumerate()
                .map(|(lv, &b)| {
                    let s = evocomp_compress::QuantConfig { bits: b, ..*spec };
                    Level {
                        level: lv as i64,
                        cost: quant_cost_bits(o, i, &s),
                        label: format!("{b} bits"),
                        param: b as u64,
                    }
                })
                .collect();
            (u, levels)
        })
        .collect()
}

/// Every block (or attention and MLP sub-block), kept (level 0) or dropped.
fn depth_plan(cfg: &LlamaConfig, unit: DepthUnit) -> Vec<(UnitId, Vec<Level>)> {
    let targets: &[UnitTarget] = match unit {
        DepthUnit::SubBlock => &[UnitTarget::Attention, UnitTarget::Mlp],
        DepthUnit::Block => &[UnitTarget::Block],
    };
    (0..cfg.n_layers)
        .flat_map(|layer| targets.iter().map(move |&target| UnitId { layer, target }))
        .map(|u| {
            let p = sub_block_params(cfg, u.target);
            let levels = vec![
                Level {
                    level: 0,
                    cost: p,
                    label: "kept".into(),
                    param: 0,
                },
                Level {
                    level: 1,
                    cost: 0,
                    label: "dropped".into(),
                    param: 1,
                },
            ];
            (u, levels)
        })
        .collect()
}

/// Each layer's cached keys and values at each bit-width.
fn kv_bits_plan(
    cfg: &LlamaConfig,
    bits: &[u8],
    (keys, values): (KvGroup, KvGroup),
    group_size: usize,
    chunk: usize,
) -> Vec<(UnitId, Vec<Level>)> {
    (0..cfg.n_layers)
        .flat_map(|layer| {
            [(UnitTarget::KvKeys, keys), (UnitTarget::KvValues, values)].map(|(target, group)| {
                let levels = bits
                    .iter()
                    .enumerate()
                    .map(|(lv, &b)| Level {
                        level: lv as i64,
                        cost: kv_bits_per_token(cfg, b, group, group_size, chunk),
                        label: if b >= 16 {
                            "16 bits (fp16)".into()
                        } else {
                            format!("{b} bits")
                        },
                        param: b as u64,
                    })
                    .collect();
                (UnitId { layer, target }, levels)
            })
        })
        .collect()
}

/// The units of a GGUF-types database: the token embedding, every linear
/// layer, and the output head when it is not tied.
fn gguf_units(cfg: &LlamaConfig) -> Vec<UnitId> {
    let embd = UnitId {
        layer: 0,
        target: UnitTarget::Embedding,
    };
    let head = (!cfg.tied_embeddings).then_some(UnitId {
        layer: cfg.n_layers.saturating_sub(1),
        target: UnitTarget::Head,
    });
    std::iter::once(embd)
        .chain(linear_units(cfg))
        .chain(head)
        .collect()
}

/// The weight shape `[rows, cols]` (PyTorch orientation) of a unit that is
/// one matrix.
pub fn unit_shape(cfg: &LlamaConfig, t: UnitTarget) -> Option<[usize; 2]> {
    match t {
        UnitTarget::Linear(k) => Some(k.shape(cfg)),
        UnitTarget::Embedding | UnitTarget::Head => Some([cfg.vocab, cfg.hidden]),
        _ => None,
    }
}

/// One level per distinct type `types` become for rows of `cols` values
/// (llama.cpp's fallback), most bits first; ties in size by type id.
pub fn gguf_levels(types: &[GgmlType], rows: usize, cols: usize) -> Vec<Level> {
    let mut tys: Vec<GgmlType> = types.iter().map(|&t| fallback(t, cols)).collect();
    tys.sort_by(|a, b| {
        b.bits_per_weight()
            .total_cmp(&a.bits_per_weight())
            .then(a.id().cmp(&b.id()))
    });
    tys.dedup();
    tys.into_iter()
        .enumerate()
        .map(|(lv, t)| Level {
            level: lv as i64,
            cost: 8 * t
                .byte_size((rows * cols) as u64)
                .expect("fallback divides the rows"),
            label: format!("{t} ({:.4} bpw)", t.bits_per_weight()),
            param: t.id() as u64,
        })
        .collect()
}

/// The GGUF type of a level of a GGUF-types database.
pub fn level_type(level: &Level) -> Option<GgmlType> {
    GgmlType::from_id(level.param as u32)
}

/// The heads of a unit whose rows a GGUF file stores in llama.cpp's RoPE
/// order (Q and K of the families its converter permutes), else `None`.
pub fn gguf_rope_heads(cfg: &LlamaConfig, t: UnitTarget) -> Option<usize> {
    if !cfg.family.gguf_permutes_qk() {
        return None;
    }
    match t {
        UnitTarget::Linear(LinearKind::Q) => Some(cfg.n_heads),
        UnitTarget::Linear(LinearKind::K) => Some(cfg.n_kv_heads),
        _ => None,
    }
}

/// What llama.cpp's rules call a unit.
pub fn tensor_role(t: UnitTarget) -> Option<TensorRole> {
    Some(match t {
        UnitTarget::Embedding => TensorRole::TokenEmbd,
        UnitTarget::Head => TensorRole::Output,
        UnitTarget::Linear(k) => match k {
            LinearKind::Q => TensorRole::AttnQ,
            LinearKind::K => TensorRole::AttnK,
            LinearKind::V => TensorRole::AttnV,
            LinearKind::O => TensorRole::AttnOutput,
            LinearKind::Gate => TensorRole::FfnGate,
            LinearKind::Up => TensorRole::FfnUp,
            LinearKind::Down => TensorRole::FfnDown,
        },
        _ => return None,
    })
}

/// Bits one cached token of one layer takes for keys (or values): the
/// quantized values plus a 16-bit scale and a 16-bit minimum per group.
/// Per-channel groups span a chunk of tokens, so their share is amortised.
pub fn kv_bits_per_token(
    cfg: &LlamaConfig,
    bits: u8,
    group: KvGroup,
    group_size: usize,
    chunk: usize,
) -> u64 {
    let width = (cfg.n_kv_heads * cfg.head_dim) as u64;
    if bits >= 16 {
        return width * 16;
    }
    let overhead = match group {
        KvGroup::PerToken => {
            let gs = if group_size == 0 || !cfg.head_dim.is_multiple_of(group_size) {
                cfg.head_dim
            } else {
                group_size
            };
            (cfg.n_kv_heads * (cfg.head_dim / gs)) as u64 * 32
        }
        KvGroup::PerChannel => (width * 32).div_ceil(chunk.max(1) as u64),
    };
    width * bits as u64 + overhead
}
