//! A per-layer KV cache under a token budget (StreamingLLM or SnapKV-style
//! eviction) and with quantized keys and values, measured teacher-forced by a
//! chunked prefill that evicts as it goes.
//!
//! Each chunk's queries attend to the layer's cache plus the chunk itself
//! (causally); then the chunk's keys and values join the cache, which is cut
//! back to the budget. A layer without a policy keeps every token, so with no
//! policy anywhere the result equals the plain causal forward pass.

use crate::llama::{ForwardError, LlamaModel, NoHook};
use crate::weights::LinearKind;
use burn::tensor::activation::softmax;
use burn::tensor::module::linear;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Which cached tokens survive when a layer's cache is over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Eviction {
    /// StreamingLLM: the first `sinks` tokens and the most recent ones.
    Streaming { sinks: usize },
    /// SnapKV-style: the most recent `recent` tokens, and the tokens that the
    /// last `window` queries of the chunk attended to most (summed over the
    /// query heads that share a KV head).
    SnapKv { window: usize, recent: usize },
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

/// Fake-quantize `x` `[B, H, T, D]` (quantize, then dequantize).
fn quantize(x: Tensor<4>, q: &KvQuant) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let maxq = ((1u32 << q.bits) - 1) as f32;
    let fq = |g: Tensor<5>, dim: usize| {
        let lo = g.clone().min_dim(dim);
        let hi = g.clone().max_dim(dim);
        let scale = ((hi - lo.clone()) / maxq).clamp_min(1e-8);
        let qv = ((g - lo.clone()) / scale.clone()).round().clamp(0.0, maxq);
        qv * scale + lo
    };
    match q.group {
        KvGroup::PerToken => {
            let gs = if q.group_size == 0 || d % q.group_size != 0 {
                d
            } else {
                q.group_size
            };
            fq(x.reshape([b, h, t, d / gs, gs]), 4).reshape([b, h, t, d])
        }
        KvGroup::PerChannel => fq(x.reshape([b, h, t, d, 1]), 2).reshape([b, h, t, d]),
    }
}

/// A layer's cache: keys (after RoPE) and values `[B, KVH, S, D]`.
struct Cache {
    k: Tensor<4>,
    v: Tensor<4>,
}

impl LlamaModel {
    /// Set (or clear) one layer's KV-cache policy.
    pub fn set_kv_policy(&mut self, layer: usize, policy: Option<KvPolicy>) {
        self.kv[layer] = policy;
    }

    pub fn kv_policy(&self, layer: usize) -> Option<KvPolicy> {
        self.kv[layer]
    }

    /// Tokens per prefill chunk when a KV policy is active (default 64).
    pub fn set_kv_chunk(&mut self, chunk: usize) {
        self.kv_chunk = chunk.max(1);
    }

    pub(crate) fn has_kv_policy(&self) -> bool {
        self.kv.iter().any(Option::is_some)
    }

    /// Logits `[B, T, vocab]` by chunked prefill under the KV policies, and
    /// each layer's cache length at the end.
    pub fn forward_kv(&self, batch: &[Vec<u32>]) -> Result<(Tensor<3>, Vec<usize>), ForwardError> {
        let tokens = self.tokens_to_device(batch)?;
        let [b, t] = tokens.dims();
        let mut caches: Vec<Option<Cache>> = (0..self.blocks.len()).map(|_| None).collect();
        let mut outs = Vec::new();
        for c0 in (0..t).step_by(self.kv_chunk) {
            let c1 = (c0 + self.kv_chunk).min(t);
            let mut h = self.embed(tokens.clone().slice([0..b, c0..c1]));
            for (l, cache) in caches.iter_mut().enumerate() {
                h = self.block_chunk(l, h, c0, cache);
            }
            outs.push(self.head(h));
        }
        let lens = caches
            .iter()
            .map(|c| c.as_ref().map_or(0, |c| c.k.dims()[2]))
            .collect();
        Ok((Tensor::cat(outs, 1), lens))
    }

    fn block_chunk(
        &self,
        l: usize,
        h: Tensor<3>,
        start: usize,
        cache: &mut Option<Cache>,
    ) -> Tensor<3> {
        let blk = &self.blocks[l];
        let cfg = &self.cfg;
        let [b, n, hidden] = h.dims();
        let rows = b * n;
        let w = |k: LinearKind| blk.linears[k as usize].clone();
        let mut h = h;
        if !blk.skip_attn {
            let policy = self.kv[l].unwrap_or(KvPolicy::FULL);
            let x = self
                .rms_norm(h.clone(), &blk.attn_norm)
                .reshape([rows, hidden]);
            let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
            let heads = |y: Tensor<2>, m: usize| y.reshape([b, n, m, hd]).swap_dims(1, 2);
            let q = self.rope_at(heads(linear(x.clone(), w(LinearKind::Q), None), nh), start);
            let mut k = self.rope_at(heads(linear(x.clone(), w(LinearKind::K), None), nkv), start);
            let mut v = heads(linear(x, w(LinearKind::V), None), nkv);
            if let Some(kq) = &policy.keys {
                k = quantize(k, kq);
            }
            if let Some(vq) = &policy.values {
                v = quantize(v, vq);
            }
            let (k_all, v_all) = match cache.take() {
                Some(c) => (Tensor::cat(vec![c.k, k], 2), Tensor::cat(vec![c.v, v], 2)),
                None => (k, v),
            };
            let s = k_all.dims()[2];
            let past = s - n;
            let rep = nh / nkv;
            let expand = |y: Tensor<4>| {
                y.unsqueeze_dim::<5>(2)
                    .expand([b, nkv, rep, s, hd])
                    .reshape([b, nh, s, hd])
            };
            // Query i of the chunk sees every cached token and chunk tokens 0..=i.
            let mut bias = vec![0.0f32; n * s];
            for i in 0..n {
                for j in past + i + 1..s {
                    bias[i * s + j] = f32::NEG_INFINITY;
                }
            }
            let bias = Tensor::<4>::from_data(TensorData::new(bias, [1, 1, n, s]), &self.device);
            let scale = 1.0 / (hd as f64).sqrt();
            let scores = q.matmul(expand(k_all.clone()).swap_dims(2, 3)) * scale + bias;
            let probs = softmax(scores, 3);
            let o = probs.clone().matmul(expand(v_all.clone()));
            let o = o.swap_dims(1, 2).reshape([rows, nh * hd]);
            h = h + linear(o, w(LinearKind::O), None).reshape([b, n, hidden]);
            *cache = Some(evict(k_all, v_all, probs, &policy, n, rep, &self.device));
        }
        if !blk.skip_mlp {
            h = self.mlp(l, h, &mut NoHook);
        }
        h
    }
}

/// Cut a cache back to its budget.
fn evict(
    k: Tensor<4>,
    v: Tensor<4>,
    probs: Tensor<4>,
    p: &KvPolicy,
    n: usize,
    rep: usize,
    device: &burn::tensor::Device,
) -> Cache {
    let [b, nkv, s, d] = k.dims();
    let Some(budget) = p.budget else {
        return Cache { k, v };
    };
    if s <= budget {
        return Cache { k, v };
    }
    match p.eviction {
        Eviction::Streaming { sinks } => {
            let sinks = sinks.min(budget);
            let recent = budget - sinks;
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            if sinks > 0 {
                ks.push(k.clone().slice([0..b, 0..nkv, 0..sinks, 0..d]));
                vs.push(v.clone().slice([0..b, 0..nkv, 0..sinks, 0..d]));
            }
            if recent > 0 {
                ks.push(k.slice([0..b, 0..nkv, s - recent..s, 0..d]));
                vs.push(v.slice([0..b, 0..nkv, s - recent..s, 0..d]));
            }
            Cache {
                k: Tensor::cat(ks, 2),
                v: Tensor::cat(vs, 2),
            }
        }
        Eviction::SnapKv { window, recent } => {
            let recent = recent.min(budget);
            let w = window.clamp(1, n);
            let nh = nkv * rep;
            // Attention of the chunk's last `w` queries to every cached token,
            // summed over those queries and the heads sharing a KV head.
            let score = probs
                .slice([0..b, 0..nh, n - w..n, 0..s])
                .sum_dim(2)
                .reshape([b, nkv, rep, s])
                .sum_dim(2)
                .reshape([b, nkv, s]);
            // The recent tokens are always kept: give them an unbeatable score.
            let mut protect = vec![0.0f32; s];
            for x in protect.iter_mut().skip(s - recent) {
                *x = 1e9;
            }
            let protect = Tensor::<3>::from_data(TensorData::new(protect, [1, 1, s]), device);
            let (_, idx) = (score + protect).topk_with_indices(budget, 2);
            let idx: Tensor<4, Int> = idx.reshape([b, nkv, budget, 1]).expand([b, nkv, budget, d]);
            Cache {
                k: k.gather(2, idx.clone()),
                v: v.gather(2, idx),
            }
        }
    }
}
