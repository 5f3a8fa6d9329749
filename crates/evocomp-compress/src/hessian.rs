use crate::{CompressError, Result};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

/// `H = 2XᵀX/n` over `n` calibration rows of a layer's input X (`[n, dim]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Hessian {
    pub dim: usize,
    /// `[dim, dim]` row-major.
    pub h: Vec<f64>,
    /// Calibration rows (tokens) behind it.
    pub n_tokens: usize,
}

impl Hessian {
    /// From an accumulated `XᵀX` (`[dim, dim]`) over `n_tokens` rows.
    pub fn from_xtx(dim: usize, xtx: &[f64], n_tokens: usize) -> Self {
        assert_eq!(xtx.len(), dim * dim);
        let s = if n_tokens == 0 {
            0.0
        } else {
            2.0 / n_tokens as f64
        };
        Self {
            dim,
            h: xtx.iter().map(|v| v * s).collect(),
            n_tokens,
        }
    }

    /// From calibration inputs on the host, `[n, dim]` row-major (tests, small layers).
    pub fn from_inputs(dim: usize, x: &[f32]) -> Self {
        assert_eq!(x.len() % dim, 0);
        let n = x.len() / dim;
        let mut xtx = vec![0.0f64; dim * dim];
        for row in x.chunks_exact(dim) {
            for i in 0..dim {
                let a = row[i] as f64;
                if a == 0.0 {
                    continue;
                }
                for j in 0..dim {
                    xtx[i * dim + j] += a * row[j] as f64;
                }
            }
        }
        Self::from_xtx(dim, &xtx, n)
    }

    pub fn diag(&self, i: usize) -> f64 {
        self.h[i * self.dim + i]
    }

    /// ‖X_j‖, the norm of each input feature over the calibration rows (Wanda's statistic).
    pub fn column_norms(&self) -> Vec<f64> {
        (0..self.dim)
            .map(|j| (self.diag(j) * self.n_tokens as f64 / 2.0).max(0.0).sqrt())
            .collect()
    }

    /// The upper Cholesky factor U of `(H + λI)⁻¹ = UᵀU`, with λ = `damp` ·
    /// mean(diag H), after giving dead inputs (H_jj = 0) a unit diagonal.
    /// Returns U row-major and the dead columns.
    pub(crate) fn inverse_cholesky_upper(&self, damp: f64) -> Result<(Vec<f64>, Vec<bool>)> {
        // One thread inside a matrix: the same bytes on every run (callers
        // parallelise across matrices).
        faer::set_global_parallelism(faer::Par::Seq);
        let n = self.dim;
        let dead: Vec<bool> = (0..n).map(|j| self.diag(j) == 0.0).collect();
        let mean = (0..n).map(|j| self.diag(j)).sum::<f64>() / n.max(1) as f64;
        let lambda = damp * mean;
        let h = Mat::from_fn(n, n, |i, j| {
            let mut v = self.h[i * n + j];
            if i == j {
                v += lambda;
                if dead[i] {
                    v = 1.0;
                }
            } else if dead[i] || dead[j] {
                v = 0.0;
            }
            v
        });
        let llt = h
            .llt(Side::Lower)
            .map_err(|_| CompressError::NotPositiveDefinite { damp })?;
        let inv = llt.inverse();
        let l = inv
            .llt(Side::Lower)
            .map_err(|_| CompressError::NotPositiveDefinite { damp })?;
        let lm = l.L();
        // U = Lᵀ.
        let mut u = vec![0.0f64; n * n];
        for i in 0..n {
            for j in i..n {
                u[i * n + j] = lm[(j, i)];
            }
        }
        Ok((u, dead))
    }
}
