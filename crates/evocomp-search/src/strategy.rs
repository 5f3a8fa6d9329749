//! One checkpointable value for every strategy, and the strategies that
//! are not EvoPress: a fixed list of genomes (uniform, OWL, ShortGPT, DP,
//! best-of-N random), greedy level shifting, EvolKV's grouped CMA-ES, and
//! NSGA-II over (fitness, cost).

use crate::cmaes::CmaEs;
use crate::evopress::EvoPress;
use crate::nsga2::{LevelGenomes, Nsga2, Nsga2Config};
use crate::space::{Budget, Genome, Space};
use crate::{Request, SampleSpec, Scored, SearchError, lookup};
use serde::{Deserialize, Serialize};

fn requests(genomes: &[Genome], sample: SampleSpec, probe: bool) -> Vec<Request> {
    genomes
        .iter()
        .map(|g| Request {
            genome: g.clone(),
            sample,
            probe,
        })
        .collect()
}

/// Where a strategy is: `step` of about `total` steps (ask/tell rounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub label: String,
}

// ---------------------------------------------------------------------------
// Fixed genomes
// ---------------------------------------------------------------------------

/// Score a fixed list of genomes once and keep the best: the uniform, OWL,
/// ShortGPT and DP baselines (one genome each) and best-of-N random.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fixed {
    pub genomes: Vec<Genome>,
    pub sample: SampleSpec,
    pub fitness: Option<Vec<f64>>,
}

impl Fixed {
    pub fn new(genomes: Vec<Genome>, sample: SampleSpec) -> Result<Self, SearchError> {
        if genomes.is_empty() {
            return Err(SearchError::Config("no genome to score".into()));
        }
        Ok(Self {
            genomes,
            sample,
            fitness: None,
        })
    }
}

// ---------------------------------------------------------------------------
// Greedy
// ---------------------------------------------------------------------------

/// Greedy's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyConfig {
    /// Most rounds (probe every unit, then accept the best candidate).
    pub max_steps: usize,
    /// Most shifts applied together in one round: the round scores the best
    /// 1, 2, 4, ... up to `tries` predicted shifts (disjoint units) applied
    /// together and keeps the best candidate if it beats the current genome.
    pub tries: usize,
    pub sample: SampleSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum GreedyPhase {
    /// Score the starting genome.
    Start,
    /// Probe every unit one level up and one level down (single-unit
    /// changes: measurements of sensitivity, never candidates).
    Probe,
    /// Try the best predicted feasible shifts.
    Try(Vec<Genome>),
    Done,
}

/// Start uniform; then, while it improves the real fitness, shift levels of
/// compression from the units where they hurt most to the units where they
/// hurt least (as measured by single-unit probes around the current genome).
/// One round probes every unit one level each way, then scores the best
/// predicted 1, 2, 4, ... shifts applied together (disjoint pairs), so a
/// round can move many units on a model with hundreds of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Greedy {
    pub cfg: GreedyConfig,
    pub budget: Budget,
    pub current: Genome,
    pub fitness: Option<f64>,
    pub steps: usize,
    phase: GreedyPhase,
}

impl Greedy {
    pub fn new(
        cfg: GreedyConfig,
        space: &Space,
        budget: Budget,
        initial: Genome,
    ) -> Result<Self, SearchError> {
        if cfg.tries == 0 {
            return Err(SearchError::Config("greedy needs tries >= 1".into()));
        }
        space.check(&initial)?;
        if !budget.allows(space.cost(&initial)) {
            return Err(SearchError::Config(
                "the initial genome does not meet the budget".into(),
            ));
        }
        Ok(Self {
            cfg,
            budget,
            current: initial,
            fitness: None,
            steps: 0,
            phase: GreedyPhase::Start,
        })
    }

    fn moved(space: &Space, g: &[i64], i: usize, dir: i64) -> Option<Genome> {
        let u = &space.units[i];
        let k = u.index(g[i])? as i64 + dir;
        if k < 0 || k as usize >= u.levels.len() {
            return None;
        }
        let mut h = g.to_vec();
        h[i] = u.levels[k as usize];
        Some(h)
    }

    fn probes(&self, space: &Space) -> Vec<Genome> {
        let mut out = Vec::new();
        for i in 0..space.len() {
            for dir in [1, -1] {
                if let Some(h) = Self::moved(space, &self.current, i, dir) {
                    out.push(h);
                }
            }
        }
        out
    }

    fn ask(&self, space: &Space) -> Vec<Request> {
        match &self.phase {
            GreedyPhase::Start => {
                requests(std::slice::from_ref(&self.current), self.cfg.sample, false)
            }
            GreedyPhase::Probe => requests(&self.probes(space), self.cfg.sample, true),
            GreedyPhase::Try(c) => requests(c, self.cfg.sample, false),
            GreedyPhase::Done => Vec::new(),
        }
    }

    fn tell(&mut self, space: &Space, scored: &[Scored]) -> Result<(), SearchError> {
        match std::mem::replace(&mut self.phase, GreedyPhase::Done) {
            GreedyPhase::Start => {
                self.fitness = Some(lookup(scored, &self.current)?);
                self.phase = if self.cfg.max_steps == 0 {
                    GreedyPhase::Done
                } else {
                    GreedyPhase::Probe
                };
            }
            GreedyPhase::Probe => {
                let f0 = self.fitness.expect("scored at start");
                // hurt[i]: fitness rise from compressing unit i one level more;
                // gain[j]: fitness fall from compressing unit j one level less.
                let mut hurt = vec![None; space.len()];
                let mut gain = vec![None; space.len()];
                for i in 0..space.len() {
                    if let Some(h) = Self::moved(space, &self.current, i, 1) {
                        hurt[i] = Some(lookup(scored, &h)? - f0);
                    }
                    if let Some(h) = Self::moved(space, &self.current, i, -1) {
                        gain[i] = Some(f0 - lookup(scored, &h)?);
                    }
                }
                let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
                for (i, h) in hurt.iter().enumerate() {
                    for (j, g) in gain.iter().enumerate() {
                        if let (Some(h), Some(g)) = (h, g)
                            && i != j
                        {
                            pairs.push((h - g, i, j));
                        }
                    }
                }
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
                let mut tries: Vec<Genome> = Vec::new();
                let mut g = self.current.clone();
                let mut used = vec![false; space.len()];
                let mut applied = 0usize;
                let mut next_mark = 1usize;
                for (_, i, j) in pairs {
                    if applied >= self.cfg.tries {
                        break;
                    }
                    if used[i] || used[j] {
                        continue;
                    }
                    let h = Self::moved(space, &g, i, 1).expect("probed");
                    let h = Self::moved(space, &h, j, -1).expect("probed");
                    if !self.budget.allows(space.cost(&h)) {
                        continue;
                    }
                    g = h;
                    used[i] = true;
                    used[j] = true;
                    applied += 1;
                    if applied == next_mark || applied == self.cfg.tries {
                        tries.push(g.clone());
                        next_mark *= 2;
                    }
                }
                if applied > 0 && tries.last() != Some(&g) {
                    tries.push(g);
                }
                self.phase = if tries.is_empty() {
                    GreedyPhase::Done
                } else {
                    GreedyPhase::Try(tries)
                };
            }
            GreedyPhase::Try(c) => {
                let f0 = self.fitness.expect("scored at start");
                let mut best: Option<(f64, &Genome)> = None;
                for g in &c {
                    let f = lookup(scored, g)?;
                    if best.is_none_or(|(b, _)| f < b) {
                        best = Some((f, g));
                    }
                }
                match best {
                    Some((f, g)) if f < f0 => {
                        self.current = g.clone();
                        self.fitness = Some(f);
                        self.steps += 1;
                        self.phase = if self.steps >= self.cfg.max_steps {
                            GreedyPhase::Done
                        } else {
                            GreedyPhase::Probe
                        };
                    }
                    _ => self.phase = GreedyPhase::Done,
                }
            }
            GreedyPhase::Done => {
                return Err(SearchError::Protocol(
                    "tell after the search finished".into(),
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Leave-one-out scores (Shortened LLaMA)
// ---------------------------------------------------------------------------

/// Shortened LLaMA's one-shot criterion (Kim et al., 2024): score each unit
/// by the fitness of the model with only that unit compressed to its most
/// compressed level (for blocks: the perplexity without that block), then
/// compress the units whose removal hurts least until the budget holds, and
/// score that genome. The single-unit genomes are probes (off budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveOneOut {
    pub budget: Budget,
    pub sample: SampleSpec,
    /// Fitness with only unit i compressed, once measured.
    pub scores: Option<Vec<f64>>,
    /// The chosen genome, once the scores are in.
    pub chosen: Option<Genome>,
    pub fitness: Option<f64>,
}

impl LeaveOneOut {
    pub fn new(space: &Space, budget: Budget, sample: SampleSpec) -> Result<Self, SearchError> {
        // Fail now, not after the probes, when no genome meets the budget.
        crate::heuristics::lowest_scores_first(space, &vec![0.0; space.len()], &budget)?;
        Ok(Self {
            budget,
            sample,
            scores: None,
            chosen: None,
            fitness: None,
        })
    }

    /// Unit i alone at its most compressed level.
    pub fn probes(space: &Space) -> Vec<Genome> {
        (0..space.len())
            .map(|i| {
                let mut g: Genome = space.units.iter().map(|u| u.min()).collect();
                g[i] = space.units[i].max();
                g
            })
            .collect()
    }

    fn ask(&self, space: &Space) -> Vec<Request> {
        match (&self.scores, &self.chosen, self.fitness) {
            (None, _, _) => requests(&Self::probes(space), self.sample, true),
            (Some(_), Some(g), None) => requests(std::slice::from_ref(g), self.sample, false),
            _ => Vec::new(),
        }
    }

    fn tell(&mut self, space: &Space, scored: &[Scored]) -> Result<(), SearchError> {
        match (&self.scores, &self.chosen) {
            (None, _) => {
                let scores = Self::probes(space)
                    .iter()
                    .map(|g| lookup(scored, g))
                    .collect::<Result<Vec<_>, _>>()?;
                let g = crate::heuristics::lowest_scores_first(space, &scores, &self.budget)?;
                self.scores = Some(scores);
                self.chosen = Some(g);
                Ok(())
            }
            (Some(_), Some(g)) if self.fitness.is_none() => {
                self.fitness = Some(lookup(scored, g)?);
                Ok(())
            }
            _ => Err(SearchError::Protocol(
                "tell after the search finished".into(),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// EvolKV: grouped CMA-ES
// ---------------------------------------------------------------------------

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
    pub sample: SampleSpec,
    pub seed: u64,
}

/// EvolKV: the units are split into contiguous groups; each group in turn is
/// optimised by a fresh CMA-ES over its units' costs, earlier groups frozen at
/// their best and later ones at the target mean cost. The objective is
/// EvolKV's `score · (1 + λ · CacheScore)` with `score = exp(−fitness)`.
/// Every candidate is budget-completed (costs rescaled to the target total,
/// snapped onto the unit's levels, repaired under the limit) before it is
/// scored, so no infeasible genome is ever evaluated.
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
    /// Raw (pre-completion) unit costs of each pending candidate.
    pending_costs: Vec<Vec<f64>>,
    /// Best (objective, genome, fitness) so far.
    pub best: Option<(f64, Genome, f64)>,
    /// Best of the current group: (objective, unit costs of the group).
    group_best: Option<(f64, Vec<f64>)>,
}

impl EvolKv {
    pub fn new(cfg: EvolKvConfig, space: &Space, budget: Budget) -> Result<Self, SearchError> {
        if cfg.group_size == 0 || cfg.generations == 0 {
            return Err(SearchError::Config(
                "EvolKV needs group_size >= 1 and generations >= 1".into(),
            ));
        }
        let target = budget.limit() as f64 / space.len() as f64;
        let mut s = Self {
            cfg,
            budget,
            x: vec![target; space.len()],
            group: 0,
            cma: None,
            pending: Vec::new(),
            pending_costs: Vec::new(),
            best: None,
            group_best: None,
        };
        s.start_group(space)?;
        Ok(s)
    }

    fn n_groups(&self) -> usize {
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
            self.cma = None;
            self.pending.clear();
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

    /// Budget completion: scale the costs to the target total, snap each
    /// unit to the level of nearest cost, then repair under the limit.
    pub fn complete(space: &Space, x: &[f64], budget: &Budget) -> Genome {
        let total: f64 = x.iter().sum::<f64>().max(1e-9);
        let want = budget.limit() as f64;
        let mut g: Genome = space
            .units
            .iter()
            .zip(x)
            .map(|(u, &xi)| {
                let b = (xi + xi / total * (want - total)).ceil();
                let k = (0..u.levels.len())
                    .min_by(|&a, &c| {
                        ((u.costs[a] as f64) - b)
                            .abs()
                            .total_cmp(&((u.costs[c] as f64) - b).abs())
                    })
                    .expect("levels");
                u.levels[k]
            })
            .collect();
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
        self.pending_costs.clear();
        for y in ys {
            let x = self.costs_of(space, &y);
            self.pending.push(Self::complete(space, &x, &self.budget));
            self.pending_costs.push(x);
        }
    }

    fn objective(&self, fitness: f64, mean: f64, space: &Space) -> f64 {
        let c = self.budget.limit() as f64 / space.len() as f64;
        -((-fitness).exp() * (1.0 + self.cfg.lambda * Self::cache_score(mean, c, self.cfg.gamma)))
    }

    fn tell(&mut self, space: &Space, scored: &[Scored]) -> Result<(), SearchError> {
        if self.cma.is_none() {
            return Err(SearchError::Protocol(
                "tell after the search finished".into(),
            ));
        }
        let mut values = Vec::with_capacity(self.pending.len());
        for (g, x) in self.pending.iter().zip(&self.pending_costs) {
            let f = lookup(scored, g)?;
            let mean = x.iter().sum::<f64>() / x.len() as f64;
            let obj = self.objective(f, mean, space);
            values.push(obj);
            if self.best.as_ref().is_none_or(|(b, _, _)| obj < *b) {
                self.best = Some((obj, g.clone(), f));
            }
            if self.group_best.as_ref().is_none_or(|(b, _)| obj < *b) {
                self.group_best = Some((obj, self.range().map(|i| x[i]).collect()));
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

// ---------------------------------------------------------------------------
// NSGA-II over per-unit levels
// ---------------------------------------------------------------------------

/// NSGA-II over (fitness, cost) with genomes at most `max_cost`: a whole
/// front in one study, all scored on one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelNsga2 {
    pub inner: Nsga2<LevelGenomes>,
    pub sample: SampleSpec,
}

impl LevelNsga2 {
    pub fn new(
        cfg: Nsga2Config,
        space: &Space,
        max_cost: u64,
        initial: Vec<Genome>,
        sample: SampleSpec,
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

// ---------------------------------------------------------------------------
// The one value
// ---------------------------------------------------------------------------

/// Any strategy, as one serde value: the checkpoint is this value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    EvoPress(Box<EvoPress>),
    Greedy(Greedy),
    Fixed(Fixed),
    EvolKv(Box<EvolKv>),
    Nsga2(LevelNsga2),
    LeaveOneOut(LeaveOneOut),
}

impl Strategy {
    /// The evaluations wanted now; empty when done.
    pub fn ask(&self, space: &Space) -> Vec<Request> {
        match self {
            Strategy::EvoPress(s) => s.ask(),
            Strategy::Greedy(s) => s.ask(space),
            Strategy::Fixed(s) => {
                if s.fitness.is_some() {
                    Vec::new()
                } else {
                    requests(&s.genomes, s.sample, false)
                }
            }
            Strategy::EvolKv(s) => requests(&s.pending, s.cfg.sample, false),
            Strategy::Nsga2(s) => requests(&s.inner.ask(), s.sample, false),
            Strategy::LeaveOneOut(s) => s.ask(space),
        }
    }

    /// Fitness (lower is better) for every genome of the last ask.
    pub fn tell(&mut self, space: &Space, scored: &[Scored]) -> Result<(), SearchError> {
        match self {
            Strategy::EvoPress(s) => s.tell(space, scored),
            Strategy::Greedy(s) => s.tell(space, scored),
            Strategy::Fixed(s) => {
                if s.fitness.is_some() {
                    return Err(SearchError::Protocol(
                        "tell after the search finished".into(),
                    ));
                }
                let f = s
                    .genomes
                    .iter()
                    .map(|g| lookup(scored, g))
                    .collect::<Result<Vec<_>, _>>()?;
                s.fitness = Some(f);
                Ok(())
            }
            Strategy::EvolKv(s) => s.tell(space, scored),
            Strategy::LeaveOneOut(s) => s.tell(space, scored),
            Strategy::Nsga2(s) => {
                let objs = s
                    .inner
                    .ask()
                    .iter()
                    .map(|g| Ok(vec![lookup(scored, g)?, space.cost(g) as f64]))
                    .collect::<Result<Vec<_>, SearchError>>()?;
                s.inner.tell(objs)
            }
        }
    }

    pub fn is_done(&self, _space: &Space) -> bool {
        match self {
            Strategy::EvoPress(s) => s.is_done(),
            Strategy::Greedy(s) => s.phase == GreedyPhase::Done,
            Strategy::Fixed(s) => s.fitness.is_some(),
            Strategy::EvolKv(s) => s.pending.is_empty(),
            Strategy::Nsga2(s) => s.inner.is_done(),
            Strategy::LeaveOneOut(s) => s.fitness.is_some(),
        }
    }

    /// The best genome so far and its fitness (for NSGA-II: the lowest fitness on the front).
    pub fn best(&self) -> Option<(Genome, f64)> {
        match self {
            Strategy::EvoPress(s) => s.parent_fitness.map(|f| (s.parent.clone(), f)),
            Strategy::Greedy(s) => s.fitness.map(|f| (s.current.clone(), f)),
            Strategy::Fixed(s) => s.fitness.as_ref().and_then(|f| {
                (0..f.len())
                    .min_by(|&a, &b| f[a].total_cmp(&f[b]).then(a.cmp(&b)))
                    .map(|i| (s.genomes[i].clone(), f[i]))
            }),
            Strategy::EvolKv(s) => s.best.as_ref().map(|(_, g, f)| (g.clone(), *f)),
            Strategy::LeaveOneOut(s) => s.chosen.clone().zip(s.fitness),
            Strategy::Nsga2(s) => s
                .inner
                .front()
                .into_iter()
                .min_by(|a, b| a.objectives[0].total_cmp(&b.objectives[0]))
                .map(|m| (m.genome, m.objectives[0])),
        }
    }

    /// The non-dominated (genome, fitness, cost) members, for NSGA-II; the best otherwise.
    pub fn front(&self, space: &Space) -> Vec<(Genome, f64, u64)> {
        match self {
            Strategy::Nsga2(s) => {
                let mut f: Vec<_> = s
                    .inner
                    .front()
                    .into_iter()
                    .map(|m| {
                        let c = space.cost(&m.genome);
                        (m.genome, m.objectives[0], c)
                    })
                    .collect();
                f.sort_by(|a, b| a.2.cmp(&b.2).then(a.1.total_cmp(&b.1)));
                f.dedup_by(|a, b| a.0 == b.0);
                f
            }
            _ => self
                .best()
                .map(|(g, f)| {
                    let c = space.cost(&g);
                    vec![(g, f, c)]
                })
                .unwrap_or_default(),
        }
    }

    /// A genome most of the next asks share long prefixes with (EvoPress's
    /// parent, greedy's current genome): its hidden states are worth keeping.
    pub fn anchor(&self) -> Option<Genome> {
        match self {
            Strategy::EvoPress(s) => Some(s.parent.clone()),
            Strategy::Greedy(s) => Some(s.current.clone()),
            _ => None,
        }
    }

    /// How far the strategy is.
    pub fn progress(&self) -> Progress {
        match self {
            Strategy::EvoPress(s) => Progress {
                step: s.generation,
                total: s.cfg.generations,
                label: "generation".into(),
            },
            Strategy::Greedy(s) => Progress {
                step: s.steps,
                total: s.cfg.max_steps,
                label: "round".into(),
            },
            Strategy::LeaveOneOut(s) => Progress {
                step: usize::from(s.scores.is_some()) + usize::from(s.fitness.is_some()),
                total: 2,
                label: "phase".into(),
            },
            Strategy::Fixed(s) => Progress {
                step: usize::from(s.fitness.is_some()),
                total: 1,
                label: "step".into(),
            },
            Strategy::EvolKv(s) => Progress {
                step: s.group * s.cfg.generations + s.cma.as_ref().map_or(0, |c| c.generation),
                total: s.n_groups() * s.cfg.generations,
                label: "CMA-ES generation".into(),
            },
            Strategy::Nsga2(s) => Progress {
                step: s.inner.generation,
                total: s.inner.cfg.generations,
                label: "generation".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::UnitLevels;

    fn space(n: usize) -> Space {
        Space::new(
            (0..n)
                .map(|i| UnitLevels {
                    name: format!("u{i}"),
                    levels: (-2..=2).collect(),
                    costs: (-2..=2).map(|l: i64| (5000 - l * 100) as u64).collect(),
                })
                .collect(),
        )
        .unwrap()
    }

    /// Unit i hurts (i % 3 + 1) times as much per level.
    fn fit(g: &[i64]) -> f64 {
        g.iter()
            .enumerate()
            .map(|(i, &l)| ((i % 3) as f64 + 1.0) * (0.7 * l as f64).exp())
            .sum()
    }

    fn drive(s: &mut Strategy, sp: &Space, budget: Option<&Budget>) -> usize {
        let mut evals = 0;
        while !s.is_done(sp) {
            let asks = s.ask(sp);
            for r in &asks {
                if let (false, Some(b)) = (r.probe, budget) {
                    assert!(sp.feasible(&r.genome, b), "infeasible candidate asked");
                }
            }
            evals += asks.len();
            let scored: Vec<Scored> = asks
                .into_iter()
                .map(|r| Scored {
                    fitness: fit(&r.genome),
                    genome: r.genome,
                })
                .collect();
            s.tell(sp, &scored).unwrap();
            let json = serde_json::to_string(&*s).unwrap();
            *s = serde_json::from_str(&json).unwrap();
        }
        evals
    }

    /// Greedy from uniform level 0 on `space(n)`, driven to the end: the
    /// space, budget, uniform genome and the strategy's best.
    fn greedy_run(
        n: usize,
        max_steps: usize,
        tries: usize,
    ) -> (Space, Budget, Genome, (Genome, f64)) {
        let sp = space(n);
        let u = sp.uniform(0).unwrap();
        let budget = Budget::Exact(sp.cost(&u));
        let sample = SampleSpec { tokens: 8, seed: 1 };
        let cfg = GreedyConfig {
            max_steps,
            tries,
            sample,
        };
        let mut s = Strategy::Greedy(Greedy::new(cfg, &sp, budget, u.clone()).unwrap());
        drive(&mut s, &sp, Some(&budget));
        let best = s.best().unwrap();
        (sp, budget, u, best)
    }

    #[test]
    fn greedy_improves_on_uniform_and_stays_on_budget() {
        let (sp, budget, u, (g, f)) = greedy_run(6, 50, 4);
        assert!(sp.feasible(&g, &budget));
        assert!(f < fit(&u) * 0.95, "{f} vs {}", fit(&u));
        // The most sensitive units (i % 3 == 2) end less compressed than the least.
        assert!(g[2] < g[0] && g[5] < g[3], "{g:?}");
    }

    #[test]
    fn a_greedy_round_moves_many_units_at_once() {
        let (sp, budget, u, (g, f)) = greedy_run(12, 1, 8);
        assert!(sp.feasible(&g, &budget));
        assert!(f < fit(&u));
        // One round, several shifts: more than one pair of units moved.
        let moved = g.iter().filter(|&&l| l != 0).count();
        assert!(moved > 2, "{g:?}");
    }

    #[test]
    fn leave_one_out_compresses_the_least_harmful_units() {
        // Depth-like: 6 blocks, kept (0) or dropped (1); drop 2.
        let sp = Space::new(
            (0..6)
                .map(|i| UnitLevels {
                    name: format!("b{i}"),
                    levels: vec![0, 1],
                    costs: vec![10, 0],
                })
                .collect(),
        )
        .unwrap();
        let budget = Budget::Exact(40);
        let harm = [5.0, 1.0, 4.0, 0.5, 3.0, 2.0];
        let f = |g: &[i64]| -> f64 { g.iter().zip(harm).map(|(&l, h)| l as f64 * h).sum() };
        let sample = SampleSpec { tokens: 8, seed: 1 };
        let mut s = Strategy::LeaveOneOut(LeaveOneOut::new(&sp, budget, sample).unwrap());
        let mut probes = 0;
        while !s.is_done(&sp) {
            let asks = s.ask(&sp);
            probes += asks.iter().filter(|r| r.probe).count();
            for r in asks.iter().filter(|r| !r.probe) {
                assert!(sp.feasible(&r.genome, &budget));
            }
            let scored: Vec<Scored> = asks
                .into_iter()
                .map(|r| Scored {
                    fitness: f(&r.genome),
                    genome: r.genome,
                })
                .collect();
            s.tell(&sp, &scored).unwrap();
            s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        }
        assert_eq!(probes, 6);
        assert_eq!(s.best().unwrap(), (vec![0, 1, 0, 1, 0, 0], 1.5));
        assert!(LeaveOneOut::new(&sp, Budget::Exact(5), sample).is_err());
    }

    #[test]
    fn fixed_keeps_the_best_of_its_genomes() {
        let sp = space(3);
        let sample = SampleSpec { tokens: 8, seed: 1 };
        let gs = vec![vec![1, 0, -1], vec![-1, 0, 1], vec![0, 0, 0]];
        let mut s = Strategy::Fixed(Fixed::new(gs, sample).unwrap());
        assert_eq!(drive(&mut s, &sp, None), 3);
        assert_eq!(s.best().unwrap().0, vec![1, 0, -1]);
    }

    #[test]
    fn evolkv_respects_the_budget_and_beats_uniform() {
        // KV-like: levels are budgets (costs) 0..4 steps of 16 tokens, level 0 keeps most.
        let n = 12;
        let sp = Space::new(
            (0..n)
                .map(|i| UnitLevels {
                    name: format!("L{i}"),
                    levels: (0..8).collect(),
                    costs: (0..8).map(|l: u64| 128 - 16 * l).collect(),
                })
                .collect(),
        )
        .unwrap();
        let budget = Budget::AtMost(64 * n as u64);
        // Middle layers need cache most.
        let kv_fit = |g: &[i64]| -> f64 {
            g.iter()
                .enumerate()
                .map(|(i, &l)| {
                    let w = if (4..8).contains(&i) { 3.0 } else { 0.3 };
                    w * 0.01 * (l as f64).powi(2)
                })
                .sum()
        };
        let cfg = EvolKvConfig {
            group_size: 4,
            generations: 15,
            sigma0: 0.3,
            population: None,
            lambda: 0.3,
            gamma: 0.2,
            sample: SampleSpec { tokens: 8, seed: 0 },
            seed: 3,
        };
        let mut s = Strategy::EvolKv(Box::new(EvolKv::new(cfg, &sp, budget).unwrap()));
        let mut n_evals = 0;
        while !s.is_done(&sp) {
            let asks = s.ask(&sp);
            n_evals += asks.len();
            let scored: Vec<Scored> = asks
                .into_iter()
                .map(|r| {
                    assert!(sp.feasible(&r.genome, &budget), "{:?}", r.genome);
                    Scored {
                        fitness: kv_fit(&r.genome),
                        genome: r.genome,
                    }
                })
                .collect();
            s.tell(&sp, &scored).unwrap();
        }
        assert!(n_evals > 0);
        let (g, f) = s.best().unwrap();
        let uniform = vec![4i64; n];
        assert!(sp.feasible(&uniform, &budget));
        assert!(f < kv_fit(&uniform), "{f} vs {} ({g:?})", kv_fit(&uniform));
        let mid: i64 = g[4..8].iter().sum();
        let edge: i64 = g[..4].iter().sum();
        assert!(mid < edge, "middle layers keep more cache: {g:?}");
    }

    /// Every strategy, run twice from the same seed (with a checkpoint round
    /// trip after every tell), asks for the same genomes and ends the same;
    /// another seed changes the randomised ones.
    #[test]
    fn every_strategy_is_deterministic_from_its_seed() {
        let sp = space(8);
        let u = sp.uniform(0).unwrap();
        let budget = Budget::Exact(sp.cost(&u));
        let sample = SampleSpec { tokens: 8, seed: 1 };
        let make = |seed: u64| -> Vec<Strategy> {
            vec![
                Strategy::EvoPress(Box::new(
                    EvoPress::new(
                        crate::EvoPressConfig {
                            generations: 10,
                            offspring: 4,
                            stages: vec![
                                crate::Stage {
                                    survivors: 2,
                                    tokens: 8,
                                },
                                crate::Stage {
                                    survivors: 1,
                                    tokens: 16,
                                },
                            ],
                            max_flips: 3,
                            seed,
                        },
                        &sp,
                        budget,
                        u.clone(),
                    )
                    .unwrap(),
                )),
                Strategy::Greedy(
                    Greedy::new(
                        GreedyConfig {
                            max_steps: 5,
                            tries: 2,
                            sample,
                        },
                        &sp,
                        budget,
                        u.clone(),
                    )
                    .unwrap(),
                ),
                Strategy::EvolKv(Box::new(
                    EvolKv::new(
                        EvolKvConfig {
                            group_size: 4,
                            generations: 3,
                            sigma0: 0.3,
                            population: None,
                            lambda: 0.3,
                            gamma: 0.2,
                            sample,
                            seed,
                        },
                        &sp,
                        Budget::AtMost(budget.limit()),
                    )
                    .unwrap(),
                )),
                Strategy::Nsga2(
                    LevelNsga2::new(
                        Nsga2Config {
                            population: 8,
                            generations: 4,
                            seed,
                        },
                        &sp,
                        budget.limit(),
                        vec![u.clone()],
                        sample,
                    )
                    .unwrap(),
                ),
            ]
        };
        let trace = |mut s: Strategy| -> (Vec<Vec<Request>>, Option<(Genome, f64)>) {
            let mut asks = Vec::new();
            while !s.is_done(&sp) {
                let a = s.ask(&sp);
                let scored: Vec<Scored> = a
                    .iter()
                    .map(|r| Scored {
                        fitness: fit(&r.genome),
                        genome: r.genome.clone(),
                    })
                    .collect();
                asks.push(a);
                s.tell(&sp, &scored).unwrap();
                s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            }
            (asks, s.best())
        };
        for (a, b) in make(3).into_iter().zip(make(3)) {
            assert_eq!(trace(a), trace(b));
        }
        let seeded = [0, 2, 3]; // EvoPress, EvolKV and NSGA-II draw random numbers
        for (i, (a, b)) in make(3).into_iter().zip(make(4)).enumerate() {
            if seeded.contains(&i) {
                assert_ne!(trace(a).0, trace(b).0, "strategy {i} ignores its seed");
            }
        }
    }

    #[test]
    fn cache_score_matches_the_paper() {
        assert_eq!(EvolKv::cache_score(100.0, 100.0, 0.2), 1.0);
        assert!((EvolKv::cache_score(50.0, 100.0, 0.2) - 0.9).abs() < 1e-12);
        assert!((EvolKv::cache_score(150.0, 100.0, 0.2) - 0.5).abs() < 1e-12);
        assert_eq!(EvolKv::cache_score(250.0, 100.0, 0.2), 0.0);
    }

    #[test]
    fn nsga2_levels_give_a_front_under_the_ceiling() {
        let sp = space(6);
        let max = sp.cost(&sp.uniform(0).unwrap());
        let mut s = Strategy::Nsga2(
            LevelNsga2::new(
                Nsga2Config {
                    population: 12,
                    generations: 10,
                    seed: 5,
                },
                &sp,
                max,
                vec![sp.uniform(0).unwrap()],
                SampleSpec { tokens: 8, seed: 0 },
            )
            .unwrap(),
        );
        drive(&mut s, &sp, Some(&Budget::AtMost(max)));
        let front = s.front(&sp);
        assert!(front.len() >= 2, "{front:?}");
        for w in front.windows(2) {
            assert!(w[0].2 <= w[1].2 && w[0].1 >= w[1].1, "{front:?}");
        }
    }
}
