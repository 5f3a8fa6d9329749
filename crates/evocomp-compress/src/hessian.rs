use crate::{CompressError, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::{Mat, MatRef, Par};

/// The lower Cholesky factor of `a` (its lower triangle read), on one
/// thread: `Llt::new`'s steps with `Par::Seq` given to each call rather than
/// set process-wide, so the bits never depend on what else runs.
fn cholesky_lower(a: MatRef<'_, f64>) -> Option<Mat<f64>> {
    let n = a.nrows();
    let mut l = Mat::<f64>::zeros(n, n);
    l.copy_from_triangular_lower(a);
    let mut mem = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(
        n,
        Par::Seq,
        Default::default(),
    ));
    llt::factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .ok()?;
    for j in 0..n {
        for i in 0..j {
            l[(i, j)] = 0.0;
        }
    }
    Some(l)
}

/// `(L Lᵀ)⁻¹` from the lower factor `l`, symmetric, on one thread (as
/// `Llt::inverse` computes it).
fn inverse_from_cholesky(l: MatRef<'_, f64>) -> Mat<f64> {
    let n = l.nrows();
    let mut out = Mat::<f64>::zeros(n, n);
    let mut mem = MemBuffer::new(llt::inverse::inverse_scratch::<f64>(n, Par::Seq));
    llt::inverse::inverse(out.as_mut(), l, Par::Seq, MemStack::new(&mut mem));
    for j in 0..n {
        for i in 0..j {
            out[(i, j)] = out[(j, i)];
        }
    }
    out
}

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
        // One thread inside a matrix (callers parallelise across matrices).
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
        let not_pd = CompressError::NotPositiveDefinite { damp };
        let l = cholesky_lower(h.as_ref()).ok_or(not_pd.clone())?;
        let inv = inverse_from_cholesky(l.as_ref());
        let lm = cholesky_lower(inv.as_ref()).ok_or(not_pd)?;
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
