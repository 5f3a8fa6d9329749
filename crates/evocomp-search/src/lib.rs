//! Pure search strategies over per-unit compression levels.
//!
//! **Architecture invariant:** this crate never sees a tensor, a file or a
//! database. It depends on no burn, no sled and no GPU; strategies are plain
//! serde values (a checkpoint is the value itself), deterministic from their
//! seed, driven through the [`Strategy`] trait's ask/tell: `ask` returns the
//! requests to score (genome, token sample, id), `tell` takes one [`Scored`]
//! per request, matched by id (lower fitness is better).
//!
//! Layout: one file per strategy family (`evopress.rs`, `greedy.rs`,
//! `evolkv.rs`, `nsga2.rs`, `leave_one_out.rs`, `fixed.rs`), each with its
//! settings type (what a config holds, validated here) and its state;
//! `strategy.rs` holds the trait and the types every strategy shares;
//! `any.rs` the one serde enum that dispatches to them; `setup.rs` what a
//! strategy is built from (space, budget, seed, measurements). Anytime
//! search's parts: `racing.rs` (selection in chunks), `surrogate.rs`
//! (screening offspring), `warm.rs` (starting from the heuristics).

mod any;
mod cmaes;
mod dp;
mod evolkv;
mod evopress;
mod fixed;
mod greedy;
pub mod heuristics;
mod leave_one_out;
mod nsga2;
pub mod pareto;
pub mod racing;
pub mod rng;
mod setup;
mod space;
mod strategy;
pub mod surrogate;
pub mod warm;

pub use any::AnyStrategy;
pub use cmaes::CmaEs;
pub use dp::{knapsack, knapsack_per_group};
pub use evolkv::{EvolKv, EvolKvConfig, EvolKvSettings};
pub use evopress::{
    EvoPress, EvoPressConfig, EvoPressSettings, Preset, Stage, Start, SurrogateSettings,
    level_switch, offspring,
};
pub use fixed::{
    DpSettings, Fixed, GivenSettings, OwlSettings, PyramidKvSettings, RandomSettings,
    ShortGptSettings, UniformSettings,
};
pub use greedy::{Greedy, GreedyConfig, GreedySettings};
pub use leave_one_out::{LeaveOneOut, ShortenedLlamaSettings};
pub use nsga2::{
    LevelGenomes, LevelNsga2, Member, Nsga2, Nsga2Config, Nsga2Settings, RealVector, Representation,
};
pub use racing::Racing;
pub use setup::{BudgetHint, Kind, Measurements, Needs, Settings, SettingsError, Setup};
pub use space::{Budget, Genome, Space, SpaceError, UnitLevels};
pub use strategy::{
    Best, FrontMember, Progress, Request, Role, SampleSpec, Scored, Strategy, requests,
    results_in_order,
};
pub use warm::WarmStart;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error("invalid strategy settings: {0}")]
    Config(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("ask/tell out of step: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests;
