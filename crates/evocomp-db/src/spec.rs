//! What a database is built as: its compression kind and method. The
//! database owns this type (it is stored in `manifest.json`); configs build
//! it from their own syntax.

use evocomp_compress::{ObsConfig, QuantConfig, QuantMethod, SparsityMethod};
use evocomp_gguf::GgmlType;
use evocomp_model::{Eviction, KvGroup};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What one depth unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DepthUnit {
    /// Attention and MLP of each block are separate units.
    #[default]
    SubBlock,
    /// Each whole block is one unit.
    Block,
}

/// Where each block's calibration inputs come from while a database is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Propagation {
    /// Every unit is fitted to inputs from the uncompressed model (what
    /// databases built before sequential calibration used).
    #[default]
    Uncompressed,
    /// Sequential (GPTQ's and EvoPress's protocol): a block's inputs come from
    /// the earlier blocks compressed at `level`, and inside a block the units
    /// are fitted true-sequentially (q/k/v, then o, then gate/up, then down),
    /// each on inputs through the block's earlier units already at `level`.
    Sequential { level: i64 },
    /// Block by block (LLM Compressor's sequential pipeline): a block's
    /// inputs come from the earlier blocks compressed at `level`, and every
    /// unit of a block is fitted on inputs through the block as it is
    /// uncompressed (not true-sequential inside the block).
    Blockwise { level: i64 },
}

impl Propagation {
    /// The level inputs propagate through, if any.
    pub fn level(&self) -> Option<i64> {
        match *self {
            Propagation::Uncompressed => None,
            Propagation::Sequential { level } | Propagation::Blockwise { level } => Some(level),
        }
    }
}

/// An importance-matrix file a GGUF-types database is built with: its path
/// and sha256 (a changed file is another database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImatrixFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// A compression kind, its method and parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Compression {
    Sparsity {
        method: SparsityMethod,
        target: f64,
        step_fraction: f64,
        max_sparsity: f64,
        max_levels: usize,
        obs: ObsConfig,
        #[serde(default)]
        propagation: Propagation,
    },
    Quantization {
        method: QuantMethod,
        /// Ascending, distinct; level i is `bits[i]`.
        bits: Vec<u8>,
        /// The grid, with `bits` left at the first level's.
        spec: QuantConfig,
        obs: ObsConfig,
        #[serde(default)]
        propagation: Propagation,
    },
    /// llama.cpp's tensor types: one unit per quantizable tensor (every
    /// linear layer, the token embedding, an untied output), each level a
    /// type from `types` after llama.cpp's fallback for the unit's row
    /// length, quantized exactly as llama.cpp does (with an importance matrix
    /// from the calibration inputs when `imatrix`, for the block tensors as
    /// llama-imatrix collects it).
    GgufTypes {
        types: Vec<GgmlType>,
        imatrix: bool,
        /// The importance matrix read from a file made by llama-imatrix
        /// (its GGUF format or the legacy `.dat`) instead of computed from
        /// the calibration inputs (which still give each level's error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        imatrix_file: Option<ImatrixFile>,
    },
    Depth {
        unit: DepthUnit,
    },
    KvBudget {
        /// Descending: level 0 keeps the most tokens.
        budgets: Vec<usize>,
        eviction: Eviction,
        chunk: usize,
    },
    KvBits {
        /// Descending: level 0 is the most bits.
        bits: Vec<u8>,
        keys: KvGroup,
        values: KvGroup,
        group_size: usize,
        chunk: usize,
    },
}

impl Compression {
    /// Whether building this kind uses calibration inputs: every weight
    /// method does, to record each level's reconstruction error ‖WX − ŴX‖²
    /// (magnitude and RTN use them for nothing else).
    pub fn needs_calibration(&self) -> bool {
        match self {
            Compression::Sparsity { .. }
            | Compression::Quantization { .. }
            | Compression::GgufTypes { .. } => true,
            Compression::Depth { .. }
            | Compression::KvBudget { .. }
            | Compression::KvBits { .. } => false,
        }
    }

    /// How calibration inputs are propagated (uncompressed for kinds without any).
    pub fn propagation(&self) -> Propagation {
        match self {
            Compression::Sparsity { propagation, .. }
            | Compression::Quantization { propagation, .. } => *propagation,
            _ => Propagation::Uncompressed,
        }
    }

    /// The kind, as strategies see it.
    pub fn kind(&self) -> evocomp_search::Kind {
        use evocomp_search::Kind;
        match self {
            Compression::Sparsity { .. } => Kind::Sparsity,
            Compression::Quantization { .. } | Compression::GgufTypes { .. } => Kind::Quantization,
            Compression::Depth { .. } => Kind::Depth,
            Compression::KvBudget { .. } => Kind::KvBudget,
            Compression::KvBits { .. } => Kind::KvBits,
        }
    }
}
