//! Evaluation workers on other machines through NATS JetStream.
//!
//! - `messages.rs`: the versioned job and result messages, the study
//!   context a job carries (experiment + fingerprints), content ids, the
//!   workers' heartbeats, stream and consumer names;
//! - `nats.rs`: the connection and the three streams (jobs: a work queue
//!   with de-duplication; results: kept a week; workers: the last
//!   heartbeat of each);
//! - `coordinator.rs`: `NatsWorkers`, the executor's `Workers` over the
//!   queue (`evocomp run --queue`);
//! - `worker.rs`: the `evocomp worker` loop;
//! - `status.rs`: the workers a queue has seen (`evocomp status --queue`);
//! - `testing.rs`: a throwaway `nats-server -js` for tests.
//!
//! **Invariants:** the coordinator alone owns the study store; workers get
//! everything through messages and the files the job's context names, and
//! refuse a job whose fingerprints their files do not have or whose files
//! lie outside their `--allow` folders; with a queue key, a job or result
//! without a valid signature is dropped and counted, never read.

pub mod coordinator;
pub mod messages;
pub mod nats;
pub mod status;
pub mod testing;
pub mod worker;

pub use coordinator::{NatsWorkers, remote};
pub use messages::{Beat, QueueKey};
pub use nats::{Access, Login, host};
pub use worker::{WorkerOptions, serve, vet};
