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
mod llama;
mod load;
pub mod testing;
mod tokenizer;
mod weights;

pub use config::{Activation, AttentionKind, Family, LlamaConfig, RopeScaling};
pub use error::{ModelError, Result};
pub use kv::{Eviction, KvGroup, KvPolicy, KvQuant};
pub use llama::{ForwardError, ForwardHook, LlamaModel, Matmul, NoHook, WeightDtype};
pub use load::{
    LoadedModel, ModelFormat, ModelInfo, TensorEntry, inspect_model, load_model,
    save_hf_safetensors, save_hf_safetensors_as,
};
pub use tokenizer::TextTokenizer;
pub use weights::{
    HostTensor, LayerWeights, LinearKind, LlamaWeights, permute_rope_row_bytes, permute_rope_rows,
    rope_row_sources, unpermute_rope_rows,
};
