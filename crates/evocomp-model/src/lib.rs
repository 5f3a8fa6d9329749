//! Llama-family models for evocomp (Llama, Mistral, Qwen 2/3, Gemma 3): loading (GGUF and HF safetensors), the
//! tokenizer, and the forward pass on burn with per-layer hooks.
//!
//! **API boundary:** weights live on the host as [`HostTensor`]s in PyTorch
//! orientation; [`LlamaModel`] uploads them to whatever `burn` `Device` the
//! caller chose. No code in this crate picks a backend.

mod config;
mod error;
pub mod kernels;
mod kv;
mod kv_policy;
mod linear;
mod llama;
mod load;
mod precision;
pub mod testing;
mod tokenizer;
mod weights;

pub use config::{Activation, AttentionKind, Family, LlamaConfig, RopeScaling};
pub use error::{ForwardError, ModelError, Result};
pub use kv_policy::{Eviction, KvGroup, KvPolicy, KvQuant};
pub use llama::{ForwardHook, LlamaModel, Matmul, NoHook, WeightDtype};
pub use load::{
    LoadedModel, ModelFormat, ModelInfo, PARTIAL_DIR, RawTensor, TensorEntry, inspect_model,
    load_model, save_hf_safetensors, save_hf_safetensors_as, save_hf_safetensors_with,
};
pub use tokenizer::TextTokenizer;
pub use weights::{
    HostTensor, LayerWeights, LinearKind, LlamaWeights, permute_rope_row_bytes, permute_rope_rows,
    rope_row_sources, unpermute_rope_rows,
};
