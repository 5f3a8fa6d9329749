//! Workers on other machines: `evocomp worker`'s loop, and what a queue
//! knows of its workers.

use crate::device::{self, BackendChoice};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use evocomp_queue::messages::{Beat, unix_now};
pub use evocomp_queue::status::workers;
pub use evocomp_queue::{Access, Login, QueueKey};

/// The queue a coordinator, worker or `status` reaches: `url` (with a
/// `user:password@` or `token@` in it, if the server asks), the server's
/// credentials, a CA certificate for TLS, and the queue key that signs
/// messages.
pub fn access(url: &str, key: Option<&std::path::Path>, login: Login) -> Result<Access> {
    Ok(Access {
        url: url.to_string(),
        key: key.map(QueueKey::read).transpose()?,
        login,
    })
}

/// How a worker runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// The NATS server with JetStream (nats-server -js), e.g. nats://host:4222,
    /// its credentials, and the queue key.
    pub queue: Access,
    /// The folders whose files jobs may name (default: the working directory).
    pub allow: Vec<std::path::PathBuf>,
    pub backend: BackendChoice,
    /// CPU threads this worker computes on (default: every core).
    pub threads: Option<usize>,
    /// Batches evaluated at once (default as for a study).
    pub concurrent_batches: Option<usize>,
    /// The name in heartbeats and results (default: host-pid).
    pub name: Option<String>,
    /// Seconds a job may go without an (in-progress) ack before another
    /// worker gets it; the first worker to create the queue's consumer sets it.
    pub ack_wait: f64,
    /// Deliveries of one job before it is given up as failed.
    pub max_deliver: i64,
    /// Exit after this many jobs.
    pub max_jobs: Option<u64>,
    /// Fault injection for tests: sleep this long in every evaluation.
    pub delay: Option<Duration>,
    /// Abandon (and report as failed) a job still running after this long.
    pub job_limit: Option<Duration>,
}

impl ServeOptions {
    /// A worker on `queue` with the CLI's defaults (30 s ack wait, 3
    /// deliveries, files under the working directory).
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: Access::new(queue),
            allow: vec![".".into()],
            backend: BackendChoice::Auto,
            threads: None,
            concurrent_batches: None,
            name: None,
            ack_wait: 30.0,
            max_deliver: 3,
            max_jobs: None,
            delay: None,
            job_limit: None,
        }
    }
}

/// ```no_run
/// # use std::sync::{Arc, atomic::AtomicBool};
/// # fn main() -> anyhow::Result<()> {
/// // Needs a `nats-server -js` there, and a coordinator (`evocomp run --queue`).
/// let settings = evocomp::queue::ServeOptions::new("nats://127.0.0.1:4222");
/// evocomp::queue::serve(&settings, Arc::new(AtomicBool::new(false)))?;
/// # Ok(())
/// # }
/// ```
///
/// Take jobs from the queue one at a time, evaluate them and publish the
/// results, until `stop` is set (after the job in progress) or `max_jobs`;
/// a lost connection is waited out.
pub fn serve(s: &ServeOptions, stop: Arc<AtomicBool>) -> Result<()> {
    if s.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if !(s.ack_wait.is_finite() && s.ack_wait >= 1.0) {
        bail!("--ack-wait must be at least 1 second");
    }
    if s.max_deliver < 1 {
        bail!("--max-deliver must be at least 1");
    }
    let chosen = device::choose(s.backend)?;
    let threads = s.threads.unwrap_or_else(device::cores);
    let dev = evocomp_engine::WorkerDevice {
        name: chosen.description.clone(),
        device: chosen.device.clone(),
        max_buffer_bytes: chosen.max_buffer_bytes,
        threads: (chosen.cpu && s.threads.is_some()).then_some(threads),
        concurrent_batches: device::concurrent_batches(&chosen, threads, s.concurrent_batches),
    };
    let name = s
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", evocomp_queue::host(), std::process::id()));
    evocomp_queue::serve(
        &evocomp_queue::WorkerOptions {
            access: s.queue.clone(),
            allow: s.allow.clone(),
            name,
            device: dev,
            ack_wait: Duration::from_secs_f64(s.ack_wait),
            max_deliver: s.max_deliver,
            max_jobs: s.max_jobs,
            delay: s.delay,
            job_limit: s.job_limit,
        },
        stop,
    )
}
