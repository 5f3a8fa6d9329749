//! The Llama-family forward pass on burn. The device (flex CPU, wgpu, ...) is
//! whatever `Device` the caller hands in; nothing here names a backend.

use crate::config::{Activation, LlamaConfig};
use crate::error::ForwardError;
use crate::kernels;
use crate::kv_policy::KvPolicy;
pub use crate::precision::{Matmul, WeightDtype};
use crate::weights::{HostTensor, LayerWeights, LinearKind, LlamaWeights};
use burn::tensor::module::{attention, embedding, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{
    Bool, DType, Device, FloatDType, Int, Tensor, TensorCreationOptions, TensorData, activation,
};
use std::borrow::{Borrow, Cow};
use std::ops::Range;

/// Queries per attention call on long sequences (see `causal_attention`).
const ATTENTION_CHUNK: usize = 64;

/// Observes the forward pass. Every method has a no-op default.
pub trait ForwardHook {
    /// The input `[tokens, in_features]` of one linear layer, as it is about
    /// to be multiplied (Q, K and V see the same input).
    fn linear_input(&mut self, _layer: usize, _kind: LinearKind, _x: &Tensor<2>) {}
}

/// A hook that does nothing.
pub struct NoHook;
impl ForwardHook for NoHook {}

/// One block on the device. Linear weights are stored `[in, out]`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) attn_norm: Tensor<3>,
    pub(crate) mlp_norm: Tensor<3>,
    pub(crate) linears: [Tensor<2>; 7],
    /// Norms of the attention and MLP outputs `[1, 1, hidden]` (Gemma).
    pub(crate) post_norms: Option<[Tensor<3>; 2]>,
    /// Query and key norms `[1, 1, 1, head_dim]` (Gemma 3, Qwen 3).
    pub(crate) qk_norms: Option<[Tensor<4>; 2]>,
    /// q, k and v biases (Qwen 2).
    pub(crate) qkv_bias: Option<[Tensor<1>; 3]>,
    pub(crate) skip_attn: bool,
    pub(crate) skip_mlp: bool,
}

/// Putting weights on a device in a dtype (here, beside the model that
/// does it; the type is `precision.rs`'s).
impl WeightDtype {
    /// The half precision the weights are stored in; None for f32.
    pub(crate) fn half(self) -> Option<FloatDType> {
        match self {
            WeightDtype::F32 => None,
            WeightDtype::Bf16 => Some(FloatDType::BF16),
            WeightDtype::F16 => Some(FloatDType::F16),
        }
    }

    /// A host weight on `device` in this dtype. A half-precision one is
    /// rounded on the host and the f32 values dropped before the upload, so
    /// no f32 copy of it ever exists on the device.
    pub(crate) fn upload(self, t: HostTensor, device: &Device) -> Tensor<2> {
        let HostTensor { shape, data } = t;
        let half = |data: TensorData, dtype: DType| {
            Tensor::from_data(
                data,
                TensorCreationOptions::new(device.clone()).with_dtype(dtype),
            )
        };
        match self {
            WeightDtype::F32 => Tensor::from_data(TensorData::new(data, shape), device),
            WeightDtype::Bf16 => {
                let v: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
                drop(data);
                half(TensorData::new(v, shape), DType::BF16)
            }
            WeightDtype::F16 => {
                let v: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                drop(data);
                half(TensorData::new(v, shape), DType::F16)
            }
        }
    }
}

/// A Llama-family model resident on one device.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    pub(crate) cfg: LlamaConfig,
    pub(crate) device: Device,
    embed: Tensor<2>,
    pub(crate) blocks: Vec<Block>,
    final_norm: Tensor<3>,
    /// `[hidden, vocab]`, contiguous. `None` for a large tied head, which
    /// multiplies by the embedding table's transpose (a strided view, not a
    /// second copy: 671 MB less for Gemma 3 270M, about 4% slower on the CPU).
    head: Option<Tensor<2>>,
    /// `[positions, head_dim]`, HF rotate-half layout.
    pub(crate) rope_cos: Tensor<2>,
    pub(crate) rope_sin: Tensor<2>,
    /// The sliding-window blocks' own tables, when their RoPE base differs.
    pub(crate) rope_local: Option<(Tensor<2>, Tensor<2>)>,
    /// `x @ rot` is rotate_half(x) on the last dimension.
    pub(crate) rot: Tensor<2>,
    rope_len: usize,
    /// Per-layer KV-cache policies; any set switches to the chunked prefill.
    pub(crate) kv: Vec<Option<KvPolicy>>,
    pub(crate) kv_chunk: usize,
    weight_dtype: WeightDtype,
    matmul: Matmul,
    /// Attention and SiLU through the fused CPU kernels (`kernels`): on
    /// when the device is flex.
    fused: bool,
}

fn upload_norm(t: &HostTensor, device: &Device) -> Tensor<3> {
    let n = t.data.len();
    Tensor::from_data(TensorData::new(t.data.clone(), [1, 1, n]), device)
}

fn upload_head_norm(t: &HostTensor, device: &Device) -> Tensor<4> {
    let n = t.data.len();
    Tensor::from_data(TensorData::new(t.data.clone(), [1, 1, 1, n]), device)
}

/// A tied head up to this many weights gets its own contiguous transposed
/// copy (faster); a larger one is read through the embedding table.
const TIED_HEAD_COPY_MAX: usize = 64 << 20;

/// Most positions the RoPE tables are built for.
const MAX_ROPE_TABLE: usize = 32_768;

impl LlamaModel {
    /// Upload `weights` to `device` in f32.
    pub fn new(cfg: &LlamaConfig, weights: &LlamaWeights, device: &Device) -> Self {
        match Self::with_dtype(cfg, weights, device, WeightDtype::F32) {
            Ok(m) => m,
            Err(e) => unreachable!("every device computes in f32: {e}"),
        }
    }

    /// Upload `weights` to `device`, the matrices held in `dtype`; an error
    /// if the device cannot compute in `dtype`.
    pub fn with_dtype(
        cfg: &LlamaConfig,
        weights: &LlamaWeights,
        device: &Device,
        dtype: WeightDtype,
    ) -> Result<Self, ForwardError> {
        let layers = weights.layers.iter().map(Ok::<_, ForwardError>);
        Self::build(
            cfg,
            device,
            dtype,
            Cow::Borrowed(&weights.embed),
            weights.lm_head.as_ref().map(Cow::Borrowed),
            &weights.final_norm,
            layers,
        )
    }

    /// Build the model part by part: each block is uploaded as `layers`
    /// yields it (and may be dropped by the caller), and an owned embedding
    /// is moved to the device without a host copy. A half precision the
    /// device cannot compute in is refused before anything is uploaded (a
    /// software Vulkan device has no bf16, and computing in it gives garbage).
    pub(crate) fn build<L: Borrow<LayerWeights>, E: From<ForwardError>>(
        cfg: &LlamaConfig,
        device: &Device,
        dtype: WeightDtype,
        embed: Cow<'_, HostTensor>,
        lm_head: Option<Cow<'_, HostTensor>>,
        final_norm: &HostTensor,
        layers: impl Iterator<Item = Result<L, E>>,
    ) -> Result<Self, E> {
        if let Some(h) = dtype.half()
            && !device.supports_dtype(h)
        {
            return Err(ForwardError::UnsupportedDtype {
                dtype,
                device: format!("{device:?}"),
            }
            .into());
        }
        let upload_owned = |t: HostTensor, device: &Device| dtype.upload(t, device);
        // The embedding and head first, so a streamed f32 embedding (the
        // largest tensor) is gone before the blocks arrive.
        let head = match &lm_head {
            Some(h) => Some(upload_owned(h.transposed(), device)),
            None if embed.data.len() <= TIED_HEAD_COPY_MAX => {
                Some(upload_owned(embed.transposed(), device))
            }
            None => None,
        };
        drop(lm_head);
        let embed = upload_owned(embed.into_owned(), device);
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in layers {
            let l = l?;
            let l = l.borrow();
            blocks.push(Block {
                attn_norm: upload_norm(&l.attn_norm, device),
                mlp_norm: upload_norm(&l.mlp_norm, device),
                linears: LinearKind::ALL.map(|k| upload_owned(l.linear(k).transposed(), device)),
                post_norms: l
                    .post_norms
                    .as_ref()
                    .map(|n| n.each_ref().map(|t| upload_norm(t, device))),
                qk_norms: l
                    .qk_norms
                    .as_ref()
                    .map(|n| n.each_ref().map(|t| upload_head_norm(t, device))),
                qkv_bias: l.qkv_bias.as_ref().map(|b| {
                    b.each_ref().map(|t| {
                        Tensor::from_data(TensorData::new(t.data.clone(), [t.data.len()]), device)
                    })
                }),
                skip_attn: false,
                skip_mlp: false,
            });
        }
        let rope_len = cfg.max_context.clamp(1, MAX_ROPE_TABLE);
        let (cos, sin) = rope_tables(
            &cfg.rope_inv_freq(),
            cfg.rope_position_scale(),
            cfg.head_dim,
            rope_len,
        );
        let rope_local = cfg.rope_inv_freq_local().map(|inv| {
            let (c, s) = rope_tables(&inv, 1.0, cfg.head_dim, rope_len);
            let hd = cfg.head_dim;
            (
                Tensor::from_data(TensorData::new(c, [rope_len, hd]), device),
                Tensor::from_data(TensorData::new(s, [rope_len, hd]), device),
            )
        });
        let hd = cfg.head_dim;
        let half = hd / 2;
        let mut rot = vec![0.0f32; hd * hd];
        for i in 0..half {
            rot[(i + half) * hd + i] = -1.0;
            rot[i * hd + i + half] = 1.0;
        }
        Ok(Self {
            cfg: cfg.clone(),
            device: device.clone(),
            embed,
            blocks,
            final_norm: upload_norm(final_norm, device),
            head,
            rope_cos: Tensor::from_data(TensorData::new(cos, [rope_len, hd]), device),
            rope_sin: Tensor::from_data(TensorData::new(sin, [rope_len, hd]), device),
            rope_local,
            rot: Tensor::from_data(TensorData::new(rot, [hd, hd]), device),
            rope_len,
            kv: vec![None; cfg.n_layers],
            kv_chunk: 64,
            weight_dtype: dtype,
            matmul: Matmul::F32,
            fused: *device == Device::flex(),
        })
    }

    /// Use the fused CPU kernels where the device is flex (the default), or
    /// burn's own operations everywhere (to compare the two, or to measure).
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused = on && self.device == Device::flex();
    }

    /// The dtype the weight matrices are held in.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.weight_dtype
    }

    /// Compute every linear layer's products in `m`; bf16 only on flex.
    pub fn set_matmul(&mut self, m: Matmul) -> Result<(), ForwardError> {
        if m == Matmul::Bf16 && self.device != Device::flex() {
            return Err(ForwardError::UnsupportedMatmul {
                device: format!("{:?}", self.device),
            });
        }
        self.matmul = m;
        Ok(())
    }

    /// The precision of the linear layers' products.
    pub fn matmul(&self) -> Matmul {
        self.matmul
    }

    /// A stored weight as the matmuls take it: in f32, or as stored where
    /// the bf16 kernel reads it (it rounds an f32 weight itself).
    pub(crate) fn weight(&self, t: &Tensor<2>) -> Tensor<2> {
        match self.matmul {
            Matmul::Bf16 => t.clone(),
            Matmul::F32 => self.widen(t.clone()),
        }
    }

    /// A tensor read from the stored weights, in f32.
    fn widen<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match self.weight_dtype.half() {
            None => t,
            Some(_) => t.cast(FloatDType::F32),
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn n_layers(&self) -> usize {
        self.blocks.len()
    }

    /// Replace one linear layer's weight (`[out, in]`, PyTorch orientation).
    pub fn set_linear(
        &mut self,
        layer: usize,
        kind: LinearKind,
        w: &HostTensor,
    ) -> Result<(), ForwardError> {
        let expected = kind.shape(&self.cfg);
        if layer >= self.blocks.len() {
            return Err(ForwardError::BadLayers {
                start: layer,
                end: layer + 1,
                n_layers: self.blocks.len(),
            });
        }
        if w.shape != expected {
            return Err(ForwardError::BadWeight {
                layer,
                kind,
                expected,
                found: w.shape.clone(),
            });
        }
        self.blocks[layer].linears[kind as usize] =
            self.weight_dtype.upload(w.transposed(), &self.device);
        Ok(())
    }

    /// Replace the token embedding table (`[vocab, hidden]`); a tied head
    /// follows it, as it does in a GGUF file with no `output.weight`.
    /// Taken by value: the table moves to the device without a host copy.
    pub fn set_embedding(&mut self, w: HostTensor) -> Result<(), ForwardError> {
        self.check_table("token embedding", &w)?;
        if self.cfg.tied_embeddings && self.head.is_some() {
            self.head = Some(self.weight_dtype.upload(w.transposed(), &self.device));
        }
        self.embed = self.weight_dtype.upload(w, &self.device);
        Ok(())
    }

    /// Replace an untied output head (`[vocab, hidden]`).
    pub fn set_head(&mut self, w: &HostTensor) -> Result<(), ForwardError> {
        if self.cfg.tied_embeddings {
            return Err(ForwardError::TiedHead);
        }
        self.check_table("output head", w)?;
        self.head = Some(self.weight_dtype.upload(w.transposed(), &self.device));
        Ok(())
    }

    fn check_table(&self, what: &'static str, w: &HostTensor) -> Result<(), ForwardError> {
        let expected = [self.cfg.vocab, self.cfg.hidden];
        if w.shape != expected {
            return Err(ForwardError::BadTable {
                what,
                expected,
                found: w.shape.clone(),
            });
        }
        Ok(())
    }

    /// Skip (or restore) a layer's attention sub-block: it becomes the
    /// identity on the residual stream.
    pub fn set_skip_attention(&mut self, layer: usize, skip: bool) {
        self.blocks[layer].skip_attn = skip;
    }

    /// Skip (or restore) a layer's MLP sub-block.
    pub fn set_skip_mlp(&mut self, layer: usize, skip: bool) {
        self.blocks[layer].skip_mlp = skip;
    }

    pub fn is_skipped(&self, layer: usize) -> (bool, bool) {
        (self.blocks[layer].skip_attn, self.blocks[layer].skip_mlp)
    }

    /// Check a batch of equal-length token sequences and upload it as `[B, T]`.
    pub fn tokens_to_device(&self, batch: &[Vec<u32>]) -> Result<Tensor<2, Int>, ForwardError> {
        let first = batch.first().ok_or(ForwardError::EmptyBatch)?;
        let t = first.len();
        if t == 0 {
            return Err(ForwardError::EmptyBatch);
        }
        if t > self.rope_len {
            return Err(ForwardError::TooLong {
                len: t,
                max: self.rope_len,
            });
        }
        let mut ids = Vec::with_capacity(batch.len() * t);
        for (index, seq) in batch.iter().enumerate() {
            if seq.len() != t {
                return Err(ForwardError::RaggedBatch {
                    index,
                    len: seq.len(),
                    expected: t,
                });
            }
            for &id in seq {
                if id as usize >= self.cfg.vocab {
                    return Err(ForwardError::BadToken {
                        id,
                        vocab: self.cfg.vocab,
                    });
                }
                ids.push(id as i64);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(ids, [batch.len(), t]),
            &self.device,
        ))
    }

    /// `x @ w (+ bias)`: with bf16 products through `kernels::bf16`; in f32
    /// through `kernels::linear` when the fused kernels are on, burn's
    /// `linear` otherwise.
    pub(crate) fn linear(&self, x: Tensor<2>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
        if self.matmul == Matmul::Bf16 {
            // `set_matmul` keeps bf16 to flex, where the activations are f32.
            assert!(
                kernels::bf16::accepts(&x, &w),
                "bf16 matmul of {:?} by {:?} outside flex",
                x.dims(),
                w.dims()
            );
            return kernels::bf16::linear(x, w, bias);
        }
        if self.fused {
            kernels::linear(x, w, bias)
        } else {
            linear(x, w, bias)
        }
    }

    /// Token embeddings `[B, T, hidden]` (times the embedding scale, if any).
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        // Rows gathered in the stored dtype, then widened: never the table.
        let e = self.widen(embedding(self.embed.clone(), tokens));
        match self.cfg.embed_scale {
            // As transformers does: the scale rounded to the weights' dtype.
            Some(s) => e * (s as f32) as f64,
            None => e,
        }
    }

    /// Run blocks `layers` on hidden states `[B, T, hidden]` (positions start at 0).
    pub fn forward_layers(
        &self,
        mut h: Tensor<3>,
        layers: Range<usize>,
        hook: &mut dyn ForwardHook,
    ) -> Result<Tensor<3>, ForwardError> {
        if layers.start > layers.end || layers.end > self.blocks.len() {
            return Err(ForwardError::BadLayers {
                start: layers.start,
                end: layers.end,
                n_layers: self.blocks.len(),
            });
        }
        for l in layers {
            h = self.block(l, h, hook);
        }
        Ok(h)
    }

    /// Final norm and output head: logits `[B, T, vocab]`.
    pub fn head(&self, h: Tensor<3>) -> Tensor<3> {
        let head = match &self.head {
            Some(h) => self.weight(h),
            None => self.weight(&self.embed).transpose(),
        };
        let [b, t, hidden] = h.dims();
        let x = self.rms_norm(h, &self.final_norm).reshape([b * t, hidden]);
        let vocab = head.dims()[1];
        self.linear(x, head, None).reshape([b, t, vocab])
    }

    /// Where the forward pass of `tokens` first stops being finite (NaN or
    /// an infinity): `"the token embeddings"`, `"block L (of N)"` or `"the
    /// final norm and output head"`; None when every stage is finite. Run
    /// stage by stage on the live weights (a genome applied included), so
    /// it names the stage a NaN weight or an overflow comes from.
    pub fn first_nonfinite(&self, tokens: &[u32]) -> Result<Option<String>, ForwardError> {
        // Host reads: one sequence's states are small. A read that fails
        // says nothing (None), the caller's error stands without a place.
        let finite = |t: Tensor<3>| {
            t.try_into_data()
                .ok()
                .and_then(|d| d.convert::<f32>().try_into_vec::<f32>().ok())
                .is_none_or(|v| v.iter().all(|x| x.is_finite()))
        };
        let n = self.blocks.len();
        let mut h = self.embed(self.tokens_to_device(&[tokens.to_vec()])?);
        if !finite(h.clone()) {
            return Ok(Some("the token embeddings".into()));
        }
        for l in 0..n {
            h = self.block(l, h, &mut NoHook);
            if !finite(h.clone()) {
                return Ok(Some(format!("block {l} (of {n})")));
            }
        }
        Ok((!finite(self.head(h))).then(|| "the final norm and output head".into()))
    }

    /// Logits `[B, T, vocab]` for a batch of equal-length sequences.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Tensor<3>, ForwardError> {
        self.forward_hooked(batch, &mut NoHook)
    }

    /// Logits with `hook` observing every linear input. With a KV-cache
    /// policy set on any layer this is the chunked prefill of
    /// [`LlamaModel::forward_kv`], which calls no hooks.
    pub fn forward_hooked(
        &self,
        batch: &[Vec<u32>],
        hook: &mut dyn ForwardHook,
    ) -> Result<Tensor<3>, ForwardError> {
        if self.has_kv_policy() {
            return Ok(self.forward_kv(batch)?.0);
        }
        let tokens = self.tokens_to_device(batch)?;
        let h = self.embed(tokens);
        let h = self.forward_layers(h, 0..self.blocks.len(), hook)?;
        Ok(self.head(h))
    }

    /// RMSNorm over the last dimension (hidden states `[B, T, hidden]`, or
    /// per-head queries and keys `[B, H, T, D]`).
    pub(crate) fn rms_norm<const D: usize>(&self, x: Tensor<D>, w: &Tensor<D>) -> Tensor<D> {
        let var = x.clone().square().mean_dim(D - 1);
        x * (var + self.cfg.rms_eps).sqrt().recip() * w.clone()
    }

    /// RoPE for block `l`'s `[B, H, T, D]` at positions `start..start + T`.
    pub(crate) fn rope_at(&self, l: usize, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let (cos, sin) = match (&self.rope_local, self.cfg.window(l)) {
            (Some((c, s)), Some(_)) => (c, s),
            _ => (&self.rope_cos, &self.rope_sin),
        };
        let cos = cos.clone().slice(start..start + t).reshape([1, 1, t, d]);
        let sin = sin.clone().slice(start..start + t).reshape([1, 1, t, d]);
        let rotated = x
            .clone()
            .reshape([b * h * t, d])
            .matmul(self.rot.clone())
            .reshape([b, h, t, d]);
        x * cos + rotated * sin
    }

    /// Block `l`'s query, key and value projections `[B, T, heads, D]` of
    /// hidden states `h` `[B, T, hidden]` (the input norm applied; no q/k
    /// norms, no RoPE).
    fn projections(
        &self,
        l: usize,
        h: &Tensor<3>,
        hook: &mut dyn ForwardHook,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let blk = &self.blocks[l];
        let cfg = &self.cfg;
        let [b, t, hidden] = h.dims();
        let w = |k: LinearKind| self.weight(&blk.linears[k as usize]);
        let x = self
            .rms_norm(h.clone(), &blk.attn_norm)
            .reshape([b * t, hidden]);
        hook.linear_input(l, LinearKind::Q, &x);
        hook.linear_input(l, LinearKind::K, &x);
        hook.linear_input(l, LinearKind::V, &x);
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let heads = |y: Tensor<2>, nheads: usize| y.reshape([b, t, nheads, hd]);
        let bias = |i: usize| blk.qkv_bias.as_ref().map(|b| b[i].clone());
        let q = heads(self.linear(x.clone(), w(LinearKind::Q), bias(0)), nh);
        let k = heads(self.linear(x.clone(), w(LinearKind::K), bias(1)), nkv);
        let v = heads(self.linear(x, w(LinearKind::V), bias(2)), nkv);
        (q, k, v)
    }

    /// Block `l`'s queries `[B, H, T, D]`, keys and values `[B, KVH, T, D]`
    /// for hidden states `h` `[B, T, hidden]` at positions `start..`: the
    /// input norm, the projections, the q/k norms and RoPE.
    pub(crate) fn qkv(
        &self,
        l: usize,
        h: &Tensor<3>,
        start: usize,
        hook: &mut dyn ForwardHook,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let (q, k, v) = self.projections(l, h, hook);
        let [q, mut k, v] = [q, k, v].map(|y| y.swap_dims(1, 2));
        let mut q = q;
        if let Some([qn, kn]) = &self.blocks[l].qk_norms {
            q = self.rms_norm(q, qn);
            k = self.rms_norm(k, kn);
        }
        (self.rope_at(l, q, start), self.rope_at(l, k, start), v)
    }

    /// Add sub-block output `y` `[B, T, hidden]` to the residual `h`, through
    /// the post-norm `which` (0 attention, 1 MLP) where the model has one.
    pub(crate) fn residual(&self, l: usize, h: Tensor<3>, y: Tensor<3>, which: usize) -> Tensor<3> {
        match &self.blocks[l].post_norms {
            Some(norms) => h + self.rms_norm(y, &norms[which]),
            None => h + y,
        }
    }

    /// The scale of block attention logits.
    pub(crate) fn attn_scale(&self) -> f64 {
        self.cfg
            .attn_scale
            .unwrap_or(1.0 / (self.cfg.head_dim as f64).sqrt())
    }

    fn block(&self, l: usize, h: Tensor<3>, hook: &mut dyn ForwardHook) -> Tensor<3> {
        let blk = &self.blocks[l];
        let [b, t, hidden] = h.dims();
        let w = |k: LinearKind| self.weight(&blk.linears[k as usize]);
        let mut h = h;
        if !blk.skip_attn {
            let o = match self.fused_attention(l, &h, hook) {
                Some(o) => o,
                None => self.attention(l, &h, hook),
            };
            hook.linear_input(l, LinearKind::O, &o);
            let y = self
                .linear(o, w(LinearKind::O), None)
                .reshape([b, t, hidden]);
            h = self.residual(l, h, y, 0);
        }
        if !blk.skip_mlp {
            h = self.mlp(l, h, hook);
        }
        h
    }

    /// Block `l`'s attention up to the output projection's input `[B·T,
    /// H·D]` with burn's operations: keys and values expanded to every
    /// query head, `causal_attention`.
    fn attention(&self, l: usize, h: &Tensor<3>, hook: &mut dyn ForwardHook) -> Tensor<2> {
        let cfg = &self.cfg;
        let [b, t, _] = h.dims();
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let (q, k, v) = self.qkv(l, h, 0, hook);
        let (k, v) = if nkv == nh {
            (k, v)
        } else {
            let rep = nh / nkv;
            let expand = |y: Tensor<4>| {
                y.unsqueeze_dim::<5>(2)
                    .expand([b, nkv, rep, t, hd])
                    .reshape([b, nh, t, hd])
            };
            (expand(k), expand(v))
        };
        self.causal_attention(q, k, v, cfg.window(l))
            .swap_dims(1, 2)
            .reshape([b * t, nh * hd])
    }

    /// Block `l`'s attention up to the output projection's input `[B·T,
    /// H·D]` through the fused CPU kernel (`kernels::causal_attention`);
    /// None where the model does not use it (not on flex, or switched off),
    /// before anything is computed.
    fn fused_attention(
        &self,
        l: usize,
        h: &Tensor<3>,
        hook: &mut dyn ForwardHook,
    ) -> Option<Tensor<2>> {
        // Everything computed from `h` lives where it does, in f32.
        if !(self.fused && kernels::on_flex(h)) {
            return None;
        }
        let cfg = &self.cfg;
        let [b, t, _] = h.dims();
        let (q, k, v) = self.projections(l, h, hook);
        let (q, k) = match &self.blocks[l].qk_norms {
            // The norms are over the last dimension: the same in [B, T, H, D].
            Some([qn, kn]) => (self.rms_norm(q, qn), self.rms_norm(k, kn)),
            None => (q, k),
        };
        let (cos, sin) = match (&self.rope_local, cfg.window(l)) {
            (Some((c, s)), Some(_)) => (c, s),
            _ => (&self.rope_cos, &self.rope_sin),
        };
        let shape = kernels::AttentionShape {
            batch: b,
            len: t,
            heads: cfg.n_heads,
            kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            window: cfg.window(l),
            scale: self.attn_scale() as f32,
        };
        Some(kernels::causal_attention(shape, q, k, v, cos, sin))
    }

    /// Causal (optionally sliding-window) attention over `[B, H, T, D]`
    /// queries, keys and values. Longer sequences go in chunks of
    /// `ATTENTION_CHUNK` queries, each against only the keys it can see
    /// (those up to its last query, and no further back than the window), so
    /// the scores and exponentials of the masked upper triangle are never
    /// computed: 56% of the full score matrix at 512 tokens. Every query
    /// row still takes its softmax over exactly the keys the unchunked
    /// attention gives weight to.
    fn causal_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        window: Option<usize>,
    ) -> Tensor<4> {
        let [b, nh, t, hd] = q.dims();
        let opts = AttentionModuleOptions {
            scale: Some(self.attn_scale()),
            softcap: None,
            is_causal: true,
        };
        if t <= ATTENTION_CHUNK {
            let mask = window
                .filter(|&w| w < t)
                .map(|w| self.window_mask(b, nh, 0..t, 0..t, w));
            return attention(q, k, v, mask, None, opts);
        }
        let outs: Vec<Tensor<4>> = (0..t)
            .step_by(ATTENTION_CHUNK)
            .map(|s| {
                let e = (s + ATTENTION_CHUNK).min(t);
                // The first key any query of the chunk may see.
                let ks = window.map_or(0, |w| (s + 1).saturating_sub(w));
                // burn aligns the causal mask bottom-right: query i of the
                // chunk (position s + i) sees keys ks..=s + i.
                let mask = window
                    .filter(|&w| e > ks + w)
                    .map(|w| self.window_mask(b, nh, s..e, ks..e, w));
                attention(
                    q.clone().slice([0..b, 0..nh, s..e, 0..hd]),
                    k.clone().slice([0..b, 0..nh, ks..e, 0..hd]),
                    v.clone().slice([0..b, 0..nh, ks..e, 0..hd]),
                    mask,
                    None,
                    opts,
                )
            })
            .collect();
        Tensor::cat(outs, 2)
    }

    /// `[B, H, queries, keys]` (positions in the sequence): true where the
    /// key lies `window` or more positions behind the query (the causal part
    /// is the attention's own).
    fn window_mask(
        &self,
        b: usize,
        nh: usize,
        queries: Range<usize>,
        keys: Range<usize>,
        window: usize,
    ) -> Tensor<4, Bool> {
        let (tq, tk) = (queries.len(), keys.len());
        let mut m = vec![false; tq * tk];
        for (qi, i) in queries.enumerate() {
            for (kj, j) in keys.clone().enumerate() {
                m[qi * tk + kj] = j + window <= i;
            }
        }
        Tensor::<2, Bool>::from_data(TensorData::new(m, [tq, tk]), &self.device)
            .reshape([1, 1, tq, tk])
            .expand([b, nh, tq, tk])
    }

    /// The MLP sub-block with its residual: `h + down(act(gate(x)) * up(x))`
    /// (the output through the post-norm where the model has one).
    pub(crate) fn mlp(&self, l: usize, h: Tensor<3>, hook: &mut dyn ForwardHook) -> Tensor<3> {
        let blk = &self.blocks[l];
        let [b, t, hidden] = h.dims();
        let w = |k: LinearKind| self.weight(&blk.linears[k as usize]);
        let x = self
            .rms_norm(h.clone(), &blk.mlp_norm)
            .reshape([b * t, hidden]);
        hook.linear_input(l, LinearKind::Gate, &x);
        hook.linear_input(l, LinearKind::Up, &x);
        let g = self.linear(x.clone(), w(LinearKind::Gate), None);
        let u = self.linear(x, w(LinearKind::Up), None);
        let a = match self.cfg.activation {
            Activation::Silu if self.fused => kernels::silu_mul(g, u),
            Activation::Silu => activation::silu(g) * u,
            Activation::GeluTanh => activation::gelu_approximate(g) * u,
        };
        hook.linear_input(l, LinearKind::Down, &a);
        let y = self
            .linear(a, w(LinearKind::Down), None)
            .reshape([b, t, hidden]);
        self.residual(l, h, y, 1)
    }
}

/// cos/sin tables `[len, head_dim]` in HF's rotate-half layout, for inverse
/// frequencies `inv` and positions multiplied by `scale`.
fn rope_tables(inv: &[f64], scale: f64, hd: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let half = hd / 2;
    let mut cos = vec![0.0f32; len * hd];
    let mut sin = vec![0.0f32; len * hd];
    for p in 0..len {
        for (i, f) in inv.iter().enumerate() {
            let a = p as f64 * scale * f;
            let (s, c) = a.sin_cos();
            cos[p * hd + i] = c as f32;
            cos[p * hd + i + half] = c as f32;
            sin[p * hd + i] = s as f32;
            sin[p * hd + i + half] = s as f32;
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_weights, tiny_gemma3_config};
    use burn::tensor::Distribution;

    /// Chunked attention against one call over the whole sequence with the
    /// full window mask, across chunk boundaries and windows shorter and
    /// longer than a chunk.
    #[test]
    fn chunked_causal_attention_matches_one_call() {
        let cfg = tiny_gemma3_config(4);
        let d = Device::flex();
        let m = LlamaModel::new(&cfg, &random_weights(&cfg, 7), &d);
        let (b, nh, t, hd) = (2, 3, 2 * ATTENTION_CHUNK + 45, 8);
        let r = || Tensor::<4>::random([b, nh, t, hd], Distribution::Normal(0.0, 1.0), &d);
        let (q, k, v) = (r(), r(), r());
        for window in [
            None,
            Some(1),
            Some(50),
            Some(ATTENTION_CHUNK + 17),
            Some(t + 5),
        ] {
            let got = m.causal_attention(q.clone(), k.clone(), v.clone(), window);
            let mask = window
                .filter(|&w| w < t)
                .map(|w| m.window_mask(b, nh, 0..t, 0..t, w));
            let opts = AttentionModuleOptions {
                scale: Some(m.attn_scale()),
                softcap: None,
                is_causal: true,
            };
            let want = attention(q.clone(), k.clone(), v.clone(), mask, None, opts);
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "window {window:?}: max difference {diff}");
        }
    }

    /// The fused CPU kernels (attention with RoPE and grouped-query heads,
    /// SiLU-gate) against burn's operations, through whole forward passes:
    /// a Llama with 4 query heads over 2 KV heads, and a Gemma 3 with q/k
    /// norms, a local RoPE base and windows shorter than, inside and longer
    /// than a chunk of queries; sequence lengths around the chunk size.
    #[test]
    fn fused_kernels_match_burns_operations() {
        let d = Device::flex();
        let mut cfgs = vec![crate::testing::tiny_config()];
        for window in [1, 5, ATTENTION_CHUNK + 3, 500] {
            let mut c = tiny_gemma3_config(window);
            c.max_context = 256;
            cfgs.push(c);
        }
        for cfg in cfgs {
            let fused = LlamaModel::new(&cfg, &random_weights(&cfg, 11), &d);
            assert!(fused.fused, "on flex by default");
            let mut plain = fused.clone();
            plain.set_fused_kernels(false);
            for (b, t) in [
                (1, 1),
                (2, 7),
                (3, ATTENTION_CHUNK + 1),
                (1, 2 * ATTENTION_CHUNK + 9),
            ] {
                let t = t.min(cfg.max_context);
                let batch: Vec<Vec<u32>> = (0..b)
                    .map(|i| (0..t).map(|j| ((i * 31 + j * 7) % 250) as u32).collect())
                    .collect();
                let got = fused.forward(&batch).unwrap();
                let want = plain.forward(&batch).unwrap();
                let scale: f32 = want.clone().abs().max().into_scalar();
                let diff: f32 = (got - want).abs().max().into_scalar();
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{:?} window {:?}, {b} x {t}: max difference {diff} (logits up to {scale})",
                    cfg.family,
                    cfg.sliding_window
                );
            }
        }
    }
}
