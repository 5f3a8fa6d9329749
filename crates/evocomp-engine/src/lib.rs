//! The study engine: everything between a resolved experiment and a
//! finished study.
//!
//! - `setup.rs`: experiment + database → model, space, budget, token sets,
//!   and a fresh strategy (built by its settings, with the model
//!   measurements it asks for);
//! - `executor.rs`: ask → caches → jobs → commit → tell → checkpoint, then
//!   the held-out measurement as one batch;
//! - `observer.rs`: the `Observer` trait and its implementations (progress
//!   bar, status file, history);
//! - `worker.rs`: the evaluation boundary (`Job`/`Done` on a queue, one
//!   worker per device); `evaluator.rs`: one worker's models, teachers and
//!   prefix cache.
//!
//! **Architecture invariant:** the engine never picks a device (the binary
//! passes them in), never reads database manifest fields (it uses the
//! database's accessors) and never names a file in a study folder (that is
//! `evocomp-study`'s).

pub mod evaluator;
pub mod executor;
pub mod observer;
pub mod setup;
pub mod worker;

pub use evaluator::{Evaluator, ReuseStats, sample_for};
pub use executor::{Outcome, RunOptions, run, run_observed};
pub use observer::{History, Observer, ProgressObserver, ResultEvent, StatusWriter, StepEvent};
pub use setup::{
    Prepared, batch_for_device, build_from_config, new_strategy, prepare, prepare_built,
    resolve_budget, token_set,
};
pub use worker::{Done, Job, JobKind, Output, Pool, Remote, WorkerDevice, Workers};
