//! NSGA-II (Deb et al., 2002) as an ask/tell strategy over any
//! [`Representation`]: per-unit levels under a cost ceiling (a whole
//! quality-versus-size front in one study), or real vectors.

use crate::SearchError;
use crate::framework::setup::{
    Build, MAX_GENERATIONS, MAX_GENOMES, Setup, Spec, SpecError, at_most, ensure,
};
use crate::framework::space::{Budget, Genome, Space};
use crate::framework::strategy::{
    Best, FrontMember, Progress, Request, Role, SampleDraw, Scored, Strategy, requests,
    results_in_order,
};
use crate::heuristics::uniform_genome;
use crate::pareto::{crowding_distance, non_dominated_sort, select};
use crate::rng::SeededRng;
use crate::rng::rng_for;
use rand::RngExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How genomes are made, recombined and mutated.
pub trait Representation {
    type Genome: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned;
    fn random(&self, rng: &mut SeededRng) -> Self::Genome;
    fn crossover(&self, a: &Self::Genome, b: &Self::Genome, rng: &mut SeededRng) -> Self::Genome;
    fn mutate(&self, g: &mut Self::Genome, rng: &mut SeededRng);
}

/// NSGA-II's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nsga2Config {
    pub population: usize,
    pub generations: usize,
    pub seed: u64,
}

/// One evaluated member: its genome and objectives (all minimised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "G: Serialize + DeserializeOwned")]
pub struct Member<G> {
    pub genome: G,
    pub objectives: Vec<f64>,
}

/// The strategy; a plain serde value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "R: Serialize + DeserializeOwned, R::Genome: Serialize + DeserializeOwned")]
pub struct Nsga2<R: Representation> {
    pub cfg: Nsga2Config,
    pub rep: R,
    pub population: Vec<Member<R::Genome>>,
    /// Genomes asked for and not yet told.
    pending: Vec<R::Genome>,
    pub generation: usize,
}

impl<R: Representation> Nsga2<R> {
    /// Start with `initial` genomes (e.g. the uniform ones), topped up with random ones.
    pub fn new(cfg: Nsga2Config, rep: R, initial: Vec<R::Genome>) -> Result<Self, SearchError> {
        if cfg.population < 4 {
            return Err(SearchError::Config(
                "NSGA-II needs a population of at least 4".into(),
            ));
        }
        let mut rng = rng_for(cfg.seed, &[0x1417, 0]);
        let mut pending: Vec<R::Genome> = initial.into_iter().take(cfg.population).collect();
        let mut tries = 0;
        while pending.len() < cfg.population && tries < cfg.population * 100 {
            tries += 1;
            let g = rep.random(&mut rng);
            if !pending.contains(&g) {
                pending.push(g);
            }
        }
        Ok(Self {
            cfg,
            rep,
            population: Vec::new(),
            pending,
            generation: 0,
        })
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn ask(&self) -> Vec<R::Genome> {
        self.pending.clone()
    }

    /// Objectives for the last ask, in its order.
    pub fn tell(&mut self, objectives: Vec<Vec<f64>>) -> Result<(), SearchError> {
        if objectives.len() != self.pending.len() {
            return Err(SearchError::Protocol(format!(
                "{} results for {} asked genomes",
                objectives.len(),
                self.pending.len()
            )));
        }
        let mut all = std::mem::take(&mut self.population);
        for (g, o) in std::mem::take(&mut self.pending)
            .into_iter()
            .zip(objectives)
        {
            if o.iter().any(|x| !x.is_finite()) {
                return Err(SearchError::Protocol(format!(
                    "objectives {o:?} are not finite"
                )));
            }
            all.push(Member {
                genome: g,
                objectives: o,
            });
        }
        let objs: Vec<Vec<f64>> = all.iter().map(|m| m.objectives.clone()).collect();
        let keep = select(&objs, self.cfg.population.min(all.len()));
        self.population = keep.into_iter().map(|i| all[i].clone()).collect();
        if self.generation < self.cfg.generations {
            self.pending = self.offspring();
            self.generation += 1;
        }
        Ok(())
    }

    /// The current non-dominated members.
    pub fn front(&self) -> Vec<Member<R::Genome>> {
        let objs: Vec<Vec<f64>> = self
            .population
            .iter()
            .map(|m| m.objectives.clone())
            .collect();
        match non_dominated_sort(&objs).first() {
            Some(f) => f.iter().map(|&i| self.population[i].clone()).collect(),
            None => Vec::new(),
        }
    }

    fn offspring(&self) -> Vec<R::Genome> {
        let mut rng = rng_for(self.cfg.seed, &[0x1417, self.generation as u64 + 1]);
        let objs: Vec<Vec<f64>> = self
            .population
            .iter()
            .map(|m| m.objectives.clone())
            .collect();
        let fronts = non_dominated_sort(&objs);
        let mut rank = vec![0usize; objs.len()];
        let mut crowd = vec![0.0f64; objs.len()];
        for (r, f) in fronts.iter().enumerate() {
            for (&i, d) in f.iter().zip(crowding_distance(f, &objs)) {
                rank[i] = r;
                crowd[i] = d;
            }
        }
        let n = self.population.len();
        let tournament = |rng: &mut SeededRng| {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if rank[a] < rank[b] || (rank[a] == rank[b] && crowd[a] > crowd[b]) {
                a
            } else {
                b
            }
        };
        let mut out: Vec<R::Genome> = Vec::with_capacity(self.cfg.population);
        let mut tries = 0;
        while out.len() < self.cfg.population && tries < self.cfg.population * 50 {
            tries += 1;
            let (p, q) = (tournament(&mut rng), tournament(&mut rng));
            let mut child = self.rep.crossover(
                &self.population[p].genome,
                &self.population[q].genome,
                &mut rng,
            );
            self.rep.mutate(&mut child, &mut rng);
            let duplicate =
                out.contains(&child) || self.population.iter().any(|m| m.genome == child);
            if !duplicate {
                out.push(child);
            }
        }
        out
    }
}

/// Real vectors in `[lo, hi]^n` with bounded SBX crossover (η=20) and
/// bounded polynomial mutation (η=20, rate 1/n), NSGA-II's standard operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealVector {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl Representation for RealVector {
    type Genome = Vec<f64>;

    fn random(&self, rng: &mut SeededRng) -> Vec<f64> {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| l + (h - l) * rng.random::<f64>())
            .collect()
    }

    /// Deb's bounded SBX: one of the two children, at random.
    fn crossover(&self, a: &Vec<f64>, b: &Vec<f64>, rng: &mut SeededRng) -> Vec<f64> {
        const ETA: f64 = 20.0;
        let mut c = a.clone();
        if rng.random::<f64>() > 0.9 {
            return c;
        }
        let first = rng.random::<bool>();
        for i in 0..c.len() {
            if rng.random::<f64>() > 0.5 || (a[i] - b[i]).abs() < 1e-14 {
                continue;
            }
            let (y1, y2) = (a[i].min(b[i]), a[i].max(b[i]));
            let (yl, yu) = (self.lo[i], self.hi[i]);
            let u: f64 = rng.random();
            let betaq = |beta: f64| {
                let alpha = 2.0 - beta.powf(-(ETA + 1.0));
                if u <= 1.0 / alpha {
                    (u * alpha).powf(1.0 / (ETA + 1.0))
                } else {
                    (1.0 / (2.0 - u * alpha)).powf(1.0 / (ETA + 1.0))
                }
            };
            let c1 = 0.5 * ((y1 + y2) - betaq(1.0 + 2.0 * (y1 - yl) / (y2 - y1)) * (y2 - y1));
            let c2 = 0.5 * ((y1 + y2) + betaq(1.0 + 2.0 * (yu - y2) / (y2 - y1)) * (y2 - y1));
            let (c1, c2) = (c1.clamp(yl, yu), c2.clamp(yl, yu));
            // Each variable goes to either child with even odds.
            let swap = rng.random::<bool>();
            c[i] = if first ^ swap { c1 } else { c2 };
        }
        c
    }

    /// Deb's bounded polynomial mutation: steps shrink near the bounds.
    #[allow(clippy::needless_range_loop)] // g, lo and hi share the index
    fn mutate(&self, g: &mut Vec<f64>, rng: &mut SeededRng) {
        const ETA: f64 = 20.0;
        let rate = 1.0 / g.len() as f64;
        for i in 0..g.len() {
            if rng.random::<f64>() >= rate {
                continue;
            }
            let (yl, yu) = (self.lo[i], self.hi[i]);
            if yu <= yl {
                continue;
            }
            let y = g[i];
            let (d1, d2) = ((y - yl) / (yu - yl), (yu - y) / (yu - yl));
            let u: f64 = rng.random();
            let pow = 1.0 / (ETA + 1.0);
            let dq = if u < 0.5 {
                let v = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - d1).powf(ETA + 1.0);
                v.powf(pow) - 1.0
            } else {
                let v = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - d2).powf(ETA + 1.0);
                1.0 - v.powf(pow)
            };
            g[i] = (y + dq * (yu - yl)).clamp(yl, yu);
        }
    }
}

/// Per-unit levels with a cost ceiling: uniform crossover, ±1-level
/// mutations of 1–3 units, and a repair that compresses random units further
/// until the genome fits (higher levels are cheaper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelGenomes {
    pub space: Space,
    /// No genome may cost more.
    pub max_cost: u64,
}

impl LevelGenomes {
    fn repair(&self, g: &mut Genome, rng: &mut SeededRng) {
        let mut guard = 0;
        while self.space.cost(g) > self.max_cost && guard < 100_000 {
            guard += 1;
            let up: Vec<usize> = (0..g.len())
                .filter(|&i| g[i] < self.space.units[i].max())
                .collect();
            if up.is_empty() {
                return;
            }
            let i = up[rng.random_range(0..up.len())];
            let u = &self.space.units[i];
            g[i] = u.levels[u.index(g[i]).expect("valid") + 1];
        }
    }
}

impl Representation for LevelGenomes {
    type Genome = Genome;

    fn random(&self, rng: &mut SeededRng) -> Genome {
        let mut g: Genome = self
            .space
            .units
            .iter()
            .map(|u| u.levels[rng.random_range(0..u.levels.len())])
            .collect();
        self.repair(&mut g, rng);
        g
    }

    fn crossover(&self, a: &Genome, b: &Genome, rng: &mut SeededRng) -> Genome {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| if rng.random::<bool>() { x } else { y })
            .collect()
    }

    fn mutate(&self, g: &mut Genome, rng: &mut SeededRng) {
        let flips = rng
            .random_range(1..=3usize)
            .min(rng.random_range(1..=3usize));
        for _ in 0..flips {
            let i = rng.random_range(0..g.len());
            let u = &self.space.units[i];
            let k =
                u.index(g[i]).expect("valid") as i64 + if rng.random::<bool>() { 1 } else { -1 };
            if (0..u.levels.len() as i64).contains(&k) {
                g[i] = u.levels[k as usize];
            }
        }
        self.repair(g, rng);
    }
}

/// NSGA-II's settings, as a config holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nsga2Spec {
    pub population: usize,
    pub generations: usize,
    /// Heuristics whose genomes join the first population (a warm start)
    /// besides the uniform genome; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm: Vec<crate::warm::WarmStart>,
    /// DP's solutions across the budget range that join the first
    /// population (one knapsack over the database's normalised errors per
    /// cost point, evenly from the cheapest genome to the budget), where the
    /// database records errors; by default a quarter of the population, at
    /// most 16. The configurations the study offers by name (llama.cpp's
    /// presets) that fit the budget join it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_points: Option<usize>,
}

/// Most DP states per knapsack when seeding the first population.
const DP_SEED_STATES: usize = 200_000;

impl Spec for Nsga2Spec {
    fn label(&self) -> String {
        "NSGA-II".into()
    }

    fn validate(&self, seq_len: usize) -> Result<(), SpecError> {
        ensure(self.population >= 4, "population", "must be at least 4")?;
        ensure(self.generations >= 1, "generations", "must be at least 1")?;
        at_most(self.population, MAX_GENOMES, "population", "genomes")?;
        at_most(
            self.generations,
            MAX_GENERATIONS,
            "generations",
            "generations",
        )?;
        ensure(
            self.warm.len() < self.population,
            "warm",
            "more warm starts than the population holds",
        )?;
        ensure(
            self.dp_points.is_none_or(|n| n < self.population),
            "dp_points",
            "more DP points than the population holds",
        )?;
        for w in &self.warm {
            w.validate(seq_len)
                .map_err(|e| SpecError::new("warm", e.to_string()))?;
            ensure(
                *w != crate::warm::WarmStart::ShortenedLlama,
                "warm",
                "Shortened LLaMA's genome needs probes scored first: a warm start of EvoPress only",
            )?;
        }
        Ok(())
    }

    fn needs(&self, kind: crate::framework::setup::Kind) -> crate::framework::setup::Needs {
        crate::warm::needs(&self.warm, kind)
    }

    /// The whole front up to the budget's total.
    fn search_budget(&self, budget: Budget) -> Budget {
        Budget::AtMost(budget.limit())
    }
}

impl Build for Nsga2Spec {
    type Strategy = LevelNsga2;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let mut initial: Vec<Genome> = uniform_genome(setup.space, &setup.budget)
            .into_iter()
            .collect();
        let mut add = |g: Genome| {
            if !initial.contains(&g) {
                initial.push(g);
            }
        };
        for g in crate::warm::genomes(&self.warm, setup)? {
            add(g);
        }
        let limit = setup.budget.limit();
        for (_, g) in setup.given {
            if setup.space.cost(g) <= limit {
                add(g.clone());
            }
        }
        if let Some(errors) = setup.level_errors {
            let n = self.dp_points.unwrap_or((self.population / 4).min(16)) as u64;
            let lo = setup.space.min_cost().min(limit);
            for k in 1..=n {
                let c = lo + (limit - lo) * k / n;
                if let Ok((g, _, _)) =
                    crate::knapsack(setup.space, errors, Budget::AtMost(c), DP_SEED_STATES)
                {
                    add(g);
                }
            }
        }
        LevelNsga2::new(
            Nsga2Config {
                population: self.population,
                generations: self.generations,
                seed: setup.seed,
            },
            setup.space,
            setup.budget.limit(),
            initial,
            setup.sample,
        )
    }
}

/// NSGA-II over (fitness, cost) with genomes at most `max_cost`: a whole
/// front in one study, all scored on one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelNsga2 {
    pub inner: Nsga2<LevelGenomes>,
    pub sample: SampleDraw,
}

impl LevelNsga2 {
    pub fn new(
        cfg: Nsga2Config,
        space: &Space,
        max_cost: u64,
        initial: Vec<Genome>,
        sample: SampleDraw,
    ) -> Result<Self, SearchError> {
        let rep = LevelGenomes {
            space: space.clone(),
            max_cost,
        };
        Ok(Self {
            inner: Nsga2::new(cfg, rep, initial)?,
            sample,
        })
    }
}

impl Strategy for LevelNsga2 {
    fn ask(&self, _space: &Space) -> Vec<Request> {
        requests(&self.inner.ask(), self.sample, false)
    }

    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        let asked = self.inner.ask();
        let fit = results_in_order(asked.len(), results)?;
        let objs = asked
            .iter()
            .zip(fit)
            .map(|(g, f)| vec![f, space.cost(g) as f64])
            .collect();
        self.inner.tell(objs)
    }

    fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    /// The lowest fitness on the front.
    fn best(&self) -> Option<Best> {
        self.inner
            .front()
            .into_iter()
            .min_by(|a, b| a.objectives[0].total_cmp(&b.objectives[0]))
            .map(|m| Best {
                fitness: m.objectives[0],
                genome: m.genome,
            })
    }

    fn front(&self, space: &Space) -> Vec<FrontMember> {
        let mut f: Vec<FrontMember> = self
            .inner
            .front()
            .into_iter()
            .map(|m| FrontMember {
                cost: space.cost(&m.genome),
                fitness: m.objectives[0],
                genome: m.genome,
            })
            .collect();
        f.sort_by(|a, b| a.cost.cmp(&b.cost).then(a.fitness.total_cmp(&b.fitness)));
        f.dedup_by(|a, b| a.genome == b.genome);
        f
    }

    fn progress(&self) -> Progress {
        Progress {
            step: self.inner.generation,
            total: self.inner.cfg.generations,
            label: "generation".into(),
        }
    }

    fn role(&self) -> Role {
        Role::Front
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pareto::hypervolume_2d;

    fn zdt1(x: &[f64]) -> Vec<f64> {
        let n = x.len() as f64;
        let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (n - 1.0);
        vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
    }

    #[test]
    fn zdt1_front_reaches_the_true_hypervolume_within_1_percent() {
        let n = 30;
        let rep = RealVector {
            lo: vec![0.0; n],
            hi: vec![1.0; n],
        };
        let cfg = Nsga2Config {
            population: 100,
            generations: 250,
            seed: 4,
        };
        let mut s = Nsga2::new(cfg, rep, Vec::new()).unwrap();
        while !s.is_done() {
            let objs = s.ask().iter().map(|x| zdt1(x)).collect();
            s.tell(objs).unwrap();
        }
        let pts: Vec<[f64; 2]> = s
            .front()
            .iter()
            .map(|m| [m.objectives[0], m.objectives[1]])
            .collect();
        let r = [1.1, 1.1];
        let hv = hypervolume_2d(&pts, r);
        // The true front f2 = 1 − √f1 on [0, 1], against (1.1, 1.1):
        // ∫₀¹ (0.1 + √x) dx + 0.1 · 1.1.
        let truth = 0.1 + 2.0 / 3.0 + 0.11;
        assert!(hv >= 0.99 * truth, "hypervolume {hv} vs {truth}");
        assert!(hv <= truth + 1e-9);
    }

    #[test]
    fn level_genomes_stay_under_the_ceiling_and_runs_are_deterministic() {
        let space = Space::new(
            (0..6)
                .map(|i| crate::UnitLevels {
                    name: format!("u{i}"),
                    levels: (0..4).collect(),
                    costs: (0..4)
                        .map(|l| (100 + 10 * i as u64) * (4 - l as u64))
                        .collect(),
                })
                .collect(),
        )
        .unwrap();
        let rep = LevelGenomes {
            space: space.clone(),
            max_cost: 1500,
        };
        let run = |seed| {
            let mut s = Nsga2::new(
                Nsga2Config {
                    population: 12,
                    generations: 15,
                    seed,
                },
                rep.clone(),
                vec![vec![3; 6]],
            )
            .unwrap();
            while !s.is_done() {
                let asked = s.ask();
                for g in &asked {
                    assert!(space.cost(g) <= 1500, "{g:?}");
                }
                let objs = asked
                    .iter()
                    .map(|g| {
                        vec![
                            g.iter()
                                .enumerate()
                                .map(|(i, &l)| (l as f64) * (1.0 + i as f64))
                                .sum(),
                            space.cost(g) as f64,
                        ]
                    })
                    .collect();
                s.tell(objs).unwrap();
            }
            s
        };
        let (a, b) = (run(1), run(1));
        assert_eq!(a, b);
        let front = a.front();
        assert!(front.len() >= 3);
        let json = serde_json::to_string(&a).unwrap();
        let back: Nsga2<LevelGenomes> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
