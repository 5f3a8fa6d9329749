//! Pure search strategies over per-unit compression levels.
//!
//! **Architecture invariant:** this crate never sees a tensor, a file or a
//! database. It depends on no burn, no sled and no GPU; strategies are plain
//! serde values (a checkpoint is the value itself), deterministic from their
//! seed, driven through the [`Strategy`] trait's ask/tell: `ask` returns the
//! requests to score (genome, token sample, id), `tell` takes one [`Scored`]
//! per request, matched by id (lower fitness is better).
//!
//! Layout: `framework/` (the trait, the space, the setup a strategy is
//! built from, the registry that lists every strategy once, seeded
//! randomness), `strategies/` (one file per family: EvoPress, greedy,
//! EvolKV, NSGA-II, leave-one-out, the fixed one-shot baselines) and
//! `parts/` (their building blocks: heuristics, DP, CMA-ES, Pareto ranking,
//! racing, the surrogate, warm starts). Arrows run strategies → parts →
//! framework, and the registry is the only file that names every strategy.

mod framework;
mod parts;
mod strategies;

pub use framework::registry::{AnyStrategy, StrategySpec};
pub use framework::rng;
pub use framework::setup::{
    BudgetHint, Build, Kind, MAX_GENERATIONS, MAX_GENOMES, MAX_SAMPLE_TOKENS, Measurements, Needs,
    Setup, Spec, SpecError,
};
pub use framework::space::{Budget, Genome, Space, SpaceError, UnitLevels};
pub use framework::strategy::{
    Best, FrontMember, Progress, Request, Role, SampleDraw, Scored, Strategy, requests,
    results_in_order,
};
pub use parts::cmaes::CmaEs;
pub use parts::dp::{knapsack, knapsack_per_group};
pub use parts::racing::Racing;
pub use parts::warm::WarmStart;
pub use parts::{heuristics, pareto, racing, surrogate, warm};
pub use strategies::*;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error("invalid strategy settings: {0}")]
    Config(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("ask/tell out of step: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests;
