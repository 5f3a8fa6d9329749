//! EvolKV (Yu et al., 2025): per-layer KV-cache budgets by grouped CMA-ES,
//! bottom-up, with the cache-score objective and budget completion.

use crate::framework::setup::{
    Build, Kind, MAX_GENERATIONS, MAX_GENOMES, Setup, Spec, SpecError, at_most, ensure,
};
use crate::framework::space::{Budget, Genome, Space};
use crate::framework::strategy::{Best, Progress, Request, SampleDraw, Scored, Strategy, requests};
use crate::parts::cmaes::CmaEs;
use crate::{SearchError, results_in_order};
use serde::{Deserialize, Serialize};

/// EvolKV's settings, as a config holds them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvolKvSpec {
    #[serde(default = "default_group")]
    pub group_size: usize,
    #[serde(default = "default_generations")]
    pub generations: usize,
    #[serde(default = "default_sigma")]
    pub sigma0: f64,
    #[serde(default)]
    pub population: Option<usize>,
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
}

fn default_group() -> usize {
    8
}
fn default_generations() -> usize {
    10
}
fn default_sigma() -> f64 {
    0.3
}
fn default_lambda() -> f64 {
    0.3
}
fn default_gamma() -> f64 {
    0.2
}

impl Spec for EvolKvSpec {
    fn label(&self) -> String {
        "EvolKV".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(self.group_size >= 1, "group_size", "must be at least 1")?;
        ensure(self.generations >= 1, "generations", "must be at least 1")?;
        at_most(
            self.generations,
            MAX_GENERATIONS,
            "generations",
            "generations",
        )?;
        if let Some(p) = self.population {
            at_most(p, MAX_GENOMES, "population", "genomes")?;
        }
        ensure(
            self.lambda.is_finite(),
            "lambda",
            format!("must be finite, got {}", self.lambda),
        )?;
        ensure(
            self.sigma0 > 0.0 && self.sigma0.is_finite(),
            "sigma0",
            "must be positive",
        )?;
        ensure(self.lambda >= 0.0, "lambda", "must be >= 0")?;
        ensure(
            (0.0..=1.0).contains(&self.gamma),
            "gamma",
            "must be in [0, 1]",
        )
    }
}

impl Build for EvolKvSpec {
    type Strategy = EvolKv;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        if !matches!(setup.kind, Kind::KvBudget | Kind::KvBits) {
            return Err(SpecError::new(
                "",
                "EvolKV allocates KV-cache budgets: it needs a KvBudget database",
            )
            .into());
        }
        EvolKv::new(
            EvolKvConfig {
                group_size: self.group_size,
                generations: self.generations,
                sigma0: self.sigma0,
                population: self.population,
                lambda: self.lambda,
                gamma: self.gamma,
                sample: setup.sample,
                seed: setup.seed,
            },
            setup.space,
            setup.budget,
        )
    }
}

/// EvolKV's settings (Yu et al., 2025).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolKvConfig {
    /// Contiguous units per group, optimised bottom-up.
    pub group_size: usize,
    /// CMA-ES generations per group.
    pub generations: usize,
    /// Initial step size, in units of each unit's cost range.
    pub sigma0: f64,
    /// CMA-ES population; None takes 4 + ⌊3 ln n⌋.
    pub population: Option<usize>,
    /// Weight of the cache score (λ).
    pub lambda: f64,
    /// Penalty slope under the target (γ).
    pub gamma: f64,
    pub sample: SampleDraw,
    pub seed: u64,
}

/// EvolKV: the units are split into contiguous groups; each group in turn is
/// optimised by a fresh CMA-ES over its units' costs, earlier groups frozen at
/// their best and later ones at the target mean cost. The objective is
/// EvolKV's `score · (1 + λ · CacheScore)` with `score = exp(−fitness)`, the
/// cache score taken from the candidate's own mean cost. As published,
/// candidates are scored as proposed (each unit at the level nearest its
/// cost; off the budget, so they are probes), and the budget is completed
/// once, after the search: the frozen costs are rescaled to the target total
/// and that one genome, on the budget, is scored and is the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolKv {
    pub cfg: EvolKvConfig,
    pub budget: Budget,
    /// Current cost per unit (frozen groups at their best).
    pub x: Vec<f64>,
    pub group: usize,
    pub cma: Option<CmaEs>,
    /// Genomes of the current CMA-ES ask.
    pending: Vec<Genome>,
    /// Best (objective, genome, fitness) so far.
    pub best: Option<(f64, Genome, f64)>,
    /// Best of the current group: (objective, unit costs of the group).
    group_best: Option<(f64, Vec<f64>)>,
    /// The completed genome awaits its score (after the last group).
    #[serde(default)]
    completing: bool,
    /// The result: the completed genome and its fitness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<(Genome, f64)>,
}

impl EvolKv {
    pub fn new(cfg: EvolKvConfig, space: &Space, budget: Budget) -> Result<Self, SearchError> {
        if cfg.group_size == 0 {
            return Err(SpecError::new("group_size", "must be at least 1").into());
        }
        if cfg.generations == 0 {
            return Err(SpecError::new("generations", "must be at least 1").into());
        }
        let target = budget.limit() as f64 / space.len() as f64;
        let mut s = Self {
            cfg,
            budget,
            x: vec![target; space.len()],
            group: 0,
            cma: None,
            pending: Vec::new(),
            best: None,
            group_best: None,
            completing: false,
            result: None,
        };
        s.start_group(space)?;
        Ok(s)
    }

    pub fn n_groups(&self) -> usize {
        self.x.len().div_ceil(self.cfg.group_size)
    }

    fn range(&self) -> std::ops::Range<usize> {
        let a = self.group * self.cfg.group_size;
        a..(a + self.cfg.group_size).min(self.x.len())
    }

    fn span(space: &Space, i: usize) -> (f64, f64) {
        let c = &space.units[i].costs;
        let lo = *c.iter().min().expect("levels") as f64;
        let hi = *c.iter().max().expect("levels") as f64;
        (lo, (hi - lo).max(1.0))
    }

    fn start_group(&mut self, space: &Space) -> Result<(), SearchError> {
        if self.group >= self.n_groups() {
            // Every group is frozen: complete the budget once.
            self.cma = None;
            self.pending = vec![Self::complete(space, &self.x, &self.budget)];
            self.completing = true;
            return Ok(());
        }
        let mean: Vec<f64> = self
            .range()
            .map(|i| {
                let (lo, span) = Self::span(space, i);
                (self.x[i] - lo) / span
            })
            .collect();
        let seed = crate::rng::mix(self.cfg.seed, &[0xe701, self.group as u64]);
        self.cma = Some(CmaEs::new(
            mean,
            self.cfg.sigma0,
            self.cfg.population,
            seed,
        )?);
        self.group_best = None;
        self.refill(space);
        Ok(())
    }

    /// The cache score of a mean cost `k` against the target `c`.
    pub fn cache_score(k: f64, c: f64, gamma: f64) -> f64 {
        if k > c {
            (1.0 - (k - c) / c).max(0.0)
        } else {
            1.0 - gamma * (1.0 - k / c)
        }
    }

    fn costs_of(&self, space: &Space, y: &[f64]) -> Vec<f64> {
        let mut x = self.x.clone();
        for (k, i) in self.range().enumerate() {
            let (lo, span) = Self::span(space, i);
            x[i] = lo + y[k].clamp(0.0, 1.0) * span;
        }
        x
    }

    /// A candidate as proposed: each unit at the level of nearest cost.
    pub fn snap(space: &Space, x: &[f64]) -> Genome {
        space
            .units
            .iter()
            .zip(x)
            .map(|(u, &xi)| {
                let k = (0..u.levels.len())
                    .min_by(|&a, &c| {
                        ((u.costs[a] as f64) - xi)
                            .abs()
                            .total_cmp(&((u.costs[c] as f64) - xi).abs())
                    })
                    .expect("levels");
                u.levels[k]
            })
            .collect()
    }

    /// Budget completion: scale the costs to the target total, snap each
    /// unit to the level of nearest cost, then repair under the limit.
    pub fn complete(space: &Space, x: &[f64], budget: &Budget) -> Genome {
        let total: f64 = x.iter().sum::<f64>().max(1e-9);
        let want = budget.limit() as f64;
        let scaled: Vec<f64> = x
            .iter()
            .map(|&xi| (xi + xi / total * (want - total)).ceil())
            .collect();
        let mut g = Self::snap(space, &scaled);
        let idx = |g: &Genome, i: usize| space.units[i].index(g[i]).expect("valid");
        // Over the limit: cut the unit holding the most.
        while space.cost(&g) > budget.limit() {
            let Some(i) = (0..g.len())
                .filter(|&i| g[i] < space.units[i].max())
                .max_by_key(|&i| (space.units[i].costs[idx(&g, i)], std::cmp::Reverse(i)))
            else {
                break;
            };
            g[i] = space.units[i].levels[idx(&g, i) + 1];
        }
        // Room left: give a level back to the unit holding the least.
        loop {
            let mut order: Vec<usize> = (0..g.len())
                .filter(|&i| g[i] > space.units[i].min())
                .collect();
            order.sort_by_key(|&i| (space.units[i].costs[idx(&g, i)], i));
            let mut moved = false;
            for i in order {
                let mut h = g.clone();
                h[i] = space.units[i].levels[idx(&g, i) - 1];
                if space.cost(&h) <= budget.limit() {
                    g = h;
                    moved = true;
                    break;
                }
            }
            if !moved {
                break;
            }
        }
        g
    }

    fn refill(&mut self, space: &Space) {
        let Some(cma) = self.cma.as_mut() else {
            return;
        };
        let ys = cma.ask();
        self.pending.clear();
        for y in ys {
            let x = self.costs_of(space, &y);
            self.pending.push(Self::snap(space, &x));
        }
    }

    fn objective(&self, fitness: f64, mean: f64, space: &Space) -> f64 {
        let c = self.budget.limit() as f64 / space.len() as f64;
        -((-fitness).exp() * (1.0 + self.cfg.lambda * Self::cache_score(mean, c, self.cfg.gamma)))
    }

    /// The objective (lower is better) of a genome as evaluated: its cache
    /// score comes from the genome's own mean cost (over the target is
    /// penalised, under it slightly).
    pub fn genome_objective(&self, space: &Space, genome: &[i64], fitness: f64) -> f64 {
        let mean = space.cost(genome) as f64 / space.len() as f64;
        self.objective(fitness, mean, space)
    }

    fn tell_results(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        if self.completing {
            let fit = results_in_order(1, results)?;
            self.result = Some((self.pending[0].clone(), fit[0]));
            self.pending.clear();
            self.completing = false;
            return Ok(());
        }
        if self.cma.is_none() {
            return Err(SearchError::Protocol(
                "tell after the search finished".into(),
            ));
        }
        let fit = results_in_order(self.pending.len(), results)?;
        let mut values = Vec::with_capacity(self.pending.len());
        for (g, &f) in self.pending.iter().zip(&fit) {
            let obj = self.genome_objective(space, g, f);
            values.push(obj);
            if self.best.as_ref().is_none_or(|(b, _, _)| obj < *b) {
                self.best = Some((obj, g.clone(), f));
            }
            if self.group_best.as_ref().is_none_or(|(b, _)| obj < *b) {
                // The group freezes at the costs that were evaluated.
                let evaluated: Vec<f64> = self
                    .range()
                    .map(|i| {
                        let u = &space.units[i];
                        u.costs[u.index(g[i]).expect("a valid level")] as f64
                    })
                    .collect();
                self.group_best = Some((obj, evaluated));
            }
        }
        let cma = self.cma.as_mut().expect("checked");
        cma.tell(&values)?;
        if cma.generation >= self.cfg.generations {
            if let Some((_, xs)) = self.group_best.take() {
                for (k, i) in self.range().enumerate() {
                    self.x[i] = xs[k];
                }
            }
            self.group += 1;
            self.start_group(space)?;
        } else {
            self.refill(space);
        }
        Ok(())
    }
}

impl Strategy for EvolKv {
    /// The candidates as probes (off the budget), or the completed genome.
    fn ask(&self, _space: &Space) -> Vec<Request> {
        requests(&self.pending, self.cfg.sample, !self.completing)
    }

    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        self.tell_results(space, results)
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// The completed genome, once scored (the candidates before it are off
    /// the budget).
    fn best(&self) -> Option<Best> {
        self.result.as_ref().map(|(g, f)| Best {
            genome: g.clone(),
            fitness: *f,
        })
    }

    fn progress(&self) -> Progress {
        Progress {
            step: self.group * self.cfg.generations + self.cma.as_ref().map_or(0, |c| c.generation),
            total: self.n_groups() * self.cfg.generations,
            label: "CMA-ES generation".into(),
        }
    }
}
