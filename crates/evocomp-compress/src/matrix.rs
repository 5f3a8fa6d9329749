use crate::hessian::Hessian;
use faer::{Accum, Mat, MatRef, Par};

/// A dense `[rows, cols]` f32 matrix in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// `data` must hold `rows * cols` values.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "a {rows}x{cols} matrix needs {} values",
            rows * cols
        );
        Self { rows, cols, data }
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0.0; rows * cols])
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn count_zeros(&self) -> usize {
        self.data.iter().filter(|&&x| x == 0.0).count()
    }

    /// ‖WX − ŴX‖² summed over the `n` calibration rows of X, from
    /// `H = 2XᵀX/n`: `n/2 · tr(Δ H Δᵀ)` with `Δ = W − Ŵ`.
    pub fn reconstruction_error(&self, other: &Matrix, h: &Hessian) -> f64 {
        assert_eq!((self.rows, self.cols), (other.rows, other.cols));
        let d: Vec<f64> = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b) as f64)
            .collect();
        output_norm(&d, self.rows, h)
    }

    /// ‖WX‖² summed over the calibration rows: the output energy that
    /// normalises [`Self::reconstruction_error`].
    pub fn output_energy(&self, h: &Hessian) -> f64 {
        let w: Vec<f64> = self.data.iter().map(|&a| a as f64).collect();
        output_norm(&w, self.rows, h)
    }
}

/// `n/2 · tr(D H Dᵀ)` for a row-major `[rows, h.dim]` matrix D: ‖DX‖² over
/// the `n` calibration rows behind `H = 2XᵀX/n`.
fn output_norm(d: &[f64], r: usize, h: &Hessian) -> f64 {
    let n = h.dim;
    assert_eq!(d.len(), r * n);
    let dm = MatRef::from_row_major_slice(d, r, n);
    let hm = MatRef::from_row_major_slice(&h.h, n, n);
    let mut dh = Mat::<f64>::zeros(r, n);
    faer::linalg::matmul::matmul(dh.as_mut(), Accum::Replace, dm, hm, 1.0, Par::Seq);
    let mut total = 0.0;
    for i in 0..r {
        for j in 0..n {
            total += dh[(i, j)] * d[i * n + j];
        }
    }
    total * h.n_tokens as f64 / 2.0
}

/// A seeded matrix of uniform values in [-1, 1) (tests and benchmarks).
pub fn random_matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Matrix::new(
        rows,
        cols,
        (0..rows * cols)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect(),
    )
}
