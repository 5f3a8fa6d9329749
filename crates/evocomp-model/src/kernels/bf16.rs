//! Linear layers with bf16 products and f32 sums ([`Matmul::Bf16`]): both
//! inputs of every product rounded to bf16 (to nearest, ties to even), the
//! products summed in f32, as a GPU's bf16 matmul with f32 accumulation
//! computes them.
//!
//! On a CPU with AVX512_BF16 one `vdpbf16ps` does 16 lanes × 2 products, so
//! a tile runs at twice the f32 multiply-add rate. The instruction adds, per
//! lane, the odd pair's product and then the even pair's to the running sum,
//! rounding after each (Intel's definition; checked bit for bit on AMD Zen 4
//! on 3.2 million random lanes): a product of two bf16 values is exact in
//! f32, so each step is one f32 fused multiply-add. Every other CPU runs
//! exactly those multiply-adds in that order ([`tile_emulated`]), so the
//! bits do not depend on the CPU. The instruction treats denormal inputs
//! as zero; the conversions here flush them to zero on every path, so no
//! input ever is one. (It also flushes a denormal running sum to zero, which
//! the emulation does not: a sum below 1.2e-38 in magnitude, never seen in a
//! model's activations.)
//!
//! Layout: the activations are converted once per call into bf16 pairs
//! along k (one u32 per pair), `[k/2][12]` per tile of 12 rows; each task
//! packs one panel of 32 weight columns the same way (`[k/2][32]` pairs)
//! and runs tiles of 12 rows × 32 columns over the whole of k, the sums held
//! in registers: per pair step two panel loads, 12 broadcasts, 24
//! `vdpbf16ps`.
//!
//! [`Matmul::Bf16`]: crate::Matmul::Bf16

use super::isa::Cpu;
use super::{flex, flex_view, on_flex, slice, to_tensor};
use burn::tensor::{DType, Tensor};
use burn_flex::Flex;
use rayon::prelude::*;

/// Columns per packed weight panel: two AVX-512 registers of f32 sums.
const NR: usize = 32;
/// Rows per tile: 2 × 12 AVX-512 accumulators, 2 weight registers and a
/// broadcast fit the 32 registers.
const MR: usize = 12;
/// Rows the emulated tile sums together (4 × 32 accumulators).
const MR_EMU: usize = 4;

/// `x` rounded to bf16 (to nearest, ties to even), as the upper half of its
/// bits; a denormal becomes a zero of its sign, a NaN a quiet NaN.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let abs = u & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        ((u >> 16) | 0x40) as u16
    } else if abs < 0x0080_0000 {
        ((u >> 16) & 0x8000) as u16
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }
}

/// A stored bf16 value with a denormal flushed to a zero of its sign.
#[inline(always)]
fn flush(h: u16) -> u16 {
    if h & 0x7f80 == 0 { h & 0x8000 } else { h }
}

/// The f32 value of the even (low) and odd (high) halves of a pair.
#[inline(always)]
fn halves(pair: u32) -> (f32, f32) {
    (
        f32::from_bits(pair << 16),
        f32::from_bits(pair & 0xffff_0000),
    )
}

/// Rows of `x` (`[m, k]`, row-major; whole tiles of [`MR`] rows, but for
/// the last) as bf16 pairs along k, the last pair's odd half zero when k
/// is odd, laid out per tile as `[kp][MR]` (a tile reads one row of MR
/// pairs per step).
#[inline(always)]
fn pairs_body(x: &[f32], k: usize, out: &mut [u32]) {
    // Pairs to convert per block: a row's 16 are one vector of work; the
    // block is then written out transposed.
    const P: usize = 16;
    let kp = k.div_ceil(2);
    for (rows, dst) in x.chunks(k * MR).zip(out.chunks_exact_mut(kp * MR)) {
        for p0 in (0..kp).step_by(P) {
            let np = P.min(kp - p0);
            let mut block = [[0u32; P]; MR];
            for (row, b) in rows.chunks_exact(k).zip(&mut block) {
                // Whole pairs, then the last element of an odd k alone.
                let whole = np.min(k / 2 - p0.min(k / 2));
                let two = &row[2 * p0..2 * (p0 + whole)];
                for (q, v) in two.chunks_exact(2).enumerate() {
                    b[q] = bf16_bits(v[0]) as u32 | (bf16_bits(v[1]) as u32) << 16;
                }
                if whole < np {
                    b[whole] = bf16_bits(row[k - 1]) as u32;
                }
            }
            for q in 0..np {
                for r in 0..MR {
                    dst[(p0 + q) * MR + r] = block[r][q];
                }
            }
        }
    }
}

dispatch!(fn pairs / pairs_on (x: &[f32], k: usize, out: &mut [u32]) = pairs_body);

/// A weight's values as they lie in a flex buffer, from its view's start.
#[derive(Clone, Copy)]
enum Weight<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    F16(&'a [half::f16]),
}

impl<'a> Weight<'a> {
    /// The values from element `at` on.
    fn from(self, at: usize) -> Weight<'a> {
        match self {
            Weight::F32(d) => Weight::F32(&d[at..]),
            Weight::Bf16(d) => Weight::Bf16(&d[at..]),
            Weight::F16(d) => Weight::F16(&d[at..]),
        }
    }
}

/// A weight `[k, n]` at strides `rs` (along k) and `cs` (along n).
#[derive(Clone, Copy)]
struct WeightView<'a> {
    data: Weight<'a>,
    rs: usize,
    cs: usize,
    k: usize,
    n: usize,
}

impl WeightView<'_> {
    #[inline(always)]
    fn get(&self, r: usize, c: usize) -> u32 {
        let i = r * self.rs + c * self.cs;
        match self.data {
            Weight::F32(d) => d[i].bf16(),
            Weight::Bf16(d) => d[i].bf16(),
            Weight::F16(d) => d[i].bf16(),
        }
    }

    /// Columns `j0..j0 + NR` (zero past n) as `[kp][NR]` bf16 pairs.
    fn pack(&self, cpu: Cpu, j0: usize, out: &mut [u32]) {
        let (k, kp) = (self.k, self.k.div_ceil(2));
        let cols = NR.min(self.n - j0);
        if cols < NR {
            out.fill(0);
        }
        let d = self.data.from(j0 * self.cs);
        // The stored layouts, vectorised: rows of n (a weight as stored),
        // or columns of k (a transposed view: a tied head read through the
        // embedding table).
        if self.cs == 1 && cols == NR {
            pack_rows_on(cpu, d, self.rs, k, out);
        } else if self.rs == 1 {
            pack_cols_on(cpu, d, self.cs, k, cols, out);
        } else {
            for p in 0..kp {
                for c in 0..cols {
                    let lo = self.get(2 * p, j0 + c);
                    let hi = if 2 * p + 1 < k {
                        self.get(2 * p + 1, j0 + c)
                    } else {
                        0
                    };
                    out[p * NR + c] = lo | hi << 16;
                }
            }
        }
    }
}

/// A stored weight value as the bf16 bits the kernels multiply (an f16 is
/// widened exactly, then rounded like an f32).
trait ToBf16: Copy {
    fn bf16(self) -> u32;
}

impl ToBf16 for f32 {
    #[inline(always)]
    fn bf16(self) -> u32 {
        bf16_bits(self) as u32
    }
}

impl ToBf16 for half::bf16 {
    #[inline(always)]
    fn bf16(self) -> u32 {
        flush(self.to_bits()) as u32
    }
}

impl ToBf16 for half::f16 {
    #[inline(always)]
    fn bf16(self) -> u32 {
        bf16_bits(self.to_f32()) as u32
    }
}

/// A panel from rows `d[r * rs..][..NR]` of a `[k, n]` weight (starting
/// at the panel's first column).
#[inline(always)]
fn pack_rows_of<T: ToBf16>(d: &[T], rs: usize, k: usize, out: &mut [u32]) {
    for (p, o) in out.chunks_exact_mut(NR).enumerate() {
        let even = &d[2 * p * rs..2 * p * rs + NR];
        if 2 * p + 1 < k {
            let odd = &d[(2 * p + 1) * rs..(2 * p + 1) * rs + NR];
            for c in 0..NR {
                o[c] = even[c].bf16() | odd[c].bf16() << 16;
            }
        } else {
            for c in 0..NR {
                o[c] = even[c].bf16();
            }
        }
    }
}

/// A panel from `cols` columns `d[c * cs..][..k]` (k contiguous).
#[inline(always)]
fn pack_cols_of<T: ToBf16>(d: &[T], cs: usize, k: usize, cols: usize, out: &mut [u32]) {
    for c in 0..cols {
        let col = &d[c * cs..c * cs + k];
        let mut pairs = col.chunks_exact(2);
        for (p, two) in (&mut pairs).enumerate() {
            out[p * NR + c] = two[0].bf16() | two[1].bf16() << 16;
        }
        if let [last] = pairs.remainder() {
            out[(k / 2) * NR + c] = last.bf16();
        }
    }
}

#[inline(always)]
fn pack_rows_body(d: Weight, rs: usize, k: usize, out: &mut [u32]) {
    match d {
        Weight::F32(d) => pack_rows_of(d, rs, k, out),
        Weight::Bf16(d) => pack_rows_of(d, rs, k, out),
        Weight::F16(d) => pack_rows_of(d, rs, k, out),
    }
}

#[inline(always)]
fn pack_cols_body(d: Weight, cs: usize, k: usize, cols: usize, out: &mut [u32]) {
    match d {
        Weight::F32(d) => pack_cols_of(d, cs, k, cols, out),
        Weight::Bf16(d) => pack_cols_of(d, cs, k, cols, out),
        Weight::F16(d) => pack_cols_of(d, cs, k, cols, out),
    }
}

dispatch!(fn pack_rows / pack_rows_on (d: Weight, rs: usize, k: usize, out: &mut [u32]) = pack_rows_body);
dispatch!(fn pack_cols / pack_cols_on (d: Weight, cs: usize, k: usize, cols: usize, out: &mut [u32]) = pack_cols_body);

/// One tile on a CPU without the instruction: for each of the [`MR`] rows
/// of `a` (a tile's pairs, `[kp][MR]`) and each of the panel's [`NR`] columns, the sum
/// over pairs of the odd product and then the even one, each a fused
/// multiply-add, exactly as `vdpbf16ps` computes it.
#[inline(always)]
fn tile_emulated_body(a: &[u32], kp: usize, b: &[u32], out: &mut [[f32; NR]; MR]) {
    for g in 0..MR / MR_EMU {
        let mut acc = [[0.0f32; NR]; MR_EMU];
        for p in 0..kp {
            let panel = &b[p * NR..(p + 1) * NR];
            let mut lo = [0.0f32; NR];
            let mut hi = [0.0f32; NR];
            for c in 0..NR {
                (lo[c], hi[c]) = halves(panel[c]);
            }
            for r in 0..MR_EMU {
                let (xl, xh) = halves(a[p * MR + g * MR_EMU + r]);
                for c in 0..NR {
                    acc[r][c] = xh.mul_add(hi[c], acc[r][c]);
                    acc[r][c] = xl.mul_add(lo[c], acc[r][c]);
                }
            }
        }
        out[g * MR_EMU..(g + 1) * MR_EMU].copy_from_slice(&acc);
    }
}

dispatch!(fn tile_emulated / tile_emulated_on (a: &[u32], kp: usize, b: &[u32], out: &mut [[f32; NR]; MR]) = tile_emulated_body);

/// One tile with `vdpbf16ps`: [`MR`] rows × [`NR`] columns, the sums in 24
/// registers over the whole of k.
///
/// # Safety
/// The CPU must have AVX-512 F and BF16; `a` holds a tile's `kp * MR`
/// pairs and `b` a panel's `kp * NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512bf16(a: &[u32], kp: usize, b: &[u32], out: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    assert!(a.len() >= MR * kp && b.len() >= kp * NR);
    let mut lo = [_mm512_setzero_ps(); MR];
    let mut hi = [_mm512_setzero_ps(); MR];
    // Slices, not pointer arithmetic: with debug assertions on (as in this
    // workspace's release builds) every raw pointer read is checked.
    for (x, w) in a[..kp * MR]
        .chunks_exact(MR)
        .zip(b[..kp * NR].chunks_exact(NR))
    {
        let x: &[u32; MR] = x.try_into().expect("chunks of MR");
        // SAFETY: `w` holds NR = 32 values: two unaligned 64-byte reads.
        let (b0, b1) = unsafe {
            let p = w.as_ptr().cast::<__m512bh>();
            (p.read_unaligned(), p.add(1).read_unaligned())
        };
        for r in 0..MR {
            let xr: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(x[r] as i32)) };
            lo[r] = _mm512_dpbf16_ps(lo[r], xr, b0);
            hi[r] = _mm512_dpbf16_ps(hi[r], xr, b1);
        }
    }
    for r in 0..MR {
        // SAFETY: each row of `out` holds NR = 32 floats.
        unsafe {
            _mm512_storeu_ps(out[r].as_mut_ptr(), lo[r]);
            _mm512_storeu_ps(out[r].as_mut_ptr().add(16), hi[r]);
        }
    }
}

/// One tile on `cpu`: `vdpbf16ps` where it proves AVX512_BF16, else the
/// instruction's arithmetic emulated (the same bits either way).
fn tile_on(cpu: Cpu, a: &[u32], kp: usize, b: &[u32], out: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    if cpu.isa() == super::isa::Isa::Avx512Bf16 {
        // SAFETY: a `Cpu` proving AVX512_BF16 exists only where detection
        // found it (and AVX-512 F); the slices are one tile's rows and one
        // panel.
        return unsafe { tile_avx512bf16(a, kp, b, out) };
    }
    tile_emulated_on(cpu, a, kp, b, out)
}

/// The output buffer shared by the tasks, each writing its own tiles.
#[derive(Clone, Copy)]
struct Out(*mut f32);

impl Out {
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}
// SAFETY: tasks write disjoint elements (distinct panels or row tiles).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Whether [`linear`] takes these: `x` `[m, k]` f32 on flex and `w`
/// `[k, n]` beside it.
pub(crate) fn accepts(x: &Tensor<2>, w: &Tensor<2>) -> bool {
    on_flex(x) && w.device() == x.device() && x.dims()[1] == w.dims()[0]
}

/// `x @ w (+ bias)` with bf16 products and f32 sums, for `x` `[m, k]` f32
/// and `w` `[k, n]` in f32, bf16 or f16 (any strides) on flex, as
/// [`accepts`] checks first. (Anything else gets burn's f32 `linear`.)
pub(crate) fn linear(x: Tensor<2>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    linear_on(Cpu::active(), x, w, bias)
}

/// [`linear`] on the kernel copies for `cpu`'s instruction set.
pub(crate) fn linear_on(
    cpu: Cpu,
    x: Tensor<2>,
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<2> {
    if !accepts(&x, &w) {
        return burn::tensor::module::linear(x, w.cast(burn::tensor::FloatDType::F32), bias);
    }
    let ([m, k], [_, n]) = (x.dims(), w.dims());
    if !matches!(w.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        return linear_on(cpu, x, w.cast(burn::tensor::FloatDType::F32), bias);
    }
    if m == 0 || n == 0 || k == 0 {
        return burn::tensor::module::linear(x, w.cast(burn::tensor::FloatDType::F32), bias);
    }
    let xf = flex(x);
    let xs = slice(&xf);
    let (wf, rs, cs) = flex_view(w);
    let (Ok(rs), Ok(cs)) = (usize::try_from(rs), usize::try_from(cs)) else {
        // A negative stride (a flipped view): contiguous first.
        let w = Tensor::from_primitive::<Flex>(wf.to_contiguous());
        return linear_on(cpu, Tensor::from_primitive::<Flex>(xf), w, bias);
    };
    let start = wf.layout().start_offset();
    let data = match wf.dtype() {
        DType::BF16 => Weight::Bf16(&wf.storage::<half::bf16>()[start..]),
        DType::F16 => Weight::F16(&wf.storage::<half::f16>()[start..]),
        _ => Weight::F32(&wf.storage::<f32>()[start..]),
    };
    let wv = WeightView { data, rs, cs, k, n };

    let kp = k.div_ceil(2);
    let tiles = m.div_ceil(MR);
    // The activations as pairs, padded with zero rows to whole tiles.
    let mut a = vec![0u32; tiles * MR * kp];
    const TILES_PER_PIECE: usize = 8;
    a.par_chunks_mut(kp * MR * TILES_PER_PIECE)
        .zip(xs.par_chunks(k * MR * TILES_PER_PIECE))
        .for_each(|(dst, src)| pairs_on(cpu, src, k, dst));

    let panels = n.div_ceil(NR);
    // Enough tasks for every thread when the panels are few (a k or v
    // projection has 6): split the rows too (each part packs its panel).
    let want = 4 * rayon::current_num_threads();
    let parts = if panels >= want {
        1
    } else {
        want.div_ceil(panels).min(tiles)
    };
    let per_part = tiles.div_ceil(parts);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let dst = Out(out.as_mut_ptr());
    (0..panels * parts).into_par_iter().for_each_init(
        || (vec![0u32; kp * NR], [[0.0f32; NR]; MR]),
        |(panel, tile), task| {
            let (pi, part) = (task / parts, task % parts);
            let j0 = pi * NR;
            let cols = NR.min(n - j0);
            wv.pack(cpu, j0, panel);
            for t in part * per_part..((part + 1) * per_part).min(tiles) {
                tile_on(cpu, &a[t * MR * kp..(t + 1) * MR * kp], kp, panel, tile);
                for (r, row) in tile.iter().enumerate().take(MR.min(m - t * MR)) {
                    let i = t * MR + r;
                    // SAFETY: row i < m and columns j0..j0 + cols < n: inside
                    // the m x n buffer, and no other task writes them.
                    unsafe {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst.at(i * n + j0), cols);
                    }
                }
            }
        },
    );
    // SAFETY: the tasks covered every (row, column) of the m x n output.
    unsafe { out.set_len(m * n) };
    let y = to_tensor(out, [m, n]);
    match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;
    use burn::tensor::{Device, TensorData};

    fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
            })
            .collect()
    }

    fn t2(v: Vec<f32>, dims: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, dims), &Device::flex())
    }

    fn bits(t: Tensor<2>) -> Vec<u32> {
        t.into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// The definition, one element at a time: per pair, the odd product
    /// then the even one added with one rounding each.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let r = |v: f32| f32::from_bits((bf16_bits(v) as u32) << 16);
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k.div_ceil(2) {
                    if 2 * p + 1 < k {
                        acc = r(x[i * k + 2 * p + 1]).mul_add(r(w[(2 * p + 1) * n + j]), acc);
                    } else {
                        acc = 0.0f32.mul_add(0.0, acc);
                    }
                    acc = r(x[i * k + 2 * p]).mul_add(r(w[2 * p * n + j]), acc);
                }
                y[i * n + j] = acc;
            }
        }
        y
    }

    #[test]
    fn rounding_is_to_nearest_even_with_denormals_flushed() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(bf16_bits(1e-40), 0);
        assert_eq!(bf16_bits(-1e-40), 0x8000);
        assert!(f32::from_bits((bf16_bits(f32::NAN) as u32) << 16).is_nan());
        for x in rand_vec(1000, 3, 100.0) {
            assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{x}");
        }
    }

    #[test]
    fn the_emulated_tiles_compute_the_definition() {
        // Odd k, rows and columns that are no whole tiles or panels, a bias.
        for (m, k, n) in [(1, 1, 1), (13, 7, 33), (30, 64, 70), (5, 129, 32)] {
            let x = rand_vec(m * k, 1, 2.0);
            let w = rand_vec(k * n, 2, 0.5);
            let want = reference(&x, &w, m, k, n);
            let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            // Every emulated copy this CPU can run (the baseline, AVX2,
            // AVX-512), and vdpbf16ps where it has it.
            for cpu in Cpu::all() {
                let y = linear_on(cpu, t2(x.clone(), [m, k]), t2(w.clone(), [k, n]), None);
                assert_eq!(bits(y), want_bits, "{m}x{k}x{n} on {}", cpu.isa());
            }
            let b = rand_vec(n, 4, 1.0);
            let bias = Tensor::<1>::from_data(TensorData::new(b.clone(), [n]), &Device::flex());
            let baseline = Cpu::with(Isa::Baseline).unwrap();
            let y = linear_on(baseline, t2(x, [m, k]), t2(w, [k, n]), Some(bias));
            let with: Vec<u32> = want
                .iter()
                .enumerate()
                .map(|(i, v)| (v + b[i % n]).to_bits())
                .collect();
            assert_eq!(bits(y), with);
        }
    }

    #[test]
    fn bf16_weights_transposed_views_and_f32_weights_agree() {
        let (m, k, n) = (17, 41, 45);
        let x = rand_vec(m * k, 5, 3.0);
        let w = rand_vec(k * n, 6, 0.2);
        let run = |w: Tensor<2>| bits(linear_on(Cpu::active(), t2(x.clone(), [m, k]), w, None));
        let f32w = run(t2(w.clone(), [k, n]));
        let half = t2(w.clone(), [k, n]).cast(burn::tensor::FloatDType::BF16);
        assert_eq!(run(half), f32w);
        // An f16 weight (read as stored, not widened first) gives what its
        // values in f32 give.
        let as_f16: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let f16w = t2(w.clone(), [k, n]).cast(burn::tensor::FloatDType::F16);
        assert_eq!(run(f16w), run(t2(as_f16, [k, n])));
        // The same weight stored [n, k] and read through a transposed view.
        let mut wt = vec![0.0f32; k * n];
        for r in 0..k {
            for c in 0..n {
                wt[c * k + r] = w[r * n + c];
            }
        }
        assert_eq!(run(t2(wt, [n, k]).transpose()), f32w);
    }

    /// `vdpbf16ps` and every emulated copy give the same bits. Where the
    /// CPU lacks AVX512_BF16 the native path cannot run: the test is
    /// ignored there (see `build.rs`), not passed.
    #[test]
    #[cfg_attr(
        not(evocomp_host_avx512bf16),
        ignore = "this machine has no AVX512_BF16"
    )]
    fn vdpbf16ps_gives_the_emulated_bits() {
        let native = Cpu::with(Isa::Avx512Bf16).expect("this CPU has no AVX512_BF16");
        for (m, k, n) in [(12, 2, 32), (25, 575, 96), (100, 1536, 64), (7, 33, 200)] {
            // Wide magnitudes, so that sums cancel and round.
            let x: Vec<f32> = rand_vec(m * k, 7, 1.0)
                .iter()
                .zip(rand_vec(m * k, 8, 20.0))
                .map(|(a, e)| a * e.exp2())
                .collect();
            let w = rand_vec(k * n, 9, 1.0);
            let run = |cpu: Cpu| {
                bits(linear_on(
                    cpu,
                    t2(x.clone(), [m, k]),
                    t2(w.clone(), [k, n]),
                    None,
                ))
            };
            let want = run(native);
            for cpu in Cpu::all() {
                assert_eq!(run(cpu), want, "{m}x{k}x{n} on {}", cpu.isa());
            }
        }
    }

    #[test]
    fn close_to_f32() {
        let (m, k, n) = (64, 576, 192);
        let x = rand_vec(m * k, 10, 1.0);
        let w = rand_vec(k * n, 11, 0.05);
        let y = linear_on(
            Cpu::active(),
            t2(x.clone(), [m, k]),
            t2(w.clone(), [k, n]),
            None,
        )
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
        let exact = t2(x, [m, k])
            .matmul(t2(w, [k, n]))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        for (a, b) in y.iter().zip(&exact) {
            err += ((a - b) as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        let rel = (err / norm).sqrt();
        // Two bf16 roundings of 2^-9 each, averaged over k terms.
        assert!(rel < 5e-3 && rel > 1e-5, "relative error {rel}");
    }
}
