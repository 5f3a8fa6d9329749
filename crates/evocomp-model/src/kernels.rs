//! Fused kernels for activations that live on burn's flex (CPU) backend.
//!
//! burn-flex runs a block's attention as a general masked kernel (after the
//! keys and values of grouped-query heads are copied out to every query
//! head, and RoPE is a matmul by a permutation), and SiLU as a scalar
//! `expf` per element followed by two more passes. Here the same arithmetic
//! runs in one pass each, straight on the flex tensors' buffers:
//!
//! - [`silu_mul`]: `silu(g) * u` with a vectorised exponential;
//! - [`causal_attention`]: RoPE, causal (optionally sliding-window) softmax
//!   attention and grouped-query heads over `[B, T, H, D]` projections, with
//!   no expanded keys, no transposed copies and no masked scores;
//! - [`linear`]: burn-flex's own matmul call, into a buffer that is neither
//!   zeroed nor copied.
//!
//! The model calls them only when its device is flex (`LlamaModel::fused`);
//! every other device runs burn's own operations. The loops are written so
//! that the compiler vectorises them, compiled three times (AVX-512, AVX2 +
//! FMA, the baseline) and picked at run time. Every sum has an order fixed
//! by the code (lanes, or sequential), multiply-adds are explicit `mul_add`
//! (one rounding on every instruction set; Rust fuses nothing on its own),
//! so all three give bit-identical results.

use burn::tensor::{Device, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// e^x for x ≤ 0 (a value minus its row's maximum), relative error below
/// 2e-7: x = n·ln 2 + f with n an integer and |f| ≤ ln2/2 (Cody–Waite: ln 2
/// in two parts, so f is exact to about 1e-10), e^f by its Taylor series to
/// degree 7, times 2^n through the exponent bits. Below -87 it returns about
/// 1e-38, which no sum of 2^31 terms notices. Integer steps wrap (a NaN
/// input gives garbage bits, never a panic): callers check for NaN apart.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    // A select, as an AVX-512 max with the floor computes it.
    let x = if x < EXP_FLOOR { EXP_FLOOR } else { x };
    // Round to nearest by adding 1.5 * 2^23: the sum's low mantissa bits
    // are then the rounded integer, read without a float-to-int conversion.
    let shifted = x * std::f32::consts::LOG2_E + EXP_MAGIC;
    let n = shifted - EXP_MAGIC;
    let ni = (shifted.to_bits() as i32).wrapping_sub(EXP_MAGIC.to_bits() as i32);
    let f = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    // Horner, innermost first.
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = c + f * p;
    }
    f32::from_bits((p.to_bits() as i32).wrapping_add(ni.wrapping_shl(23)) as u32)
}

/// [`exp_neg`]'s constants, which the vector copies (`lse.rs`) use too, so
/// every copy computes the same bits: the floor, ln 2 in two parts (few
/// mantissa bits in the high one, so n · hi is exact), the rounding magic
/// 1.5 · 2^23, and e^f's Taylor coefficients, innermost (1/7!) first.
pub(crate) const EXP_FLOOR: f32 = -87.0;
pub(crate) const EXP_LN2_HI: f32 = 0.693_359_4;
pub(crate) const EXP_LN2_LO: f32 = -2.121_944_4e-4;
pub(crate) const EXP_MAGIC: f32 = 12_582_912.0;
pub(crate) const EXP_TAYLOR: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `fn $on(cpu, args) -> ret` calling `$body(args)` compiled for the
/// instruction set `cpu` proves ([`isa::Cpu`]): AVX-512 (F/BW/DQ/VL), AVX2 +
/// FMA, or the baseline; and `fn $name(args)`, the same on
/// [`isa::Cpu::active`]. `$body` must be `#[inline(always)]` so each copy is
/// compiled with its own features.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident / $on:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$m])*
        #[allow(dead_code)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $on($crate::kernels::isa::Cpu::active(), $($arg),*)
        }

        /// The same, on the copy compiled for `cpu`'s instruction set.
        #[allow(dead_code)]
        $vis fn $on(cpu: $crate::kernels::isa::Cpu, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::kernels::isa::Isa;
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match cpu.isa() {
                    // SAFETY: a `Cpu` proving AVX-512 (or more) exists only
                    // where detection found every feature `v4` is compiled for.
                    Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { v4($($arg),*) },
                    // SAFETY: as above, for AVX2 + FMA and `v3`.
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = cpu;
            $body($($arg),*)
        }
    };
}

pub(crate) mod bf16;
pub mod isa;
pub mod lse;

/// Lanes of the fixed-order sums (a whole AVX-512 register of f32).
const LANES: usize = 16;

/// Whether `t` is an f32 tensor on flex (what the kernels take).
pub(crate) fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == burn::tensor::DType::F32 && t.device() == Device::flex()
}

/// The flex primitive of a tensor [`on_flex`] accepted, contiguous (a copy
/// only when it is a strided view).
fn flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
    let p = t
        .try_into_primitive::<Flex>()
        .unwrap_or_else(|e| unreachable!("checked to be on flex: {e:?}"));
    if p.layout().contiguous_offsets().is_some() {
        p
    } else {
        p.to_contiguous()
    }
}

/// The flex primitive of a tensor on flex as it lies (a view keeps its
/// strides), and its two strides.
fn flex_view(t: Tensor<2>) -> (FlexTensor, isize, isize) {
    let p = t
        .try_into_primitive::<Flex>()
        .unwrap_or_else(|e| unreachable!("checked to be on flex: {e:?}"));
    let (rs, cs) = (p.layout().strides()[0], p.layout().strides()[1]);
    (p, rs, cs)
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .unwrap_or_else(|| unreachable!("contiguous f32 (see `flex`)"))
}

fn to_tensor<const D: usize>(data: Vec<f32>, dims: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(data, dims)))
}

/// `x @ w` for `x` `[m, k]` and `w` `[k, n]` on flex: the same call to the
/// `gemm` crate that burn-flex makes (so the same bits), into a buffer
/// nothing zeroes or copies first. burn-flex writes each product into a
/// zeroed byte buffer that its allocator then copies to realign: a memset
/// and a memcpy of the whole output per matmul, 8% of a forward pass here
/// (the head's logits alone are 201 MB per batch of 1024 tokens). Tensors
/// elsewhere than flex get burn's `linear`.
pub(crate) fn linear(x: Tensor<2>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    let ([m, k], [k2, n]) = (x.dims(), w.dims());
    if !(on_flex(&x) && on_flex(&w)) || k != k2 || m == 0 || n == 0 || k == 0 {
        return burn::tensor::module::linear(x, w, bias);
    }
    let xf = flex(x);
    let xs = slice(&xf);
    // The weight as it lies: a transposed view (a large tied head read
    // through the embedding table) is passed by its strides, not copied.
    let (wf, w_rs, w_cs) = flex_view(w);
    if w_rs < 0 || w_cs < 0 {
        return burn::tensor::module::linear(
            Tensor::from_primitive::<Flex>(xf),
            Tensor::from_primitive::<Flex>(wf),
            bias,
        );
    }
    let ws = &wf.storage::<f32>()[wf.layout().start_offset()..];
    // burn-flex's threshold for splitting a product over the thread pool.
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `xs` is m x k, row-major (contiguous, see `flex`); `ws` holds
    // the k x n weight at the strides its layout gives; `out` has room for
    // m x n, and with `read_dst` false gemm writes every element of the
    // destination before `set_len` exposes it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            xs.as_ptr(),
            1,
            k as isize,
            ws.as_ptr(),
            w_cs,
            w_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(m * n);
    }
    let y = to_tensor(out, [m, n]);
    match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

#[inline(always)]
fn silu_mul_body(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        let x = *g;
        let e = exp_neg(-x.abs());
        // sigmoid(x) as burn computes it: 1 / (1 + e^-x) for x ≥ 0, e^x / (1 + e^x) below.
        let s = if x >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *g = x * s * u;
    }
}

dispatch!(fn silu_mul_slices / silu_mul_slices_on (g: &mut [f32], u: &[f32]) = silu_mul_body);

/// Elements per parallel piece of an elementwise kernel.
const PIECE: usize = 1 << 14;

/// `silu(g) * u` for two `[rows, cols]` tensors, in one pass over `g`'s
/// buffer where nothing else holds it (a new buffer otherwise). Tensors
/// elsewhere than flex get burn's operations.
pub(crate) fn silu_mul(g: Tensor<2>, u: Tensor<2>) -> Tensor<2> {
    if !(on_flex(&g) && on_flex(&u) && g.dims() == u.dims()) {
        return burn::tensor::activation::silu(g) * u;
    }
    let dims = g.dims();
    let (mut g, u) = (flex(g), flex(u));
    let u = slice(&u);
    let run = |g: &mut [f32]| {
        g.par_chunks_mut(PIECE)
            .zip(u.par_chunks(PIECE))
            .for_each(|(g, u)| silu_mul_slices(g, u));
    };
    let range = g.layout().contiguous_offsets();
    match (range, g.try_storage_mut::<f32>()) {
        (Some((start, end)), Some(buf)) => {
            run(&mut buf[start..end]);
            Tensor::from_primitive::<Flex>(g)
        }
        _ => {
            let mut out = slice(&g).to_vec();
            run(&mut out);
            to_tensor(out, dims)
        }
    }
}

/// One causal attention problem: `[B, T, H, D]` queries against `[B, T,
/// KVH, D]` keys and values, query head h reading key/value head
/// h / (H / KVH).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Keys further back than this many positions get no weight.
    pub window: Option<usize>,
    pub scale: f32,
}

/// An attention problem's values, row-major: `q` `[B, T, H, D]`, `k` and
/// `v` `[B, T, KVH, D]` (before RoPE), the RoPE tables `[positions, D]`.
#[derive(Clone, Copy)]
struct AttentionInputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    cos: &'a [f32],
    sin: &'a [f32],
}

/// HF's rotate-half RoPE of one head vector at one position, exactly as
/// `x * cos + rotate_half(x) * sin` computes it.
#[inline(always)]
fn rope(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at(half);
    let (out_lo, out_hi) = out.split_at_mut(half);
    let (cos_lo, cos_hi) = cos.split_at(half);
    let (sin_lo, sin_hi) = sin.split_at(half);
    for i in 0..half {
        out_lo[i] = lo[i] * cos_lo[i] + (-hi[i]) * sin_lo[i];
        out_hi[i] = hi[i] * cos_hi[i] + lo[i] * sin_hi[i];
    }
}

/// Keys scored at once, and value dimensions summed at once: 64 floats, four
/// AVX-512 registers of accumulators the compiler keeps in registers.
const BLOCK: usize = 64;

/// Queries scored together: each key block loaded once serves all of them
/// (4 x 4 AVX-512 registers of accumulators).
const QUERIES: usize = 4;

/// `Σ_i w[r][i] · rows_i[at..at + N]` for each of the `QUERIES` weight
/// rows `w[r]`, over the `row`-float rows of `rows` in order (each sum in
/// order, with multiply-adds, whatever the instruction set; as many rows as
/// the weight rows are long). With the keys transposed (a row per
/// dimension) and the queries as weights these are N keys' scores; with the
/// values (a row per key) and the softmax weights, N output dimensions.
#[inline(always)]
fn block_products<const N: usize>(
    rows: &[f32],
    row: usize,
    at: usize,
    w: [&[f32]; QUERIES],
) -> [[f32; N]; QUERIES] {
    let mut acc = [[0.0f32; N]; QUERIES];
    let [w0, w1, w2, w3] = w;
    for ((((x, &a), &b), &c), &d) in rows.chunks_exact(row).zip(w0).zip(w1).zip(w2).zip(w3) {
        let x = &x[at..at + N];
        let ws = [a, b, c, d];
        for r in 0..QUERIES {
            for l in 0..N {
                acc[r][l] = ws[r].mul_add(x[l], acc[r][l]);
            }
        }
    }
    acc
}

/// Keys scored at once at the end of a row (fewer wasted than a whole block).
const TAIL: usize = 16;

/// A row of scores scaled in place, its maximum, and whether it holds a
/// NaN or an infinity; the maximum and the detector in 16 lanes.
#[inline(always)]
fn scale_max(sc: &mut [f32], scale: f32) -> Option<f32> {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut bad = [0.0f32; LANES];
    let mut chunks = sc.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] *= scale;
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
            bad[l] += c[l] * 0.0;
        }
    }
    let mut max = f32::NEG_INFINITY;
    let mut badsum = 0.0f32;
    for l in 0..LANES {
        max = if m[l] > max { m[l] } else { max };
        badsum += bad[l];
    }
    for x in chunks.into_remainder() {
        *x *= scale;
        max = if *x > max { *x } else { max };
        badsum += *x * 0.0;
    }
    (!badsum.is_nan()).then_some(max)
}

/// A row of scores replaced by e^(s - max), and their sum in 16 lanes.
#[inline(always)]
fn exp_sum(sc: &mut [f32], max: f32) -> f32 {
    let mut sums = [0.0f32; LANES];
    let mut chunks = sc.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_neg(c[l] - max);
            sums[l] += c[l];
        }
    }
    let mut sum = 0.0f32;
    for x in sums {
        sum += x;
    }
    for x in chunks.into_remainder() {
        *x = exp_neg(*x - max);
        sum += *x;
    }
    sum
}

/// One (sequence, key/value head) task: the outputs `[T, rep, D]` of the
/// query heads that read this key/value head. Queries go `QUERIES` at a
/// time over the keys any of them sees; a query's scores for keys it does
/// not see are never used and its weights there are zero (adding an exact
/// zero), so every output is what the query alone would give.
#[inline(always)]
fn attention_task_body(
    s: &AttentionShape,
    x: &AttentionInputs,
    b: usize,
    kvh: usize,
    out: &mut [f32],
) {
    let AttentionInputs { q, k, v, cos, sin } = *x;
    let (t, hd, nh, nkv) = (s.len, s.head_dim, s.heads, s.kv_heads);
    let rep = nh / nkv;
    // Keys with RoPE, transposed: kt[d * kt_row + j], each row padded by a
    // block so a block of keys never reads past it. Values as rows padded
    // to whole blocks of dimensions: vv[j * v_row + d].
    let kt_row = t + BLOCK;
    let v_row = hd.next_multiple_of(BLOCK);
    let mut kt = vec![0.0f32; hd * kt_row];
    let mut vv = vec![0.0f32; t * v_row];
    let mut tmp = vec![0.0f32; hd];
    // bad_before[j]: how many of the first j value rows hold a NaN or an
    // infinity. A query's zero weight on such a row it does not see would
    // make its output NaN (0 × inf), so groups whose keys include one take
    // each query over its own keys alone.
    let mut bad_before = vec![0usize; t + 1];
    for j in 0..t {
        let row = (b * t + j) * nkv + kvh;
        let pos = j * hd..(j + 1) * hd;
        rope(
            &k[row * hd..(row + 1) * hd],
            &cos[pos.clone()],
            &sin[pos],
            &mut tmp,
        );
        for (d, &x) in tmp.iter().enumerate() {
            kt[d * kt_row + j] = x;
        }
        let vrow = &v[row * hd..(row + 1) * hd];
        vv[j * v_row..j * v_row + hd].copy_from_slice(vrow);
        bad_before[j + 1] = bad_before[j] + usize::from(vrow.iter().any(|x| !x.is_finite()));
    }
    let first_key = |i: usize| s.window.map_or(0, |w| (i + 1).saturating_sub(w));
    // Per group: the queries after RoPE, and their scores then weights (one
    // row each, over the group's keys).
    let mut qr = [(); QUERIES].map(|_| vec![0.0f32; hd]);
    let mut scores = [(); QUERIES].map(|_| vec![0.0f32; t + BLOCK]);
    for r in 0..rep {
        let h = kvh * rep + r;
        for i0 in (0..t).step_by(QUERIES) {
            let g = QUERIES.min(t - i0);
            for (qi, qrow) in qr.iter_mut().enumerate() {
                if qi < g {
                    let row = (b * t + i0 + qi) * nh + h;
                    let pos = (i0 + qi) * hd..(i0 + qi + 1) * hd;
                    rope(
                        &q[row * hd..(row + 1) * hd],
                        &cos[pos.clone()],
                        &sin[pos],
                        qrow,
                    );
                } else {
                    qrow.fill(0.0);
                }
            }
            let qw = qr.each_ref().map(|q| q.as_slice());
            // The group's keys: from the first query's first key to the last
            // query; whole blocks, then TAIL-sized ones.
            let lo = first_key(i0);
            let n = i0 + g - lo;
            let full = n / BLOCK * BLOCK;
            for jb in (0..full).step_by(BLOCK) {
                let acc = block_products::<BLOCK>(&kt, kt_row, lo + jb, qw);
                for (sc, a) in scores.iter_mut().zip(&acc) {
                    sc[jb..jb + BLOCK].copy_from_slice(a);
                }
            }
            for jb in (full..n).step_by(TAIL) {
                let acc = block_products::<TAIL>(&kt, kt_row, lo + jb, qw);
                for (sc, a) in scores.iter_mut().zip(&acc) {
                    sc[jb..jb + TAIL].copy_from_slice(a);
                }
            }
            let mut sums = [0.0f32; QUERIES];
            let mut nan = [false; QUERIES];
            let mut seen_of = [(); QUERIES].map(|_| 0..0);
            for (qi, sc) in scores.iter_mut().enumerate() {
                if qi >= g {
                    sc[..n].fill(0.0);
                    continue;
                }
                let i = i0 + qi;
                // This query's keys within the group's: first_key(i)..=i;
                // the others get weight zero.
                let seen = first_key(i) - lo..i + 1 - lo;
                seen_of[qi] = seen.clone();
                match scale_max(&mut sc[seen.clone()], s.scale) {
                    Some(max) => sums[qi] = exp_sum(&mut sc[seen.clone()], max),
                    None => nan[qi] = true,
                }
                sc[..seen.start].fill(0.0);
                sc[seen.end..n].fill(0.0);
            }
            if bad_before[lo + n] > bad_before[lo] {
                // A non-finite value among the group's keys: each query over
                // its own (the same sums: the group's path only adds exact
                // zeros before and after them).
                for qi in 0..g {
                    let seen = seen_of[qi].clone();
                    let w = &scores[qi][seen.clone()];
                    let rows = &vv[(lo + seen.start) * v_row..(lo + seen.end) * v_row];
                    for db in (0..hd).step_by(BLOCK) {
                        let acc = block_products::<BLOCK>(rows, v_row, db, [w; QUERIES]);
                        let wd = BLOCK.min(hd - db);
                        let at = ((i0 + qi) * rep + r) * hd + db;
                        for (od, &a) in out[at..at + wd].iter_mut().zip(&acc[0]) {
                            *od = if nan[qi] { f32::NAN } else { a / sums[qi] };
                        }
                    }
                }
                continue;
            }
            let pw = scores.each_ref().map(|sc| &sc[..n]);
            let rows = &vv[lo * v_row..(lo + n) * v_row];
            for db in (0..hd).step_by(BLOCK) {
                let acc = block_products::<BLOCK>(rows, v_row, db, pw);
                let w = BLOCK.min(hd - db);
                for qi in 0..g {
                    let at = ((i0 + qi) * rep + r) * hd + db;
                    let o = &mut out[at..at + w];
                    for (od, &a) in o.iter_mut().zip(&acc[qi]) {
                        *od = if nan[qi] { f32::NAN } else { a / sums[qi] };
                    }
                }
            }
        }
    }
}

dispatch!(fn attention_task / attention_task_on (s: &AttentionShape, x: &AttentionInputs, b: usize, kvh: usize, out: &mut [f32]) = attention_task_body);

/// Causal attention with RoPE at positions 0..T: `q` `[B, T, H, D]`, `k`
/// and `v` `[B, T, KVH, D]` (before RoPE), `cos`/`sin` the `[positions, D]`
/// tables (at least T rows), all f32 on flex ([`on_flex`]: the caller
/// checks). Returns `[B·T, H·D]`, the input of the output projection.
pub(crate) fn causal_attention(
    s: AttentionShape,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
) -> Tensor<2> {
    let (q, k, v) = (flex(q), flex(k), flex(v));
    let (cos, sin) = (flex(cos.clone()), flex(sin.clone()));
    let x = AttentionInputs {
        q: slice(&q),
        k: slice(&k),
        v: slice(&v),
        cos: slice(&cos),
        sin: slice(&sin),
    };
    let (t, hd, nh, nkv) = (s.len, s.head_dim, s.heads, s.kv_heads);
    let rep = nh / nkv;
    let per_task = rep * t * hd;
    let tasks: Vec<Vec<f32>> = (0..s.batch * nkv)
        .into_par_iter()
        .map(|task| {
            let mut out = vec![0.0f32; per_task];
            attention_task(&s, &x, task / nkv, task % nkv, &mut out);
            out
        })
        .collect();
    // [B, KVH][T, rep, D] into [B, T, H, D]: each position's heads of one
    // key/value head are adjacent in both, so a row is KVH copies.
    let mut out = Vec::with_capacity(s.batch * t * nh * hd);
    for per_b in tasks.chunks_exact(nkv) {
        for i in 0..t {
            for o in per_b {
                out.extend_from_slice(&o[i * rep * hd..(i + 1) * rep * hd]);
            }
        }
    }
    to_tensor(out, [s.batch * t, nh * hd])
}

#[cfg(test)]
mod tests {
    use super::isa::Cpu;
    use super::*;

    #[test]
    fn exp_neg_is_within_2e_7_of_exp() {
        for i in 0..=200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let want = (x as f64).exp();
            let rel = ((exp_neg(x) as f64) - want).abs() / want;
            assert!(rel < 2e-7, "x = {x}: relative error {rel}");
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1e4) > 0.0 && exp_neg(-1e4) < 1e-37);
        // NaN gives some value, never a panic (callers detect NaN apart).
        let _ = exp_neg(f32::NAN);
    }

    #[test]
    fn silu_mul_matches_the_scalar_formula() {
        let n = 3 * LANES + 5;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 - 30.0) * 0.731).collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 + (i as f32) * 0.01).collect();
        let mut base = g.clone();
        silu_mul_body(&mut base, &u);
        for (i, (&x, &y)) in g.iter().zip(&base).enumerate() {
            let want = x as f64 / (1.0 + (-(x as f64)).exp()) * u[i] as f64;
            assert!(
                (y as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{x}: {y} vs {want}"
            );
        }
        let mut dispatched = g.clone();
        silu_mul_slices(&mut dispatched, &u);
        assert_eq!(base, dispatched);
    }

    /// Attention inputs: `t` positions, 4 query heads on 2 key/value heads.
    struct AttentionCase {
        t: usize,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        cos: Vec<f32>,
        sin: Vec<f32>,
    }

    const HEADS: (usize, usize, usize) = (4, 2, 8);

    impl AttentionCase {
        fn new(t: usize) -> Self {
            let (nh, nkv, hd) = HEADS;
            let mut x = 0.37f32;
            let mut next = || {
                x = (x * 3.7 + 0.11).fract();
                x * 2.0 - 1.0
            };
            Self {
                t,
                q: (0..t * nh * hd).map(|_| next()).collect(),
                k: (0..t * nkv * hd).map(|_| next()).collect(),
                v: (0..t * nkv * hd).map(|_| next()).collect(),
                cos: (0..t * hd).map(|i| ((i % 13) as f32 * 0.3).cos()).collect(),
                sin: (0..t * hd).map(|i| ((i % 13) as f32 * 0.3).sin()).collect(),
            }
        }

        /// Every key/value head's task output, on `cpu` (None: the body as
        /// compiled for the baseline, called directly).
        fn run(&self, cpu: Option<Cpu>, window: Option<usize>) -> Vec<Vec<f32>> {
            let (nh, nkv, hd) = HEADS;
            let s = AttentionShape {
                batch: 1,
                len: self.t,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                window,
                scale: 0.35,
            };
            let x = AttentionInputs {
                q: &self.q,
                k: &self.k,
                v: &self.v,
                cos: &self.cos,
                sin: &self.sin,
            };
            (0..nkv)
                .map(|kvh| {
                    let mut out = vec![0.0f32; nh / nkv * self.t * hd];
                    match cpu {
                        Some(cpu) => attention_task_on(cpu, &s, &x, 0, kvh, &mut out),
                        None => attention_task_body(&s, &x, 0, kvh, &mut out),
                    }
                    out
                })
                .collect()
        }
    }

    /// Every kernel copy compiled for `cpu`'s instruction set gives the
    /// baseline copy's bits: SiLU-gate, attention (with and without a
    /// window, rows longer than a block, a group of queries that does not
    /// divide the length), log-sum-exp and bf16 products.
    fn copies_give_the_baseline_bits(cpu: Cpu) {
        let base = Cpu::with(isa::Isa::Baseline).expect("every CPU has the baseline");
        let n = 5 * LANES + 3;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 - 40.0) * 0.531).collect();
        let u: Vec<f32> = (0..n).map(|i| 1.0 - (i as f32) * 0.013).collect();
        let (mut a, mut b) = (g.clone(), g.clone());
        silu_mul_slices_on(base, &mut a, &u);
        silu_mul_slices_on(cpu, &mut b, &u);
        assert_eq!(a, b, "silu_mul on {}", cpu.isa());

        let case = AttentionCase::new(BLOCK + 23);
        for window in [None, Some(5), Some(BLOCK + 1)] {
            let want = case.run(None, window);
            assert!(want.iter().flatten().all(|x| x.is_finite()));
            assert_eq!(case.run(Some(base), window), want, "window {window:?}");
            assert_eq!(
                case.run(Some(cpu), window),
                want,
                "attention on {}, window {window:?}",
                cpu.isa()
            );
        }

        for len in [1usize, 15, 16, 17, 33, 1000, 49_152] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 30.0)
                .collect();
            assert_eq!(
                lse::log_sum_exp_on(cpu, &row).to_bits(),
                lse::log_sum_exp_on(base, &row).to_bits(),
                "log-sum-exp of {len} on {}",
                cpu.isa()
            );
        }

        let d = Device::flex();
        for (m, k, n) in [(13, 7, 33), (30, 64, 70), (5, 129, 32)] {
            let x = Tensor::<2>::random([m, k], burn::tensor::Distribution::Default, &d);
            let w = Tensor::<2>::random([k, n], burn::tensor::Distribution::Default, &d);
            let bits = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(
                bits(bf16::linear_on(cpu, x.clone(), w.clone(), None)),
                bits(bf16::linear_on(base, x, w, None)),
                "bf16 products {m}x{k}x{n} on {}",
                cpu.isa()
            );
        }
    }

    #[test]
    #[cfg_attr(not(evocomp_host_avx2), ignore = "this machine has no AVX2 + FMA")]
    fn avx2_copies_give_the_baseline_bits() {
        copies_give_the_baseline_bits(Cpu::with(isa::Isa::Avx2).expect("no AVX2 + FMA here"));
    }

    #[test]
    #[cfg_attr(not(evocomp_host_avx512), ignore = "this machine has no AVX-512")]
    fn avx512_copies_give_the_baseline_bits() {
        copies_give_the_baseline_bits(Cpu::with(isa::Isa::Avx512).expect("no AVX-512 here"));
    }

    /// A NaN or infinite key and value at one position poison the outputs of
    /// the queries that see it and no other: not the earlier queries of its
    /// group of four (their weight on it is zero, and 0 × inf is NaN), nor
    /// those whose window has passed it. Every copy.
    #[test]
    fn a_poisoned_key_reaches_only_the_queries_that_see_it() {
        let (nh, nkv, hd) = HEADS;
        let rep = nh / nkv;
        let t = 2 * QUERIES + 3;
        let clean = AttentionCase::new(t);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for j in [1, QUERIES + 2] {
                for window in [None, Some(2)] {
                    let mut case = AttentionCase::new(t);
                    // Position j, key/value head 0: key and value.
                    case.k[j * nkv * hd] = bad;
                    case.v[j * nkv * hd + 3] = bad;
                    let want = clean.run(None, window);
                    for cpu in Cpu::all() {
                        let got = case.run(Some(cpu), window);
                        // Head 1 never reads key/value head 0.
                        assert_eq!(got[1], want[1]);
                        for i in 0..t {
                            let sees = i >= j && window.is_none_or(|w| i < j + w);
                            for r in 0..rep {
                                let at = (i * rep + r) * hd;
                                let o = &got[0][at..at + hd];
                                if sees {
                                    assert!(o.iter().all(|x| x.is_nan()), "{bad} at {j}: {i}");
                                } else {
                                    assert_eq!(o, &want[0][at..at + hd], "{bad} at {j}: {i}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The same bits as burn's `linear`, below and above the size where the
    /// product is split over the thread pool, with a bias, and for a weight
    /// that is a transposed view (passed by its strides).
    #[test]
    fn linear_gives_burns_bits() {
        use burn::tensor::Distribution;
        let d = Device::flex();
        for (m, k, n) in [(7, 5, 3), (300, 200, 260)] {
            let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &d);
            let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &d);
            let wt = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &d);
            let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &d);
            let bits = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            let burn_linear = burn::tensor::module::linear;
            assert_eq!(
                bits(linear(x.clone(), w.clone(), None)),
                bits(burn_linear(x.clone(), w.clone(), None))
            );
            assert_eq!(
                bits(linear(x.clone(), w.clone(), Some(b.clone()))),
                bits(burn_linear(x.clone(), w, Some(b)))
            );
            assert_eq!(
                bits(linear(x.clone(), wt.clone().transpose(), None)),
                bits(burn_linear(x, wt.transpose(), None))
            );
        }
    }

    #[test]
    fn a_nan_query_gives_nan_outputs_not_numbers() {
        let d = Device::flex();
        let s = AttentionShape {
            batch: 1,
            len: 3,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            window: None,
            scale: 0.5,
        };
        let mut qv = vec![0.1f32; 3 * 2 * 4];
        qv[2 * 8] = f32::NAN; // position 2, head 0
        let q = Tensor::<4>::from_data(TensorData::new(qv, [1, 3, 2, 4]), &d);
        let kv = || Tensor::<4>::from_data(TensorData::new(vec![0.2f32; 12], [1, 3, 1, 4]), &d);
        let table = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 16], [4, 4]), &d);
        let zeros = Tensor::<2>::zeros([4, 4], &d);
        let o = causal_attention(s, q, kv(), kv(), &table, &zeros);
        let o: Vec<f32> = o.into_data().try_to_vec::<f32>().unwrap();
        // [T, H·D]: position 2's head 0 is NaN, every other output is 0.2.
        for (i, x) in o.iter().enumerate() {
            if (16..20).contains(&i) {
                assert!(x.is_nan(), "output {i}: {x}");
            } else {
                assert!((x - 0.2).abs() < 1e-6, "output {i}: {x}");
            }
        }
    }
}
