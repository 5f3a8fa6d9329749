//! Compression methods on host matrices, with no burn and no GPU.
//!
//! - unstructured sparsity: [`prune`] with magnitude, Wanda (|W|·‖X‖) or
//!   SparseGPT (OBS updates with the Cholesky of H⁻¹, blocks of 128 columns);
//! - weight quantization: [`quantize`] with RTN or GPTQ, 2..8 bits, groups,
//!   symmetric or asymmetric, optional act-order;
//! - integer codes back from quantized values, packed into 32-bit words
//!   ([`recover_codes`], [`pack_rows`]) for formats that store them;
//! - the exact cost of each ([`quant_cost_bits`], non-zero counts) and the
//!   EvoPress level grid of equal absolute steps ([`SparsityGrid`]).
//!
//! Weights are `[out, in]` row-major (PyTorch orientation). Calibration
//! statistics come in as a [`Hessian`] `H = 2XᵀX/n` over the layer's inputs.
//! Every function is deterministic: no threads inside one matrix, so the
//! caller may run many matrices in parallel and get the same bytes every time.

mod grid;
mod hessian;
mod matrix;
mod pack;
mod quant;
mod sparse;

pub use grid::{GridError, SparsityGrid};
pub use hessian::Hessian;
pub use matrix::{Matrix, random_matrix};
pub use pack::{Codes, pack_columns, pack_rows, recover_codes};
pub use quant::{QuantConfig, QuantMethod, quant_cost_bits, quantize, quantize_rtn_row};
pub use sparse::{ObsConfig, SparsityMethod, prune, sparsegpt_with_mask};

/// Errors of the compression methods: always a bad request, never bad luck.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressError {
    #[error("{method} needs calibration statistics (a Hessian), and none were given")]
    NeedsHessian { method: &'static str },
    #[error("the Hessian is {found}x{found}, but the weight has {cols} input columns")]
    HessianShape { found: usize, cols: usize },
    #[error("cannot zero {zeros} weights of a {rows}x{cols} matrix")]
    TooManyZeros {
        zeros: usize,
        rows: usize,
        cols: usize,
    },
    #[error("{0}")]
    BadSpec(String),
    #[error(
        "the damped Hessian is not positive definite (damping {damp}); use more calibration data or more damping"
    )]
    NotPositiveDefinite { damp: f64 },
}

pub type Result<T, E = CompressError> = std::result::Result<T, E>;
