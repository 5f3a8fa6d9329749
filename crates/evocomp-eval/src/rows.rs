//! The head's output rows on the host: a row's top-k entries by partial
//! selection instead of a full sort of the vocabulary. (Each row's
//! log-sum-exp is a CPU kernel: `evocomp_model::kernels::lse`.)

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
