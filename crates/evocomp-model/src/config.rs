//! The architecture description of a decoder (Llama, Mistral, Gemma 3), read
//! from GGUF metadata or an HF `config.json`. One struct covers the family: the
//! fields after `tied_embeddings` switch on what a family adds to Llama.

use crate::error::{ModelError, Result};
use evocomp_gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How RoPE frequencies are scaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
    /// Per-frequency divisors, as stored in a GGUF `rope_freqs.weight`.
    Divisors(Vec<f32>),
}

/// Gemma 3's default: one global block after every five sliding-window ones.
const GEMMA3_SLIDING_PATTERN: usize = 6;

/// The architecture a model was read as (GGUF `general.architecture`, HF `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Family {
    #[default]
    Llama,
    Mistral,
    Gemma3,
    /// Qwen 2 and 2.5: biases on the q/k/v projections.
    Qwen2,
    /// Qwen 3: per-head q/k norms.
    Qwen3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Gemma3 => "gemma3",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// Whether llama.cpp stores this family's Q/K rows permuted for its
    /// interleaved RoPE (it does only for its Llama-style models).
    pub fn gguf_permutes_qk(self) -> bool {
        matches!(self, Family::Llama | Family::Mistral)
    }
}

/// The activation on the MLP's gate projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// SwiGLU (Llama, Mistral).
    #[default]
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// The attention span of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionKind {
    /// Every earlier position.
    Global,
    /// The last `sliding_window` positions, the query's own included.
    Sliding,
}

/// A decoder of the Llama family: RMSNorm, RoPE, grouped-query attention and a
/// gated MLP, with the additions of Mistral (sliding window) and Gemma 3 (q/k
/// norms, post-norms, embedding scale, GeGLU, interleaved local/global
/// attention with their own RoPE bases, query scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub rms_eps: f64,
    pub max_context: usize,
    pub tied_embeddings: bool,
    #[serde(default)]
    pub family: Family,
    #[serde(default)]
    pub activation: Activation,
    /// RMSNorm over each head's queries and keys, before RoPE (Gemma 3, Qwen 3).
    #[serde(default)]
    pub qk_norm: bool,
    /// Biases on the q, k and v projections (Qwen 2).
    #[serde(default)]
    pub qkv_bias: bool,
    /// RMSNorm on each sub-block's output before the residual add (Gemma).
    #[serde(default)]
    pub post_norms: bool,
    /// Embeddings are multiplied by this (Gemma: sqrt(hidden)).
    #[serde(default)]
    pub embed_scale: Option<f64>,
    /// Attention logits are scaled by this; `None` is 1/sqrt(head_dim).
    #[serde(default)]
    pub attn_scale: Option<f64>,
    /// Positions a sliding-window block attends to.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Per-block attention kinds; empty means every block is sliding when
    /// `sliding_window` is set (Mistral) and global otherwise.
    #[serde(default)]
    pub layer_types: Vec<AttentionKind>,
    /// RoPE base of the sliding-window blocks; `None` is `rope_theta`.
    #[serde(default)]
    pub rope_theta_local: Option<f64>,
}

impl LlamaConfig {
    /// Check the internal consistency of the numbers.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| ModelError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        for (name, v) in [
            ("layers", self.n_layers),
            ("hidden size", self.hidden),
            ("intermediate size", self.intermediate),
            ("attention heads", self.n_heads),
            ("KV heads", self.n_kv_heads),
            ("head dim", self.head_dim),
            ("vocab", self.vocab),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(bad(format!(
                "{} attention heads are not a multiple of {} KV heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "head dim {} is odd; RoPE needs it even",
                self.head_dim
            )));
        }
        if self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
            || self.rms_eps.is_nan()
            || self.rms_eps <= 0.0
        {
            return Err(bad(format!(
                "rope theta ({}) and RMS epsilon ({}) must be positive",
                self.rope_theta, self.rms_eps
            )));
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.n_layers {
            return Err(bad(format!(
                "{} layer types for {} layers",
                self.layer_types.len(),
                self.n_layers
            )));
        }
        if self.layer_types.contains(&AttentionKind::Sliding) && self.sliding_window.is_none() {
            return Err(bad("sliding-window layers but no window size".into()));
        }
        if self.sliding_window == Some(0) {
            return Err(bad("sliding window of 0 positions".into()));
        }
        for (name, v) in [
            ("embedding scale", self.embed_scale),
            ("attention scale", self.attn_scale),
            ("local RoPE theta", self.rope_theta_local),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(bad(format!("{name} ({v}) must be positive")));
            }
        }
        if let RopeScaling::Divisors(d) = &self.rope_scaling
            && d.len() != self.head_dim / 2
        {
            return Err(bad(format!(
                "rope_freqs has {} entries, expected head_dim/2 = {}",
                d.len(),
                self.head_dim / 2
            )));
        }
        Ok(())
    }

    /// The attention kind of block `layer`.
    pub fn layer_kind(&self, layer: usize) -> AttentionKind {
        match self.layer_types.get(layer) {
            Some(&k) => k,
            None if self.sliding_window.is_some() => AttentionKind::Sliding,
            None => AttentionKind::Global,
        }
    }

    /// The largest weight a forward pass holds as one device buffer, in f32
    /// (half-precision weights are widened to f32 where used): what it is,
    /// and its bytes. A device whose largest buffer is smaller cannot run
    /// the model.
    pub fn largest_weight_f32(&self) -> (String, u64) {
        let embedding = self.vocab as u64 * self.hidden as u64 * 4;
        let mlp = self.intermediate as u64 * self.hidden as u64 * 4;
        if embedding >= mlp {
            (
                format!("{} x {} embedding", self.vocab, self.hidden),
                embedding,
            )
        } else {
            (
                format!("{} x {} MLP weight", self.intermediate, self.hidden),
                mlp,
            )
        }
    }

    /// Why a forward pass of `tokens_per_batch` tokens cannot run on a
    /// device whose largest buffer holds `max` bytes: its largest weight or
    /// the batch's logits (`tokens_per_batch` x vocab, f32) does not fit,
    /// said with both sizes and what to change; `None` when both fit. burn
    /// would otherwise fail later with an opaque autotune error.
    pub fn buffer_limit_error(&self, max: u64, tokens_per_batch: usize) -> Option<String> {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let (what, weight) = self.largest_weight_f32();
        let logits = tokens_per_batch as u64 * self.vocab as u64 * 4;
        let (what, bytes, fix) = if weight >= logits {
            (
                format!("its {what}"),
                weight,
                "a device with larger buffers",
            )
        } else {
            (
                format!(
                    "a batch's logits ({tokens_per_batch} tokens x {})",
                    self.vocab
                ),
                logits,
                "smaller batches or windows",
            )
        };
        (bytes > max).then(|| {
            format!(
                "{what} takes {:.1} MiB in f32, over the {:.1} MiB the device allocates at once; \
                 use {fix}, or the CPU (--backend cpu)",
                mib(bytes),
                mib(max)
            )
        })
    }

    /// The window block `layer` attends within, if it is a sliding-window block.
    pub fn window(&self, layer: usize) -> Option<usize> {
        match self.layer_kind(layer) {
            AttentionKind::Sliding => self.sliding_window,
            AttentionKind::Global => None,
        }
    }

    /// This config without the blocks marked in `drop` (depth pruning): the
    /// per-block attention kinds follow their blocks.
    pub fn without_layers(&self, drop: &[bool]) -> Self {
        let mut cfg = self.clone();
        let kept = (0..self.n_layers).filter(|&l| !drop.get(l).copied().unwrap_or(false));
        if self.layer_types.is_empty() {
            cfg.n_layers = kept.count();
        } else {
            cfg.layer_types = kept.map(|l| self.layer_types[l]).collect();
            cfg.n_layers = cfg.layer_types.len();
        }
        cfg
    }

    /// Parameters of one block's norms: 2 for Llama, 4 with post-norms, plus
    /// the q/k norms.
    pub fn norm_params_per_layer(&self) -> usize {
        let mut n = 2 * self.hidden;
        if self.post_norms {
            n += 2 * self.hidden;
        }
        if self.qk_norm {
            n += 2 * self.head_dim;
        }
        if self.qkv_bias {
            n += self.q_dim() + 2 * self.kv_dim();
        }
        n
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Parameters, counting a tied embedding once.
    pub fn n_params(&self) -> usize {
        let h = self.hidden;
        let per_layer = self.norm_params_per_layer()
            + h * self.q_dim()
            + 2 * h * self.kv_dim()
            + self.q_dim() * h
            + 3 * h * self.intermediate;
        let head = if self.tied_embeddings {
            0
        } else {
            self.vocab * h
        };
        self.vocab * h + self.n_layers * per_layer + h + head
    }

    /// RoPE inverse frequencies (one per pair), with scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let half = self.head_dim / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect();
        self.scaled(base)
    }

    /// RoPE inverse frequencies of the sliding-window blocks, when they have
    /// their own base (Gemma 3: 10,000 locally, unscaled); `None` otherwise.
    pub fn rope_inv_freq_local(&self) -> Option<Vec<f64>> {
        let theta = self.rope_theta_local?;
        let hd = self.head_dim as f64;
        Some(
            (0..self.head_dim / 2)
                .map(|i| 1.0 / theta.powf(2.0 * i as f64 / hd))
                .collect(),
        )
    }

    fn scaled(&self, base: Vec<f64>) -> Vec<f64> {
        match &self.rope_scaling {
            RopeScaling::None | RopeScaling::Linear { .. } => base,
            RopeScaling::Divisors(d) => base.iter().zip(d).map(|(f, &d)| f / d as f64).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let low_wavelen = original_max_position / low_freq_factor;
                let high_wavelen = original_max_position / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_position / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// The factor positions are divided by before RoPE.
    pub fn rope_position_scale(&self) -> f64 {
        match self.rope_scaling {
            RopeScaling::Linear { factor } => 1.0 / factor,
            _ => 1.0,
        }
    }

    /// Read from GGUF metadata (`general.architecture`: llama, mistral or gemma3).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path();
        let arch = f.get_str("general.architecture")?;
        let family = match arch {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "gemma3" => Family::Gemma3,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            _ => {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    message: format!(
                        "architecture {arch:?} (supported: llama, mistral, gemma3, qwen2, qwen3)"
                    ),
                });
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
        let hidden = u("embedding_length")?;
        let n_heads = u("attention.head_count")?;
        let n_kv_heads = match f.get(&key("attention.head_count_kv")) {
            Some(_) => u("attention.head_count_kv")?,
            None => n_heads,
        };
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => u("attention.key_length")?,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        let vocab = match f.get(&key("vocab_size")) {
            Some(_) => u("vocab_size")?,
            None => f
                .get_str_array("tokenizer.ggml.tokens")
                .map(|t| t.len())
                .or_else(|_| {
                    f.tensor_info("token_embd.weight")
                        .map(|t| t.shape()[0])
                        .ok_or_else(|| ModelError::BadConfig {
                            path: path.to_path_buf(),
                            message: "no vocab size, tokenizer or token_embd.weight".into(),
                        })
                })?,
        };
        let rope_theta = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f64(&key("rope.freq_base"))?,
            None => 10000.0,
        };
        let scaling_type = f
            .get(&key("rope.scaling.type"))
            .and_then(|v| v.as_str())
            .unwrap_or("none");
        let rope_scaling = if f.tensor_info("rope_freqs.weight").is_some() {
            RopeScaling::Divisors(f.dequantize("rope_freqs.weight")?.1)
        } else {
            match scaling_type {
                "none" => RopeScaling::None,
                "linear" => RopeScaling::Linear {
                    factor: f.get_f64(&key("rope.scaling.factor"))?,
                },
                other => {
                    return Err(ModelError::Unsupported {
                        path: path.to_path_buf(),
                        message: format!(
                            "RoPE scaling {other:?} (supported: none, linear, llama3)"
                        ),
                    });
                }
            }
        };
        let sliding_window = match f.get(&key("attention.sliding_window")) {
            Some(_) => Some(u("attention.sliding_window")?),
            None => None,
        };
        let n_layers = u("block_count")?;
        let mut cfg = LlamaConfig {
            n_layers,
            hidden,
            intermediate: u("feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            rope_theta,
            rope_scaling,
            rms_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            max_context: u("context_length").unwrap_or(4096),
            tied_embeddings: f.tensor_info("output.weight").is_none(),
            family,
            activation: Activation::Silu,
            qk_norm: family == Family::Qwen3,
            qkv_bias: family == Family::Qwen2,
            post_norms: false,
            embed_scale: None,
            attn_scale: None,
            sliding_window,
            layer_types: Vec::new(),
            rope_theta_local: None,
        };
        if family == Family::Gemma3 {
            // As llama.cpp reads a gemma3 file: every sixth block global, the
            // others within the window, with a local RoPE base of 10,000; the
            // query scale is 1/sqrt(head_dim), except for the 27B model (62
            // blocks), whose HF config says 1/sqrt(hidden / heads). Norm
            // weights in the file already hold 1 + w.
            cfg.gemma3(GEMMA3_SLIDING_PATTERN, 10_000.0);
            let scalar = if n_layers == 62 && n_heads > 0 {
                hidden as f64 / n_heads as f64
            } else {
                head_dim as f64
            };
            cfg.attn_scale = Some(1.0 / scalar.sqrt());
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Gemma 3's additions to Llama, with every `pattern`-th block global.
    pub(crate) fn gemma3(&mut self, pattern: usize, rope_theta_local: f64) {
        self.activation = Activation::GeluTanh;
        self.qk_norm = true;
        self.post_norms = true;
        self.embed_scale = Some((self.hidden as f64).sqrt());
        self.rope_theta_local = Some(rope_theta_local);
        self.layer_types = (0..self.n_layers)
            .map(|l| {
                if pattern > 0 && (l + 1) % pattern == 0 {
                    AttentionKind::Global
                } else {
                    AttentionKind::Sliding
                }
            })
            .collect();
    }

    /// Read an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        crate::error::regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(ModelError::io(path))?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let unsupported = |message: String| ModelError::Unsupported {
            path: path.to_path_buf(),
            message,
        };
        let model_type = raw.model_type.as_deref().unwrap_or("llama");
        let family = hf_family(model_type).map_err(unsupported)?;
        let gemma = family == Family::Gemma3;
        let (sliding_window, activation) =
            hf_supported(&raw, family, model_type).map_err(unsupported)?;
        // Gemma 3 nests the global and the local RoPE under `rope_parameters`.
        let params = raw.rope_parameters.as_ref();
        let global = params.and_then(|p| p.full_attention.as_deref()).or(params);
        let rope_theta = raw
            .rope_theta
            .or(global.and_then(|p| p.rope_theta))
            .unwrap_or(if gemma { 1_000_000.0 } else { 10000.0 });
        let rope_scaling =
            hf_rope_scaling(raw.rope_scaling.as_ref().or(global)).map_err(unsupported)?;
        let n_heads = raw.num_attention_heads;
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size.checked_div(n_heads).unwrap_or(0));
        let mut cfg = LlamaConfig {
            n_layers: raw.num_hidden_layers,
            hidden: raw.hidden_size,
            intermediate: raw.intermediate_size,
            n_heads,
            n_kv_heads: raw.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            vocab: raw.vocab_size,
            rope_theta,
            rope_scaling,
            rms_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_context: raw.max_position_embeddings.unwrap_or(4096),
            tied_embeddings: raw.tie_word_embeddings.unwrap_or(gemma),
            family,
            activation,
            qk_norm: family == Family::Qwen3,
            qkv_bias: family == Family::Qwen2,
            post_norms: false,
            embed_scale: None,
            attn_scale: None,
            sliding_window,
            layer_types: Vec::new(),
            rope_theta_local: None,
        };
        if gemma {
            cfg.hf_gemma3(&raw).map_err(unsupported)?;
        } else if let Some(types) = &raw.layer_types {
            // transformers writes them for every family; only all-global is
            // plain Llama attention (Mistral's window applies to every block).
            let plain = |t: &&String| {
                t.as_str() == "full_attention"
                    || (family == Family::Mistral && t.as_str() == "sliding_attention")
            };
            if let Some(t) = types.iter().find(|t| !plain(t)) {
                return Err(unsupported(format!("layer type {t:?} for {model_type}")));
            }
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Gemma 3's additions from an HF config: the sliding-window pattern (or
    /// `layer_types`), the local RoPE base, the attention scale.
    fn hf_gemma3(&mut self, raw: &HfConfig) -> std::result::Result<(), String> {
        let params = raw.rope_parameters.as_ref();
        let local = params
            .and_then(|p| p.sliding_attention.as_deref())
            .and_then(|p| p.rope_theta)
            .or(raw.rope_local_base_freq)
            .unwrap_or(10_000.0);
        self.gemma3(
            raw.sliding_window_pattern.unwrap_or(GEMMA3_SLIDING_PATTERN),
            local,
        );
        if let Some(types) = &raw.layer_types {
            self.layer_types = types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(AttentionKind::Sliding),
                    "full_attention" => Ok(AttentionKind::Global),
                    other => Err(format!("layer type {other:?}")),
                })
                .collect::<std::result::Result<_, _>>()?;
        }
        let scalar = raw.query_pre_attn_scalar.unwrap_or(256.0);
        self.attn_scale = Some(1.0 / scalar.sqrt());
        Ok(())
    }

    /// The HF `config.json` for this architecture (used by export).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "num_hidden_layers": self.n_layers,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_eps,
            "max_position_embeddings": self.max_context,
            "tie_word_embeddings": self.tied_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
        });
        let scaling = match &self.rope_scaling {
            RopeScaling::None | RopeScaling::Divisors(_) => None,
            RopeScaling::Linear { factor } => {
                Some(serde_json::json!({"rope_type": "linear", "factor": factor}))
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => Some(serde_json::json!({
                "rope_type": "llama3", "factor": factor,
                "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position,
            })),
        };
        match self.family {
            Family::Llama => {}
            Family::Qwen2 | Family::Qwen3 => {
                let (arch, ty) = if self.family == Family::Qwen2 {
                    ("Qwen2ForCausalLM", "qwen2")
                } else {
                    ("Qwen3ForCausalLM", "qwen3")
                };
                v["architectures"] = serde_json::json!([arch]);
                v["model_type"] = ty.into();
                v["use_sliding_window"] = false.into();
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("mlp_bias");
                    if self.family == Family::Qwen2 {
                        obj.remove("attention_bias");
                    }
                }
            }
            Family::Mistral => {
                v["architectures"] = serde_json::json!(["MistralForCausalLM"]);
                v["model_type"] = "mistral".into();
                v["sliding_window"] = serde_json::json!(self.sliding_window);
            }
            Family::Gemma3 => {
                let mut global = scaling
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"rope_type": "default"}));
                global["rope_theta"] = self.rope_theta.into();
                let local = self.rope_theta_local.unwrap_or(self.rope_theta);
                let scale = self
                    .attn_scale
                    .unwrap_or(1.0 / (self.head_dim as f64).sqrt());
                let obj = v.as_object_mut().expect("an object");
                for k in ["mlp_bias", "hidden_act", "rope_theta"] {
                    obj.remove(k);
                }
                v["architectures"] = serde_json::json!(["Gemma3ForCausalLM"]);
                v["model_type"] = "gemma3_text".into();
                v["hidden_activation"] = "gelu_pytorch_tanh".into();
                v["rope_parameters"] = serde_json::json!({
                    "full_attention": global,
                    "sliding_attention": {"rope_type": "default", "rope_theta": local},
                });
                let scalar = 1.0 / (scale * scale);
                v["query_pre_attn_scalar"] = if (scalar - scalar.round()).abs() < 1e-6 {
                    (scalar.round() as u64).into()
                } else {
                    scalar.into()
                };
                v["sliding_window"] = serde_json::json!(self.sliding_window);
                v["layer_types"] = (0..self.n_layers)
                    .map(|l| match self.layer_kind(l) {
                        AttentionKind::Global => "full_attention",
                        AttentionKind::Sliding => "sliding_attention",
                    })
                    .collect::<Vec<_>>()
                    .into();
                v["final_logit_softcapping"] = serde_json::Value::Null;
                v["attn_logit_softcapping"] = serde_json::Value::Null;
                v["pad_token_id"] = 0.into();
                v["eos_token_id"] = 1.into();
                v["bos_token_id"] = 2.into();
                return v;
            }
        }
        // Every family but Gemma 3 (which nests it above) takes it plainly.
        if let Some(s) = scaling {
            v["rope_scaling"] = s;
        }
        v
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRope>,
    rope_parameters: Option<HfRope>,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_local_base_freq: Option<f64>,
    use_sliding_window: Option<bool>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct HfRope {
    full_attention: Option<Box<HfRope>>,
    sliding_attention: Option<Box<HfRope>>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

/// The family an HF `model_type` names.
fn hf_family(model_type: &str) -> std::result::Result<Family, String> {
    Ok(match model_type {
        "llama" => Family::Llama,
        "mistral" => Family::Mistral,
        "gemma3_text" => Family::Gemma3,
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        "gemma3" => {
            return Err(
                "model_type \"gemma3\" is Gemma 3's image-text model; evocomp loads the text \
                 decoder (model_type \"gemma3_text\", or the GGUF)"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "model_type {other:?} (supported: llama, mistral, gemma3_text, qwen2, qwen3)"
            ));
        }
    })
}

/// What an HF config may ask for that evocomp does not run (biases other
/// than Qwen 2's, Qwen's sliding windows, another activation, soft-capping);
/// else the sliding window and the activation.
fn hf_supported(
    raw: &HfConfig,
    family: Family,
    model_type: &str,
) -> std::result::Result<(Option<usize>, Activation), String> {
    // Qwen 2 has q/k/v biases whatever the config says; elsewhere
    // `attention_bias` also puts one on o_proj, which evocomp does not run.
    if (family != Family::Qwen2 && raw.attention_bias.unwrap_or(false))
        || raw.mlp_bias.unwrap_or(false)
    {
        return Err("linear-layer biases are not supported (only Qwen 2's q/k/v biases)".into());
    }
    // Qwen's configs name a window they do not use unless told to.
    let qwen = matches!(family, Family::Qwen2 | Family::Qwen3);
    let sliding_window = if qwen && !raw.use_sliding_window.unwrap_or(false) {
        None
    } else {
        raw.sliding_window
    };
    if qwen && sliding_window.is_some() {
        return Err(
            "use_sliding_window (Qwen's windows on the layers past max_window_layers)".into(),
        );
    }
    let (want_act, activation) = if family == Family::Gemma3 {
        ("gelu_pytorch_tanh", Activation::GeluTanh)
    } else {
        ("silu", Activation::Silu)
    };
    for act in [&raw.hidden_act, &raw.hidden_activation]
        .into_iter()
        .flatten()
    {
        if act != want_act {
            return Err(format!(
                "activation {act:?} for {model_type} (only {want_act})"
            ));
        }
    }
    for (name, v) in [
        ("final_logit_softcapping", raw.final_logit_softcapping),
        ("attn_logit_softcapping", raw.attn_logit_softcapping),
    ] {
        if let Some(v) = v {
            return Err(format!("{name} = {v} is not supported"));
        }
    }
    Ok((sliding_window, activation))
}

/// The RoPE scaling an HF config's `rope_scaling` (or Gemma's global
/// `rope_parameters`) names.
fn hf_rope_scaling(s: Option<&HfRope>) -> std::result::Result<RopeScaling, String> {
    let Some(s) = s else {
        return Ok(RopeScaling::None);
    };
    Ok(
        match s
            .rope_type
            .as_deref()
            .or(s.kind.as_deref())
            .unwrap_or("default")
        {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: s.factor.unwrap_or(1.0),
            },
            "llama3" => RopeScaling::Llama3 {
                factor: s.factor.unwrap_or(8.0),
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position: s.original_max_position_embeddings.unwrap_or(8192.0),
            },
            other => {
                return Err(format!(
                    "RoPE scaling {other:?} (supported: default, linear, llama3)"
                ));
            }
        },
    )
}
