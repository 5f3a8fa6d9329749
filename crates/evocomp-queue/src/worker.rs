//! `evocomp worker`: take jobs from the work-queue stream one at a time,
//! evaluate them with a local worker (the engine's `Pool` on this process's
//! device) and publish the results.
//!
//! JetStream does the bookkeeping: a job is acked only after its result is
//! stored in the results stream; while it is evaluated the worker sends
//! in-progress acks, so a long evaluation is not redelivered, but a worker
//! that dies stops sending them and its job goes to another worker after
//! the ack wait. A failed job is handed back (nak) for another try until its
//! last allowed delivery, whose failure is published as the job's result.
//! A job for files this worker does not have (another model, database,
//! text or fitness settings) or of another message version is refused: the
//! refusal is its result, never a wrong evaluation.
//!
//! A job is checked before it touches a model: with a queue key, its
//! signature (a job without a valid one is dropped unanswered and counted);
//! every file it names must lie under the folders the worker was started
//! with (`--allow`); its settings get the config checks again and its
//! genomes and sample are checked against the database (in the pool). A
//! panic in an evaluation fails that job only.

use crate::messages::*;
use crate::nats::{Access, Connection, connect, host, publish};
use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use evocomp_engine::{
    Job, Output, Pool, Prepared, WorkerDevice, Workers, batch_for_device, prepare_built,
};
use futures::StreamExt;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct WorkerOptions {
    pub access: Access,
    /// The folders whose files jobs may name (model, database, texts); a
    /// job naming a file elsewhere is refused without reading it.
    pub allow: Vec<PathBuf>,
    pub name: String,
    pub device: WorkerDevice,
    /// How long a job may go without an ack or in-progress ack before it is
    /// delivered to another worker (set when the workers' consumer is created).
    pub ack_wait: Duration,
    /// Deliveries of one job before it is given up.
    pub max_deliver: i64,
    /// Stop after this many jobs (None: until interrupted).
    pub max_jobs: Option<u64>,
    /// Fault injection for tests: sleep this long inside every evaluation.
    pub delay: Option<Duration>,
    /// A job still running after this long is abandoned and its failure
    /// published (None: no limit).
    pub job_limit: Option<Duration>,
}

/// One loaded study: the context it was loaded for and its evaluation pool.
struct Loaded {
    context: Context,
    pool: Pool,
}

struct State {
    beat: Beat,
    finished: VecDeque<Instant>,
}

/// Serve jobs until `stop` is set (the job in progress is finished first).
pub fn serve(opts: &WorkerOptions, stop: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the queue client")?;
    let url = opts.access.shown();
    let allow: Vec<PathBuf> = opts
        .allow
        .iter()
        .map(|p| std::fs::canonicalize(p).map_err(|e| anyhow!("--allow {}: {e}", p.display())))
        .collect::<Result<_>>()?;
    if allow.is_empty() {
        anyhow::bail!("a worker needs at least one folder its jobs may read (--allow)");
    }
    let conn = rt.block_on(connect(
        &opts.access,
        &format!("evocomp worker {}", opts.name),
    ))?;
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = rt
        .block_on(conn.jobs.get_or_create_consumer(
            WORKERS_CONSUMER,
            pull::Config {
                durable_name: Some(WORKERS_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: opts.ack_wait,
                max_deliver: opts.max_deliver,
                filter_subject: JOBS_SUBJECTS.into(),
                ..Default::default()
            },
        ))
        .map_err(|e| anyhow!("the workers' consumer on {url}: {e}"))?;
    let config = &consumer.cached_info().config;
    let (ack_wait, max_deliver) = (config.ack_wait, config.max_deliver);
    let state = Arc::new(Mutex::new(State {
        beat: Beat {
            name: opts.name.clone(),
            host: host(),
            pid: std::process::id(),
            device: opts.device.name.clone(),
            evocomp: VERSION.into(),
            format: FORMAT,
            started: unix_now(),
            ..Default::default()
        },
        finished: VecDeque::new(),
    }));
    eprintln!(
        "worker {} on {}: taking jobs from {url} (ack wait {:.0} s, {} deliveries at most); \
         files under {}",
        opts.name,
        opts.device.name,
        ack_wait.as_secs_f64(),
        max_deliver,
        allow
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if opts.access.key.is_none() {
        eprintln!(
            "warning: no queue key (--key): this worker runs any job published on {url}, and \
             anyone who can publish there can have it read the files under the folders above"
        );
    }
    let beats = rt.spawn(heartbeat(conn.js.clone(), state.clone()));
    let mut loaded: Option<Loaded> = None;
    let mut done = 0u64;
    let result = loop {
        if stop.load(Ordering::SeqCst) || opts.max_jobs.is_some_and(|m| done >= m) {
            break Ok(());
        }
        let (asked, asked_ns) = (Instant::now(), unix_nanos());
        let msg = rt.block_on(async {
            // A long poll for one job: the server answers when one is there
            // or after 2 s. (A no-wait `fetch` would make an idle worker
            // spin on requests.)
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| anyhow!("taking a job from {url}: {e}"))?;
            match batch.next().await {
                Some(Ok(m)) => anyhow::Ok(Some(m)),
                Some(Err(e)) => Err(anyhow!("taking a job from {url}: {e}")),
                None => Ok(None),
            }
        });
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            // The server gone or restarting: the client reconnects by
            // itself; keep asking (Ctrl-C ends the wait).
            Err(e) => {
                lost_connection(&state, &e);
                continue;
            }
        };
        // The delivery's share of the queue's overhead: from the request
        // (or from the job's publication, if it came later) to its arrival.
        let published = msg
            .info()
            .map(|i| i.published.unix_timestamp_nanos())
            .unwrap_or(asked_ns);
        let delivery = if published <= asked_ns {
            asked.elapsed()
        } else {
            Duration::from_nanos(u64::try_from(unix_nanos() - published).unwrap_or(0))
        };
        let handler = Handler {
            opts,
            allow: &allow,
            rt: &rt,
            conn: &conn,
            state: &state,
            stop: &stop,
            max_deliver,
            ack_wait,
        };
        if let Err(e) = handler.handle(msg, delivery, &mut loaded) {
            // The job's result or ack did not reach the server: it is
            // delivered again after the ack wait (and a result that did get
            // through is recorded once).
            lost_connection(&state, &e);
            continue;
        }
        done += 1;
    };
    beats.abort();
    // The last heartbeat says where it ended.
    let b = {
        let mut s = state.lock().expect("state");
        s.beat.seen = unix_now();
        s.beat.last_error = result
            .as_ref()
            .err()
            .map(|e| format!("stopped: {e:#}"))
            .or(s.beat.last_error.clone());
        s.beat.clone()
    };
    let _ = rt.block_on(publish_beat(&conn.js, &b));
    result
}

async fn publish_beat(js: &async_nats::jetstream::Context, b: &Beat) -> Result<u64> {
    publish(
        js,
        format!("evocomp.workers.{}", subject_safe(&b.name)),
        None,
        serde_json::to_vec(b)?,
        None,
    )
    .await
}

/// A name usable as one subject token.
pub fn subject_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn heartbeat(js: async_nats::jetstream::Context, state: Arc<Mutex<State>>) {
    loop {
        let b = {
            let mut s = state.lock().expect("state");
            let now = Instant::now();
            while s
                .finished
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                s.finished.pop_front();
            }
            s.beat.jobs_last_minute = s.finished.len() as u64;
            s.beat.seen = unix_now();
            s.beat.clone()
        };
        if let Err(e) = publish_beat(&js, &b).await {
            tracing::warn!("heartbeat: {e:#}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every file the job's experiment names, each under one of `allow`
/// (followed through links); the job's own path in the refusal, nothing
/// about what is there.
fn check_paths(job: &JobMsg, allow: &[PathBuf]) -> Result<(), String> {
    let e = &job.context.experiment;
    for (what, p) in [
        ("model", &e.model),
        ("database config", &e.database_config),
        ("database", &e.database),
        ("calibration text", &e.data.calibration),
        ("evaluation text", &e.data.evaluation),
    ] {
        let inside = std::fs::canonicalize(p)
            .is_ok_and(|real| allow.iter().any(|root| real.starts_with(root)));
        if !inside {
            return Err(format!(
                "its {what} {} is not a file under the folders this worker may read (--allow)",
                p.display()
            ));
        }
    }
    Ok(())
}

/// A job message as a worker first takes it, before anything of it is
/// loaded: parsed, of this format, its files under `allow` (canonical
/// folders), its settings checked as a config's would be. The worker's
/// first step on every job it has not loaded the study of.
pub fn vet(payload: &[u8], allow: &[PathBuf]) -> Result<JobMsg, String> {
    let job: JobMsg =
        serde_json::from_slice(payload).map_err(|e| format!("an unreadable job: {e}"))?;
    if job.format != FORMAT {
        return Err(format!("message format {}", job.format));
    }
    check_context(&job, allow)?;
    Ok(job)
}

/// A job's study, checked before anything of it is loaded: its files under
/// the allowed folders, its settings as a config's would be.
fn check_context(job: &JobMsg, allow: &[PathBuf]) -> Result<(), String> {
    check_paths(job, allow)?;
    job.context
        .experiment
        .check_values()
        .map_err(|e| format!("{e}"))
}

/// Load the study a job names (checked by [`check_context`]); an error
/// (missing files, other fingerprints) is the job's refusal.
fn load(job: &JobMsg, device: &WorkerDevice, stop: &Arc<AtomicBool>) -> Result<Loaded, String> {
    let exp = &job.context.experiment;
    let prep: Prepared = prepare_built(exp).map_err(|e| format!("{e:#}"))?;
    let ours = Context::of(&prep);
    let diff = job.context.differences(&ours);
    if !diff.is_empty() {
        return Err(format!(
            "not the files the study was started with: {}",
            diff.join("; ")
        ));
    }
    let batch =
        batch_for_device(exp, &prep, device.max_buffer_bytes).map_err(|e| format!("{e:#}"))?;
    let reuse = exp.prefix_reuse && !prep.db.is_kv();
    let pool = Pool::spawn(&prep, vec![(device.clone(), batch)], reuse, stop.clone());
    Ok(Loaded {
        context: job.context.clone(),
        pool,
    })
}

/// What answering a job needs besides the job: the worker's settings, its
/// runtime and connection, its heartbeat state and stop flag, and the
/// consumer's delivery limits.
struct Handler<'a> {
    opts: &'a WorkerOptions,
    allow: &'a [PathBuf],
    rt: &'a tokio::runtime::Runtime,
    conn: &'a Connection,
    state: &'a Arc<Mutex<State>>,
    stop: &'a Arc<AtomicBool>,
    max_deliver: i64,
    ack_wait: Duration,
}

impl Handler<'_> {
    /// Evaluate one delivered message and answer it: a result (stored
    /// before the job is acked), a refusal, or the job handed back.
    fn handle(&self, msg: Message, delivery: Duration, loaded: &mut Option<Loaded>) -> Result<()> {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let t0 = Instant::now();
        if let Some(key) = &self.opts.access.key {
            let mac = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(MAC_HEADER))
                .map(|v| v.as_str());
            if !key.verify(msg.subject.as_str(), &msg.payload, mac) {
                // Not from a holder of the key: nothing is read or
                // answered (an answer would go where the forger says).
                let why = format!(
                    "worker {} dropped a job on {} without a valid signature (not from a holder \
                     of the queue key)",
                    self.opts.name, msg.subject
                );
                eprintln!("{why}");
                self.state.lock().expect("state").beat.jobs_forged += 1;
                note(self.state, false, Some(why), t0);
                self.rt
                    .block_on(msg.ack_with(AckKind::Term))
                    .map_err(|e| anyhow!("ack: {e}"))?;
                return Ok(());
            }
        }
        let job = match serde_json::from_slice::<JobMsg>(&msg.payload) {
            Ok(job) if job.format == FORMAT => job,
            other => return self.refuse_unreadable(&msg, other.map(|j| j.format), t0),
        };
        tracing::info!(
            "job {} (attempt {}, delivery {delivered}): started",
            job.cid,
            job.attempt
        );
        let outcome = self.evaluate(&msg, &job, loaded);
        if let Ok(Output::Skipped) = outcome {
            // Stopping: the job goes back for another worker at once.
            self.rt
                .block_on(msg.ack_with(AckKind::Nak(None)))
                .map_err(|e| anyhow!("nak: {e}"))?;
            return Ok(());
        }
        let retry = matches!(&outcome, Err((false, _))) && delivered < self.max_deliver;
        if let Err((_, why)) = &outcome {
            eprintln!(
                "{why} (delivery {delivered} of {}{})",
                self.max_deliver,
                if retry { "; handed back" } else { "" }
            );
            note(self.state, false, Some(why.clone()), t0);
            if retry {
                self.rt
                    .block_on(msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))))
                    .map_err(|e| anyhow!("nak: {e}"))?;
                return Ok(());
            }
        }
        let reuse = loaded.as_ref().map(|l| l.pool.stats());
        self.answer(msg, &job, outcome, reuse, (delivered, delivery, t0))
    }

    /// The job evaluated on the loaded study (loaded first when it is
    /// another study's): Err((final, why)), final for a refusal, which the
    /// same worker would repeat.
    fn evaluate(
        &self,
        msg: &Message,
        job: &JobMsg,
        loaded: &mut Option<Loaded>,
    ) -> Result<Output, (bool, String)> {
        let name = &self.opts.name;
        // The loaded study serves only a job whose whole context is the one
        // it was loaded for; any other is checked before the loaded one is
        // let go, so a crafted job cannot make a worker drop its study.
        let ready = match loaded {
            Some(l) if l.context == job.context => Ok(()),
            _ => check_context(job, self.allow).and_then(|()| {
                *loaded = None;
                self.state.lock().expect("state").beat.study =
                    Some(job.context.experiment.name.clone());
                load(job, &self.opts.device, self.stop).map(|l| *loaded = Some(l))
            }),
        };
        match ready {
            Err(why) => Err((true, format!("worker {name} refuses the job: {why}"))),
            Ok(()) => {
                let pool = &mut loaded.as_mut().expect("loaded").pool;
                let limit = self.opts.job_limit;
                match evaluate(
                    self.rt,
                    msg,
                    pool,
                    job,
                    self.opts.delay,
                    self.ack_wait,
                    limit,
                ) {
                    Ok(Some(out)) => out.map_err(|e| (false, format!("worker {name}: {e}"))),
                    Ok(None) => {
                        // Its threads finish the job unseen; the study is
                        // loaded again for the next one.
                        if let Some(l) = loaded.take() {
                            l.pool.abandon();
                        }
                        Err((
                            true,
                            format!(
                                "worker {name}: the job ran past the limit of {:.0} s \
                                 (--job-limit) and was abandoned",
                                limit.unwrap_or_default().as_secs_f64()
                            ),
                        ))
                    }
                    Err(e) => Err((false, format!("worker {name}: {e}"))),
                }
            }
        }
    }

    /// Store the result, then ack the job: a worker that dies in between
    /// leaves a job that is evaluated again, and its second result is
    /// dropped by the results stream as a duplicate.
    fn answer(
        &self,
        msg: Message,
        job: &JobMsg,
        outcome: Result<Output, (bool, String)>,
        reuse: Option<evocomp_engine::ReuseStats>,
        (delivered, delivery, t0): (i64, Duration, Instant),
    ) -> Result<()> {
        let seconds = t0.elapsed().as_secs_f64();
        let result = outcome.map_err(|(_, why)| {
            if delivered >= self.max_deliver && delivered > 1 {
                format!("{why} (failed on all {delivered} deliveries)")
            } else {
                why
            }
        });
        let r = ResultMsg::answering(job, &self.opts.name, seconds, result, reuse);
        let ok = r.result.is_ok();
        let t_answer = Instant::now();
        let payload = serde_json::to_vec(&r)?;
        let key = self.opts.access.key.as_ref();
        self.rt.block_on(publish(
            &self.conn.js,
            job.results.clone(),
            Some(r.message_id_signed(key, &job.results, &payload)),
            payload,
            key,
        ))?;
        self.rt
            .block_on(msg.double_ack())
            .map_err(|e| anyhow!("ack: {e}"))?;
        if ok {
            note(self.state, true, None, t0);
            tracing::info!(
                "job {} done in {seconds:.3} s; queue overhead {:.2} ms (delivery {:.2} ms, result stored and job acked {:.2} ms)",
                job.cid,
                1e3 * (delivery + t_answer.elapsed()).as_secs_f64(),
                1e3 * delivery.as_secs_f64(),
                1e3 * t_answer.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// A message of another format, or none it can read: refused for good
    /// (answered where it says answers go, if it says so) and terminated.
    fn refuse_unreadable(
        &self,
        msg: &Message,
        parsed: Result<u32, serde_json::Error>,
        t0: Instant,
    ) -> Result<()> {
        let v: Option<Versioned> = serde_json::from_slice(&msg.payload).ok();
        let (format, evocomp) = (
            v.as_ref().and_then(|v| v.format),
            v.as_ref().and_then(|v| v.evocomp.clone()),
        );
        let why = match (parsed, format) {
            (Ok(f), _) => format!(
                "message format {f} (evocomp {})",
                evocomp.unwrap_or_else(|| "?".into())
            ),
            (Err(_), Some(f)) if f != FORMAT => format!(
                "message format {f} (evocomp {})",
                evocomp.unwrap_or_else(|| "?".into())
            ),
            (Err(e), _) => format!("a message it cannot read ({e})"),
        };
        let why = format!(
            "worker {} (message format {FORMAT}, evocomp {VERSION}) refuses {why}",
            self.opts.name
        );
        if let Some(v) = v.filter(|v| v.results.is_some() && v.cid.is_some()) {
            let r = ResultMsg {
                format: FORMAT,
                evocomp: VERSION.into(),
                study: v.study.unwrap_or_default(),
                cid: v.cid.unwrap_or_default(),
                attempt: v.attempt.unwrap_or(0),
                worker: self.opts.name.clone(),
                seconds: 0.0,
                result: Err(why.clone()),
                reuse: None,
            };
            let subject = v.results.unwrap_or_default();
            let payload = serde_json::to_vec(&r)?;
            let key = self.opts.access.key.as_ref();
            self.rt.block_on(publish(
                &self.conn.js,
                subject.clone(),
                Some(r.message_id_signed(key, &subject, &payload)),
                payload,
                key,
            ))?;
        }
        eprintln!("{why}");
        note(self.state, false, Some(why), t0);
        self.rt
            .block_on(msg.ack_with(AckKind::Term))
            .map_err(|e| anyhow!("ack: {e}"))?;
        Ok(())
    }
}

/// Note a lost connection, say so, and wait a second before trying again.
fn lost_connection(state: &Arc<Mutex<State>>, e: &anyhow::Error) {
    let why = format!("{e:#}");
    eprintln!("{why}; trying again in 1 s");
    state.lock().expect("state").beat.last_error = Some(why);
    std::thread::sleep(Duration::from_secs(1));
}

fn unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn note(state: &Arc<Mutex<State>>, ok: bool, error: Option<String>, t0: Instant) {
    let mut s = state.lock().expect("state");
    s.beat.busy_seconds += t0.elapsed().as_secs_f64();
    if ok {
        s.beat.jobs_done += 1;
        s.finished.push_back(Instant::now());
    } else {
        s.beat.jobs_failed += 1;
    }
    if error.is_some() {
        s.beat.last_error = error;
    }
}

/// Evaluate one job on the local pool, with in-progress acks every third of
/// the ack wait while it runs: its outcome, or None when it ran past `limit`
/// (the pool is then still on it); Err when the pool is gone.
fn evaluate(
    rt: &tokio::runtime::Runtime,
    msg: &Message,
    pool: &mut Pool,
    job: &JobMsg,
    delay: Option<Duration>,
    ack_wait: Duration,
    limit: Option<Duration>,
) -> Result<Option<Result<Output, String>>, String> {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let (ack_subject, client) = (msg.message.reply.clone(), msg.context.client());
    let progress = rt.spawn(async move {
        let Some(subject) = ack_subject else { return };
        loop {
            tokio::time::sleep(every).await;
            let _ = client
                .publish(subject.clone(), AckKind::Progress.into())
                .await;
        }
    });
    let t0 = Instant::now();
    let out = (|| {
        if let Some(d) = delay {
            std::thread::sleep(limit.map_or(d, |l| d.min(l)));
            if limit.is_some_and(|l| d >= l) {
                return Ok(None);
            }
        }
        pool.submit(Job {
            id: 0,
            kind: job.kind.clone(),
        })
        .map_err(|e| format!("{e:#}"))?;
        let done = match limit {
            None => Workers::recv(pool).map(Some),
            Some(l) => pool.recv_timeout(l.saturating_sub(t0.elapsed())),
        };
        done.map(|d| d.map(|d| finite(d.result)))
            .map_err(|e| format!("{e:#}"))
    })();
    progress.abort();
    out
}
