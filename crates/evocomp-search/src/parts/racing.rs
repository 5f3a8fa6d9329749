//! Racing selection: a stage's candidates are scored on its sample in
//! chunks, all of them on the same chunks, and a candidate stops being
//! scored once enough others are confidently better on those chunks.
//!
//! "Confidently better" is a one-sided paired test: over the `j` chunks both
//! were scored on, the mean of `f_i − f_a` minus `t·s/√j` (Student's t
//! quantile at the confidence, `j − 1` degrees of freedom) is above zero. A
//! candidate that `survivors` others beat this way cannot be among the
//! survivors, so it is dropped. The candidates with the lowest means are
//! never dropped (each would need `survivors` others with lower means), so
//! the stage always keeps enough. With a confidence of 1 nothing is dropped,
//! every candidate gets every chunk, and the selection is plain EvoPress's
//! on the whole sample (the mean of equal chunks' means is the sample's).

use serde::{Deserialize, Serialize};

/// Racing's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Racing {
    /// Tokens per chunk: a multiple of the sequence length. A stage whose
    /// tokens it divides at least twice is raced; others are scored whole.
    pub chunk: usize,
    /// One-sided confidence of each paired comparison that drops a
    /// candidate, in [0.5, 1]; 1 never drops (plain selection in chunks).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Chunks every candidate is scored on before any is dropped (≥ 2).
    #[serde(default = "default_min_chunks")]
    pub min_chunks: usize,
}

fn default_confidence() -> f64 {
    0.95
}

fn default_min_chunks() -> usize {
    2
}

impl Racing {
    /// The chunks a stage of `tokens` tokens is scored in.
    pub fn chunks(&self, tokens: usize) -> usize {
        if self.chunk > 0 && tokens.is_multiple_of(self.chunk) && tokens / self.chunk >= 2 {
            tokens / self.chunk
        } else {
            1
        }
    }

    /// Which of the `alive` candidates (each scored on the same `j` chunks,
    /// `scores[i][..j]`) are dropped when `keep` survive.
    pub fn dropped(&self, scores: &[Vec<f64>], alive: &[usize], keep: usize) -> Vec<usize> {
        let Some(&first) = alive.first() else {
            return Vec::new();
        };
        let j = scores[first].len();
        if j < self.min_chunks.max(2) || alive.len() <= keep || self.confidence >= 1.0 {
            return Vec::new();
        }
        let t = t_quantile(self.confidence, (j - 1) as f64);
        alive
            .iter()
            .copied()
            .filter(|&i| {
                let beaten = alive
                    .iter()
                    .filter(|&&a| a != i && confidently_better(&scores[a], &scores[i], t))
                    .count();
                beaten >= keep
            })
            .collect()
    }
}

/// Whether `a` (lower is better) beats `b` on their paired chunks at the
/// threshold `t`.
fn confidently_better(a: &[f64], b: &[f64], t: f64) -> bool {
    let j = a.len().min(b.len());
    if j < 2 {
        return false;
    }
    let d: Vec<f64> = (0..j).map(|k| b[k] - a[k]).collect();
    let (mean, se) = mean_and_standard_error(&d);
    mean - t * se > 0.0
}

/// The mean of `v` and the standard error of that mean (NaN with fewer
/// than two values): what racing's t-test, the final choice and the
/// reports' "±" use.
pub fn mean_and_standard_error(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

/// Student's t quantile at `p` with `nu` degrees of freedom (statrs'
/// inverse of the regularised incomplete beta function); +∞ at `p` ≥ 1.
pub fn t_quantile(p: f64, nu: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    if p >= 1.0 {
        return f64::INFINITY;
    }
    match StudentsT::new(0.0, 1.0, nu) {
        Ok(t) => t.inverse_cdf(p),
        // Only a non-positive or NaN `nu`, which `dropped` never passes.
        Err(_) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tables() {
        // Student's t tables (upper quantiles to four decimals) at the
        // confidences racing uses and the small degrees of freedom where an
        // approximation errs most.
        let table = [
            (0.90, [3.0777, 1.8856, 1.6377, 1.4759, 1.3722, 1.3104]),
            (0.95, [6.3138, 2.9200, 2.3534, 2.0150, 1.8125, 1.6973]),
            (0.975, [12.7062, 4.3027, 3.1824, 2.5706, 2.2281, 2.0423]),
            (0.99, [31.8205, 6.9646, 4.5407, 3.3649, 2.7638, 2.4573]),
            (0.999, [318.3088, 22.3271, 10.2145, 5.8934, 4.1437, 3.3852]),
        ];
        for (p, row) in table {
            for (nu, t) in [1.0, 2.0, 3.0, 5.0, 10.0, 30.0].into_iter().zip(row) {
                let q = t_quantile(p, nu);
                assert!(
                    (q - t).abs() < 1e-4 * t.max(1.0),
                    "p {p}, nu {nu}: {q} vs {t}"
                );
                // Symmetry: the lower quantile is the negated upper one.
                assert!((t_quantile(1.0 - p, nu) + q).abs() < 1e-6 * q.max(1.0));
            }
        }
        assert_eq!(t_quantile(1.0, 4.0), f64::INFINITY);
        assert!(t_quantile(0.5, 3.0).abs() < 1e-12);
    }

    #[test]
    fn only_confidently_beaten_candidates_are_dropped() {
        let r = Racing {
            chunk: 64,
            confidence: 0.95,
            min_chunks: 2,
        };
        // 0 and 1 are clearly better than 3 on every chunk; 2 is close to 0.
        let scores = vec![
            vec![1.0, 1.1, 0.9],
            vec![1.05, 1.15, 0.95],
            vec![1.2, 0.9, 1.0],
            vec![2.0, 2.1, 1.9],
        ];
        assert_eq!(r.dropped(&scores, &[0, 1, 2, 3], 2), vec![3]);
        // 2 is also confidently better than 3; nobody else is beaten by 3 others.
        assert_eq!(r.dropped(&scores, &[0, 1, 2, 3], 3), vec![3]);
        // Keeping 1: 1 trails 0 by 0.05 on every chunk (paired, certain); 2
        // is ahead of 0 on one chunk, so not confidently worse.
        assert_eq!(r.dropped(&scores, &[0, 1, 2, 3], 1), vec![1, 3]);
        // Nothing is dropped when all survive.
        assert!(r.dropped(&scores, &[0, 1, 2, 3], 4).is_empty());
        let never = Racing {
            confidence: 1.0,
            ..r
        };
        assert!(never.dropped(&scores, &[0, 1, 2, 3], 1).is_empty());
        // Not before the minimum sample.
        let one: Vec<Vec<f64>> = scores.iter().map(|s| s[..1].to_vec()).collect();
        assert!(r.dropped(&one, &[0, 1, 2, 3], 1).is_empty());
    }

    #[test]
    fn chunks_divide_the_stage_or_it_is_whole() {
        let r = Racing {
            chunk: 512,
            confidence: 0.95,
            min_chunks: 2,
        };
        assert_eq!(r.chunks(2048), 4);
        assert_eq!(r.chunks(512), 1);
        assert_eq!(r.chunks(1536), 3);
        assert_eq!(r.chunks(1000), 1);
    }
}
