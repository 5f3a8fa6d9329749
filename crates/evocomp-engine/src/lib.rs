//! The study engine: everything between a resolved experiment and a
//! finished study.
//!
//! - `prepare.rs`: experiment → model, database (built when missing),
//!   space, token sets; `budget.rs`: the config's budget in that space;
//!   `batches.rs`: sequences per forward pass on a device; `start.rs`: a
//!   fresh strategy (the model measurements its settings ask for, then
//!   `StrategySpec::build`);
//! - `executor.rs`: ask → caches → jobs → commit → tell → checkpoint, then
//!   the held-out measurement as one batch;
//! - `observer.rs`: the `Observer` trait and its implementations (progress
//!   bar, status file, history);
//! - `jobs.rs`: the evaluation boundary (`Job`/`Done` on a queue, one
//!   worker per device); `evaluator.rs`: one worker's models, teachers and
//!   prefix cache.
//!
//! **Architecture invariant:** the engine never picks a device (the binary
//! passes them in), never reads database manifest fields (it uses the
//! database's accessors) and never names a file in a study folder (that is
//! `evocomp-study`'s).

pub mod batches;
pub mod budget;
pub mod evaluator;
pub mod executor;
pub mod jobs;
pub mod observer;
pub mod prepare;
pub mod start;

pub use batches::batch_for_device;
pub use budget::resolve_budget;
pub use evaluator::{Evaluator, ReuseStats, sample_for};
pub use executor::{Outcome, RunOptions, run, run_observed};
pub use jobs::{Done, Job, JobKind, Output, Pool, Remote, WorkerDevice, Workers};
pub use observer::{History, Observer, ProgressObserver, ResultEvent, StatusWriter, StepEvent};
pub use prepare::{Prepared, build_from_config, prepare, prepare_built, token_set};
pub use start::new_strategy;
