//! GGUF reader and writer, with dequantisation of the common ggml block types.
//!
//! This crate knows nothing about models or tensors on devices: it turns a
//! file into metadata values and f32 buffers, and refuses broken files with an
//! error that names the file and the problem.

mod dequant;
mod mapped;
mod mix;
mod quantize;
mod reader;
pub mod testing;
mod types;
mod value;
mod writer;

pub use dequant::{DequantError, dequantize};
pub use mapped::Mapped;
pub use mix::{Preset, TensorRole, fallback};
pub use quantize::{QuantizeError, can_quantize, quantize};
pub use reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufError, GgufFile, MAX_ARRAY_DEPTH, TensorInfo};
pub use types::GgmlType;
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, WriteSizeError};
