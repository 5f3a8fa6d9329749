//! The evaluation boundary: a queue of jobs served by workers. Workers hold
//! models and teachers; they never touch the store (only the coordinator
//! owns sled). [`Workers`] is what the executor sees: [`Pool`] (threads of
//! this process, one per device) or a remote queue (evocomp-queue: worker
//! processes on other machines behind the same `Job`/`Done` messages).

use crate::evaluator::{Evaluator, ReuseStats};
use crate::prepare::Prepared;
use anyhow::{Result, anyhow};
use burn::tensor::Device;
use evocomp_eval::KlResult;
use evocomp_search::{Genome, SampleDraw, Space};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// What to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobKind {
    /// A candidate's fitness on a search sample; `anchor` is the genome whose
    /// hidden states are worth keeping for this sample.
    Fitness {
        genome: Genome,
        sample: SampleDraw,
        anchor: Option<Genome>,
    },
    /// KL and NLL on the held-out sample.
    HeldOut { genome: Genome },
}

impl JobKind {
    /// Whether the job can be evaluated in `space`: every genome of the
    /// space's length with a level each unit has, a sample of 1 to
    /// `MAX_SAMPLE_TOKENS` tokens. A job from elsewhere (a queue message) is
    /// checked before it touches a model; the reason otherwise.
    pub fn check(&self, space: &Space) -> Result<(), String> {
        let genome = |what: &str, g: &Genome| -> Result<(), String> {
            if g.len() != space.units.len() {
                return Err(format!(
                    "{what}: {} units, the database has {}",
                    g.len(),
                    space.units.len()
                ));
            }
            match g
                .iter()
                .zip(&space.units)
                .position(|(l, u)| !u.levels.contains(l))
            {
                Some(i) => Err(format!(
                    "{what}: unit {i} has no level {} (its levels: {:?})",
                    g[i], space.units[i].levels
                )),
                None => Ok(()),
            }
        };
        match self {
            JobKind::Fitness {
                genome: g,
                sample,
                anchor,
            } => {
                genome("genome", g)?;
                if let Some(a) = anchor {
                    genome("anchor", a)?;
                }
                let max = evocomp_search::MAX_SAMPLE_TOKENS;
                if sample.tokens == 0 || sample.tokens > max || sample.skip > max {
                    return Err(format!(
                        "a sample of {} tokens after {}: each must be at most {max} (and tokens at least 1)",
                        sample.tokens, sample.skip
                    ));
                }
                Ok(())
            }
            JobKind::HeldOut { genome: g } => genome("genome", g),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    Fitness(f64),
    HeldOut(KlResult),
    /// Not started: the run is stopping.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub id: u64,
    pub result: Result<Output, String>,
    pub seconds: f64,
    pub worker: String,
}

/// A device a worker runs on.
#[derive(Clone)]
pub struct WorkerDevice {
    pub name: String,
    pub device: Device,
    /// The largest buffer the device allocates, in bytes (a GPU's limit);
    /// None where no such limit matters (the CPU).
    pub max_buffer_bytes: Option<u64>,
    /// CPU threads of the worker's own pool, which every parallel kernel it
    /// runs stays in (several CPU workers, one core each, instead of one
    /// worker splitting every matrix product); None: the global pool.
    pub threads: Option<usize>,
    /// Batches a worker evaluates at once (`EvalOptions::concurrent_batches`):
    /// 2 on a CPU with at least two threads, 1 on a GPU.
    pub concurrent_batches: usize,
}

impl WorkerDevice {
    /// A device with no buffer limit that matters (burn's `flex` CPU backend).
    pub fn unlimited(name: impl Into<String>, device: Device) -> Self {
        Self {
            name: name.into(),
            device,
            max_buffer_bytes: None,
            threads: None,
            concurrent_batches: 1,
        }
    }
}

/// Whatever evaluates jobs for the executor: one `Done` comes back for
/// every job submitted (a failure as `Err`, a job not started because the
/// run is stopping as `Output::Skipped`), in any order.
pub trait Workers {
    fn submit(&mut self, job: Job) -> Result<()>;
    /// The next answer; blocks until one arrives.
    fn recv(&mut self) -> Result<Done>;
    /// Prefix-reuse counts over every worker (zeros where unknown).
    fn stats(&self) -> ReuseStats;
}

/// Builds the workers of a remote queue for a prepared study (the binary
/// passes one in `RunOptions::remote`); the executor then publishes jobs
/// instead of running local threads.
pub type Remote = Arc<dyn Fn(&Prepared, Arc<AtomicBool>) -> Result<Box<dyn Workers>> + Send + Sync>;

impl Workers for Pool {
    fn submit(&mut self, job: Job) -> Result<()> {
        Pool::submit(self, job)
    }
    fn recv(&mut self) -> Result<Done> {
        Pool::recv(self)
    }
    fn stats(&self) -> ReuseStats {
        Pool::stats(self)
    }
}

/// Workers serving one queue.
pub struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
    /// Each worker's prefix-reuse counts (summed by [`Pool::stats`]).
    stats: Arc<Mutex<Vec<ReuseStats>>>,
}

impl Pool {
    /// One worker per device, each with its own evaluator, running
    /// `batch` sequences per forward pass on that device.
    pub fn spawn(
        prep: &Prepared,
        devices: Vec<(WorkerDevice, usize)>,
        reuse: bool,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let stats = Arc::new(Mutex::new(vec![ReuseStats::default(); devices.len()]));
        let mut handles = Vec::new();
        for (
            wi,
            (
                WorkerDevice {
                    name,
                    device,
                    threads,
                    concurrent_batches,
                    ..
                },
                batch_size,
            ),
        ) in devices.into_iter().enumerate()
        {
            let loaded = prep.loaded.clone();
            let db = prep.db.clone();
            let unit_layer = prep.unit_layer.clone();
            let calib = prep.calib.clone();
            let fitness = evocomp_config::FitnessSpec {
                batch_size,
                ..prep.exp.fitness
            };
            let held_out = prep.held_out.clone();
            let space = prep.space.clone();
            let jobs_rx = jobs_rx.clone();
            let done_tx = done_tx.clone();
            let stop = stop.clone();
            let stats = stats.clone();
            handles.push(std::thread::spawn(move || {
                let work = move || {
                    // A worker that cannot put the model on its device answers
                    // every job with why, so the executor records failures
                    // instead of waiting for it.
                    let mut ev =
                        Evaluator::new(&loaded, db, unit_layer, calib, fitness, reuse, &device)
                            .map(|mut ev| {
                                ev.set_concurrent_batches(concurrent_batches);
                                ev
                            })
                            .map_err(|e| format!("{name}: putting the model on the device: {e:#}"));
                    drop(loaded);
                    loop {
                        let job = {
                            let rx = jobs_rx.lock().expect("queue lock");
                            rx.recv()
                        };
                        let Ok(job) = job else { break };
                        let t0 = Instant::now();
                        let result =
                            match &mut ev {
                                _ if stop.load(Ordering::SeqCst) => Ok(Output::Skipped),
                                Err(why) => Err(why.clone()),
                                Ok(ev) => match job.kind.check(&space) {
                                    Err(why) => Err(format!("job refused: {why}")),
                                    // A panic fails this job only: the worker
                                    // goes on with the next (its caches cleared,
                                    // as they may be half written).
                                    Ok(()) => std::panic::catch_unwind(
                                        std::panic::AssertUnwindSafe(|| match &job.kind {
                                            JobKind::Fitness {
                                                genome,
                                                sample,
                                                anchor,
                                            } => ev
                                                .fitness(genome, *sample, anchor.as_ref())
                                                .map(Output::Fitness),
                                            JobKind::HeldOut { genome } => {
                                                ev.held_out(genome, &held_out).map(Output::HeldOut)
                                            }
                                        }),
                                    )
                                    .unwrap_or_else(|panic| {
                                        ev.clear_caches();
                                        let what = panic
                                            .downcast_ref::<String>()
                                            .map(String::as_str)
                                            .or_else(|| panic.downcast_ref::<&str>().copied())
                                            .unwrap_or("no message");
                                        Err(anyhow!("the evaluation panicked: {what}"))
                                    })
                                    .map_err(|e| format!("{e:#}")),
                                },
                            };
                        if let Ok(ev) = &ev {
                            stats.lock().expect("stats lock")[wi] = ev.stats;
                        }
                        let d = Done {
                            id: job.id,
                            result,
                            seconds: t0.elapsed().as_secs_f64(),
                            worker: name.clone(),
                        };
                        if done_tx.send(d).is_err() {
                            break;
                        }
                    }
                };
                match threads.map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build()) {
                    Some(Ok(pool)) => pool.install(work),
                    // No pool of its own could be made: the global one.
                    Some(Err(e)) => {
                        tracing::warn!("worker thread pool: {e}; using the global pool");
                        work()
                    }
                    None => work(),
                }
            }));
        }
        Self {
            jobs: Some(jobs_tx),
            done: done_rx,
            handles,
            stats,
        }
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .expect("open until drop")
            .send(job)
            .map_err(|_| anyhow!("every worker has stopped"))
    }

    /// Prefix-reuse counts over every worker.
    pub fn stats(&self) -> ReuseStats {
        self.stats.lock().expect("stats lock").iter().copied().sum()
    }

    pub fn recv(&self) -> Result<Done> {
        self.done
            .recv()
            .map_err(|_| anyhow!("every worker has stopped (a worker panicked?)"))
    }

    /// [`Self::recv`], giving up after `wait` (None then).
    pub fn recv_timeout(&self, wait: std::time::Duration) -> Result<Option<Done>> {
        match self.done.recv_timeout(wait) {
            Ok(d) => Ok(Some(d)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(anyhow!("every worker has stopped (a worker panicked?)"))
            }
        }
    }

    /// Let the pool go without waiting for the job its threads are on: they
    /// finish it (its answer goes nowhere) and end; nothing is joined.
    pub fn abandon(mut self) {
        self.jobs = None;
        self.handles.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
