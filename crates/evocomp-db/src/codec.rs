//! How a variant is stored in its unit's safetensors file: the smallest of
//! three exact encodings, chosen per variant.
//!
//! - **dense**: `level_<n>`, F32 `[out, in]` (every database before compact
//!   storage, and any variant the others do not fit);
//! - **sparse**: `level_<n>.mask`, U8, one bit per weight (set where the
//!   weight's bits are not +0.0), and `level_<n>.values`, F32, the set weights
//!   in row-major order;
//! - **palette**: `level_<n>.codes`, U8, `bits` per weight packed LSB first,
//!   `level_<n>.palette`, F32 `[out, groups, 2^bits]`, and `level_<n>.group`,
//!   U32 `[1]`, the group width: each row's groups of that many consecutive
//!   weights (the last one shorter when the width does not divide the row)
//!   index their own table. A quantized
//!   variant (RTN or GPTQ with static groups) has at most 2^bits distinct
//!   values per group, so it costs its bits plus the tables.
//!
//! - **ggml**: `level_<n>.ggml`, U8, the variant's blocks exactly as a GGUF
//!   file stores them, and `level_<n>.ggml_type`, U32 `[1]`, the ggml type
//!   id (GGUF-types databases: the bytes are what an export writes, and
//!   decoding them is the variant).
//!
//! Decoding gives back the same f32 bits as were encoded, in every case.

use safetensors::{Dtype, SafeTensors};

/// A variant's tensors: (name, dtype, shape, little-endian bytes).
pub(crate) type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// Group widths tried for the palette, widest first (GPTQ/RTN use 128).
const GROUPS: [usize; 4] = [128, 64, 32, 16];
/// The largest palette: 8-bit codes.
const MAX_BITS: u32 = 8;

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The bytes `data` (`[rows, cols]`) takes in the encoding `encode` picks,
/// and that encoding's name (`dense`, `sparse`, `palette-<bits>bit`).
pub fn encoded_size(data: &[f32], rows: usize, cols: usize) -> (usize, String) {
    let t = encode("v", data, rows, cols);
    let kind = match t[0].0.as_str() {
        "v" => "dense".to_string(),
        "v.mask" => "sparse".to_string(),
        _ => {
            let size = t[1].2[2];
            format!("palette-{}bit", size.trailing_zeros())
        }
    };
    (t.iter().map(|x| x.3.len()).sum(), kind)
}

/// The tensors storing `data` (`[rows, cols]`) under `name`, in the
/// smallest encoding.
pub(crate) fn encode(name: &str, data: &[f32], rows: usize, cols: usize) -> Tensors {
    let n = data.len();
    debug_assert_eq!(n, rows * cols);
    let dense = 4 * n;
    let nnz = data.iter().filter(|v| v.to_bits() != 0).count();
    let sparse = n.div_ceil(8) + 4 * nnz;
    let palette = palette(data, rows, cols, sparse.min(dense));
    let palette_size = palette
        .as_ref()
        .map_or(usize::MAX, |p| p.codes.len() + 4 * p.table.len());
    if palette_size < sparse.min(dense) {
        let p = palette.expect("sized");
        let groups = cols.div_ceil(p.group);
        return vec![
            (
                format!("{name}.codes"),
                Dtype::U8,
                vec![p.codes.len()],
                p.codes,
            ),
            (
                format!("{name}.palette"),
                Dtype::F32,
                vec![rows, groups, 1 << p.bits],
                f32_bytes(&p.table),
            ),
            (
                format!("{name}.group"),
                Dtype::U32,
                vec![1],
                (p.group as u32).to_le_bytes().to_vec(),
            ),
        ];
    }
    if sparse < dense {
        let mut mask = vec![0u8; n.div_ceil(8)];
        let mut values = Vec::with_capacity(nnz);
        for (i, v) in data.iter().enumerate() {
            if v.to_bits() != 0 {
                mask[i / 8] |= 1 << (i % 8);
                values.push(*v);
            }
        }
        return vec![
            (format!("{name}.mask"), Dtype::U8, vec![mask.len()], mask),
            (
                format!("{name}.values"),
                Dtype::F32,
                vec![values.len()],
                f32_bytes(&values),
            ),
        ];
    }
    vec![(
        name.to_string(),
        Dtype::F32,
        vec![rows, cols],
        f32_bytes(data),
    )]
}

/// The tensors storing a variant as ggml blocks of type `ty`.
pub(crate) fn encode_ggml(name: &str, ty: evocomp_gguf::GgmlType, bytes: Vec<u8>) -> Tensors {
    vec![
        (format!("{name}.ggml"), Dtype::U8, vec![bytes.len()], bytes),
        (
            format!("{name}.ggml_type"),
            Dtype::U32,
            vec![1],
            ty.id().to_le_bytes().to_vec(),
        ),
    ]
}

/// A variant stored as ggml blocks: its type and bytes, if it is one.
pub(crate) fn ggml_blocks<'data>(
    st: &SafeTensors<'data>,
    name: &str,
) -> Result<Option<(evocomp_gguf::GgmlType, &'data [u8])>, String> {
    let (Ok(data), Ok(ty)) = (
        st.tensor(&format!("{name}.ggml")),
        st.tensor(&format!("{name}.ggml_type")),
    ) else {
        return Ok(None);
    };
    let id = match (data.dtype(), ty.dtype(), ty.data()) {
        (Dtype::U8, Dtype::U32, [a, b, c, d]) => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => return Err(format!("{name}: ggml blocks stored with the wrong dtypes")),
    };
    let ty = evocomp_gguf::GgmlType::from_id(id)
        .ok_or_else(|| format!("{name}: unknown ggml type id {id}"))?;
    Ok(Some((ty, data.data())))
}

struct Palette {
    group: usize,
    bits: u32,
    codes: Vec<u8>,
    table: Vec<f32>,
}

/// Per-group tables of distinct values, if every group of some width has at
/// most 2^MAX_BITS of them and the encoding is smaller than `budget` bytes;
/// the width with the smallest encoding wins.
fn palette(data: &[f32], rows: usize, cols: usize, budget: usize) -> Option<Palette> {
    GROUPS
        .iter()
        .filter(|&&g| g <= cols)
        .filter_map(|&g| palette_with(data, rows, cols, g, budget))
        .min_by_key(|p| p.codes.len() + 4 * p.table.len())
}

fn bits_for(distinct: usize) -> u32 {
    (usize::BITS - distinct.saturating_sub(1).leading_zeros()).max(1)
}

fn palette_with(
    data: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    budget: usize,
) -> Option<Palette> {
    let groups = cols.div_ceil(group);
    let n = data.len();
    // The encoding's size if the widest group so far were the widest.
    let size = |widest: usize| {
        let bits = bits_for(widest);
        (n * bits as usize).div_ceil(8) + 4 * rows * groups * (1 << bits)
    };
    // Distinct bit patterns per group, in order of first appearance; given up
    // as soon as the tables alone would not beat `budget` (a pruned or dense
    // matrix stops after its first group).
    let mut tables: Vec<Vec<u32>> = Vec::with_capacity(rows * groups);
    let mut widest = 1;
    for row in data.chunks_exact(cols) {
        for g in row.chunks(group) {
            let mut t: Vec<u32> = Vec::new();
            for v in g {
                let b = v.to_bits();
                if !t.contains(&b) {
                    if t.len() == 1 << MAX_BITS || size(t.len() + 1) >= budget {
                        return None;
                    }
                    t.push(b);
                }
            }
            widest = widest.max(t.len());
            tables.push(t);
        }
    }
    let bits = bits_for(widest);
    let size = 1usize << bits;
    let mut codes = vec![0u8; (data.len() * bits as usize).div_ceil(8)];
    let mut table = vec![0f32; tables.len() * size];
    for (ti, t) in tables.iter().enumerate() {
        for (j, &b) in t.iter().enumerate() {
            table[ti * size + j] = f32::from_bits(b);
        }
    }
    for (i, v) in data.iter().enumerate() {
        let t = &tables[(i / cols) * groups + (i % cols) / group];
        let code = t
            .iter()
            .position(|&b| b == v.to_bits())
            .expect("in its table") as u32;
        put_bits(&mut codes, i * bits as usize, bits, code);
    }
    Some(Palette {
        group,
        bits,
        codes,
        table,
    })
}

fn put_bits(out: &mut [u8], at: usize, bits: u32, value: u32) {
    for k in 0..bits as usize {
        if value >> k & 1 == 1 {
            out[(at + k) / 8] |= 1 << ((at + k) % 8);
        }
    }
}

fn get_bits(bytes: &[u8], at: usize, bits: u32) -> u32 {
    let mut v = 0;
    for k in 0..bits as usize {
        v |= ((bytes[(at + k) / 8] >> ((at + k) % 8)) & 1) as u32 * (1 << k);
    }
    v
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Read variant `name` of shape `[rows, cols]` from `st`, in whichever
/// encoding it was stored. An error says what is missing or inconsistent.
pub(crate) fn decode(
    st: &SafeTensors,
    name: &str,
    [rows, cols]: [usize; 2],
) -> Result<Vec<f32>, String> {
    let n = rows * cols;
    if let Some((ty, bytes)) = ggml_blocks(st, name)? {
        return evocomp_gguf::dequantize(ty, bytes, n).map_err(|e| format!("{name}: {e}"));
    }
    let get = |suffix: &str, dtype: Dtype| {
        st.tensor(&format!("{name}{suffix}"))
            .ok()
            .filter(|v| v.dtype() == dtype)
    };
    if let Some(v) = get("", Dtype::F32) {
        if v.shape() != [rows, cols] {
            return Err(format!(
                "{name}: shape {:?}, expected {:?}",
                v.shape(),
                [rows, cols]
            ));
        }
        return Ok(f32s(v.data()));
    }
    if let (Some(mask), Some(values)) = (get(".mask", Dtype::U8), get(".values", Dtype::F32)) {
        let (mask, values) = (mask.data(), f32s(values.data()));
        if mask.len() != n.div_ceil(8) {
            return Err(format!(
                "{name}: a mask of {} bytes for {n} weights",
                mask.len()
            ));
        }
        let set: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
        if set != values.len() || (n % 8 != 0 && mask[n / 8] >> (n % 8) != 0) {
            return Err(format!(
                "{name}: the mask sets {set} weights, {} values stored",
                values.len()
            ));
        }
        let mut out = vec![0f32; n];
        let mut next = values.iter();
        for (i, o) in out.iter_mut().enumerate() {
            if mask[i / 8] >> (i % 8) & 1 == 1 {
                *o = *next.next().expect("counted");
            }
        }
        return Ok(out);
    }
    if let (Some(codes), Some(table), Some(group)) = (
        get(".codes", Dtype::U8),
        get(".palette", Dtype::F32),
        get(".group", Dtype::U32),
    ) {
        let shape = table.shape();
        let (codes, table) = (codes.data(), f32s(table.data()));
        let group = match group.data() {
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
            _ => 0,
        };
        let bad = || {
            format!(
                "{name}: palette {shape:?}, groups of {group} and {} code bytes for [{rows}, {cols}]",
                codes.len()
            )
        };
        let [r, groups, size] = shape else {
            return Err(bad());
        };
        if *r != rows || group == 0 || *groups != cols.div_ceil(group) || !size.is_power_of_two() {
            return Err(bad());
        }
        let bits = size.trailing_zeros().max(1);
        if *size < 2 || bits > MAX_BITS || codes.len() != (n * bits as usize).div_ceil(8) {
            return Err(bad());
        }
        let out = (0..n)
            .map(|i| {
                let t = (i / cols) * groups + (i % cols) / group;
                table[t * size + get_bits(codes, i * bits as usize, bits) as usize]
            })
            .collect();
        return Ok(out);
    }
    Err(format!(
        "{name}: not stored (no dense, sparse or palette tensors)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[f32], rows: usize, cols: usize) -> (Vec<f32>, usize, Vec<String>) {
        let tensors = encode("level_3", data, rows, cols);
        let names = tensors.iter().map(|t| t.0.clone()).collect();
        let size = tensors.iter().map(|t| t.3.len()).sum();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        (decode(&st, "level_3", [rows, cols]).unwrap(), size, names)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// A small deterministic generator, so the test needs no RNG crate.
    fn noise(i: usize) -> f32 {
        let x = (i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn sparse_variants_are_stored_as_mask_and_values_exactly() {
        let (rows, cols) = (8, 100);
        let mut data: Vec<f32> = (0..rows * cols).map(noise).collect();
        for (i, v) in data.iter_mut().enumerate() {
            if i % 5 < 3 {
                *v = 0.0;
            }
        }
        data[7] = -0.0; // not +0.0: kept as a value, so its sign survives
        let (back, size, names) = round_trip(&data, rows, cols);
        assert_eq!(bits(&back), bits(&data));
        assert!(names.iter().any(|n| n.ends_with(".mask")), "{names:?}");
        // 40% non-zero: a bit per weight plus 4 bytes per kept weight.
        assert_eq!(size, 100 + 4 * (321));
    }

    #[test]
    fn quantized_variants_are_stored_in_their_bits_exactly() {
        // 3-bit RTN-like rows: per group of 128, 8 levels of its own scale.
        let (rows, cols) = (4, 256);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let g = i / 128;
                let scale = 0.01 * (1.0 + g as f32);
                scale * ((noise(i) + 0.5) * 8.0).floor().min(7.0) - 0.03
            })
            .collect();
        let (back, size, names) = round_trip(&data, rows, cols);
        assert_eq!(bits(&back), bits(&data));
        assert!(names.iter().any(|n| n.ends_with(".codes")), "{names:?}");
        // 3 bits a weight, plus 8 f32 per group of 128, plus the width.
        assert_eq!(size, rows * cols * 3 / 8 + 4 * 8 * rows * 2 + 4);
        // Rows of 192: a group of 128 and one of 64, each with its own table.
        let (rows, cols) = (3, 192);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let g = (i % cols) / 128;
                0.5 * (1 + g) as f32 * ((noise(i) + 0.5) * 4.0).floor().min(3.0)
            })
            .collect();
        let (back, size, _) = round_trip(&data, rows, cols);
        assert_eq!(bits(&back), bits(&data));
        assert_eq!(size, rows * cols * 2 / 8 + 4 * 4 * rows * 2 + 4);
    }

    #[test]
    fn dense_variants_stay_dense() {
        let data: Vec<f32> = (0..6 * 64).map(noise).collect();
        let (back, size, names) = round_trip(&data, 6, 64);
        assert_eq!(bits(&back), bits(&data));
        assert_eq!(names, ["level_3"]);
        assert_eq!(size, 4 * 6 * 64);
    }

    #[test]
    fn inconsistent_tensors_are_errors_not_panics() {
        let data: Vec<f32> = (0..64)
            .map(|i| if i % 3 == 0 { noise(i) } else { 0.0 })
            .collect();
        let tensors = encode("level_0", &data, 4, 16);
        // Drop one stored value: the mask no longer matches.
        let mut t = tensors.clone();
        t[1].2 = vec![t[1].2[0] - 1];
        let len = t[1].3.len();
        t[1].3.truncate(len - 4);
        let views: Vec<_> = t
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let e = decode(&st, "level_0", [4, 16]).unwrap_err();
        assert!(e.contains("mask"), "{e}");
        let e = decode(&st, "level_9", [4, 16]).unwrap_err();
        assert!(e.contains("not stored"), "{e}");
    }
}
