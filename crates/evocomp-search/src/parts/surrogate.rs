//! A surrogate of fitness over genomes for screening offspring: kernel
//! ridge regression on the genomes scored so far.
//!
//! The kernel counts the units two genomes give the same level (the inner
//! product of their one-hot level encodings), so the model is a per-unit
//! additive function of the levels; `pairwise` adds the pairs of units that
//! agree (the one-hot products of two units), i.e. pairwise interaction
//! terms. With a vanishing ridge and enough distinct genomes, an additive
//! fitness is recovered exactly (the tests check it). Targets are centred
//! per sample by the caller: only differences between genomes scored on
//! the same tokens are learnt, which is all a ranking needs.

use crate::framework::space::Genome;
use serde::{Deserialize, Serialize};

/// A fitted model: the training genomes and their dual weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Surrogate {
    genomes: Vec<Genome>,
    alpha: Vec<f64>,
    mean: f64,
    pairwise: bool,
}

/// Units at the same level in `a` and `b`.
fn matches(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

fn kernel(a: &[i64], b: &[i64], pairwise: bool) -> f64 {
    let m = matches(a, b) as f64;
    if pairwise {
        // Each agreeing pair of units is one more feature both genomes share.
        m + m * (m - 1.0) / 2.0 / a.len().max(1) as f64
    } else {
        m
    }
}

impl Surrogate {
    /// Fit `y` (one per genome) with ridge `ridge` × the number of units on
    /// the kernel's diagonal. None when there is nothing to fit or the
    /// system is singular (a zero ridge on repeated genomes).
    pub fn fit(genomes: &[Genome], y: &[f64], ridge: f64, pairwise: bool) -> Option<Self> {
        let n = genomes.len();
        if n == 0 || y.len() != n {
            return None;
        }
        let mean = y.iter().sum::<f64>() / n as f64;
        let units = genomes[0].len().max(1) as f64;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = kernel(&genomes[i], &genomes[j], pairwise);
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
            k[i * n + i] += ridge * units;
        }
        let rhs: Vec<f64> = y.iter().map(|v| v - mean).collect();
        let alpha = cholesky_solve(&k, n, rhs)?;
        Some(Self {
            genomes: genomes.to_vec(),
            alpha,
            mean,
            pairwise,
        })
    }

    pub fn predict(&self, g: &[i64]) -> f64 {
        self.mean
            + self
                .genomes
                .iter()
                .zip(&self.alpha)
                .map(|(t, a)| a * kernel(t, g, self.pairwise))
                .sum::<f64>()
    }
}

/// Solve `a x = b` for a symmetric positive definite `a` (n × n, row-major)
/// by faer's Cholesky factorisation, on one thread; None when it is not
/// positive definite or so close to singular that a pivot falls below
/// 1e-12 of its diagonal entry.
fn cholesky_solve(a: &[f64], n: usize, b: Vec<f64>) -> Option<Vec<f64>> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt;
    use faer::{Mat, Par};
    let mut l = Mat::<f64>::from_fn(n, n, |i, j| if j <= i { a[i * n + j] } else { 0.0 });
    let mut mem = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(
        n,
        Par::Seq,
        Default::default(),
    ));
    llt::factor::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .ok()?;
    for j in 0..n {
        let d = l[(j, j)] * l[(j, j)];
        if d <= 1e-12 * a[j * n + j].abs().max(1.0) || !d.is_finite() {
            return None;
        }
    }
    let mut x = Mat::<f64>::from_fn(n, 1, |i, _| b[i]);
    let mut mem = MemBuffer::new(llt::solve::solve_in_place_scratch::<f64>(n, 1, Par::Seq));
    llt::solve::solve_in_place(l.as_ref(), x.as_mut(), Par::Seq, MemStack::new(&mut mem));
    Some((0..n).map(|i| x[(i, 0)]).collect())
}

/// How well one generation's predictions matched the scores that followed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictionError {
    pub generation: usize,
    /// Spearman's rank correlation of predicted and scored fitness.
    pub rank_correlation: f64,
    /// Root mean square error of the per-sample centred values.
    pub rmse: f64,
    /// Genomes the model was fitted on.
    pub trained_on: usize,
}

/// Ranks from 1 (ties get their average rank).
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (average ranks for ties); 0 for fewer than
/// two values or a constant side.
pub fn rank_correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (ra, rb) = (ranks(&a[..n]), ranks(&b[..n]));
    let m = (n + 1) as f64 / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        sab += (ra[i] - m) * (rb[i] - m);
        saa += (ra[i] - m) * (ra[i] - m);
        sbb += (rb[i] - m) * (rb[i] - m);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;
    use rand::RngExt;

    #[test]
    fn an_additive_function_is_recovered_exactly() {
        let (units, levels) = (6usize, 4i64);
        let mut r = rng_for(1, &[]);
        let w: Vec<Vec<f64>> = (0..units)
            .map(|_| (0..levels).map(|_| r.random::<f64>()).collect())
            .collect();
        let f = |g: &[i64]| -> f64 {
            0.7 + g
                .iter()
                .enumerate()
                .map(|(u, &l)| w[u][l as usize])
                .sum::<f64>()
        };
        let random = |r: &mut crate::rng::SeededRng| -> Genome {
            (0..units).map(|_| r.random_range(0..levels)).collect()
        };
        let train: Vec<Genome> = (0..80).map(|_| random(&mut r)).collect();
        let y: Vec<f64> = train.iter().map(|g| f(g)).collect();
        // Repeated genomes make the plain kernel matrix singular: a tiny ridge.
        let s = Surrogate::fit(&train, &y, 1e-10, false).unwrap();
        for _ in 0..50 {
            let g = random(&mut r);
            assert!(
                (s.predict(&g) - f(&g)).abs() < 1e-6,
                "{g:?}: {} vs {}",
                s.predict(&g),
                f(&g)
            );
        }
        // Not a tautology: an interaction term is not additive, and the
        // additive model misses it.
        let h = |g: &[i64]| f(g) + if g[0] == g[1] { 1.0 } else { 0.0 };
        let y: Vec<f64> = train.iter().map(|g| h(g)).collect();
        let s = Surrogate::fit(&train, &y, 1e-10, false).unwrap();
        let worst = (0..50)
            .map(|_| {
                let g = random(&mut r);
                (s.predict(&g) - h(&g)).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst > 0.1, "{worst}");
    }

    #[test]
    fn pairwise_terms_fit_an_interaction_the_additive_model_cannot() {
        let mut r = rng_for(2, &[]);
        let random = |r: &mut crate::rng::SeededRng| -> Genome {
            (0..5).map(|_| r.random_range(0..3)).collect()
        };
        let h = |g: &[i64]| -> f64 { g[0] as f64 * 0.3 + if g[1] == g[2] { 1.0 } else { 0.0 } };
        let train: Vec<Genome> = (0..200).map(|_| random(&mut r)).collect();
        let y: Vec<f64> = train.iter().map(|g| h(g)).collect();
        let err = |pairwise: bool, r: &mut crate::rng::SeededRng| {
            let s = Surrogate::fit(&train, &y, 1e-6, pairwise).unwrap();
            (0..100)
                .map(|_| {
                    let g = random(r);
                    (s.predict(&g) - h(&g)).powi(2)
                })
                .sum::<f64>()
        };
        let (add, pair) = (err(false, &mut r), err(true, &mut r));
        assert!(pair < 0.01 * add, "pairwise {pair} additive {add}");
    }

    #[test]
    fn rank_correlation_of_known_orders() {
        assert_eq!(rank_correlation(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
        assert_eq!(rank_correlation(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        assert_eq!(rank_correlation(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!(
            (rank_correlation(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12
        );
    }
}
