//! How sure a comparison is: the paired bootstrap over evaluation windows.
//!
//! Two configurations scored on the same windows give per-window values
//! `a[i]`, `b[i]`; the difference of their means is resampled by drawing
//! windows with replacement (the same windows for both, so what the windows
//! share cancels), and the 2.5th and 97.5th percentiles of the resampled
//! differences bound a 95% interval. An interval that excludes zero is a
//! significant difference; one that holds zero is a tie.

use evocomp_search::rng::rng_for;
use rand::RngExt;

/// The difference `mean(a) − mean(b)` and its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Windows (pairs) it was computed on.
    pub windows: usize,
}

/// What an interval says about `a` against `b` (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `a` is lower, and the interval excludes zero.
    Better,
    /// `a` is higher, and the interval excludes zero.
    Worse,
    /// The interval holds zero.
    Tie,
}

impl Difference {
    pub fn verdict(&self) -> Verdict {
        if self.hi < 0.0 {
            Verdict::Better
        } else if self.lo > 0.0 {
            Verdict::Worse
        } else {
            Verdict::Tie
        }
    }
}

/// The paired bootstrap of `mean(a) − mean(b)` with `resamples` draws
/// (deterministic from `seed`), a `level` interval (0.95 for 95%); None when
/// the slices differ in length, are empty, or hold a non-finite value.
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Difference> {
    let n = a.len();
    if n == 0 || b.len() != n || resamples == 0 || !(0.0..1.0).contains(&level) {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = rng_for(seed, &[0xb007]);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let at = |q: f64| means[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    Some(Difference {
        mean,
        lo: at(tail),
        hi: at(1.0 - tail),
        windows: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// Pairs with a known difference of means (0.05), a window effect they
    /// share (which pairing cancels) and noise of their own.
    fn pair(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut r = rng_for(seed, &[7]);
        let shared = Normal::new(1.0, 0.5).unwrap();
        let own = Normal::new(0.0, 0.1).unwrap();
        (0..n)
            .map(|_| {
                let w: f64 = shared.sample(&mut r);
                (w + 0.05 + own.sample(&mut r), w + own.sample(&mut r))
            })
            .unzip()
    }

    #[test]
    fn the_interval_covers_a_known_difference_about_95_percent_of_the_time() {
        let trials = 400;
        let covered = (0..trials)
            .filter(|&t| {
                let (a, b) = pair(100, t);
                let d = paired_bootstrap(&a, &b, 1000, 0.95, t).unwrap();
                d.lo <= 0.05 && 0.05 <= d.hi
            })
            .count();
        let rate = covered as f64 / trials as f64;
        eprintln!("coverage of the true difference: {rate} over {trials} trials");
        // 400 trials: a standard error of 1.1 points around 95%.
        assert!((0.91..=0.98).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn pairing_decides_what_unpaired_means_cannot() {
        let (a, b) = pair(100, 3);
        let d = paired_bootstrap(&a, &b, 2000, 0.95, 1).unwrap();
        // The shared window effect (sd 0.5) dwarfs the 0.05 difference, but
        // it cancels in pairs: significantly worse (a is higher).
        assert_eq!(d.verdict(), Verdict::Worse);
        assert!(d.lo > 0.0 && (d.mean - 0.05).abs() < 0.03);
        // The same values against themselves: a tie at exactly zero.
        let same = paired_bootstrap(&a, &a, 500, 0.95, 1).unwrap();
        assert_eq!((same.mean, same.lo, same.hi), (0.0, 0.0, 0.0));
        assert_eq!(same.verdict(), Verdict::Tie);
        // Deterministic from the seed.
        assert_eq!(paired_bootstrap(&a, &b, 2000, 0.95, 1), Some(d));
    }

    #[test]
    fn unusable_inputs_give_none() {
        assert_eq!(paired_bootstrap(&[], &[], 10, 0.95, 0), None);
        assert_eq!(paired_bootstrap(&[1.0], &[1.0, 2.0], 10, 0.95, 0), None);
        assert_eq!(paired_bootstrap(&[f64::NAN], &[1.0], 10, 0.95, 0), None);
        assert_eq!(paired_bootstrap(&[1.0], &[1.0], 0, 0.95, 0), None);
        assert_eq!(paired_bootstrap(&[1.0], &[1.0], 10, 1.0, 0), None);
    }
}
