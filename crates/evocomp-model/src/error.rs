use crate::linear::LinearKind;
use crate::precision::WeightDtype;
use std::path::PathBuf;

/// Everything that can go wrong loading a model. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] evocomp_gguf::GgufError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: unsupported model: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path}: bad model config: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("{path}: tensor {name:?} is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error(
        "{path}: tensor {name:?} has shape {found:?}, expected {expected:?} from the model config"
    )]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has dtype {dtype}, which is not supported (F32, F16, BF16)")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ModelError::Io { path, source }
    }
}

/// `path` is a regular file (followed through links): checked before a model
/// file is opened, since opening a FIFO blocks and a device never ends.
pub(crate) fn regular_file(path: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(ModelError::io(path))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a FIFO, socket, device or folder is never read as a model file)",
            ),
        })
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Bad input to the forward pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForwardError {
    #[error("batch is empty")]
    EmptyBatch,
    #[error(
        "sequence {index} has {len} tokens, but sequence 0 has {expected}: a batch needs equal lengths"
    )]
    RaggedBatch {
        index: usize,
        len: usize,
        expected: usize,
    },
    #[error("sequence length {len} exceeds the model's context of {max}")]
    TooLong { len: usize, max: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("layer range {start}..{end} is outside 0..{n_layers}")]
    BadLayers {
        start: usize,
        end: usize,
        n_layers: usize,
    },
    #[error(
        "block {layer} attends within a window of {window} positions, shorter than the {len} tokens: \
         KV-cache policies on sliding-window blocks need sequences no longer than the window"
    )]
    WindowedKv {
        layer: usize,
        window: usize,
        len: usize,
    },
    #[error(
        "weights in {dtype} are not supported on {device} (it cannot compute in that type); \
         use f32, or f16 where the device has it"
    )]
    UnsupportedDtype { dtype: WeightDtype, device: String },
    #[error(
        "bf16 matmuls run on the CPU (flex) only, not on {device}: use `matmul: F32` there \
         (a GPU's half precision comes through the weight dtype)"
    )]
    UnsupportedMatmul { device: String },
    #[error("layer {layer} {kind:?}: weight has shape {found:?}, expected {expected:?}")]
    BadWeight {
        layer: usize,
        kind: LinearKind,
        expected: [usize; 2],
        found: Vec<usize>,
    },
    #[error("{what}: shape {found:?}, expected {expected:?}")]
    BadTable {
        what: &'static str,
        expected: [usize; 2],
        found: Vec<usize>,
    },
    #[error("the model ties its head to the token embedding: it has no separate head to replace")]
    TiedHead,
}
