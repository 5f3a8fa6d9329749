//! Greedy level shifting: probe every unit one level each way, then move
//! levels from where they hurt most to where they hurt least while the real
//! fitness improves.

use crate::framework::setup::{Build, Setup, Spec, SpecError, ensure};
use crate::framework::space::{Budget, Genome, Space};
use crate::framework::strategy::{Best, Progress, Request, SampleDraw, Scored, Strategy, requests};
use crate::heuristics::start_genome;
use crate::{SearchError, results_in_order};
use serde::{Deserialize, Serialize};

/// Greedy's settings, as a config holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreedySpec {
    #[serde(default = "default_steps")]
    pub max_steps: usize,
    #[serde(default = "default_tries")]
    pub tries: usize,
}

fn default_steps() -> usize {
    50
}
fn default_tries() -> usize {
    4
}

impl Spec for GreedySpec {
    fn label(&self) -> String {
        "greedy".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(self.tries >= 1, "tries", "must be at least 1")
    }
}

impl Build for GreedySpec {
    type Strategy = Greedy;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let start = start_genome(setup.seed, setup.space, &setup.budget)?;
        let cfg = GreedyConfig {
            max_steps: self.max_steps,
            tries: self.tries,
            sample: setup.sample,
        };
        Greedy::new(cfg, setup.space, setup.budget, start)
    }
}

/// Greedy's state settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GreedyConfig {
    /// Most rounds (probe every unit, then accept the best candidate).
    pub max_steps: usize,
    /// Most shifts applied together in one round: the round scores the best
    /// 1, 2, 4, ... up to `tries` predicted shifts (disjoint units) applied
    /// together and keeps the best candidate if it beats the current genome.
    pub tries: usize,
    pub sample: SampleDraw,
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
            return Err(SpecError::new("tries", "must be at least 1").into());
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

    /// The probes in ask order: (unit, direction, genome).
    fn probes(&self, space: &Space) -> Vec<(usize, i64, Genome)> {
        let mut out = Vec::new();
        for i in 0..space.len() {
            for dir in [1, -1] {
                if let Some(h) = Self::moved(space, &self.current, i, dir) {
                    out.push((i, dir, h));
                }
            }
        }
        out
    }

    /// The shifts to try after the probes: hurt[i] is the fitness rise from
    /// compressing unit i one level more, gain[j] the fall from compressing
    /// unit j one level less.
    fn tries(&self, space: &Space, hurt: &[Option<f64>], gain: &[Option<f64>]) -> Vec<Genome> {
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
        tries
    }
}

impl Strategy for Greedy {
    fn ask(&self, space: &Space) -> Vec<Request> {
        match &self.phase {
            GreedyPhase::Start => {
                requests(std::slice::from_ref(&self.current), self.cfg.sample, false)
            }
            GreedyPhase::Probe => {
                let g: Vec<Genome> = self.probes(space).into_iter().map(|p| p.2).collect();
                requests(&g, self.cfg.sample, true)
            }
            GreedyPhase::Try(c) => requests(c, self.cfg.sample, false),
            GreedyPhase::Done => Vec::new(),
        }
    }

    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        match std::mem::replace(&mut self.phase, GreedyPhase::Done) {
            GreedyPhase::Start => {
                self.fitness = Some(results_in_order(1, results)?[0]);
                self.phase = if self.cfg.max_steps == 0 {
                    GreedyPhase::Done
                } else {
                    GreedyPhase::Probe
                };
            }
            GreedyPhase::Probe => {
                let f0 = self.fitness.expect("scored at start");
                let probes = self.probes(space);
                let fit = results_in_order(probes.len(), results)?;
                let mut hurt = vec![None; space.len()];
                let mut gain = vec![None; space.len()];
                for ((i, dir, _), f) in probes.iter().zip(fit) {
                    if *dir == 1 {
                        hurt[*i] = Some(f - f0);
                    } else {
                        gain[*i] = Some(f0 - f);
                    }
                }
                let tries = self.tries(space, &hurt, &gain);
                self.phase = if tries.is_empty() {
                    GreedyPhase::Done
                } else {
                    GreedyPhase::Try(tries)
                };
            }
            GreedyPhase::Try(c) => {
                let f0 = self.fitness.expect("scored at start");
                let fit = results_in_order(c.len(), results)?;
                let mut best: Option<(f64, &Genome)> = None;
                for (g, &f) in c.iter().zip(&fit) {
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

    fn is_done(&self) -> bool {
        self.phase == GreedyPhase::Done
    }

    fn best(&self) -> Option<Best> {
        self.fitness.map(|fitness| Best {
            genome: self.current.clone(),
            fitness,
        })
    }

    fn anchor(&self) -> Option<Genome> {
        Some(self.current.clone())
    }

    fn progress(&self) -> Progress {
        Progress {
            step: self.steps,
            total: self.cfg.max_steps,
            label: "round".into(),
        }
    }
}
