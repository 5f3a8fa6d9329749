//! Experiment configs in two stages: a raw RON spec exactly as written
//! (unknown fields rejected with file, line and column), then a validated,
//! resolved value the rest of evocomp uses.
//!
//! - `ron.rs`: reading and parsing RON, errors at file:line:column, and
//!   locating a field in the text for value errors;
//! - `database.rs`: `DatabaseSpec` → `DatabaseConfig` (`evocomp db build`);
//! - `experiment.rs`: `ExperimentSpec` → `Experiment` (`evocomp run`).
//!
//! Relative paths in a config are relative to the current working directory
//! (run evocomp from the repository root).

mod database;
mod experiment;
mod ron;

pub use database::*;
pub use experiment::*;
pub use ron::{ConfigError, Result, locate, parse_ron};
