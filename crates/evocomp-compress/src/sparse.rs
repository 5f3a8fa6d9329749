//! Unstructured sparsity: magnitude, Wanda and SparseGPT, each zeroing an
//! exact number of weights.

use crate::hessian::Hessian;
use crate::matrix::Matrix;
use crate::{CompressError, Result};
use faer::{Accum, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

/// How weights to zero are chosen (and the rest updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SparsityMethod {
    /// The smallest |W| of the whole matrix.
    Magnitude,
    /// The smallest |W_ij|·‖X_j‖ of each output row (Sun et al., 2023).
    Wanda,
    /// OBS with the Hessian 2XᵀX/n, mask chosen per block of columns by
    /// w²/[H⁻¹]²_jj, remaining weights updated (Frantar & Alistarh, 2023).
    SparseGpt,
}

impl SparsityMethod {
    pub fn name(self) -> &'static str {
        match self {
            SparsityMethod::Magnitude => "magnitude",
            SparsityMethod::Wanda => "wanda",
            SparsityMethod::SparseGpt => "sparsegpt",
        }
    }

    pub fn needs_hessian(self) -> bool {
        !matches!(self, SparsityMethod::Magnitude)
    }
}

/// Settings of the OBS sweeps (SparseGPT and GPTQ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObsConfig {
    /// Columns per lazy-update block.
    pub block_size: usize,
    /// Dampening, as a fraction of the mean diagonal of H.
    pub damp: f64,
}

impl Default for ObsConfig {
    fn default() -> Self {
        Self {
            block_size: 128,
            damp: 0.01,
        }
    }
}

/// Split `total` over parts in proportion to `sizes`, exactly (largest
/// remainder, ties to the earlier part), never giving a part more than its size.
pub(crate) fn split_exact(total: usize, sizes: &[usize]) -> Vec<usize> {
    let sum: usize = sizes.iter().sum();
    assert!(total <= sum);
    if sum == 0 {
        return vec![0; sizes.len()];
    }
    let mut out: Vec<usize> = sizes
        .iter()
        .map(|&s| (total as u128 * s as u128 / sum as u128) as usize)
        .collect();
    let mut rest = total - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // Largest fractional remainder first.
    order.sort_by_key(|&i| std::cmp::Reverse((total as u128 * sizes[i] as u128) % sum as u128));
    for &i in order.iter().cycle() {
        if rest == 0 {
            break;
        }
        if out[i] < sizes[i] {
            out[i] += 1;
            rest -= 1;
        }
    }
    out
}

/// Indices of the `k` smallest scores (ties broken by index): deterministic.
fn smallest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| scores[*a].total_cmp(&scores[*b]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx
}

fn check(w: &Matrix, h: Option<&Hessian>, zeros: usize) -> Result<()> {
    if zeros > w.numel() {
        return Err(CompressError::TooManyZeros {
            zeros,
            rows: w.rows,
            cols: w.cols,
        });
    }
    if let Some(h) = h
        && h.dim != w.cols
    {
        return Err(CompressError::HessianShape {
            found: h.dim,
            cols: w.cols,
        });
    }
    Ok(())
}

/// Zero exactly `zeros` weights of `w` (more only where a kept weight is
/// itself 0), choosing and updating as `method` says.
pub fn prune(
    w: &Matrix,
    h: Option<&Hessian>,
    method: SparsityMethod,
    zeros: usize,
    opts: &ObsConfig,
) -> Result<Matrix> {
    check(w, h, zeros)?;
    let need_h = || {
        h.ok_or(CompressError::NeedsHessian {
            method: method.name(),
        })
    };
    match method {
        SparsityMethod::Magnitude => {
            let scores: Vec<f64> = w.data.iter().map(|x| x.abs() as f64).collect();
            let mut out = w.clone();
            for i in smallest(&scores, zeros) {
                out.data[i] = 0.0;
            }
            Ok(out)
        }
        SparsityMethod::Wanda => {
            let norms = need_h()?.column_norms();
            let per_row = split_exact(zeros, &vec![w.cols; w.rows]);
            let mut out = w.clone();
            for (r, &k) in per_row.iter().enumerate() {
                let scores: Vec<f64> = w
                    .row(r)
                    .iter()
                    .zip(&norms)
                    .map(|(x, n)| x.abs() as f64 * n)
                    .collect();
                for j in smallest(&scores, k) {
                    out.data[r * w.cols + j] = 0.0;
                }
            }
            Ok(out)
        }
        SparsityMethod::SparseGpt => sparsegpt(w, need_h()?, Mask::Count(zeros), opts),
    }
}

/// SparseGPT's OBS sweep with a given mask (`true` = zero), for tests and
/// for callers that choose the mask themselves.
pub fn sparsegpt_with_mask(
    w: &Matrix,
    h: &Hessian,
    mask: &[bool],
    opts: &ObsConfig,
) -> Result<Matrix> {
    assert_eq!(mask.len(), w.numel());
    check(w, Some(h), 0)?;
    sparsegpt(w, h, Mask::Given(mask), opts)
}

enum Mask<'a> {
    Count(usize),
    Given(&'a [bool]),
}

fn sparsegpt(w: &Matrix, h: &Hessian, mask: Mask<'_>, opts: &ObsConfig) -> Result<Matrix> {
    let (rows, cols) = (w.rows, w.cols);
    let bs = opts.block_size.max(1);
    let (u, dead) = h.inverse_cholesky_upper(opts.damp)?;
    let mut wf: Vec<f64> = w.data.iter().map(|&x| x as f64).collect();
    for r in 0..rows {
        for j in 0..cols {
            if dead[j] {
                wf[r * cols + j] = 0.0;
            }
        }
    }
    let blocks: Vec<(usize, usize)> = (0..cols)
        .step_by(bs)
        .map(|i1| (i1, (i1 + bs).min(cols)))
        .collect();
    let per_block = match mask {
        Mask::Count(z) => split_exact(
            z,
            &blocks
                .iter()
                .map(|(a, b)| (b - a) * rows)
                .collect::<Vec<_>>(),
        ),
        Mask::Given(_) => vec![0; blocks.len()],
    };
    let mut m = vec![false; rows * bs];
    let mut err = vec![0.0f64; rows * bs];
    for (bi, &(i1, i2)) in blocks.iter().enumerate() {
        let count = i2 - i1;
        // The block's mask: exactly per_block[bi] zeros by w² / U_jj².
        match mask {
            Mask::Given(g) => {
                for r in 0..rows {
                    for c in 0..count {
                        m[r * count + c] = g[r * cols + i1 + c];
                    }
                }
            }
            Mask::Count(_) => {
                let mut scores = Vec::with_capacity(rows * count);
                for r in 0..rows {
                    for c in 0..count {
                        let d = u[(i1 + c) * cols + i1 + c];
                        let x = wf[r * cols + i1 + c];
                        scores.push(x * x / (d * d));
                    }
                }
                m[..rows * count].iter_mut().for_each(|v| *v = false);
                for i in smallest(&scores, per_block[bi]) {
                    m[i] = true;
                }
            }
        }
        for c in 0..count {
            let i = i1 + c;
            let d = u[i * cols + i];
            let urow = &u[i * cols..(i + 1) * cols];
            for r in 0..rows {
                let x = wf[r * cols + i];
                let q = if m[r * count + c] { 0.0 } else { x };
                let e = (x - q) / d;
                wf[r * cols + i] = q;
                err[r * count + c] = e;
                if e != 0.0 {
                    let wr = &mut wf[r * cols + i + 1..r * cols + i2];
                    for (wj, uj) in wr.iter_mut().zip(&urow[i + 1..i2]) {
                        *wj -= e * uj;
                    }
                }
            }
        }
        lazy_update(&mut wf, rows, cols, &err[..rows * count], &u, i1, i2);
    }
    Ok(Matrix::new(
        rows,
        cols,
        wf.into_iter().map(|x| x as f32).collect(),
    ))
}

/// `W[:, i2:] -= E · U[i1:i2, i2:]`, the batched update of the columns after a block.
pub(crate) fn lazy_update(
    wf: &mut [f64],
    rows: usize,
    cols: usize,
    err: &[f64],
    u: &[f64],
    i1: usize,
    i2: usize,
) {
    if i2 >= cols {
        return;
    }
    let count = i2 - i1;
    let dst = MatMut::from_row_major_slice_mut(wf, rows, cols).subcols_mut(i2, cols - i2);
    let e = MatRef::from_row_major_slice(err, rows, count);
    let um = MatRef::from_row_major_slice(u, cols, cols).submatrix(i1, i2, count, cols - i2);
    faer::linalg::matmul::matmul(dst, Accum::Add, e, um, -1.0, Par::Seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::random_matrix as random;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Correlated inputs with uneven feature scales, like a real layer's.
    pub(crate) fn inputs(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mix: Vec<f32> = (0..dim * dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let scale: Vec<f32> = (0..dim)
            .map(|j| 0.2 + 3.0 * ((j * 7) % dim) as f32 / dim as f32)
            .collect();
        let mut x = vec![0.0f32; n * dim];
        for t in 0..n {
            let z: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            for j in 0..dim {
                let mut v = z[j];
                for k in 0..dim {
                    v += 0.5 * mix[j * dim + k] * z[k];
                }
                x[t * dim + j] = v * scale[j];
            }
        }
        x
    }

    #[test]
    fn split_is_exact_and_bounded() {
        for (total, sizes) in [
            (10, vec![3, 3, 4]),
            (7, vec![1, 100]),
            (0, vec![5]),
            (9, vec![2, 3, 4]),
        ] {
            let s = split_exact(total, &sizes);
            assert_eq!(s.iter().sum::<usize>(), total);
            assert!(s.iter().zip(&sizes).all(|(a, b)| a <= b));
        }
    }

    #[test]
    fn every_method_zeros_exactly_the_requested_count() {
        let w = random(24, 40, 1);
        let h = Hessian::from_inputs(40, &inputs(200, 40, 2));
        let opts = ObsConfig {
            block_size: 16,
            damp: 0.01,
        };
        for method in [
            SparsityMethod::Magnitude,
            SparsityMethod::Wanda,
            SparsityMethod::SparseGpt,
        ] {
            for zeros in [0, 1, 333, 480, 959] {
                let p = prune(&w, Some(&h), method, zeros, &opts).unwrap();
                assert_eq!(p.count_zeros(), zeros, "{method:?} {zeros}");
            }
        }
        assert!(prune(&w, Some(&h), SparsityMethod::Magnitude, 961, &opts).is_err());
        assert!(prune(&w, None, SparsityMethod::Wanda, 10, &opts).is_err());
    }

    /// The brute-force sequential OBS: for each column in order, invert the
    /// Hessian of the columns not yet processed and apply the OBS update of
    /// removing (or keeping) that weight.
    fn brute_force_obs(w: &Matrix, h: &Hessian, mask: &[bool], damp: f64) -> Matrix {
        let n = w.cols;
        let mean = (0..n).map(|j| h.diag(j)).sum::<f64>() / n as f64;
        let hd: Vec<f64> = (0..n * n)
            .map(|k| h.h[k] + if k / n == k % n { damp * mean } else { 0.0 })
            .collect();
        let mut out = w.clone();
        for r in 0..w.rows {
            let mut row: Vec<f64> = w.row(r).iter().map(|&x| x as f64).collect();
            for i in 0..n {
                if !mask[r * n + i] {
                    continue;
                }
                let f: Vec<usize> = (i..n).collect();
                let sub: Vec<f64> = f
                    .iter()
                    .flat_map(|&a| f.iter().map(|&b| hd[a * n + b]).collect::<Vec<_>>())
                    .collect();
                let inv = invert(&sub, f.len());
                let coef = row[i] / inv[0];
                for (k, &j) in f.iter().enumerate() {
                    row[j] -= coef * inv[k];
                }
                row[i] = 0.0;
            }
            for (o, &v) in out.data[r * n..(r + 1) * n].iter_mut().zip(&row) {
                *o = v as f32;
            }
        }
        out
    }

    /// Gauss-Jordan inverse with partial pivoting (test helper).
    fn invert(a: &[f64], n: usize) -> Vec<f64> {
        let mut m = a.to_vec();
        let mut inv: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
                .unwrap();
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
                inv.swap(c * n + k, p * n + k);
            }
            let d = m[c * n + c];
            for k in 0..n {
                m[c * n + k] /= d;
                inv[c * n + k] /= d;
            }
            for r in 0..n {
                if r != c {
                    let f = m[r * n + c];
                    for k in 0..n {
                        m[r * n + k] -= f * m[c * n + k];
                        inv[r * n + k] -= f * inv[c * n + k];
                    }
                }
            }
        }
        inv
    }

    #[test]
    fn sparsegpt_equals_brute_force_obs_on_a_4x8_matrix() {
        let w = random(4, 8, 3);
        let h = Hessian::from_inputs(8, &inputs(64, 8, 4));
        let mut rng = StdRng::seed_from_u64(5);
        let mask: Vec<bool> = (0..32).map(|_| rng.random::<f32>() < 0.5).collect();
        for block_size in [1, 3, 8, 128] {
            let opts = ObsConfig {
                block_size,
                damp: 0.01,
            };
            let fast = sparsegpt_with_mask(&w, &h, &mask, &opts).unwrap();
            let slow = brute_force_obs(&w, &h, &mask, 0.01);
            for (a, b) in fast.data.iter().zip(&slow.data) {
                assert!((a - b).abs() < 1e-4, "block {block_size}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn sparsegpt_beats_magnitude_and_wanda_on_reconstruction_error() {
        let w = random(32, 64, 6);
        let h = Hessian::from_inputs(64, &inputs(512, 64, 7));
        let opts = ObsConfig {
            block_size: 32,
            damp: 0.01,
        };
        for frac in [0.5, 0.7] {
            let zeros = (w.numel() as f64 * frac) as usize;
            let err =
                |m| w.reconstruction_error(&prune(&w, Some(&h), m, zeros, &opts).unwrap(), &h);
            let (mag, wanda, sgpt) = (
                err(SparsityMethod::Magnitude),
                err(SparsityMethod::Wanda),
                err(SparsityMethod::SparseGpt),
            );
            assert!(
                sgpt < wanda && wanda < mag,
                "{frac}: sparsegpt {sgpt}, wanda {wanda}, magnitude {mag}"
            );
        }
    }

    #[test]
    fn reconstruction_error_is_the_output_error() {
        let w = random(5, 6, 8);
        let x = inputs(30, 6, 9);
        let h = Hessian::from_inputs(6, &x);
        let p = prune(
            &w,
            Some(&h),
            SparsityMethod::Magnitude,
            12,
            &ObsConfig::default(),
        )
        .unwrap();
        let mut direct = 0.0f64;
        for t in 0..30 {
            for r in 0..5 {
                let d: f64 = (0..6)
                    .map(|j| ((w.data[r * 6 + j] - p.data[r * 6 + j]) * x[t * 6 + j]) as f64)
                    .sum();
                direct += d * d;
            }
        }
        let via_h = w.reconstruction_error(&p, &h);
        assert!(
            (direct - via_h).abs() < 1e-6 * direct.max(1.0),
            "{direct} vs {via_h}"
        );
    }
}
