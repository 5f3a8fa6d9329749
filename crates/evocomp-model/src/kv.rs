//! A per-layer KV cache under a token budget (StreamingLLM or SnapKV-style
//! eviction) and with quantized keys and values, measured teacher-forced by a
//! chunked prefill that evicts as it goes.
//!
//! Each chunk's queries attend to the layer's cache plus the chunk itself
//! (causally); then the chunk's keys and values join the cache, which is cut
//! back to the budget. A layer without a policy keeps every token, so with no
//! policy anywhere the result equals the plain causal forward pass.

use crate::error::ForwardError;
use crate::kv_policy::{Eviction, KvGroup, KvPolicy, KvQuant};
use crate::llama::{LlamaModel, NoHook};
use crate::weights::LinearKind;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

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

    /// Leading positions that the KV policies leave exact by construction:
    /// the first prefill piece (SnapKV's prompt, else the first chunk) runs
    /// with nothing cached, so its logits are the uncompressed model's. 0
    /// without a policy, or when a policy quantizes keys or values (the
    /// first piece then differs too). Scores leave these positions out.
    pub fn exact_prefix(&self) -> usize {
        if !self.has_kv_policy()
            || self
                .kv
                .iter()
                .flatten()
                .any(|p| p.keys.is_some() || p.values.is_some())
        {
            return 0;
        }
        self.kv
            .iter()
            .flatten()
            .filter_map(|p| match p.eviction {
                Eviction::SnapKv { prompt, .. } => Some(prompt),
                _ => None,
            })
            .max()
            .filter(|&p| p > 0)
            .unwrap_or(self.kv_chunk)
    }

    pub(crate) fn has_kv_policy(&self) -> bool {
        self.kv.iter().any(Option::is_some)
    }

    /// Logits `[B, T, vocab]` by chunked prefill under the KV policies, and
    /// each layer's cache length at the end.
    pub fn forward_kv(&self, batch: &[Vec<u32>]) -> Result<(Tensor<3>, Vec<usize>), ForwardError> {
        let tokens = self.tokens_to_device(batch)?;
        let [b, t] = tokens.dims();
        // The cache keeps no positions, so a window cannot be applied to it:
        // within the window the sliding blocks are exact, beyond it refused.
        if let Some((layer, window)) = (0..self.blocks.len())
            .filter_map(|l| Some((l, self.cfg.window(l)?)))
            .find(|&(_, w)| w < t)
        {
            return Err(ForwardError::WindowedKv {
                layer,
                window,
                len: t,
            });
        }
        let mut caches: Vec<Option<Cache>> = (0..self.blocks.len()).map(|_| None).collect();
        let mut outs = Vec::new();
        // SnapKV prefills its prompt in one piece; the rest goes in chunks.
        let prompt = self
            .kv
            .iter()
            .flatten()
            .filter_map(|p| match p.eviction {
                Eviction::SnapKv { prompt, .. } => Some(prompt),
                _ => None,
            })
            .max();
        let mut bounds = Vec::new();
        let mut c0 = 0;
        if let Some(p) = prompt.filter(|&p| p > 0) {
            bounds.push((0, p.min(t)));
            c0 = p.min(t);
        }
        while c0 < t {
            let c1 = (c0 + self.kv_chunk).min(t);
            bounds.push((c0, c1));
            c0 = c1;
        }
        for (c0, c1) in bounds {
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
        let w = |k: LinearKind| self.weight(&blk.linears[k as usize]);
        let mut h = h;
        if !blk.skip_attn {
            let policy = self.kv[l].unwrap_or(KvPolicy::FULL);
            let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
            let (q, mut k, mut v) = self.qkv(l, &h, start, &mut NoHook);
            if let Some(kq) = &policy.keys {
                k = quantize(k, kq);
            }
            if let Some(vq) = &policy.values {
                v = quantize(v, vq);
            }
            let first = cache.is_none();
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
            let scale = self.attn_scale();
            let scores = q.matmul(expand(k_all.clone()).swap_dims(2, 3)) * scale + bias;
            let probs = softmax(scores, 3);
            let o = probs.clone().matmul(expand(v_all.clone()));
            let o = o.swap_dims(1, 2).reshape([rows, nh * hd]);
            let y = self
                .linear(o, w(LinearKind::O), None)
                .reshape([b, n, hidden]);
            h = self.residual(l, h, y, 0);
            *cache = Some(evict(
                k_all,
                v_all,
                probs,
                &policy,
                Chunk { n, first },
                rep,
                &self.device,
            ));
        }
        if !blk.skip_mlp {
            h = self.mlp(l, h, &mut NoHook);
        }
        h
    }
}

/// The chunk just prefilled: its length, and whether it was the sequence's first.
struct Chunk {
    n: usize,
    first: bool,
}

/// Cut a cache back to its budget.
fn evict(
    k: Tensor<4>,
    v: Tensor<4>,
    probs: Tensor<4>,
    p: &KvPolicy,
    chunk: Chunk,
    rep: usize,
    device: &burn::tensor::Device,
) -> Cache {
    let [b, nkv, s, d] = k.dims();
    let n = chunk.n;
    let Some(budget) = p.budget else {
        return Cache { k, v };
    };
    if s <= budget {
        return Cache { k, v };
    }
    match p.eviction {
        Eviction::SnapKv { window, kernel, .. } => {
            // Once, after the prompt (the first chunk); later tokens stay.
            if !chunk.first {
                return Cache { k, v };
            }
            // A hand-edited manifest may hold a zero window or budget: never panic.
            let w = window.max(1).min(budget).min(s);
            let prefix = s - w;
            let keep = budget - w;
            let score = pool(window_scores(probs, rep, w, prefix), kernel.max(1), device);
            let idx = if keep == 0 {
                None
            } else {
                let (_, idx) = score.topk_with_indices(keep, 2);
                Some(idx.reshape([b, nkv, keep, 1]).expand([b, nkv, keep, d]))
            };
            let tail_k = k.clone().slice([0..b, 0..nkv, prefix..s, 0..d]);
            let tail_v = v.clone().slice([0..b, 0..nkv, prefix..s, 0..d]);
            match idx {
                Some(idx) => Cache {
                    k: Tensor::cat(vec![k.gather(2, idx.clone()), tail_k], 2),
                    v: Tensor::cat(vec![v.gather(2, idx), tail_v], 2),
                },
                None => Cache {
                    k: tail_k,
                    v: tail_v,
                },
            }
        }
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
        Eviction::ChunkedSnapKv { window, recent } => {
            let recent = recent.min(budget);
            let w = window.clamp(1, n);
            let score = window_scores(probs, rep, w, s);
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

/// The attention of the chunk's last `window` queries to each of the first
/// `keys` cached tokens, summed over those queries and over the `rep` query
/// heads that share a KV head: `[B, KVH, keys]` from `probs` `[B, H, n, S]`.
fn window_scores(probs: Tensor<4>, rep: usize, window: usize, keys: usize) -> Tensor<3> {
    let [b, nh, n, _] = probs.dims();
    let nkv = nh / rep;
    probs
        .slice([0..b, 0..nh, n - window..n, 0..keys])
        .sum_dim(2)
        .reshape([b, nkv, rep, keys])
        .sum_dim(2)
        .reshape([b, nkv, keys])
}

/// SnapKV's smoothing: an average pool of odd width `kernel` along the
/// tokens, stride 1, zero padding counted (PyTorch's `avg_pool1d` with
/// `padding = kernel / 2`), on `[B, H, S]` scores.
fn pool(score: Tensor<3>, kernel: usize, device: &burn::tensor::Device) -> Tensor<3> {
    let [b, h, s] = score.dims();
    let half = kernel / 2;
    if half == 0 {
        return score;
    }
    let zeros = Tensor::<3>::zeros([b, h, half], device);
    let padded = Tensor::cat(vec![zeros.clone(), score, zeros], 2);
    let mut sum = padded.clone().slice([0..b, 0..h, 0..s]);
    for o in 1..2 * half + 1 {
        sum = sum + padded.clone().slice([0..b, 0..h, o..o + s]);
    }
    sum / (2 * half + 1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions kept by SnapKV from a 20-token prompt whose window queries
    /// put `mass` on some positions (two query heads share the KV head).
    fn kept(mass: &[(usize, usize, f32)], budget: usize, kernel: usize) -> Vec<usize> {
        let device = burn::tensor::Device::flex();
        let (s, w) = (20, 4);
        let pos: Vec<f32> = (0..s).map(|p| p as f32).collect();
        let k = Tensor::<4>::from_data(TensorData::new(pos.clone(), [1, 1, s, 1]), &device);
        let v = Tensor::<4>::from_data(TensorData::new(pos, [1, 1, s, 1]), &device);
        let mut p = vec![0.0f32; 2 * s * s];
        for &(head, at, m) in mass {
            for q in s - w..s {
                p[(head * s + q) * s + at] = m;
            }
        }
        let probs = Tensor::<4>::from_data(TensorData::new(p, [1, 2, s, s]), &device);
        let policy = KvPolicy {
            budget: Some(budget),
            eviction: Eviction::SnapKv {
                window: w,
                kernel,
                prompt: s,
            },
            keys: None,
            values: None,
        };
        let c = evict(
            k,
            v,
            probs,
            &policy,
            Chunk { n: s, first: true },
            2,
            &device,
        );
        let mut out: Vec<usize> =
            c.k.into_data()
                .try_into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(|x| x as usize)
                .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn snapkv_keeps_the_window_and_the_most_attended_prefix_tokens() {
        // Heads 0 and 1 attend to 3 and 11, and to 7: with a budget of 7,
        // those three and the 4-token window.
        let mass = [(0, 3, 1.0), (0, 11, 0.9), (1, 7, 0.8), (1, 2, 0.1)];
        assert_eq!(kept(&mass, 7, 1), vec![3, 7, 11, 16, 17, 18, 19]);
        // A budget of the window alone keeps only the window.
        assert_eq!(kept(&mass, 4, 1), vec![16, 17, 18, 19]);
        // Pooling prefers a cluster to an isolated peak: 5 alone wins
        // unpooled, the middle of 9..=11 with a kernel of 3.
        let mass = [(0, 5, 1.0), (0, 9, 0.6), (0, 10, 0.6), (0, 11, 0.6)];
        assert_eq!(kept(&mass, 5, 1), vec![5, 16, 17, 18, 19]);
        assert_eq!(kept(&mass, 5, 3), vec![10, 16, 17, 18, 19]);
    }
}
