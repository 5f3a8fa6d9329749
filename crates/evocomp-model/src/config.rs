//! The architecture description of a Llama-family model, read from GGUF
//! metadata or an HF `config.json`.

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

/// A Llama-family decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.
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

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Parameters, counting a tied embedding once.
    pub fn n_params(&self) -> usize {
        let h = self.hidden;
        let per_layer = 2 * h
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

    /// Read from GGUF metadata (`general.architecture` must be llama-like).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let path = f.path();
        let arch = f.get_str("general.architecture")?;
        if !matches!(arch, "llama" | "mistral") {
            return Err(ModelError::Unsupported {
                path: path.to_path_buf(),
                message: format!(
                    "architecture {arch:?} (supported: llama, mistral; the Llama family)"
                ),
            });
        }
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
        let cfg = LlamaConfig {
            n_layers: u("block_count")?,
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
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Read an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
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
        if !matches!(model_type, "llama" | "mistral") {
            return Err(unsupported(format!(
                "model_type {model_type:?} (supported: llama, mistral)"
            )));
        }
        if raw.attention_bias.unwrap_or(false) || raw.mlp_bias.unwrap_or(false) {
            return Err(unsupported("linear-layer biases are not supported".into()));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(unsupported(format!("activation {act:?} (only silu)")));
        }
        let rope_theta = raw
            .rope_theta
            .or(raw.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10000.0);
        let scaling = raw.rope_scaling.as_ref().or(raw.rope_parameters.as_ref());
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(s) => match s
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
                    return Err(unsupported(format!(
                        "RoPE scaling {other:?} (supported: default, linear, llama3)"
                    )));
                }
            },
        };
        let n_heads = raw.num_attention_heads;
        let cfg = LlamaConfig {
            n_layers: raw.num_hidden_layers,
            hidden: raw.hidden_size,
            intermediate: raw.intermediate_size,
            n_heads,
            n_kv_heads: raw.num_key_value_heads.unwrap_or(n_heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size.checked_div(n_heads).unwrap_or(0)),
            vocab: raw.vocab_size,
            rope_theta,
            rope_scaling,
            rms_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_context: raw.max_position_embeddings.unwrap_or(4096),
            tied_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        cfg.validate(path)?;
        Ok(cfg)
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
        match &self.rope_scaling {
            RopeScaling::None | RopeScaling::Divisors(_) => {}
            RopeScaling::Linear { factor } => {
                v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                v["rope_scaling"] = serde_json::json!({
                    "rope_type": "llama3", "factor": factor,
                    "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position,
                });
            }
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
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct HfRope {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}
