//! The head's output rows on the host, in one pass each: a row's
//! log-sum-exp (so any log-probability is `logit - lse`, with no `[tokens,
//! vocab]` log-softmax tensor written), and its top-k entries by partial
//! selection instead of a full sort of the vocabulary.
//!
//! The sums run in 16 fixed lanes with a polynomial `exp`: an AVX-512
//! kernel where the CPU has it, the portable lane loops elsewhere (which the
//! compiler does not vectorise; measured scalar). Both give bit-identical
//! results: the lane structure, not the instruction set, fixes the order of
//! every addition.

const LANES: usize = 16;

use evocomp_model::kernels::exp_neg;

/// The row maximum from the per-lane maxima and the tail, or None when the
/// row holds a NaN or an infinity (`bad`: per-lane sums of x * 0).
#[inline(always)]
fn row_max(m: &[f32; LANES], bad: &[f32; LANES], tail: &[f32]) -> Option<f32> {
    let mut max = f32::NEG_INFINITY;
    let mut b = 0.0f32;
    for i in 0..LANES {
        max = if m[i] > max { m[i] } else { max };
        b += bad[i];
    }
    for &x in tail {
        max = if x > max { x } else { max };
        b += x * 0.0;
    }
    (!b.is_nan()).then_some(max)
}

/// max + ln(Σ lanes + Σ tail), the lanes and the tail added in f64.
#[inline(always)]
fn finish(max: f32, s: &[f32; LANES], tail: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    for &v in s {
        sum += v as f64;
    }
    for &x in tail {
        sum += exp_neg(x - max) as f64;
    }
    max + (sum.ln() as f32)
}

fn lse_generic(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    // NaN or ±inf anywhere makes `bad` NaN (x * 0 is NaN for both).
    let mut bad = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks.clone() {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            bad[i] += c[i] * 0.0;
        }
    }
    let Some(max) = row_max(&m, &bad, tail) else {
        return f32::NAN;
    };
    let mut s = [0.0f32; LANES];
    for c in chunks {
        for i in 0..LANES {
            s[i] += exp_neg(c[i] - max);
        }
    }
    finish(max, &s, tail)
}

/// [`lse_generic`] with AVX-512 intrinsics: the same 16 lanes and, lane by
/// lane, the same operations in the same order (no fused multiply-adds), so
/// the result is bit-identical to the portable code's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn lse_avx512(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut bad = _mm512_setzero_ps();
    let zero = _mm512_setzero_ps();
    for c in chunks.clone() {
        // SAFETY: `c` holds 16 floats; unaligned load.
        let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        m = _mm512_max_ps(x, m);
        bad = _mm512_add_ps(bad, _mm512_mul_ps(x, zero));
    }
    let (mut ma, mut ba) = ([0.0f32; LANES], [0.0f32; LANES]);
    // SAFETY: 16-float arrays.
    unsafe {
        _mm512_storeu_ps(ma.as_mut_ptr(), m);
        _mm512_storeu_ps(ba.as_mut_ptr(), bad);
    }
    let Some(max) = row_max(&ma, &ba, tail) else {
        return f32::NAN;
    };
    let vmax = _mm512_set1_ps(max);
    let lo = _mm512_set1_ps(-87.0);
    let log2e = _mm512_set1_ps(std::f32::consts::LOG2_E);
    let magic = _mm512_set1_ps(12_582_912.0);
    let magic_bits = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32);
    let (hi, lo2) = (_mm512_set1_ps(0.693_359_4), _mm512_set1_ps(-2.121_944_4e-4));
    let coef = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ]
    .map(|c: f32| _mm512_set1_ps(c));
    let mut s = _mm512_setzero_ps();
    for c in chunks {
        // SAFETY: as above.
        let x = _mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, vmax);
        let x = _mm512_max_ps(x, lo);
        let shifted = _mm512_add_ps(_mm512_mul_ps(x, log2e), magic);
        let n = _mm512_sub_ps(shifted, magic);
        let ni = _mm512_sub_epi32(_mm512_castps_si512(shifted), magic_bits);
        let f = _mm512_sub_ps(
            _mm512_sub_ps(x, _mm512_mul_ps(n, hi)),
            _mm512_mul_ps(n, lo2),
        );
        // Horner, innermost first: ((c7 f + c6) f + c5) ... as exp_neg nests it.
        let mut p = coef[0];
        for &k in &coef[1..] {
            p = _mm512_add_ps(k, _mm512_mul_ps(f, p));
        }
        let e = _mm512_castsi512_ps(_mm512_add_epi32(
            _mm512_castps_si512(p),
            _mm512_slli_epi32::<23>(ni),
        ));
        s = _mm512_add_ps(s, e);
    }
    let mut sa = [0.0f32; LANES];
    // SAFETY: a 16-float array.
    unsafe { _mm512_storeu_ps(sa.as_mut_ptr(), s) };
    finish(max, &sa, tail)
}

/// log Σ exp(row): NaN if the row holds a NaN or an infinity.
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { lse_avx512(row) };
        }
    }
    lse_generic(row)
}

/// [`log_sum_exp`] of every `v`-long row of `rows`, the rows split over
/// the thread pool (each row's result does not depend on the split).
pub(crate) fn log_sum_exp_rows(rows: &[f32], v: usize) -> Vec<f32> {
    use rayon::prelude::*;
    rows.par_chunks_exact(v).map(log_sum_exp).collect()
}

/// The `k` largest entries of `row` (by value, largest first; equal values
/// by index), as (index, value).
pub(crate) fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let order = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx.into_iter().map(|i| (i, row[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_lse(row: &[f32]) -> f64 {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    }

    #[test]
    fn log_sum_exp_matches_f64_and_every_path_agrees_bit_for_bit() {
        // Lengths around the lane width, and a vocabulary-sized row.
        for len in [1usize, 15, 16, 17, 33, 1000, 49_152] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 30.0)
                .collect();
            let got = log_sum_exp(&row);
            let want = exact_lse(&row);
            assert!(
                ((got as f64) - want).abs() < 1e-5 * want.abs().max(1.0),
                "{len}: {got} vs {want}"
            );
            // The dispatched kernel and the plain one add in the same order.
            assert_eq!(got.to_bits(), lse_generic(&row).to_bits(), "{len}");
        }
    }

    #[test]
    fn nan_and_infinity_poison_the_row() {
        let mut row = vec![0.5f32; 100];
        row[37] = f32::NAN;
        assert!(log_sum_exp(&row).is_nan());
        row[37] = f32::INFINITY;
        assert!(log_sum_exp(&row).is_nan());
        row[37] = f32::NEG_INFINITY;
        assert!(log_sum_exp(&row).is_nan());
        row[37] = 0.5;
        assert!(log_sum_exp(&row).is_finite());
    }

    #[test]
    fn top_k_is_the_sorted_prefix_of_a_full_sort() {
        let row: Vec<f32> = (0..5000).map(|i| ((i * 104_729) % 997) as f32).collect();
        let mut full: Vec<usize> = (0..row.len()).collect();
        full.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for k in [1, 2, 64, 997, 5000, 6000] {
            let got: Vec<usize> = top_k(&row, k).into_iter().map(|(i, _)| i).collect();
            assert_eq!(got, full[..k.min(row.len())], "k = {k}");
        }
        assert!(top_k(&row, 0).is_empty());
    }
}
