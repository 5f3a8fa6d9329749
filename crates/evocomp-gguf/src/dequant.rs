//! Dequantisation of ggml blocks to f32, following the block layouts of
//! ggml-quants (llama.cpp). Each function takes whole blocks and appends to `out`.

use crate::GgmlType;
use half::{bf16, f16};

/// Why a buffer could not be dequantised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DequantError {
    #[error(
        "dequantising {0} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL)"
    )]
    Unsupported(GgmlType),
    #[error("{ty}: {n_elements} elements need {expected} bytes, got {actual}")]
    Size {
        ty: GgmlType,
        n_elements: usize,
        expected: u64,
        actual: usize,
    },
}

/// Dequantise `n_elements` values of type `ty` stored in `bytes`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, DequantError> {
    if !ty.can_dequantize() {
        return Err(DequantError::Unsupported(ty));
    }
    let expected = ty.byte_size(n_elements as u64);
    if expected != Some(bytes.len() as u64) {
        return Err(DequantError::Size {
            ty,
            n_elements,
            expected: expected.unwrap_or(0),
            actual: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(n_elements);
    let (_, block_bytes) = ty.block_geometry();
    let blocks = bytes.chunks_exact(block_bytes);
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => blocks.for_each(|b| q8_0(b, &mut out)),
        GgmlType::Q4_0 => blocks.for_each(|b| q4_0(b, &mut out)),
        GgmlType::Q4_1 => blocks.for_each(|b| q4_1(b, &mut out)),
        GgmlType::Q5_0 => blocks.for_each(|b| q5_0(b, &mut out)),
        GgmlType::Q5_1 => blocks.for_each(|b| q5_1(b, &mut out)),
        GgmlType::Q2_K => blocks.for_each(|b| q2_k(b, &mut out)),
        GgmlType::Q3_K => blocks.for_each(|b| q3_k(b, &mut out)),
        GgmlType::Q4_K => blocks.for_each(|b| q4_k(b, &mut out)),
        GgmlType::Q5_K => blocks.for_each(|b| q5_k(b, &mut out)),
        GgmlType::Q6_K => blocks.for_each(|b| q6_k(b, &mut out)),
        GgmlType::IQ4_NL => blocks.for_each(|b| iq4_nl(b, &mut out)),
        other => return Err(DequantError::Unsupported(other)),
    }
    debug_assert_eq!(out.len(), n_elements);
    Ok(out)
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// IQ4_NL's sixteen non-linear levels (ggml-common.h `kvalues_iq4nl`).
pub(crate) const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: f16 scale `d`, then 16 bytes of nibbles indexing
/// [`IQ4_NL_VALUES`] (low nibbles 0..16, high 16..32); x = d * value.
fn iq4_nl(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(
        qs.iter()
            .map(|&q| d * IQ4_NL_VALUES[(q & 0xf) as usize] as f32),
    );
    out.extend(
        qs.iter()
            .map(|&q| d * IQ4_NL_VALUES[(q >> 4) as usize] as f32),
    );
}

/// Q8_0: f16 scale `d`, then 32 signed bytes; x = d * q.
fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
}

/// Q4_0: f16 scale `d`, then 16 bytes of nibbles; low nibbles are elements
/// 0..16, high nibbles 16..32; x = d * (q - 8).
fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i32 - 8) as f32));
    out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
}

/// Q4_1: f16 scale `d` and minimum `m`, then 16 bytes of nibbles; x = d * q + m.
fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
    out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
}

/// The fifth bits of a Q5_0/Q5_1 block: bit `j` of the little-endian u32
/// `qh` is the high bit of element `j` (0..32).
#[inline]
fn q5_high_bits(qh: &[u8]) -> u32 {
    u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]])
}

/// The 5-bit code of element `j` (0..16) and of element `j + 16`: low
/// nibble / high nibble of `qs[j]` with bit `j` / `j + 16` of `qh` above it.
#[inline]
fn q5_codes(qs: &[u8], qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) & 1) as u8;
    let h1 = ((qh >> (j + 16)) & 1) as u8;
    ((qs[j] & 0x0F) | (h0 << 4), (qs[j] >> 4) | (h1 << 4))
}

/// Q5_0: f16 scale `d`, 4 bytes of fifth bits, 16 bytes of nibbles;
/// x = d * (q - 16).
fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let qh = q5_high_bits(&b[2..6]);
    let qs = &b[6..22];
    let start = out.len();
    out.resize(start + 32, 0.0);
    let y = &mut out[start..];
    for j in 0..16 {
        let (a, c) = q5_codes(qs, qh, j);
        y[j] = d * (a as i32 - 16) as f32;
        y[j + 16] = d * (c as i32 - 16) as f32;
    }
}

/// Q5_1: f16 scale `d` and minimum `m`, 4 bytes of fifth bits, 16 bytes of
/// nibbles; x = d * q + m.
fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = q5_high_bits(&b[4..8]);
    let qs = &b[8..24];
    let start = out.len();
    out.resize(start + 32, 0.0);
    let y = &mut out[start..];
    for j in 0..16 {
        let (a, c) = q5_codes(qs, qh, j);
        y[j] = d * a as f32 + m;
        y[j + 16] = d * c as f32 + m;
    }
}

/// Q2_K: 256 values in 16 sub-blocks of 16. 16 bytes of 4-bit scale (low)
/// and 4-bit minimum (high) pairs, 64 bytes of 2-bit codes, then f16 `d` and
/// `dmin`; x = d * sc * q - dmin * m. Codes: byte `l` of each 32-byte half
/// holds, two bits per shift 0/2/4/6, elements of four consecutive 32-value
/// groups.
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let scales = &b[0..16];
    let qs_all = &b[16..80];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut is = 0;
    for half in 0..2 {
        let q = &qs_all[32 * half..32 * (half + 1)];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = &q[16 * part..16 * (part + 1)];
                out.extend(q.iter().map(|&v| dl * ((v >> shift) & 3) as f32 - ml));
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block, unpacked from 12 bytes: the low
/// nibbles of bytes 0..8 (scales 0..8) and their high nibbles (8..16), each
/// with two high bits from bytes 8..12; stored with an offset of 32.
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, v) in s.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *v = (low | (high << 4)) as i8 - 32;
    }
    s
}

/// Q3_K: 256 values in 16 sub-blocks of 16. 32 bytes of high-bit masks, 64
/// bytes of 2-bit codes, 12 bytes of packed 6-bit scales, then f16 `d`;
/// x = d * sc * (q - 4 * (1 - h)), where `h` is the element's mask bit.
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let hmask = &b[0..32];
    let qs_all = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut is = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &qs_all[32 * half..32 * (half + 1)];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                let range = 16 * part..16 * (part + 1);
                out.extend(q[range.clone()].iter().zip(&hmask[range]).map(|(&v, &h)| {
                    let low = ((v >> shift) & 3) as i32;
                    dl * (low - if h & m != 0 { 0 } else { 4 }) as f32
                }));
            }
            m <<= 1;
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K block.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: a super-block of 256 values in 8 sub-blocks of 32. f16 `d` and
/// `dmin`, 12 bytes of packed 6-bit scales and minima, 128 bytes of nibbles.
/// x = d * sc * q - dmin * m.
fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..4 {
        let q = &qs[32 * j..32 * (j + 1)];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        out.extend(q.iter().map(|&v| d1 * (v & 0x0F) as f32 - m1));
        out.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - m2));
    }
}

/// Q5_K: a super-block of 256 values in 8 sub-blocks of 32. f16 `d` and
/// `dmin`, 12 bytes of packed 6-bit scales and minima (as Q4_K), 32 bytes of
/// fifth bits (bit 2k / 2k+1 of byte `l` for element `l` of sub-block 2k /
/// 2k+1), 128 bytes of nibbles. x = d * sc * q - dmin * m.
fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..4 {
        let q = &qs[32 * j..32 * (j + 1)];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 1u8 << (2 * j + 1));
        out.extend(
            q.iter()
                .zip(qh)
                .map(|(&v, &h)| d1 * ((v & 0x0F) + if h & u1 != 0 { 16 } else { 0 }) as f32 - m1),
        );
        out.extend(
            q.iter()
                .zip(qh)
                .map(|(&v, &h)| d2 * ((v >> 4) + if h & u2 != 0 { 16 } else { 0 }) as f32 - m2),
        );
    }
}

/// Q6_K: 256 values; 128 bytes of low nibbles, 64 bytes of high 2-bit pairs,
/// 16 signed 8-bit scales (one per 16 values), then f16 `d`.
/// x = d * scale * (q - 32).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16_at(b, 208);
    let start = out.len();
    out.resize(start + 256, 0.0);
    let y_all = &mut out[start..];
    for half in 0..2 {
        let ql = &ql_all[64 * half..];
        let qh = &qh_all[32 * half..];
        let sc = &sc_all[8 * half..];
        let y = &mut y_all[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, 0.5 * (i as f32 - 16.0));
        }
    }

    #[test]
    fn q4_0_and_q4_1_nibble_order() {
        // Byte j holds element j (low nibble) and element j + 16 (high nibble).
        let qs: Vec<u8> = (0..16).map(|j| (j as u8) | ((15 - j as u8) << 4)).collect();
        let mut b0 = h(2.0).to_vec();
        b0.extend(&qs);
        let y0 = dequantize(GgmlType::Q4_0, &b0, 32).unwrap();
        let mut b1 = h(2.0).to_vec();
        b1.extend(h(-1.0));
        b1.extend(&qs);
        let y1 = dequantize(GgmlType::Q4_1, &b1, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y0[j], 2.0 * (j as f32 - 8.0));
            assert_eq!(y0[j + 16], 2.0 * ((15 - j) as f32 - 8.0));
            assert_eq!(y1[j], 2.0 * j as f32 - 1.0);
            assert_eq!(y1[j + 16], 2.0 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_k_scale_unpacking() {
        // Sub-blocks 0..4 take their scale/min from the low 6 bits of bytes
        // 0..4 / 4..8; sub-blocks 4..8 combine nibbles of bytes 8..12 with the
        // top 2 bits of bytes 0..8.
        let scales: [u8; 12] = [
            0b01_000001,
            0b10_000010,
            0b11_000011,
            0b00_000100,
            0b01_000101,
            0b10_000110,
            0b11_000111,
            0b00_001000,
            0x9A,
            0xBC,
            0xDE,
            0xF0,
        ];
        assert_eq!(scale_min_k4(0, &scales), (1, 5));
        assert_eq!(scale_min_k4(3, &scales), (4, 8));
        assert_eq!(scale_min_k4(4, &scales), (0xA | (1 << 4), 0x9 | (1 << 4)));
        assert_eq!(scale_min_k4(5, &scales), (0xC | (2 << 4), 0xB | (2 << 4)));
        assert_eq!(scale_min_k4(7, &scales), (0x0, 0xF));
    }

    #[test]
    fn wrong_size_is_an_error() {
        let e = dequantize(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err();
        assert!(matches!(e, DequantError::Size { expected: 34, .. }));
        let e = dequantize(GgmlType::IQ4_XS, &[0u8; 136], 256).unwrap_err();
        assert_eq!(e, DequantError::Unsupported(GgmlType::IQ4_XS));
    }
}
