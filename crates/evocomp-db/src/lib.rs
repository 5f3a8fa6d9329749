//! The per-layer variant database: every unit of a model compressed at every
//! level, built once into a folder (safetensors files plus `manifest.json`),
//! and put into a live model one genome at a time.
//!
//! Layout of a database folder:
//!
//! ```text
//! manifest.json            model fingerprint, calibration id, method and
//!                          parameters, every unit's levels and exact costs
//! units/L03.q.safetensors  each level in the smallest exact encoding:
//!                          `level_<n>` f32 [out, in], or a bitmask and the
//!                          kept values (sparse), or per-group palettes and
//!                          packed codes (quantized); see `codec`
//! ```

mod apply;
mod build;
mod capture;
mod codec;
mod compressed_tensors;
mod dump;
mod gguf;
mod manifest;
mod materialize;
mod spec;
mod units;

pub use apply::{Applier, ApplyStats, Database};
pub use build::{
    BuildOptions, BuildReport, Imatrix, ImatrixEntry, UNITS_DIR, build_database, compress_one,
    importance_matrix, level_tensor,
};
pub use capture::{INPUT_GROUPS, XtxCapture, input_group};
pub use codec::encoded_size;
pub use compressed_tensors::{CompressedTensorsExport, export_compressed_tensors};
pub use dump::dump_levels;
/// The KV policies a KV database applies (the model's runtime types).
pub use evocomp_model::{Eviction, KvGroup};
pub use gguf::{
    GgufExport, export_gguf, llama_quantize_args, preset_genome, preset_genomes, read_imatrix,
    write_imatrix,
};
pub use manifest::{FORMAT_VERSION, MANIFEST, Manifest, UnitEntry, sha256_file, write_atomic};
pub use materialize::{Materialized, materialize};
pub use spec::{Compression, DepthUnit, ImatrixFile, Propagation};
pub use units::{
    Level, UnitId, UnitTarget, cost_unit, gguf_levels, level_type, plan, sub_block_params,
    tensor_role, unit_shape,
};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt or partial database: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path}: this database was built for another {what}: the database has {in_db}, this run has {given}"
    )]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        in_db: String,
        given: String,
    },
    #[error("cannot plan the units: {0}")]
    Plan(String),
    #[error("compression failed: {0}")]
    Compress(String),
    #[error("invalid genome: {0}")]
    BadGenome(String),
    #[error(transparent)]
    Forward(#[from] evocomp_model::ForwardError),
    #[error(transparent)]
    Model(#[from] evocomp_model::ModelError),
    /// The source GGUF model (its file names itself).
    #[error(transparent)]
    Gguf(#[from] evocomp_gguf::GgufError),
    #[error("the backend failed: {0}")]
    Backend(String),
    #[error("{0}")]
    Unsupported(String),
}

impl DbError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DbError::Io { path, source }
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;
