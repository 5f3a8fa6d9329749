//! Integer codes of a quantized matrix, for formats that store them packed.
//!
//! A database stores a quantized variant as its dequantized values. On every
//! grid [`quantize`](crate::quantize) uses, a row's group of columns holds
//! values `scale · (code − zero)` with integer `code` and `zero` in
//! `0..=2^bits − 1`. [`recover_codes`] finds such a scale, zero point and
//! codes from the values alone, for any group width that splits the
//! quantizer's groups (a format may need narrower groups than were fitted),
//! and checks that they give the values back. [`pack_rows`] and
//! [`pack_columns`] pack codes densely into 32-bit words, element `i` of a
//! row at bit `i · bits` (little end first, a code may straddle two words),
//! as compressed-tensors' pack-quantized format does.

/// A matrix's quantization codes on groups of consecutive columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Codes {
    pub rows: usize,
    pub cols: usize,
    /// Columns per group (the last group is shorter when it does not divide `cols`).
    pub group: usize,
    pub bits: u8,
    /// `[rows, cols]`, each in `0..2^bits`.
    pub codes: Vec<u8>,
    /// `[rows, groups]`: value = `scale · (code − zero)`.
    pub scales: Vec<f64>,
    /// `[rows, groups]`, each in `0..2^bits`; `2^(bits−1)` everywhere when symmetric.
    pub zeros: Vec<u8>,
}

impl Codes {
    pub fn groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// The values the codes stand for, with each scale rounded by `round`
    /// first (the precision a format stores it in).
    pub fn dequantize(&self, round: impl Fn(f64) -> f64) -> Vec<f32> {
        let groups = self.groups();
        let mut out = vec![0.0f32; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                let g = r * groups + c / self.group;
                let k = self.codes[r * self.cols + c] as f64 - self.zeros[g] as f64;
                out[r * self.cols + c] = (round(self.scales[g]) * k) as f32;
            }
        }
        out
    }
}

/// The scale, zero point and codes of `values` (`[rows, cols]`, row-major)
/// on `bits`-bit grids over groups of `group` consecutive columns (0: one
/// group per row). Symmetric grids have their zero point at `2^(bits−1)`.
/// An error says which row and group is not on such a grid.
pub fn recover_codes(
    values: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    bits: u8,
    symmetric: bool,
) -> Result<Codes, String> {
    if !(1..=8).contains(&bits) {
        return Err(format!("{bits} bits: codes are stored in 1 to 8 bits"));
    }
    if values.len() != rows * cols {
        return Err(format!(
            "{} values for a {rows}x{cols} matrix",
            values.len()
        ));
    }
    let group = if group == 0 || group > cols {
        cols
    } else {
        group
    };
    let groups = cols.div_ceil(group.max(1));
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0.0f64; rows * groups];
    let mut zeros = vec![0u8; rows * groups];
    for r in 0..rows {
        for g in 0..groups {
            let (a, b) = (g * group, ((g + 1) * group).min(cols));
            let vs = &values[r * cols + a..r * cols + b];
            let (scale, zero, ks) = group_grid(vs, bits, symmetric).ok_or_else(|| {
                format!(
                    "row {r}, columns {a}..{b}: the values are not on one {bits}-bit {} grid",
                    if symmetric { "symmetric" } else { "asymmetric" }
                )
            })?;
            scales[r * groups + g] = scale;
            zeros[r * groups + g] = zero;
            for (c, k) in ks.into_iter().enumerate() {
                codes[r * cols + a + c] = (k + zero as i64) as u8;
            }
        }
    }
    Ok(Codes {
        rows,
        cols,
        group,
        bits,
        codes,
        scales,
        zeros,
    })
}

/// One group's scale, zero point and signed steps `code − zero`.
fn group_grid(vs: &[f32], bits: u8, symmetric: bool) -> Option<(f64, u8, Vec<i64>)> {
    let maxq = (1i64 << bits) - 1;
    let half = 1i64 << (bits - 1);
    let mut distinct: Vec<f64> = vs.iter().map(|&v| v as f64).collect();
    if distinct.iter().any(|v| !v.is_finite()) {
        return None;
    }
    distinct.push(0.0);
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let gap = distinct
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !gap.is_finite() {
        // Every value is zero: any scale, every code at the zero point.
        let zero = if symmetric { half } else { 0 };
        return Some((1.0, zero as u8, vec![0; vs.len()]));
    }
    // The smallest gap is a whole number of steps; try the step counts in turn.
    for m in 1..=maxq {
        let steps =
            |s: f64| -> Vec<i64> { vs.iter().map(|&v| (v as f64 / s).round() as i64).collect() };
        let s0 = gap / m as f64;
        let ks = steps(s0);
        // Least squares refines the scale from every value.
        let (num, den) = vs.iter().zip(&ks).fold((0.0, 0.0), |(n, d), (&v, &k)| {
            (n + v as f64 * k as f64, d + (k * k) as f64)
        });
        let s = if den > 0.0 { num / den } else { s0 };
        let ks = steps(s);
        let on_grid = vs.iter().zip(&ks).all(|(&v, &k)| {
            let back = (s * k as f64) as f32;
            (back - v).abs() <= 1e-5 * (s as f32) + f32::EPSILON * v.abs()
        });
        if !on_grid {
            continue;
        }
        let (lo, hi) = (
            ks.iter().copied().min().unwrap_or(0),
            ks.iter().copied().max().unwrap_or(0),
        );
        let zero = if symmetric {
            (lo >= -half && hi < half).then_some(half)
        } else {
            let (z_lo, z_hi) = ((-lo).max(0), (maxq - hi).min(maxq));
            (z_lo <= z_hi).then_some(z_lo)
        };
        if let Some(zero) = zero {
            return Some((s, zero as u8, ks));
        }
    }
    None
}

/// Pack `[rows, cols]` codes of `bits` bits along each row into
/// `[rows, ceil(cols · bits / 32)]` words: element `i` at bit `i · bits`.
pub fn pack_rows(codes: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<i32> {
    let bits = bits as usize;
    let words = (cols * bits).div_ceil(32);
    let mut out = vec![0u32; rows * words];
    for r in 0..rows {
        let row = &mut out[r * words..(r + 1) * words];
        for (i, &q) in codes[r * cols..(r + 1) * cols].iter().enumerate() {
            let q = q as u64 & ((1u64 << bits) - 1);
            let pos = i * bits;
            let (w, off) = (pos / 32, pos % 32);
            let wide = q << off;
            row[w] |= wide as u32;
            if off + bits > 32 {
                row[w + 1] |= (wide >> 32) as u32;
            }
        }
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// Pack `[rows, cols]` codes along each column into
/// `[ceil(rows · bits / 32), cols]` words (compressed-tensors' zero points).
pub fn pack_columns(codes: &[u8], rows: usize, cols: usize, bits: u8) -> Vec<i32> {
    let mut t = vec![0u8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = codes[r * cols + c];
        }
    }
    let packed = pack_rows(&t, cols, rows, bits);
    let words = (rows * bits as usize).div_ceil(32);
    let mut out = vec![0i32; words * cols];
    for c in 0..cols {
        for w in 0..words {
            out[w * cols + c] = packed[c * words + w];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matrix, QuantConfig, QuantMethod, quantize, random_matrix};

    fn unpack_rows(words: &[i32], rows: usize, cols: usize, bits: u8) -> Vec<u8> {
        let bits = bits as usize;
        let per = (cols * bits).div_ceil(32);
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let row: Vec<u64> = words[r * per..(r + 1) * per]
                .iter()
                .map(|&w| w as u32 as u64)
                .collect();
            for i in 0..cols {
                let (w, off) = ((i * bits) / 32, (i * bits) % 32);
                let mut v = row[w] >> off;
                if off + bits > 32 {
                    v |= row[w + 1] << (32 - off);
                }
                out.push((v & ((1 << bits) - 1)) as u8);
            }
        }
        out
    }

    #[test]
    fn packing_puts_element_i_at_bit_i_times_bits() {
        // 3 bits: element 10 starts at bit 30 and straddles words 0 and 1.
        let codes: Vec<u8> = (0..12).map(|i| (i % 8) as u8).collect();
        let p = pack_rows(&codes, 1, 12, 3);
        assert_eq!(p.len(), 2); // 36 bits
        let mut expect: u64 = 0;
        for (i, &q) in codes.iter().enumerate() {
            expect |= (q as u64) << (3 * i);
        }
        assert_eq!(p[0] as u32, expect as u32);
        assert_eq!(p[1] as u32, (expect >> 32) as u32);
        for bits in 1..=8u8 {
            let (rows, cols) = (3, 37);
            let codes: Vec<u8> = (0..rows * cols)
                .map(|i| ((i * 7 + 3) % (1 << bits)) as u8)
                .collect();
            let p = pack_rows(&codes, rows, cols, bits);
            assert_eq!(p.len(), rows * (cols * bits as usize).div_ceil(32));
            assert_eq!(unpack_rows(&p, rows, cols, bits), codes, "{bits} bits");
        }
    }

    #[test]
    fn column_packing_is_row_packing_of_the_transpose() {
        let (rows, cols, bits) = (11, 3, 4u8);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i % 16) as u8).collect();
        let p = pack_columns(&codes, rows, cols, bits);
        let words = (rows * 4usize).div_ceil(32);
        assert_eq!(p.len(), words * cols);
        for c in 0..cols {
            let col: Vec<i32> = (0..words).map(|w| p[w * cols + c]).collect();
            let back = unpack_rows(&col, 1, rows, bits);
            let want: Vec<u8> = (0..rows).map(|r| codes[r * cols + c]).collect();
            assert_eq!(back, want);
        }
    }

    #[test]
    fn codes_of_quantized_matrices_give_their_values_back() {
        let w = random_matrix(9, 96, 4);
        for (bits, group, symmetric) in [
            (2, 32, false),
            (3, 32, false),
            (4, 0, true),
            (8, 16, false),
            (3, 32, true),
        ] {
            let spec = QuantConfig {
                bits,
                group_size: group,
                symmetric,
                act_order: false,
            };
            let q = quantize(&w, None, QuantMethod::Rtn, &spec, &Default::default()).unwrap();
            // The format's groups may split the quantizer's (here in halves).
            for g in [group, group / 2] {
                let c = recover_codes(&q.data, 9, 96, g, bits, symmetric).unwrap();
                assert_eq!(c.groups(), 96usize.div_ceil(if g == 0 { 96 } else { g }));
                assert!(c.codes.iter().all(|&k| (k as u32) < 1 << bits));
                if symmetric {
                    assert!(c.zeros.iter().all(|&z| z == 1 << (bits - 1)));
                }
                let back = c.dequantize(|s| s);
                for (a, b) in back.iter().zip(&q.data) {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                        "{bits}/{g}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn values_off_any_grid_are_refused_with_their_place() {
        let w = random_matrix(2, 16, 1);
        let err = recover_codes(&w.data, 2, 16, 8, 2, false).unwrap_err();
        assert!(err.contains("row 0, columns 0..8"), "{err}");
        assert!(recover_codes(&[0.0; 4], 2, 2, 0, 9, false).is_err());
        let zeros = recover_codes(&Matrix::zeros(2, 4).data, 2, 4, 2, 3, true).unwrap();
        assert_eq!(zeros.dequantize(|s| s), vec![0.0; 8]);
    }
}
