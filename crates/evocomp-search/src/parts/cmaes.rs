//! CMA-ES, (μ/μ_w, λ) with rank-one and rank-μ covariance updates and
//! cumulative step-size adaptation, following Hansen's tutorial
//! ("The CMA Evolution Strategy: A Tutorial", 2016) and its default
//! parameters. An ask/tell serde value, deterministic from its seed.

use crate::SearchError;
use crate::rng::rng_for;
use faer::{Mat, Side};
use rand::RngExt;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Minimises a function of `n` real variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmaEs {
    pub n: usize,
    pub lambda: usize,
    mu: usize,
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    c_c: f64,
    c1: f64,
    c_mu: f64,
    chi_n: f64,
    pub mean: Vec<f64>,
    pub sigma: f64,
    /// Covariance, row-major `n x n`.
    c: Vec<f64>,
    /// Eigenvectors (columns, row-major storage) and sqrt eigenvalues of C.
    b: Vec<f64>,
    d: Vec<f64>,
    p_sigma: Vec<f64>,
    p_c: Vec<f64>,
    pub generation: usize,
    seed: u64,
    /// Samples of the last ask: z (standard normal) and x.
    asked: Vec<Vec<f64>>,
    pub best: Option<(Vec<f64>, f64)>,
    pub evaluations: usize,
}

impl CmaEs {
    /// Start at `mean` with step size `sigma`; `lambda` None takes 4 + ⌊3 ln n⌋.
    pub fn new(
        mean: Vec<f64>,
        sigma: f64,
        lambda: Option<usize>,
        seed: u64,
    ) -> Result<Self, SearchError> {
        let n = mean.len();
        if n == 0 {
            return Err(SearchError::Config(
                "CMA-ES needs at least one variable".into(),
            ));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(SearchError::Config(format!(
                "sigma must be positive, got {sigma}"
            )));
        }
        let nf = n as f64;
        let lambda = lambda
            .unwrap_or(4 + (3.0 * nf.ln()).floor() as usize)
            .max(2);
        let mu = lambda / 2;
        let raw: Vec<f64> = (0..mu)
            .map(|i| (mu as f64 + 0.5).ln() - ((i + 1) as f64).ln())
            .collect();
        let sum: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / sum).collect();
        let mu_eff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let c_c = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        let c1 = 2.0 / ((nf + 1.3).powi(2) + mu_eff);
        let c_mu =
            (1.0 - c1).min(2.0 * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + mu_eff));
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        let eye: Vec<f64> = (0..n * n)
            .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
            .collect();
        Ok(Self {
            n,
            lambda,
            mu,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            c_c,
            c1,
            c_mu,
            chi_n,
            mean,
            sigma,
            c: eye.clone(),
            b: eye,
            d: vec![1.0; n],
            p_sigma: vec![0.0; n],
            p_c: vec![0.0; n],
            generation: 0,
            seed,
            asked: Vec::new(),
            best: None,
            evaluations: 0,
        })
    }

    /// λ points to evaluate (the same points until told).
    pub fn ask(&mut self) -> Vec<Vec<f64>> {
        if self.asked.is_empty() {
            let mut rng = rng_for(self.seed, &[0xc4a, self.generation as u64]);
            let n = self.n;
            self.asked = (0..self.lambda)
                .map(|_| {
                    let z: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
                    // x = m + σ B D z
                    (0..n)
                        .map(|i| {
                            self.mean[i]
                                + self.sigma
                                    * (0..n)
                                        .map(|j| self.b[i * n + j] * self.d[j] * z[j])
                                        .sum::<f64>()
                        })
                        .collect()
                })
                .collect();
        }
        self.asked.clone()
    }

    /// Function values of the last ask, in its order.
    // Index loops mirror the tutorial's formulas.
    #[allow(clippy::needless_range_loop)]
    pub fn tell(&mut self, values: &[f64]) -> Result<(), SearchError> {
        if values.len() != self.asked.len() || self.asked.is_empty() {
            return Err(SearchError::Protocol(format!(
                "{} values for {} asked points",
                values.len(),
                self.asked.len()
            )));
        }
        let n = self.n;
        let nf = n as f64;
        let xs = std::mem::take(&mut self.asked);
        self.evaluations += xs.len();
        let mut order: Vec<usize> = (0..xs.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        if self
            .best
            .as_ref()
            .is_none_or(|(_, f)| values[order[0]] < *f)
        {
            self.best = Some((xs[order[0]].clone(), values[order[0]]));
        }
        let old = self.mean.clone();
        let ys: Vec<Vec<f64>> = order[..self.mu]
            .iter()
            .map(|&k| (0..n).map(|i| (xs[k][i] - old[i]) / self.sigma).collect())
            .collect();
        let yw: Vec<f64> = (0..n)
            .map(|i| ys.iter().zip(&self.weights).map(|(y, w)| w * y[i]).sum())
            .collect();
        for i in 0..n {
            self.mean[i] = old[i] + self.sigma * yw[i];
        }
        // C^{-1/2} y_w = B D^{-1} Bᵀ y_w
        let bt_y: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| self.b[i * n + j] * yw[i]).sum::<f64>() / self.d[j])
            .collect();
        let c_inv_sqrt_y: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| self.b[i * n + j] * bt_y[j]).sum())
            .collect();
        let k_s = (self.c_sigma * (2.0 - self.c_sigma) * self.mu_eff).sqrt();
        for i in 0..n {
            self.p_sigma[i] = (1.0 - self.c_sigma) * self.p_sigma[i] + k_s * c_inv_sqrt_y[i];
        }
        let ps_norm = self.p_sigma.iter().map(|v| v * v).sum::<f64>().sqrt();
        let g = (self.generation + 1) as f64;
        let h_sigma = ps_norm / (1.0 - (1.0 - self.c_sigma).powf(2.0 * g)).sqrt() / self.chi_n
            < 1.4 + 2.0 / (nf + 1.0);
        let hs = if h_sigma { 1.0 } else { 0.0 };
        let k_c = (self.c_c * (2.0 - self.c_c) * self.mu_eff).sqrt();
        for i in 0..n {
            self.p_c[i] = (1.0 - self.c_c) * self.p_c[i] + hs * k_c * yw[i];
        }
        let delta = (1.0 - hs) * self.c_c * (2.0 - self.c_c);
        for i in 0..n {
            for j in 0..n {
                let rank_mu: f64 = ys
                    .iter()
                    .zip(&self.weights)
                    .map(|(y, w)| w * y[i] * y[j])
                    .sum();
                let k = i * n + j;
                self.c[k] = (1.0 - self.c1 - self.c_mu) * self.c[k]
                    + self.c1 * (self.p_c[i] * self.p_c[j] + delta * self.c[k])
                    + self.c_mu * rank_mu;
            }
        }
        self.sigma *= ((self.c_sigma / self.d_sigma) * (ps_norm / self.chi_n - 1.0)).exp();
        self.decompose()?;
        self.generation += 1;
        Ok(())
    }

    fn decompose(&mut self) -> Result<(), SearchError> {
        let n = self.n;
        // Keep C exactly symmetric.
        let c = Mat::from_fn(n, n, |i, j| 0.5 * (self.c[i * n + j] + self.c[j * n + i]));
        let eig = c.self_adjoint_eigen(Side::Lower).map_err(|e| {
            SearchError::Protocol(format!("covariance eigendecomposition failed: {e:?}"))
        })?;
        let s = eig.S().column_vector();
        let u = eig.U();
        for i in 0..n {
            self.d[i] = s[i].max(1e-300).sqrt();
            for j in 0..n {
                self.b[i * n + j] = u[(i, j)];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimise(
        f: impl Fn(&[f64]) -> f64,
        x0: Vec<f64>,
        sigma: f64,
        max_gen: usize,
        seed: u64,
    ) -> (f64, usize) {
        let mut es = CmaEs::new(x0, sigma, None, seed).unwrap();
        for _ in 0..max_gen {
            let xs = es.ask();
            let v: Vec<f64> = xs.iter().map(|x| f(x)).collect();
            es.tell(&v).unwrap();
            if es.best.as_ref().unwrap().1 < 1e-10 {
                break;
            }
        }
        (es.best.unwrap().1, es.evaluations)
    }

    fn sphere(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum()
    }

    fn rosenbrock(x: &[f64]) -> f64 {
        x.windows(2)
            .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
            .sum()
    }

    #[test]
    fn converges_on_the_sphere() {
        let (f, evals) = minimise(sphere, vec![3.0; 10], 1.0, 2000, 1);
        assert!(f < 1e-10, "{f} after {evals}");
        // Hansen reports about 1500 evaluations for n = 10 to 1e-10.
        assert!(evals < 3000, "{evals}");
    }

    #[test]
    fn converges_on_rosenbrock() {
        for seed in [1, 2] {
            let (f, evals) = minimise(rosenbrock, vec![0.0; 8], 0.5, 5000, seed);
            assert!(f < 1e-10, "seed {seed}: {f} after {evals}");
        }
    }

    #[test]
    fn deterministic_and_checkpointable() {
        let mut a = CmaEs::new(vec![1.0; 4], 0.5, None, 9).unwrap();
        for _ in 0..10 {
            let v: Vec<f64> = a.ask().iter().map(|x| rosenbrock(x)).collect();
            a.tell(&v).unwrap();
        }
        let mut b: CmaEs = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for _ in 0..10 {
            let va: Vec<f64> = a.ask().iter().map(|x| rosenbrock(x)).collect();
            a.tell(&va).unwrap();
            let vb: Vec<f64> = b.ask().iter().map(|x| rosenbrock(x)).collect();
            b.tell(&vb).unwrap();
        }
        assert_eq!(a, b);
        assert!(CmaEs::new(vec![], 1.0, None, 0).is_err());
        assert!(a.tell(&[1.0]).is_err());
    }
}
