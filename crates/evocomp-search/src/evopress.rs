//! EvoPress (Sieberling et al., 2024): a (1+λ) evolutionary search with
//! level-switch mutation and multi-step selection on fresh token samples.
//!
//! The strategy is an ask/tell state machine and a plain serde value, so a
//! checkpoint is the value itself. All randomness is derived from the seed
//! and the generation number: the same seed and the same told fitnesses give
//! the same asks, before or after a checkpoint round trip.

use crate::any::AnyStrategy;
use crate::heuristics::start_genome;
use crate::rng::rng_for;
use crate::setup::{BudgetHint, Settings, SettingsError, Setup, ensure};
use crate::space::{Budget, Genome, Space};
use crate::strategy::{Best, Progress, Request, SampleSpec, Scored, Strategy};
use crate::{SearchError, results_in_order};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// EvoPress presets (the published defaults per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Preset {
    Sparsity,
    Quantization,
    Depth,
    SuperFast,
}

/// EvoPress's settings, as a config holds them: a preset, any field of
/// which may be overridden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvoPressSettings {
    pub preset: Preset,
    #[serde(default)]
    pub generations: Option<usize>,
    #[serde(default)]
    pub offspring: Option<usize>,
    /// (survivors, tokens) per selection stage.
    #[serde(default)]
    pub stages: Option<Vec<(usize, usize)>>,
    #[serde(default)]
    pub max_flips: Option<usize>,
    /// Where the search starts (the preset's by default: the best of 64
    /// random feasible genomes on 2048 tokens for depth, else the uniform
    /// genome).
    #[serde(default)]
    pub start: Option<Start>,
}

/// EvoPress's initial parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Start {
    /// The uniform genome where one meets the budget, else one random
    /// feasible genome.
    #[default]
    Uniform,
    /// The best of `candidates` random feasible genomes, each scored on
    /// `tokens` tokens (the reference's depth start: 64 on 2048).
    BestOfRandom { candidates: usize, tokens: usize },
    /// The uniform genome with the rest of an `AtMost` budget spent: units
    /// move one level less compressed at a time, in a seeded random order,
    /// while the budget allows. Level switches keep a total, so from a
    /// uniform genome far under the budget (levels of unequal costs, such as
    /// llama.cpp's types) EvoPress would never use the remainder.
    Filled,
}

impl EvoPressSettings {
    /// The preset's config with the overrides applied; `n_units` and the
    /// budget hint size the depth preset.
    pub fn config(&self, n_units: usize, hint: BudgetHint, seed: u64) -> EvoPressConfig {
        let mut cfg = match self.preset {
            Preset::Sparsity => EvoPressConfig::sparsity(seed),
            Preset::Quantization => EvoPressConfig::quantization(seed),
            Preset::SuperFast => EvoPressConfig::super_fast(seed),
            Preset::Depth => {
                let k = match hint {
                    BudgetHint::Dropped(k) => k,
                    _ => n_units / 4,
                };
                EvoPressConfig::depth(n_units, k, seed)
            }
        };
        if let Some(g) = self.generations {
            cfg.generations = g;
        }
        if let Some(o) = self.offspring {
            cfg.offspring = o;
        }
        if let Some(st) = &self.stages {
            cfg.stages = st
                .iter()
                .map(|&(survivors, tokens)| Stage { survivors, tokens })
                .collect();
        }
        if let Some(f) = self.max_flips {
            cfg.max_flips = f;
        }
        if let Some(st) = self.start {
            cfg.start = st;
        }
        cfg
    }
}

impl Settings for EvoPressSettings {
    fn label(&self) -> &'static str {
        "EvoPress"
    }

    fn validate(&self, seq_len: usize) -> Result<(), SettingsError> {
        ensure(
            self.generations.is_none_or(|g| g >= 1),
            "generations",
            "must be at least 1",
        )?;
        ensure(
            self.offspring.is_none_or(|g| g >= 1),
            "offspring",
            "must be at least 1",
        )?;
        ensure(
            self.max_flips.is_none_or(|g| g >= 1),
            "max_flips",
            "must be at least 1",
        )?;
        if let Some(Start::BestOfRandom { candidates, tokens }) = self.start {
            ensure(
                candidates >= 1 && tokens >= seq_len,
                "start",
                format!(
                    "BestOfRandom needs at least 1 candidate and at least seq_len ({seq_len}) tokens"
                ),
            )?;
        }
        if let Some(st) = &self.stages {
            ensure(!st.is_empty(), "stages", "needs at least one stage")?;
            ensure(
                st.last().is_some_and(|s| s.0 == 1),
                "stages",
                "the last stage must keep exactly 1 survivor",
            )?;
            for &(keep, tokens) in st {
                ensure(
                    keep >= 1 && tokens >= seq_len,
                    "stages",
                    format!(
                        "({keep}, {tokens}): every stage keeps >= 1 and scores >= seq_len ({seq_len}) tokens"
                    ),
                )?;
            }
        }
        Ok(())
    }

    fn build(&self, setup: &Setup) -> Result<AnyStrategy, SearchError> {
        let cfg = self.config(setup.space.len(), setup.hint, setup.seed);
        let start = start_genome(setup.seed, setup.space, &setup.budget)?;
        Ok(AnyStrategy::EvoPress(Box::new(EvoPress::new(
            cfg,
            setup.space,
            setup.budget,
            start,
        )?)))
    }
}

/// One selection stage: how many candidates survive it, scored on how many tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub survivors: usize,
    pub tokens: usize,
}

/// EvoPress's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvoPressConfig {
    pub generations: usize,
    /// λ: offspring per generation.
    pub offspring: usize,
    /// Multi-step selection; the parent joins only the last stage.
    pub stages: Vec<Stage>,
    /// Flips per child are `min(U{1..=max_flips}, U{1..=max_flips})`.
    pub max_flips: usize,
    pub seed: u64,
    /// How the first parent is chosen.
    #[serde(default)]
    pub start: Start,
}

impl EvoPressConfig {
    /// The published unstructured-sparsity preset: 400 generations, 64
    /// offspring, 8/2048 → 2/16384 → 1/65536.
    pub fn sparsity(seed: u64) -> Self {
        Self::with(400, 64, &[(8, 2048), (2, 16384), (1, 65536)], seed)
    }

    /// Quantization: 150 generations, 128 offspring, 16/2048 → 4/16384 → 1/131072.
    pub fn quantization(seed: u64) -> Self {
        Self::with(150, 128, &[(16, 2048), (4, 16384), (1, 131072)], seed)
    }

    /// Depth: k(n−k)/1.5 generations for dropping k of n, 32 offspring, 2/2048 → 1/32768,
    /// starting from the best of 64 random feasible genomes on 2048 tokens.
    pub fn depth(n: usize, k: usize, seed: u64) -> Self {
        let gens = ((k * n.saturating_sub(k)) as f64 / 1.5).ceil() as usize;
        Self {
            start: Start::BestOfRandom {
                candidates: 64,
                tokens: 2048,
            },
            ..Self::with(gens.max(1), 32, &[(2, 2048), (1, 32768)], seed)
        }
    }

    /// "Super-fast": 400 generations, 16 offspring, 1/512 → 1/8192.
    pub fn super_fast(seed: u64) -> Self {
        Self::with(400, 16, &[(1, 512), (1, 8192)], seed)
    }

    fn with(generations: usize, offspring: usize, stages: &[(usize, usize)], seed: u64) -> Self {
        Self {
            generations,
            offspring,
            stages: stages
                .iter()
                .map(|&(survivors, tokens)| Stage { survivors, tokens })
                .collect(),
            max_flips: 3,
            seed,
            start: Start::Uniform,
        }
    }

    pub fn validate(&self) -> Result<(), SearchError> {
        let bad = |m: &str| Err(SearchError::Config(m.into()));
        if self.offspring == 0 {
            return bad("offspring must be at least 1");
        }
        if self.stages.is_empty() {
            return bad("at least one selection stage is needed");
        }
        if self
            .stages
            .iter()
            .any(|s| s.survivors == 0 || s.tokens == 0)
        {
            return bad("every stage keeps at least 1 survivor and scores at least 1 token");
        }
        if self.stages.last().expect("non-empty").survivors != 1 {
            return bad("the last stage must keep exactly 1 survivor (the next parent)");
        }
        if self.max_flips == 0 {
            return bad("max_flips must be at least 1");
        }
        Ok(())
    }
}

/// Where the state machine is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Random feasible candidates for the first parent await scores.
    Start {
        pool: Vec<Genome>,
        tokens: usize,
    },
    /// Candidates of `stage` of the current generation await scores.
    Stage {
        stage: usize,
        pool: Vec<Genome>,
    },
    Done,
}

/// The EvoPress strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvoPress {
    pub cfg: EvoPressConfig,
    pub budget: Budget,
    pub parent: Genome,
    /// The parent's fitness on the last stage it was scored in.
    pub parent_fitness: Option<f64>,
    pub generation: usize,
    phase: Phase,
    /// (generation, parent fitness) after each generation.
    pub history: Vec<(usize, f64)>,
}

/// The sample seed of `stage` in `generation`: fresh per stage and generation.
fn sample_seed(seed: u64, generation: usize, stage: usize) -> u64 {
    crate::rng::mix(seed, &[0x5a3b, generation as u64, stage as u64])
}

impl EvoPress {
    /// Start from `initial`, which must meet `budget`.
    pub fn new(
        cfg: EvoPressConfig,
        space: &Space,
        budget: Budget,
        initial: Genome,
    ) -> Result<Self, SearchError> {
        cfg.validate()?;
        space.check(&initial)?;
        let initial = match cfg.start {
            Start::Filled => crate::heuristics::fill_budget(
                space,
                &initial,
                &budget,
                crate::rng::mix(cfg.seed, &[0xf111]),
            ),
            _ => initial,
        };
        if !budget.allows(space.cost(&initial)) {
            return Err(SearchError::Config(format!(
                "the initial genome costs {}, which does not meet the budget {budget:?}",
                space.cost(&initial)
            )));
        }
        let mut s = Self {
            cfg,
            budget,
            parent: initial,
            parent_fitness: None,
            generation: 0,
            phase: Phase::Done,
            history: Vec::new(),
        };
        s.phase = match s.cfg.start {
            Start::Uniform | Start::Filled => s.start_generation(space),
            Start::BestOfRandom { candidates, tokens } => {
                let mut pool = crate::heuristics::random_feasible(
                    space,
                    &s.parent,
                    &s.budget,
                    candidates,
                    crate::rng::mix(s.cfg.seed, &[0x57a2]),
                );
                if !pool.contains(&s.parent) && pool.len() < candidates {
                    pool.push(s.parent.clone());
                }
                Phase::Start { pool, tokens }
            }
        };
        Ok(s)
    }

    fn start_generation(&self, space: &Space) -> Phase {
        if self.generation >= self.cfg.generations {
            return Phase::Done;
        }
        let mut pool = offspring(
            space,
            &self.parent,
            &self.budget,
            &self.cfg,
            self.generation,
        );
        if self.cfg.stages.len() == 1 {
            pool.push(self.parent.clone());
        }
        if pool.is_empty() {
            return Phase::Done;
        }
        Phase::Stage { stage: 0, pool }
    }
}

impl Strategy for EvoPress {
    fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The genomes to score now, each on its stage's sample (empty when done).
    fn ask(&self, _space: &Space) -> Vec<Request> {
        match &self.phase {
            Phase::Done => Vec::new(),
            Phase::Start { pool, tokens } => {
                let sample = SampleSpec {
                    tokens: *tokens,
                    seed: crate::rng::mix(self.cfg.seed, &[0x57a3]),
                };
                crate::strategy::requests(pool, sample, false)
            }
            Phase::Stage { stage, pool } => {
                let s = self.cfg.stages[*stage];
                let sample = SampleSpec {
                    tokens: s.tokens,
                    seed: sample_seed(self.cfg.seed, self.generation, *stage),
                };
                crate::strategy::requests(pool, sample, false)
            }
        }
    }

    /// Scores for exactly the last `ask` (any order); lower fitness is better.
    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        if let Phase::Start { pool, .. } = &self.phase {
            let fit = results_in_order(pool.len(), results)?;
            let best = (0..pool.len())
                .min_by(|&a, &b| fit[a].total_cmp(&fit[b]).then(a.cmp(&b)))
                .expect("a non-empty pool");
            self.parent = pool[best].clone();
            self.parent_fitness = Some(fit[best]);
            self.phase = self.start_generation(space);
            return Ok(());
        }
        let Phase::Stage { stage, pool } = &self.phase else {
            return Err(SearchError::Protocol(
                "tell after the search finished".into(),
            ));
        };
        let (stage, pool) = (*stage, pool.clone());
        let fit = results_in_order(pool.len(), results)?;
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by(|&a, &b| fit[a].total_cmp(&fit[b]).then(a.cmp(&b)));
        let keep = self.cfg.stages[stage].survivors.min(pool.len());
        let survivors: Vec<Genome> = order[..keep].iter().map(|&i| pool[i].clone()).collect();
        let last = stage + 1 == self.cfg.stages.len();
        if last {
            self.parent = survivors[0].clone();
            self.parent_fitness = Some(fit[order[0]]);
            self.history.push((self.generation, fit[order[0]]));
            self.generation += 1;
            self.phase = self.start_generation(space);
        } else {
            let mut next = survivors;
            if stage + 2 == self.cfg.stages.len() && !next.contains(&self.parent) {
                next.push(self.parent.clone());
            }
            self.phase = Phase::Stage {
                stage: stage + 1,
                pool: next,
            };
        }
        Ok(())
    }

    fn best(&self) -> Option<Best> {
        self.parent_fitness.map(|fitness| Best {
            genome: self.parent.clone(),
            fitness,
        })
    }

    fn anchor(&self) -> Option<Genome> {
        Some(self.parent.clone())
    }

    fn progress(&self) -> Progress {
        Progress {
            step: self.generation,
            total: self.cfg.generations,
            label: "generation".into(),
        }
    }
}

/// λ distinct children of `parent`, each different from it and meeting the budget.
pub fn offspring(
    space: &Space,
    parent: &[i64],
    budget: &Budget,
    cfg: &EvoPressConfig,
    generation: usize,
) -> Vec<Genome> {
    let mut rng = rng_for(cfg.seed, &[0x0ff5, generation as u64]);
    let mut seen: HashSet<Genome> = HashSet::new();
    seen.insert(parent.to_vec());
    let mut out = Vec::new();
    let mut attempts = 0;
    while out.len() < cfg.offspring && attempts < cfg.offspring * 200 {
        attempts += 1;
        let flips = rng
            .random_range(1..=cfg.max_flips)
            .min(rng.random_range(1..=cfg.max_flips));
        let mut child = parent.to_vec();
        let mut ok = true;
        for _ in 0..flips {
            if !level_switch(space, &mut child, &mut rng) {
                ok = false;
                break;
            }
        }
        if ok && budget.allows(space.cost(&child)) && seen.insert(child.clone()) {
            out.push(child);
        }
    }
    out
}

/// Raise one random unit by a level and lower another whose step costs the
/// same, so the total stays exact: on EvoPress's sparsity grid every pair
/// qualifies; with quantization only units of the same size (the reference's
/// default); with attention/MLP sub-blocks only units of the same type. Where
/// the raised unit has no such partner, any other unit is lowered (the
/// budget check then decides). Returns false when no pair exists.
pub fn level_switch(space: &Space, g: &mut [i64], rng: &mut impl rand::Rng) -> bool {
    let up: Vec<usize> = (0..g.len())
        .filter(|&i| g[i] < space.units[i].max())
        .collect();
    let down: Vec<usize> = (0..g.len())
        .filter(|&i| g[i] > space.units[i].min())
        .collect();
    if up.is_empty() || down.is_empty() || (up.len() == 1 && down.len() == 1 && up[0] == down[0]) {
        return false;
    }
    // What moving unit i one level in `dir` changes the total by.
    let delta = |i: usize, dir: i64| -> i128 {
        let u = &space.units[i];
        let k = u.index(g[i]).expect("a valid level");
        let k2 = (k as i64 + dir) as usize;
        u.costs[k2] as i128 - u.costs[k] as i128
    };
    loop {
        let a = up[rng.random_range(0..up.len())];
        let da = delta(a, 1);
        let partners: Vec<usize> = down
            .iter()
            .copied()
            .filter(|&b| b != a && delta(b, -1) == -da)
            .collect();
        let pool = if partners.is_empty() {
            &down
        } else {
            &partners
        };
        let b = pool[rng.random_range(0..pool.len())];
        if a != b {
            g[a] = next_level(&space.units[a], g[a], 1);
            g[b] = next_level(&space.units[b], g[b], -1);
            return true;
        }
    }
}

fn next_level(u: &crate::space::UnitLevels, level: i64, dir: i64) -> i64 {
    let i = u.index(level).expect("a valid level") as i64 + dir;
    u.levels[i as usize]
}
