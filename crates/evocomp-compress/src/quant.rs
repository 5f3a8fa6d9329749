//! Weight quantization: round-to-nearest and GPTQ, with per-row or grouped
//! scales, symmetric or asymmetric grids, and optional act-order.

use crate::hessian::Hessian;
use crate::matrix::Matrix;
use crate::sparse::{ObsConfig, lazy_update};
use crate::{CompressError, Result};
use serde::{Deserialize, Serialize};

/// How weights are rounded onto the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuantMethod {
    /// Round to nearest.
    Rtn,
    /// GPTQ: column-by-column rounding with OBS error feedback (Frantar et al., 2022).
    Gptq,
}

impl QuantMethod {
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Rtn => "rtn",
            QuantMethod::Gptq => "gptq",
        }
    }
}

/// A quantization grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Bits per weight, 2..=8.
    pub bits: u8,
    /// Columns sharing one scale (and zero point); 0 means one per row.
    pub group_size: usize,
    /// Symmetric grid (no stored zero point) or asymmetric.
    pub symmetric: bool,
    /// GPTQ only: process columns by decreasing Hessian diagonal, with
    /// *static groups*: every group's grid is fitted on the original weights
    /// in the original column order before reordering, so a group is still a
    /// run of consecutive columns and no group index is stored.
    pub act_order: bool,
}

impl QuantConfig {
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.bits) {
            return Err(CompressError::BadSpec(format!(
                "bits must be in 2..=8, got {}",
                self.bits
            )));
        }
        Ok(())
    }

    fn maxq(&self) -> f64 {
        ((1u32 << self.bits) - 1) as f64
    }

    fn groups(&self, cols: usize) -> usize {
        if self.group_size == 0 || self.group_size >= cols {
            1
        } else {
            cols.div_ceil(self.group_size)
        }
    }
}

/// Exact storage of a quantized `[rows, cols]` matrix, in bits: the weights,
/// a 16-bit scale per row and group and a `bits`-bit zero point per row and
/// group when asymmetric. Act-order uses static groups (consecutive columns),
/// so it stores no group index.
pub fn quant_cost_bits(rows: usize, cols: usize, spec: &QuantConfig) -> u64 {
    let groups = spec.groups(cols) as u64;
    let (rows, cols, bits) = (rows as u64, cols as u64, spec.bits as u64);
    let zero = if spec.symmetric { 0 } else { bits };
    rows * cols * bits + rows * groups * (16 + zero)
}

/// Scale and zero point of one row over some columns (GPTQ's quantizer).
#[derive(Debug, Clone, Copy)]
struct Grid {
    scale: f64,
    zero: f64,
    maxq: f64,
}

impl Grid {
    fn fit(xs: impl Iterator<Item = f64>, spec: &QuantConfig) -> Grid {
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for x in xs {
            lo = lo.min(x);
            hi = hi.max(x);
        }
        if spec.symmetric {
            hi = hi.max(lo.abs());
            if lo < 0.0 {
                lo = -hi;
            }
        }
        if lo == 0.0 && hi == 0.0 {
            lo = -1.0;
            hi = 1.0;
        }
        let maxq = spec.maxq();
        let scale = (hi - lo) / maxq;
        let zero = if spec.symmetric {
            (maxq + 1.0) / 2.0
        } else {
            (-lo / scale).round()
        };
        Grid { scale, zero, maxq }
    }

    fn apply(&self, x: f64) -> f64 {
        let q = ((x / self.scale).round() + self.zero).clamp(0.0, self.maxq);
        self.scale * (q - self.zero)
    }
}

/// Round one row to nearest on `spec`'s grid, in place (groups along the row).
pub fn quantize_rtn_row(row: &mut [f32], spec: &QuantConfig) {
    let g = if spec.group_size == 0 {
        row.len()
    } else {
        spec.group_size
    };
    for chunk in row.chunks_mut(g.max(1)) {
        let grid = Grid::fit(chunk.iter().map(|&x| x as f64), spec);
        for x in chunk.iter_mut() {
            *x = grid.apply(*x as f64) as f32;
        }
    }
}

/// Quantize `w` and return it dequantized (the values the model will use).
pub fn quantize(
    w: &Matrix,
    h: Option<&Hessian>,
    method: QuantMethod,
    spec: &QuantConfig,
    opts: &ObsConfig,
) -> Result<Matrix> {
    spec.validate()?;
    match method {
        QuantMethod::Rtn => {
            let mut out = w.clone();
            for r in 0..w.rows {
                quantize_rtn_row(&mut out.data[r * w.cols..(r + 1) * w.cols], spec);
            }
            Ok(out)
        }
        QuantMethod::Gptq => {
            let h = h.ok_or(CompressError::NeedsHessian { method: "gptq" })?;
            if h.dim != w.cols {
                return Err(CompressError::HessianShape {
                    found: h.dim,
                    cols: w.cols,
                });
            }
            gptq(w, h, spec, opts)
        }
    }
}

fn gptq(w: &Matrix, h: &Hessian, spec: &QuantConfig, opts: &ObsConfig) -> Result<Matrix> {
    let (rows, cols) = (w.rows, w.cols);
    // Act-order: columns by decreasing H_jj (stable, so ties keep their order).
    let perm: Vec<usize> = if spec.act_order {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| h.diag(b).total_cmp(&h.diag(a)).then(a.cmp(&b)));
        p
    } else {
        (0..cols).collect()
    };
    let hp = Hessian {
        dim: cols,
        h: (0..cols * cols)
            .map(|k| h.h[perm[k / cols] * cols + perm[k % cols]])
            .collect(),
        n_tokens: h.n_tokens,
    };
    let (u, dead) = hp.inverse_cholesky_upper(opts.damp)?;
    let mut wf = vec![0.0f64; rows * cols];
    for r in 0..rows {
        for (c, &j) in perm.iter().enumerate() {
            wf[r * cols + c] = if dead[c] {
                0.0
            } else {
                w.data[r * cols + j] as f64
            };
        }
    }
    let bs = opts.block_size.max(1);
    let group = if spec.group_size == 0 {
        cols
    } else {
        spec.group_size
    };
    // Static groups (act-order): each group's grids come from the original
    // weights of its consecutive columns, fitted before any column moves.
    let static_grids: Option<Vec<Vec<Grid>>> = spec.act_order.then(|| {
        (0..cols.div_ceil(group))
            .map(|g| {
                let (a, b) = (g * group, ((g + 1) * group).min(cols));
                (0..rows)
                    .map(|r| {
                        let row = &w.data[r * cols + a..r * cols + b];
                        Grid::fit(
                            row.iter()
                                .enumerate()
                                .map(|(k, &x)| if h.diag(a + k) == 0.0 { 0.0 } else { x as f64 }),
                            spec,
                        )
                    })
                    .collect()
            })
            .collect()
    });
    let mut grids: Vec<Grid> = Vec::new();
    let mut err = vec![0.0f64; rows * bs];
    for i1 in (0..cols).step_by(bs) {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        for c in 0..count {
            let i = i1 + c;
            if static_grids.is_none() && i % group == 0 {
                // Fit each row's grid on the (already updated) next group of columns.
                let end = (i + group).min(cols);
                grids = (0..rows)
                    .map(|r| Grid::fit(wf[r * cols + i..r * cols + end].iter().copied(), spec))
                    .collect();
            }
            let grids: &[Grid] = match &static_grids {
                Some(st) => &st[perm[i] / group],
                None => &grids,
            };
            let d = u[i * cols + i];
            let urow = &u[i * cols..(i + 1) * cols];
            for r in 0..rows {
                let x = wf[r * cols + i];
                let q = grids[r].apply(x);
                let e = (x - q) / d;
                wf[r * cols + i] = q;
                err[r * count + c] = e;
                if e != 0.0 {
                    for (wj, uj) in wf[r * cols + i + 1..r * cols + i2]
                        .iter_mut()
                        .zip(&urow[i + 1..i2])
                    {
                        *wj -= e * uj;
                    }
                }
            }
        }
        lazy_update(&mut wf, rows, cols, &err[..rows * count], &u, i1, i2);
    }
    let mut out = Matrix::zeros(rows, cols);
    for r in 0..rows {
        for (c, &j) in perm.iter().enumerate() {
            out.data[r * cols + j] = wf[r * cols + c] as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::random_matrix as random;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn inputs(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut x = vec![0.0f32; n * dim];
        for t in 0..n {
            let common = rng.random::<f32>() * 2.0 - 1.0;
            for j in 0..dim {
                let s = 0.3 + 2.0 * (j % 5) as f32;
                x[t * dim + j] = s * (rng.random::<f32>() * 2.0 - 1.0 + 0.8 * common);
            }
        }
        x
    }

    fn spec(bits: u8, group_size: usize, symmetric: bool, act_order: bool) -> QuantConfig {
        QuantConfig {
            bits,
            group_size,
            symmetric,
            act_order,
        }
    }

    #[test]
    fn rtn_uses_at_most_2_to_the_bits_values_per_group() {
        let w = random(6, 64, 1);
        for bits in 2..=8u8 {
            for sym in [false, true] {
                let s = spec(bits, 16, sym, false);
                let q = quantize(&w, None, QuantMethod::Rtn, &s, &ObsConfig::default()).unwrap();
                for r in 0..6 {
                    for g in q.row(r).chunks(16) {
                        let mut v: Vec<f32> = g.to_vec();
                        v.sort_by(f32::total_cmp);
                        v.dedup();
                        assert!(v.len() <= 1 << bits, "{bits} bits: {} values", v.len());
                    }
                }
                // More bits, smaller error.
                let e: f64 = w
                    .data
                    .iter()
                    .zip(&q.data)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                assert!(
                    e < 6.0 * 64.0 * 4.0 / (1u64 << (2 * bits)) as f64,
                    "{bits} {sym}: {e}"
                );
            }
        }
        assert!(spec(1, 0, true, false).validate().is_err());
        assert!(spec(9, 0, true, false).validate().is_err());
    }

    #[test]
    fn gptq_error_is_below_rtn_at_3_bits() {
        let w = random(32, 96, 2);
        let h = Hessian::from_inputs(96, &inputs(400, 96, 3));
        let opts = ObsConfig {
            block_size: 32,
            damp: 0.01,
        };
        for s in [
            spec(3, 0, false, false),
            spec(3, 32, false, false),
            spec(3, 32, true, false),
            spec(3, 32, false, true),
            spec(4, 0, true, true),
        ] {
            let rtn = w.reconstruction_error(
                &quantize(&w, Some(&h), QuantMethod::Rtn, &s, &opts).unwrap(),
                &h,
            );
            let gptq = w.reconstruction_error(
                &quantize(&w, Some(&h), QuantMethod::Gptq, &s, &opts).unwrap(),
                &h,
            );
            assert!(gptq < rtn, "{s:?}: gptq {gptq} vs rtn {rtn}");
        }
    }

    #[test]
    fn act_order_groups_are_static_consecutive_columns_on_the_original_grid() {
        // With static groups every value of a row's group lies on the grid RTN
        // fits to that group's original weights, although GPTQ visits the
        // columns in another order: so the file needs no group index.
        let (rows, cols, g) = (8, 96, 32);
        let w = random(rows, cols, 7);
        let h = Hessian::from_inputs(cols, &inputs(500, cols, 8));
        let s = spec(3, g, false, true);
        let opts = ObsConfig {
            block_size: 40,
            damp: 0.01,
        };
        let q = quantize(&w, Some(&h), QuantMethod::Gptq, &s, &opts).unwrap();
        let mut moved = 0;
        for r in 0..rows {
            for (k, (orig, quant)) in w.row(r).chunks(g).zip(q.row(r).chunks(g)).enumerate() {
                let grid = Grid::fit(orig.iter().map(|&x| x as f64), &s);
                let on_grid: Vec<f32> = (0..=7)
                    .map(|c| (grid.scale * (c as f64 - grid.zero)) as f32)
                    .collect();
                for (&a, &b) in orig.iter().zip(quant) {
                    assert!(
                        on_grid.contains(&b),
                        "row {r} group {k}: {b} is off its grid"
                    );
                    if grid.apply(a as f64) as f32 != b {
                        moved += 1;
                    }
                }
            }
        }
        // And it is not RTN: error feedback moved some weights to other grid points.
        assert!(moved > 0);
        let rtn = quantize(&w, None, QuantMethod::Rtn, &s, &opts).unwrap();
        assert!(w.reconstruction_error(&q, &h) < w.reconstruction_error(&rtn, &h));
    }

    #[test]
    fn gptq_without_error_feedback_is_rtn() {
        // With H = I (uncorrelated unit inputs, no damping) GPTQ's updates vanish.
        let w = random(4, 16, 4);
        let mut eye = vec![0.0; 256];
        for i in 0..16 {
            eye[i * 16 + i] = 2.0;
        }
        let h = Hessian {
            dim: 16,
            h: eye,
            n_tokens: 100,
        };
        let s = spec(3, 8, false, false);
        let opts = ObsConfig {
            block_size: 5,
            damp: 0.0,
        };
        let a = quantize(&w, Some(&h), QuantMethod::Gptq, &s, &opts).unwrap();
        let b = quantize(&w, Some(&h), QuantMethod::Rtn, &s, &opts).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cost_counts_scales_zeros_and_group_indices() {
        assert_eq!(
            quant_cost_bits(10, 256, &spec(4, 128, false, false)),
            10 * 256 * 4 + 10 * 2 * (16 + 4)
        );
        assert_eq!(
            quant_cost_bits(10, 256, &spec(4, 128, true, false)),
            10 * 256 * 4 + 10 * 2 * 16
        );
        assert_eq!(
            quant_cost_bits(10, 256, &spec(3, 0, true, false)),
            10 * 256 * 3 + 10 * 16
        );
        // Act-order uses static groups: no group index.
        assert_eq!(
            quant_cost_bits(10, 256, &spec(2, 100, false, true)),
            10 * 256 * 2 + 10 * 3 * (16 + 2)
        );
    }
}
