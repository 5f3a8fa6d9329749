//! Quantisation of f32 rows to ggml blocks, computed the way llama.cpp's
//! `ggml_quantize_chunk` does it (ggml-quants.c): the `*_ref` quantizers
//! without an importance matrix, the `*_impl` ones with it. Same block
//! layouts, same scale searches, same f32 arithmetic in the same order (no
//! fused multiply-adds, as ggml-base is compiled), so the bytes are
//! llama.cpp's bytes.

// The loops follow ggml-quants.c index for index, so that a reader can check
// them line by line against the C.
#![allow(clippy::needless_range_loop)]

use crate::GgmlType;
use crate::dequant::IQ4_NL_VALUES;
use half::{bf16, f16};

/// Why rows could not be quantised.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "quantising to {0} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL)"
    )]
    Unsupported(GgmlType),
    #[error("{ty} needs rows that are whole blocks of {block}; a row has {n_per_row} values")]
    RowLength {
        ty: GgmlType,
        block: usize,
        n_per_row: usize,
    },
    #[error("{n_values} values are not whole rows of {n_per_row}")]
    Rows { n_values: usize, n_per_row: usize },
    #[error("the importance matrix has {got} values, a row has {n_per_row}")]
    Imatrix { got: usize, n_per_row: usize },
    #[error("value {index} is not finite ({value})")]
    NonFinite { index: usize, value: f32 },
}

/// Whether [`quantize`] can write this type.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
    )
}

/// Quantise `data` (rows of `n_per_row` values) to `ty`, as llama.cpp's
/// `ggml_quantize_chunk` does. `imatrix`, one importance weight per column,
/// selects llama.cpp's importance-weighted quantizers; types that ignore it
/// there (Q8_0 and the float types) ignore it here.
pub fn quantize(
    ty: GgmlType,
    data: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>, QuantizeError> {
    if !can_quantize(ty) {
        return Err(QuantizeError::Unsupported(ty));
    }
    let (block, block_bytes) = ty.block_geometry();
    if n_per_row == 0 || !n_per_row.is_multiple_of(block) {
        return Err(QuantizeError::RowLength {
            ty,
            block,
            n_per_row,
        });
    }
    if !data.len().is_multiple_of(n_per_row) {
        return Err(QuantizeError::Rows {
            n_values: data.len(),
            n_per_row,
        });
    }
    if let Some(w) = imatrix
        && w.len() != n_per_row
    {
        return Err(QuantizeError::Imatrix {
            got: w.len(),
            n_per_row,
        });
    }
    if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantizeError::NonFinite { index, value });
    }
    let mut out = Vec::with_capacity(data.len() / block * block_bytes);
    use GgmlType::*;
    match ty {
        F32 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        F16 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        BF16 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        Q8_0 => data.chunks_exact(32).for_each(|x| q8_0(x, &mut out)),
        IQ4_NL => {
            for row in data.chunks_exact(n_per_row) {
                for (ib, x) in row.chunks_exact(32).enumerate() {
                    iq4_nl(x, imatrix.map(|w| &w[32 * ib..32 * ib + 32]), &mut out)
                }
            }
        }
        _ => {
            for row in data.chunks_exact(n_per_row) {
                match (ty, imatrix) {
                    (Q4_0, None) => row.chunks_exact(32).for_each(|x| q4_0(x, &mut out)),
                    (Q4_1, None) => row.chunks_exact(32).for_each(|x| q4_1(x, &mut out)),
                    (Q5_0, None) => row.chunks_exact(32).for_each(|x| q5_0(x, &mut out)),
                    (Q5_1, None) => row.chunks_exact(32).for_each(|x| q5_1(x, &mut out)),
                    (Q2_K, None) => row.chunks_exact(256).for_each(|x| q2_k(x, &mut out)),
                    (Q3_K, None) => row.chunks_exact(256).for_each(|x| q3_k(x, &mut out)),
                    (Q4_K, None) => row.chunks_exact(256).for_each(|x| qk_ref(x, 15, &mut out)),
                    (Q5_K, None) => row.chunks_exact(256).for_each(|x| qk_ref(x, 31, &mut out)),
                    (Q6_K, None) => row.chunks_exact(256).for_each(|x| q6_k(x, None, &mut out)),
                    (Q4_0 | Q5_0, Some(w)) => legacy_imatrix(ty, row, w, false, &mut out),
                    (Q4_1 | Q5_1, Some(w)) => legacy_imatrix(ty, row, w, true, &mut out),
                    (Q2_K, Some(w)) => {
                        for (x, qw) in row.chunks_exact(256).zip(w.chunks_exact(256)) {
                            q2_k_imatrix(x, qw, &mut out)
                        }
                    }
                    (Q3_K, Some(w)) => {
                        for (x, qw) in row.chunks_exact(256).zip(w.chunks_exact(256)) {
                            q3_k_imatrix(x, qw, &mut out)
                        }
                    }
                    (Q4_K | Q5_K, Some(w)) => {
                        let nmax = if ty == Q4_K { 15 } else { 31 };
                        for (x, qw) in row.chunks_exact(256).zip(w.chunks_exact(256)) {
                            qk_imatrix(x, qw, nmax, &mut out)
                        }
                    }
                    (Q6_K, Some(w)) => {
                        for (x, qw) in row.chunks_exact(256).zip(w.chunks_exact(256)) {
                            q6_k(x, Some(qw), &mut out)
                        }
                    }
                    _ => unreachable!("can_quantize lists every type handled here"),
                }
            }
        }
    }
    debug_assert_eq!(out.len(), data.len() / block * block_bytes);
    Ok(out)
}

const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick.
#[inline]
fn nearest_int(fval: f32) -> i32 {
    debug_assert!(fval.abs() <= 4194303.0);
    let val = fval + 12582912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

#[inline]
fn fp16(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// The f32 value an f16 written from `v` reads back as.
#[inline]
fn fp16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&fp16(d));
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// The value of largest magnitude (the first one, as ggml's loop keeps it).
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// C's `(int8_t)` of a float in range: truncation toward zero.
#[inline]
fn trunc_u8(v: f32) -> u8 {
    v as i8 as u8
}

fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&fp16(d));
    for j in 0..16 {
        let xi0 = trunc_u8(x[j] * id + 8.5).min(15);
        let xi1 = trunc_u8(x[j + 16] * id + 8.5).min(15);
        out.push(xi0 | (xi1 << 4));
    }
}

fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&fp16(d));
    out.extend_from_slice(&fp16(min));
    for j in 0..16 {
        let xi0 = trunc_u8((x[j] - min) * id + 0.5).min(15);
        let xi1 = trunc_u8((x[j + 16] - min) * id + 0.5).min(15);
        out.push(xi0 | (xi1 << 4));
    }
}

/// Packs 32 five-bit values into `qh` (the fifth bits) and 16 bytes of nibbles.
fn push_q5(l: &[u8; 32], out: &mut Vec<u8>) {
    let mut qh = 0u32;
    for j in 0..16 {
        qh |= ((l[j] as u32 & 0x10) >> 4) << j;
        qh |= ((l[j + 16] as u32 & 0x10) >> 4) << (j + 16);
    }
    out.extend_from_slice(&qh.to_le_bytes());
    for j in 0..16 {
        out.push((l[j] & 0x0f) | ((l[j + 16] & 0x0f) << 4));
    }
}

fn q5_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&fp16(d));
    let mut l = [0u8; 32];
    for (li, v) in l.iter_mut().zip(x) {
        *li = trunc_u8(v * id + 16.5).min(31);
    }
    push_q5(&l, out);
}

fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&fp16(d));
    out.extend_from_slice(&fp16(min));
    let mut l = [0u8; 32];
    for (li, v) in l.iter_mut().zip(x) {
        // ggml casts to uint8_t without a clamp; the value is at most 31.5.
        *li = ((v - min) * id + 0.5) as u8;
    }
    push_q5(&l, out);
}

/// Q4_0/Q5_0 (symmetric, `make_qx_quants`) and Q4_1/Q5_1 (with a minimum,
/// `make_qkx3_quants`) with importance weights, per row.
fn legacy_imatrix(ty: GgmlType, row: &[f32], qw_row: &[f32], with_min: bool, out: &mut Vec<u8>) {
    let mut sum_x2 = 0.0f32;
    for v in row {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / row.len() as f32;
    let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
    for (xb, qw) in row.chunks_exact(32).zip(qw_row.chunks_exact(32)) {
        let mut weight = [0.0f32; 32];
        for j in 0..32 {
            weight[j] = qw[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        let mut l = [0u8; 32];
        if with_min {
            let mut laux = [0u8; 32];
            let nmax = if five { 31 } else { 15 };
            let (d, min) = make_qkx3_quants(
                xb,
                Some(&weight),
                nmax,
                &mut l,
                &mut laux,
                -0.9,
                0.05,
                36,
                false,
            );
            out.extend_from_slice(&fp16(d));
            out.extend_from_slice(&fp16(-min));
        } else {
            let mut li = [0i8; 32];
            let nmax = if five { 16 } else { 8 };
            let d = make_qx_quants(xb, nmax, &mut li, 1, Some(&weight));
            out.extend_from_slice(&fp16(d));
            for (a, b) in l.iter_mut().zip(li) {
                *a = b as u8;
            }
        }
        if five {
            push_q5(&l, out);
        } else {
            for j in 0..16 {
                out.push(l[j] | (l[j + 16] << 4));
            }
        }
    }
}

/// The weight `make_qx_quants` gives element `x` with `rmse_type` and no
/// importance weights.
#[inline]
fn rmse_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// ggml's `make_qx_quants`: a symmetric scale for levels `-nmax..nmax-1`
/// (stored as `L = l + nmax`), refined over 18 trial scales.
fn make_qx_quants(
    x: &[f32],
    nmax: i32,
    l_out: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let w_at = |i: usize| match qw {
        Some(w) => w[i],
        None => rmse_weight(rmse_type, x[i]),
    };
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = w_at(i);
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = w_at(i);
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse`: levels `-nmax..nmax-1`, refined by
/// moving one element at a time.
fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let max = signed_max(x);
    if max.abs() < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out[..n].iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// ggml's `make_qkx2_quants`: a scale and a minimum for levels `0..=nmax`,
/// searched over `nstep + 1` trial scales. Returns (scale, -min).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    qkx_search(
        x,
        |i| weights[i],
        (min, max, sum_w, sum_x),
        nmax,
        l_out,
        laux,
        (rmin, rdelta, nstep),
        use_mad,
    )
}

/// ggml's `make_qkx3_quants`: as `make_qkx2_quants`, with `x²` as the weights
/// when none are given and `max <= min` as the degenerate case.
#[allow(clippy::too_many_arguments)]
fn make_qkx3_quants(
    x: &[f32],
    weights: Option<&[f32]>,
    nmax: i32,
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let w_at = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w_at(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = w_at(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    qkx_search(
        x,
        w_at,
        (min, max, sum_w, sum_x),
        nmax,
        l_out,
        laux,
        (rmin, rdelta, nstep),
        use_mad,
    )
}

/// The search both `make_qkx*_quants` share once min, max and the weight sums
/// are known.
#[allow(clippy::too_many_arguments)]
fn qkx_search(
    x: &[f32],
    w_at: impl Fn(usize) -> f32,
    (mut min, max, sum_w, sum_x): (f32, f32, f32, f32),
    nmax: i32,
    l_out: &mut [u8],
    laux: &mut [u8],
    (rmin, rdelta, nstep): (f32, f32, i32),
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += w_at(i) * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = w_at(i);
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w_at(i) * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qp_quants`: a positive scale for levels `0..=nmax` of the
/// sub-block scales (or minimums), weighted.
fn make_qp_quants(x: &[f32], nmax: i32, l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        // ggml reads back the uint8_t it stored.
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let lf = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * lf;
            let mut sl2 = suml2 - w * lf * lf;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// 2-bit levels of 256 values into 64 bytes, four 32-value runs per byte.
fn push_2bit(l: &[u8; 256], out: &mut Vec<u8>) {
    for j in (0..256).step_by(128) {
        for k in 0..32 {
            out.push(l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6));
        }
    }
}

fn q2_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 16];
    let mut weights = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    let q4scale = 15.0f32;
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            3,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut sc = [0u8; 16];
    let d = if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        fp16(max_scale / q4scale)
    } else {
        fp16(0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        fp16(max_min / q4scale)
    } else {
        fp16(0.0)
    };
    let (df, dminf) = (
        f16::from_le_bytes(d).to_f32(),
        f16::from_le_bytes(dmin).to_f32(),
    );
    requantize_min(
        x,
        &sc.map(|s| s & 0xf),
        &sc.map(|s| s >> 4),
        df,
        dminf,
        16,
        3,
        &mut l,
    );
    out.extend_from_slice(&sc);
    push_2bit(&l, out);
    out.extend_from_slice(&d);
    out.extend_from_slice(&dmin);
}

/// The last step of every K-quant with a minimum: each sub-block's levels
/// recomputed from the stored (f16) scales, `(x + dm) / d` rounded.
#[allow(clippy::too_many_arguments)]
fn requantize_min(
    x: &[f32],
    sc: &[u8],
    m: &[u8],
    d_all: f32,
    dmin_all: f32,
    sub: usize,
    nmax: i32,
    l: &mut [u8; 256],
) {
    for j in 0..256 / sub {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m[j] as f32;
        for ii in 0..sub {
            l[sub * j + ii] = nearest_int((x[sub * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn q2_k_imatrix(x: &[f32], qw_all: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 16];
    let mut mins = [0.0f32; 16];
    let mut scales = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let mut sumx2 = 0.0f32;
    for v in x {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / 256.0;
    for j in 0..16 {
        let qw = &qw_all[16 * j..16 * j + 16];
        for k in 0..16 {
            let v = x[16 * j + k];
            weight[k] = qw[k] * (sigma2 + v * v).sqrt();
        }
        for w in weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx3_quants(
            &x[16 * j..16 * j + 16],
            Some(&weight),
            3,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.9,
            0.05,
            36,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
    let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
    let (d, dmin) = (fp16(dm), fp16(mm));
    let mut sc = [0u8; 16];
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    requantize_min(
        x,
        &sc.map(|s| s & 0xf),
        &sc.map(|s| s >> 4),
        fp16_round(dm),
        fp16_round(mm),
        16,
        3,
        &mut l,
    );
    out.extend_from_slice(&sc);
    push_2bit(&l, out);
    out.extend_from_slice(&d);
    out.extend_from_slice(&dmin);
}

/// Packs sixteen 6-bit Q3_K scales (0..63) into 12 bytes.
fn pack_q3_scales(ls: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            s[j] = l & 0xf;
        } else {
            s[j - 8] |= (l & 0xf) << 4;
        }
        s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    s
}

/// Q3_K's last steps: levels from the stored scales, the high bits into
/// `hmask`, and the block written in its layout.
fn finish_q3_k(x: &[f32], scales: [u8; 12], d: [u8; 2], l: &mut [i8; 256], out: &mut Vec<u8>) {
    let df = f16::from_le_bytes(d).to_f32();
    for j in 0..16 {
        let low = if j < 8 {
            scales[j] & 0xf
        } else {
            scales[j - 8] >> 4
        };
        let sc = (low | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let dd = df * sc as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dd).clamp(-4, 3) + 4) as i8;
        }
    }
    let mut hmask = [0u8; 32];
    let mut lu = [0u8; 256];
    for j in 0..256 {
        let mut v = l[j] as u8;
        if v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        lu[j] = v;
    }
    out.extend_from_slice(&hmask);
    push_2bit(&lu, out);
    out.extend_from_slice(&scales);
    out.extend_from_slice(&d);
}

fn q3_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut l[16 * j..16 * j + 16]);
        let s = scales[j].abs();
        if s > amax {
            amax = s;
            max_scale = scales[j];
        }
    }
    let mut packed = [0u8; 12];
    let d;
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0u8; 16];
        for j in 0..16 {
            // int8_t l = nearest_int(...); l = MAX(-32, MIN(31, l)) + 32;
            let v = nearest_int(iscale * scales[j]) as i8 as i32;
            ls[j] = (v.clamp(-32, 31) + 32) as u8;
        }
        packed = pack_q3_scales(&ls);
        d = fp16(1.0 / iscale);
    } else {
        d = fp16(0.0);
    }
    finish_q3_k(x, packed, d, &mut l, out);
}

fn q3_k_imatrix(x: &[f32], qw_all: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; 256];
    let mut scales = [0.0f32; 16];
    let mut weight = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut sumx2 = 0.0f32;
    for v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / 256.0;
    for j in 0..16 {
        let qw = &qw_all[16 * j..16 * j + 16];
        for k in 0..16 {
            let v = x[16 * j + k];
            weight[k] = qw[k] * (sigma2 + v * v).sqrt();
        }
        let mut sumw = 0.0f32;
        for w in weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants(
            &x[16 * j..16 * j + 16],
            4,
            &mut l[16 * j..16 * j + 16],
            1,
            Some(&weight),
        );
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(&scales, 32, &mut ls, 1, Some(&sw));
    let packed = pack_q3_scales(&ls.map(|v| v as u8));
    finish_q3_k(x, packed, fp16(d_block), &mut l, out);
}

/// Packs eight 6-bit scales and minimums of Q4_K/Q5_K into 12 bytes.
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// ggml's `get_scale_min_k4`.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K/Q5_K's last steps: levels from the stored scales, then the block.
fn finish_qk(
    x: &[f32],
    scales: [u8; 12],
    d: [u8; 2],
    dmin: [u8; 2],
    nmax: i32,
    l: &mut [u8; 256],
    out: &mut Vec<u8>,
) {
    let (sc, m): (Vec<u8>, Vec<u8>) = (0..8).map(|j| scale_min_k4(j, &scales)).unzip();
    let (df, dminf) = (
        f16::from_le_bytes(d).to_f32(),
        f16::from_le_bytes(dmin).to_f32(),
    );
    requantize_min(x, &sc, &m, df, dminf, 32, nmax, l);
    out.extend_from_slice(&d);
    out.extend_from_slice(&dmin);
    out.extend_from_slice(&scales);
    if nmax == 15 {
        for j in (0..256).step_by(64) {
            for k in 0..32 {
                out.push(l[j + k] | (l[j + k + 32] << 4));
            }
        }
    } else {
        let mut qh = [0u8; 32];
        let mut ql = [0u8; 128];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (chunk, n) in (0..256).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * chunk + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        out.extend_from_slice(&qh);
        out.extend_from_slice(&ql);
    }
}

/// Q4_K (`nmax` 15) and Q5_K (31) without importance weights.
fn qk_ref(x: &[f32], nmax: i32, out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let (rmin, nstep) = if nmax == 15 { (-1.0, 20) } else { (-0.5, 15) };
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            xs,
            &weights,
            nmax,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_k4_scales(&ls, &lm);
    finish_qk(
        x,
        packed,
        fp16(max_scale / 63.0),
        fp16(max_min / 63.0),
        nmax,
        &mut l,
        out,
    );
}

/// Q4_K (`nmax` 15) and Q5_K (31) with importance weights.
fn qk_imatrix(x: &[f32], qw_all: &[f32], nmax: i32, out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let mut sum_x2 = 0.0f32;
    for v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / 256.0;
    for j in 0..8 {
        let qw = &qw_all[32 * j..32 * j + 32];
        for k in 0..32 {
            let v = x[32 * j + k];
            weights[k] = qw[k] * (sigma2 + v * v).sqrt();
        }
        let mut sumw = 0.0f32;
        for w in weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(
            &x[32 * j..32 * j + 32],
            Some(&weights),
            nmax,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            -0.9,
            0.05,
            36,
            false,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    // ggml clamps the levels to 63 here for Q5_K only.
    if nmax == 31 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    let packed = pack_k4_scales(&ls, &lm);
    finish_qk(x, packed, fp16(d_block), fp16(m_block), nmax, &mut l, out);
}

fn q6_k(x: &[f32], qw_all: Option<&[f32]>, out: &mut Vec<u8>) {
    let mut l = [0i8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let qw = qw_all.map(|w| &w[16 * ib..16 * ib + 16]);
        let s = make_qx_quants(
            &x[16 * ib..16 * ib + 16],
            32,
            &mut l[16 * ib..16 * ib + 16],
            1,
            qw,
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.extend(std::iter::repeat_n(0u8, 210));
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = fp16(1.0 / iscale);
    let df = f16::from_le_bytes(d).to_f32();
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..16 {
        let dd = df * sc[j] as f32;
        if dd == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dd).clamp(-32, 31) + 32) as i8;
        }
    }
    let lu = l.map(|v| v as u8);
    let mut ql = [0u8; 128];
    let mut qh = [0u8; 64];
    for (half, j) in (0..256).step_by(128).enumerate() {
        for k in 0..32 {
            let q1 = lu[j + k] & 0xf;
            let q2 = lu[j + k + 32] & 0xf;
            let q3 = lu[j + k + 64] & 0xf;
            let q4 = lu[j + k + 96] & 0xf;
            ql[64 * half + k] = q1 | (q3 << 4);
            ql[64 * half + k + 32] = q2 | (q4 << 4);
            qh[32 * half + k] = (lu[j + k] >> 4)
                | ((lu[j + k + 32] >> 4) << 2)
                | ((lu[j + k + 64] >> 4) << 4)
                | ((lu[j + k + 96] >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend_from_slice(&d);
}

/// ggml's `best_index_int8`: the index of the level nearest `x`.
fn best_index_int8(val: &[i8; 16], x: f32) -> usize {
    let n = val.len();
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[n - 1] as f32 {
        return n - 1;
    }
    let (mut ml, mut mu) = (0usize, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// IQ4_NL: ggml's `quantize_row_iq4_nl_impl` with one 32-value block per
/// super-block and 7 trial scales each way.
fn iq4_nl(x: &[f32], qw: Option<&[f32]>, out: &mut Vec<u8>) {
    let values = &IQ4_NL_VALUES;
    let ntry = 7i32;
    let mut sigma2 = 0.0f32;
    for v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / 32.0;
    let mut weight = [0.0f32; 32];
    for j in 0..32 {
        weight[j] = match qw {
            Some(w) => w[j] * (sigma2 + x[j] * x[j]).sqrt(),
            None => x[j] * x[j],
        };
    }
    let max = signed_max(x);
    let scale = if max.abs() < GROUP_MAX_EPS {
        0.0
    } else {
        let v0 = values[0] as f32;
        let mut d = -max / v0;
        let mut id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for j in 0..32 {
            let q = values[best_index_int8(values, id * x[j])] as f32;
            let w = weight[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -ntry..=ntry {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..32 {
                let q = values[best_index_int8(values, id * x[j])] as f32;
                let w = weight[j];
                sumqx += w * q * x[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        d
    };
    out.extend_from_slice(&fp16(scale));
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let l: Vec<u8> = x
        .iter()
        .map(|v| best_index_int8(values, id * v) as u8)
        .collect();
    for j in 0..16 {
        out.push(l[j] | (l[16 + j] << 4));
    }
}
