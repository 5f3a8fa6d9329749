//! The study engine: everything between a resolved experiment and a finished
//! study. It loads the model and the variant database, measures the
//! baselines' scores, runs evaluation workers (one per device) behind a job
//! queue, and drives a strategy from `evocomp-search` against the store of
//! `evocomp-store`, which only this crate's coordinator opens.
//!
//! **Architecture invariant:** the engine never picks a device; the binary
//! passes the devices in.

pub mod context;
pub mod evaluator;
pub mod scores;
pub mod study;
pub mod worker;

pub use context::{Prepared, build_from_config, prepare, resolve_budget, space_of, token_set};
pub use evaluator::{Evaluator, ReuseStats, sample_for};
pub use study::{
    Measured, Outcome, RunOptions, State, StatusFile, StepRecord, Summary, run, saved_experiment,
    state_of, summary_of,
};
