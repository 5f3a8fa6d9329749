//! What a layer's KV cache keeps: the policy types (data only; the KV-cache
//! pass that applies them is `kv.rs`).

use serde::{Deserialize, Serialize};

/// Which cached tokens survive when a layer's cache is over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Eviction {
    /// StreamingLLM: the first `sinks` tokens and the most recent ones.
    Streaming { sinks: usize },
    /// SnapKV as published (Li et al., 2024): the cache is compressed once,
    /// after the first `prompt` tokens of a sequence (the prompt, prefilled
    /// with full attention). The last `window` prompt tokens (the observation
    /// window) are kept; of the tokens before them, the `budget − window`
    /// with the highest attention from the window's queries (summed over the
    /// window and over the query heads sharing a KV head, then smoothed by an
    /// average pool of width `kernel`) are kept. Later tokens are appended
    /// and never evicted.
    SnapKv {
        window: usize,
        kernel: usize,
        prompt: usize,
    },
    /// A chunked, progressive variant (not SnapKV as published): after every
    /// prefill chunk, the most recent `recent` tokens and the tokens the
    /// chunk's last `window` queries attended to most.
    ChunkedSnapKv { window: usize, recent: usize },
}

/// How a cached tensor is grouped for quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvGroup {
    /// Groups of `group_size` channels within one token's head vector.
    PerToken,
    /// Each channel over the chunk's tokens (KIVI's choice for keys).
    PerChannel,
}

/// Quantization of cached keys or values (asymmetric, min/max per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvQuant {
    pub bits: u8,
    pub group: KvGroup,
    /// Channels per group for `PerToken` (0 = the whole head dimension).
    pub group_size: usize,
}

/// One layer's cache policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvPolicy {
    /// Most tokens kept after each chunk; None keeps all.
    pub budget: Option<usize>,
    pub eviction: Eviction,
    pub keys: Option<KvQuant>,
    pub values: Option<KvQuant>,
}

impl KvPolicy {
    /// Keep everything at full precision.
    pub const FULL: KvPolicy = KvPolicy {
        budget: None,
        eviction: Eviction::Streaming { sinks: 0 },
        keys: None,
        values: None,
    };
}
