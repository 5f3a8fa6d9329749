//! Pure search strategies over per-unit compression levels.
//!
//! **Architecture invariant:** this crate never sees a tensor, a file or a
//! database. It depends on no burn, no sled and no GPU; strategies are plain
//! serde values (a checkpoint is the value itself), deterministic from their
//! seed, driven through ask/tell: `ask` returns the genomes to score and on
//! which token sample, `tell` takes their fitness (lower is better).

mod cmaes;
mod dp;
mod evopress;
pub mod heuristics;
mod nsga2;
pub mod pareto;
pub mod rng;
mod space;
mod strategy;

pub use cmaes::CmaEs;
pub use dp::knapsack;
pub use evopress::{EvoPress, EvoPressConfig, Stage, level_switch, offspring};
pub use nsga2::{LevelGenomes, Member, Nsga2, Nsga2Config, RealVector, Representation};
pub use space::{Budget, Genome, Space, SpaceError, UnitLevels};
pub use strategy::{
    EvolKv, EvolKvConfig, Fixed, Greedy, GreedyConfig, LeaveOneOut, LevelNsga2, Progress, Strategy,
};

use serde::{Deserialize, Serialize};

/// Which token sample a genome is scored on: `tokens` tokens drawn with `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SampleSpec {
    pub tokens: usize,
    pub seed: u64,
}

/// One evaluation a strategy asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub genome: Genome,
    pub sample: SampleSpec,
    /// A measurement (greedy's single-unit sensitivity probes), not a
    /// candidate: it may be off budget and never becomes a result.
    #[serde(default)]
    pub probe: bool,
}

/// A genome's fitness (lower is better) on the sample it was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub genome: Genome,
    pub fitness: f64,
}

/// The finite fitness `scored` gives genome `g`.
pub(crate) fn lookup(scored: &[Scored], g: &Genome) -> Result<f64, SearchError> {
    let s = scored
        .iter()
        .find(|s| &s.genome == g)
        .ok_or_else(|| SearchError::Protocol("a requested genome was not scored".into()))?;
    if !s.fitness.is_finite() {
        return Err(SearchError::Protocol(format!(
            "fitness {} is not finite",
            s.fitness
        )));
    }
    Ok(s.fitness)
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error("invalid strategy settings: {0}")]
    Config(String),
    #[error("ask/tell out of step: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests;
