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
    let mean = d.iter().sum::<f64>() / j as f64;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (j - 1) as f64;
    mean - t * (var / j as f64).sqrt() > 0.0
}

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9); +∞ at 1.
pub fn normal_quantile(p: f64) -> f64 {
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Student's t quantile with `nu` degrees of freedom: exact for 1 and 2,
/// else the Cornish–Fisher expansion around the normal quantile (within
/// 1% from 3 degrees of freedom at the usual confidences).
pub fn t_quantile(p: f64, nu: f64) -> f64 {
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if nu <= 1.0 {
        return (std::f64::consts::PI * (p - 0.5)).tan();
    }
    if nu <= 2.0 {
        let a = 4.0 * p * (1.0 - p);
        return (2.0 * p - 1.0) * (2.0 / a).sqrt();
    }
    let z = normal_quantile(p);
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * nu)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * nu.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tables() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.05) + 1.644854).abs() < 1e-5);
        // Student's t tables: 0.95 at 1, 2, 3, 5, 10 degrees of freedom.
        for (nu, t) in [
            (1.0, 6.3138),
            (2.0, 2.9200),
            (3.0, 2.3534),
            (5.0, 2.0150),
            (10.0, 1.8125),
        ] {
            let q = t_quantile(0.95, nu);
            assert!((q - t).abs() / t < 0.01, "nu {nu}: {q} vs {t}");
        }
        assert_eq!(t_quantile(1.0, 4.0), f64::INFINITY);
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
