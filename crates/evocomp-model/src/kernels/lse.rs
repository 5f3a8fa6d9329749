//! A row's log-sum-exp in one pass (so any log-probability is `logit -
//! lse`, with no `[tokens, vocab]` log-softmax tensor written).
//!
//! The sums run in 16 fixed lanes with the polynomial [`exp_neg`]: AVX-512
//! and AVX2 kernels where the CPU has them, the portable lane loops on the
//! baseline (which the compiler does not vectorise; measured scalar). All
//! give bit-identical results: the lane structure, not the instruction set,
//! fixes the order of every addition.

use super::exp_neg;
use super::isa::Cpu;
#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::{EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_MAGIC, EXP_TAYLOR};

const LANES: usize = 16;

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
    let lo = _mm512_set1_ps(EXP_FLOOR);
    let log2e = _mm512_set1_ps(std::f32::consts::LOG2_E);
    let magic = _mm512_set1_ps(EXP_MAGIC);
    let magic_bits = _mm512_set1_epi32(EXP_MAGIC.to_bits() as i32);
    let (hi, lo2) = (_mm512_set1_ps(EXP_LN2_HI), _mm512_set1_ps(EXP_LN2_LO));
    let coef = EXP_TAYLOR.map(|c| _mm512_set1_ps(c));
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

/// [`lse_generic`] with AVX2 intrinsics: the 16 lanes as two 8-lane
/// registers, lane by lane the same operations in the same order as the
/// portable code (no fused multiply-adds), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lse_avx2(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
    let mut bad = [_mm256_setzero_ps(); 2];
    let zero = _mm256_setzero_ps();
    for c in chunks.clone() {
        for h in 0..2 {
            // SAFETY: `c` holds 16 floats; unaligned 8-float loads.
            let x = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) };
            m[h] = _mm256_max_ps(x, m[h]);
            bad[h] = _mm256_add_ps(bad[h], _mm256_mul_ps(x, zero));
        }
    }
    let (mut ma, mut ba) = ([0.0f32; LANES], [0.0f32; LANES]);
    for h in 0..2 {
        // SAFETY: 16-float arrays, 8 floats at 8·h.
        unsafe {
            _mm256_storeu_ps(ma.as_mut_ptr().add(8 * h), m[h]);
            _mm256_storeu_ps(ba.as_mut_ptr().add(8 * h), bad[h]);
        }
    }
    let Some(max) = row_max(&ma, &ba, tail) else {
        return f32::NAN;
    };
    let vmax = _mm256_set1_ps(max);
    let lo = _mm256_set1_ps(EXP_FLOOR);
    let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
    let magic = _mm256_set1_ps(EXP_MAGIC);
    let magic_bits = _mm256_set1_epi32(EXP_MAGIC.to_bits() as i32);
    let (hi, lo2) = (_mm256_set1_ps(EXP_LN2_HI), _mm256_set1_ps(EXP_LN2_LO));
    let coef = EXP_TAYLOR.map(|c| _mm256_set1_ps(c));
    let mut s = [_mm256_setzero_ps(); 2];
    for c in chunks {
        for (h, sh) in s.iter_mut().enumerate() {
            // SAFETY: as above.
            let x = _mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * h)) }, vmax);
            let x = _mm256_max_ps(x, lo);
            let shifted = _mm256_add_ps(_mm256_mul_ps(x, log2e), magic);
            let n = _mm256_sub_ps(shifted, magic);
            let ni = _mm256_sub_epi32(_mm256_castps_si256(shifted), magic_bits);
            let f = _mm256_sub_ps(
                _mm256_sub_ps(x, _mm256_mul_ps(n, hi)),
                _mm256_mul_ps(n, lo2),
            );
            let mut p = coef[0];
            for &k in &coef[1..] {
                p = _mm256_add_ps(k, _mm256_mul_ps(f, p));
            }
            let e = _mm256_castsi256_ps(_mm256_add_epi32(
                _mm256_castps_si256(p),
                _mm256_slli_epi32::<23>(ni),
            ));
            *sh = _mm256_add_ps(*sh, e);
        }
    }
    let mut sa = [0.0f32; LANES];
    for (h, &sh) in s.iter().enumerate() {
        // SAFETY: a 16-float array, 8 floats at 8·h.
        unsafe { _mm256_storeu_ps(sa.as_mut_ptr().add(8 * h), sh) };
    }
    finish(max, &sa, tail)
}

/// log Σ exp(row): NaN if the row holds a NaN or an infinity.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    log_sum_exp_on(Cpu::active(), row)
}

/// [`log_sum_exp`] on the copy for `cpu`'s instruction set.
pub fn log_sum_exp_on(cpu: Cpu, row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match cpu.isa() {
        // SAFETY: a `Cpu` proving AVX-512 exists only where detection found it.
        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { lse_avx512(row) },
        // SAFETY: as above, for AVX2.
        Isa::Avx2 => return unsafe { lse_avx2(row) },
        Isa::Baseline => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = cpu;
    lse_generic(row)
}

/// [`log_sum_exp`] of every `v`-long row of `rows`, the rows split over
/// the thread pool (each row's result does not depend on the split).
pub fn log_sum_exp_rows(rows: &[f32], v: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let cpu = Cpu::active();
    rows.par_chunks_exact(v)
        .map(|r| log_sum_exp_on(cpu, r))
        .collect()
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
            // So does every copy this CPU can run (each instruction set's
            // own test, in `kernels::tests`, says which were compared).
            for cpu in Cpu::all() {
                assert_eq!(log_sum_exp_on(cpu, &row).to_bits(), got.to_bits(), "{len}");
            }
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
}
