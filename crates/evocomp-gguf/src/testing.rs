//! For tests that damage files on purpose: the fuzz harnesses of every
//! crate that reads a file apply the same byte edits.

/// One edit: `(position, value, kind)`. The position wraps around the
/// length; `kind % 4` is 0 set the byte to `value`, 1 cut the bytes there,
/// 2 insert `value` there, 3 write a large little-endian u64 there (as a
/// count, length or offset read from a file would be: `u64::MAX >> value % 64`).
pub type Edit = (usize, u8, u8);

/// `bytes` with `edits` applied in order.
pub fn mutate(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(pos, value, kind) in edits {
        if b.is_empty() {
            b.push(value);
            continue;
        }
        let at = pos % b.len();
        match kind % 4 {
            0 => b[at] = value,
            1 => b.truncate(at),
            2 => b.insert(at, value),
            _ => {
                let big = (u64::MAX >> (value % 64)).to_le_bytes();
                for (i, x) in big.iter().enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = *x;
                    }
                }
            }
        }
    }
    b
}

/// How many inputs a fuzz harness tries: `EVOCOMP_FUZZ_CASES`, or `default`
/// (CI runs the default; a long run sets it to 100000 or more).
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("EVOCOMP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed of a fuzz run: `EVOCOMP_FUZZ_SEED`, or a fixed one, so CI is
/// reproducible.
pub fn fuzz_seed() -> u64 {
    std::env::var("EVOCOMP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_f022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_do_what_they_say() {
        let b = [1u8, 2, 3, 4];
        assert_eq!(mutate(&b, &[(1, 9, 0)]), vec![1, 9, 3, 4]);
        assert_eq!(mutate(&b, &[(6, 0, 1)]), vec![1, 2]);
        assert_eq!(mutate(&b, &[(0, 7, 2)]), vec![7, 1, 2, 3, 4]);
        assert_eq!(mutate(&b, &[(0, 0, 3)]), vec![255; 4]);
        assert_eq!(mutate(&[], &[(3, 5, 1)]), vec![5]);
    }
}
