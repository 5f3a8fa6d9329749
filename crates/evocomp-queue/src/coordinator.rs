//! The coordinator's side: [`NatsWorkers`] implements the executor's
//! `Workers` by publishing jobs to the work-queue stream and reading its
//! study's results back. It keeps no state of its own that a restart could
//! lose: on start it reads every result its study ever got, so a resumed
//! coordinator answers from them the jobs it would otherwise publish again,
//! and a job it publishes again (same message id) while it is still queued
//! is recognised by JetStream's de-duplication and not queued twice.

use crate::messages::*;
use crate::nats::{Access, Connection, connect, publish};
use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use evocomp_engine::{Done, Job, Output, Prepared, Remote, Workers};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `RunOptions::remote` of `evocomp run --queue URL`.
pub fn remote(access: Access) -> Remote {
    Arc::new(move |prep: &Prepared, stop: Arc<AtomicBool>| {
        Ok(Box::new(NatsWorkers::connect(&access, prep, stop)?) as Box<dyn Workers>)
    })
}

type Results = pull::Ordered;

/// A published job without an answer.
struct Pending {
    /// The executor's job id.
    id: u64,
    attempt: u32,
    published: Instant,
    /// Its sequence in the jobs stream.
    seq: u64,
}

pub struct NatsWorkers {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    url: String,
    key: Option<QueueKey>,
    study: String,
    jobs_subject: String,
    results_subject: String,
    context: Context,
    context_key: String,
    /// Published jobs without an answer, by content id.
    pending: HashMap<String, Pending>,
    last_check: Instant,
    /// Successful results for content ids not (yet) asked for in this run.
    known: HashMap<String, ResultMsg>,
    /// Failed attempts seen per content id.
    failures: HashMap<String, u32>,
    /// Each worker's latest prefix-reuse counts for this study.
    reuse: HashMap<String, evocomp_engine::ReuseStats>,
    ready: VecDeque<Done>,
    results: Results,
    /// The results stream's sequence of the last result read: a consumer
    /// lost with a restarted server is made again from the next one.
    results_seq: u64,
    advisories: async_nats::Subscriber,
    stop: Arc<AtomicBool>,
    last_news: Instant,
    /// Jobs published, and the seconds spent publishing them.
    pub published: u64,
    pub publish_seconds: f64,
    /// Jobs answered in this run, and their round trips beyond the
    /// worker's own time (queueing, delivery, acks, the result's way back).
    pub answered: u64,
    pub overhead_seconds: f64,
    /// Results dropped for want of a valid signature (with a queue key).
    pub forged: u64,
}

impl NatsWorkers {
    pub fn connect(access: &Access, prep: &Prepared, stop: Arc<AtomicBool>) -> Result<Self> {
        let shown = access.shown();
        let url = shown.as_str();
        if access.key.is_none() {
            eprintln!(
                "warning: no queue key (--queue-key): any client of {url} can answer this study's \
                 jobs with numbers of its choosing"
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the queue client")?;
        let context = Context::of(prep);
        let study = study_token(&prep.exp, &context);
        let (conn, results, advisories, backlog) = rt.block_on(async {
            let conn = connect(access, &format!("evocomp coordinator {}", prep.exp.name)).await?;
            let subject = format!("evocomp.results.{study}");
            let consumer = conn
                .results
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("reading results from {url}: {e}"))?;
            let backlog = consumer.cached_info().num_pending;
            let results = consumer
                .messages()
                .await
                .map_err(|e| anyhow!("reading results from {url}: {e}"))?;
            let advisories = conn
                .client
                .subscribe(format!(
                    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{WORKERS_CONSUMER}"
                ))
                .await
                .map_err(|e| anyhow!("subscribing to {url}'s advisories: {e}"))?;
            anyhow::Ok((conn, results, advisories, backlog))
        })?;
        let mut me = Self {
            rt,
            conn,
            url: url.to_string(),
            key: access.key.clone(),
            jobs_subject: format!("evocomp.jobs.{study}"),
            results_subject: format!("evocomp.results.{study}"),
            study,
            context_key: context.key(),
            context,
            pending: HashMap::new(),
            last_check: Instant::now(),
            known: HashMap::new(),
            failures: HashMap::new(),
            reuse: HashMap::new(),
            ready: VecDeque::new(),
            results,
            results_seq: 0,
            advisories,
            stop,
            last_news: Instant::now(),
            published: 0,
            publish_seconds: 0.0,
            answered: 0,
            overhead_seconds: 0.0,
            forged: 0,
        };
        // Every result the study already has (from before a restart), before
        // anything is published.
        for _ in 0..backlog {
            if !me.next_message(Duration::from_secs(10))? {
                break;
            }
        }
        if backlog > 0 {
            eprintln!(
                "queue {url}: {} earlier results of this study read back ({} failed attempts)",
                me.known.len(),
                me.failures.values().sum::<u32>()
            );
        }
        Ok(me)
    }

    /// Wait up to `wait` for one result or advisory and take it in; false
    /// when nothing came.
    fn next_message(&mut self, wait: Duration) -> Result<bool> {
        enum Got {
            Result(Vec<u8>, String, Option<String>, u64),
            Advisory(Vec<u8>),
            Lost(String),
            Nothing,
        }
        let url = self.url.clone();
        let got = self.rt.block_on(async {
            tokio::select! {
                m = self.results.next() => match m {
                    Some(Ok(m)) => Ok(Got::Result(
                        m.payload.to_vec(),
                        m.subject.to_string(),
                        m.headers
                            .as_ref()
                            .and_then(|h| h.get(MAC_HEADER))
                            .map(|v| v.as_str().to_string()),
                        m.info().map(|i| i.stream_sequence).unwrap_or(0),
                    )),
                    // The server restarted (or the consumer was deleted):
                    // made again below, from the next result.
                    Some(Err(e)) => Ok(Got::Lost(format!("reading results from {url}: {e}"))),
                    None => Ok(Got::Lost(format!("the results stream on {url} ended"))),
                },
                a = self.advisories.next() => match a {
                    Some(a) => Ok(Got::Advisory(a.payload.to_vec())),
                    None => Err(anyhow!("the connection to {url} closed")),
                },
                _ = tokio::time::sleep(wait) => Ok(Got::Nothing),
            }
        })?;
        match got {
            Got::Lost(why) => {
                self.reconnect_results(&why)?;
                return Ok(false);
            }
            Got::Result(p, subject, mac, seq) => {
                self.results_seq = self.results_seq.max(seq);
                let signed = self
                    .key
                    .as_ref()
                    .is_none_or(|k| k.verify(&subject, &p, mac.as_deref()));
                if signed {
                    self.take_result(&p)
                } else {
                    // Not from a holder of the key: counted, never read.
                    self.forged += 1;
                    if self.forged.is_power_of_two() {
                        eprintln!(
                            "queue {}: {} results without a valid signature on {subject} dropped \
                             (someone without the queue key is answering this study's jobs)",
                            self.url, self.forged
                        );
                    }
                }
            }
            Got::Advisory(p) => self.take_advisory(&p)?,
            Got::Nothing => return Ok(false),
        }
        self.last_news = Instant::now();
        Ok(true)
    }

    fn take_result(&mut self, payload: &[u8]) {
        let msg: ResultMsg = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                // Another version's result: refused, but its job is answered.
                let v: Option<Versioned> = serde_json::from_slice(payload).ok();
                let Some(v) = v.filter(|v| v.cid.is_some()) else {
                    tracing::warn!("an unreadable message on {}: {e}", self.results_subject);
                    return;
                };
                ResultMsg {
                    format: v.format.unwrap_or(0),
                    evocomp: v.evocomp.clone().unwrap_or_default(),
                    study: self.study.clone(),
                    cid: v.cid.clone().unwrap_or_default(),
                    attempt: v.attempt.unwrap_or(0),
                    worker: "?".into(),
                    seconds: 0.0,
                    reuse: None,
                    result: Err(format!(
                        "a result of message format {:?} (evocomp {:?}) that this coordinator \
                         (format {FORMAT}, evocomp {VERSION}) cannot read: {e}",
                        v.format, v.evocomp
                    )),
                }
            }
        };
        if msg.format != FORMAT && msg.result.is_ok() {
            // Same layout, other version: refused all the same.
            let mut m = msg;
            m.result = Err(format!(
                "a result of message format {} (evocomp {}); this coordinator speaks {FORMAT} \
                 (evocomp {VERSION})",
                m.format, m.evocomp
            ));
            return self.take_result_msg(m);
        }
        self.take_result_msg(msg)
    }

    fn take_result_msg(&mut self, msg: ResultMsg) {
        if let Some(r) = msg.reuse {
            self.reuse.insert(msg.worker.clone(), r);
        }
        if msg.result.is_err() {
            let f = self.failures.entry(msg.cid.clone()).or_default();
            *f = (*f).max(msg.attempt + 1);
        }
        match self.pending.get(&msg.cid) {
            Some(p) if p.attempt == msg.attempt => {
                let p = self.pending.remove(&msg.cid).expect("present");
                self.answered += 1;
                self.overhead_seconds +=
                    (p.published.elapsed().as_secs_f64() - msg.seconds).max(0.0);
                self.ready.push_back(Done {
                    id: p.id,
                    result: msg.result,
                    seconds: msg.seconds,
                    worker: msg.worker,
                });
            }
            _ => {
                if msg.result.is_ok() {
                    self.known.insert(msg.cid.clone(), msg);
                }
            }
        }
    }

    /// Make the results consumer again after `why` (a restarted server
    /// forgets consumers), from the result after the last one read, waiting
    /// for the server as long as it takes (Ctrl-C stops the wait).
    fn reconnect_results(&mut self, why: &str) -> Result<()> {
        eprintln!(
            "queue {}: {why}; waiting for the server to make the results consumer again",
            self.url
        );
        let subject = self.results_subject.clone();
        let start = self.results_seq + 1;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                bail!("stopped while waiting for the queue {}", self.url);
            }
            std::thread::sleep(Duration::from_secs(1));
            let js = self.conn.js.clone();
            let subject = subject.clone();
            let made = self.rt.block_on(async move {
                let stream = js
                    .get_stream(RESULTS_STREAM)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                let consumer = stream
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subject,
                        deliver_policy: DeliverPolicy::ByStartSequence {
                            start_sequence: start,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                consumer.messages().await.map_err(|e| anyhow!("{e}"))
            });
            match made {
                Ok(results) => {
                    self.results = results;
                    eprintln!("queue {}: reading results again from #{start}", self.url);
                    return Ok(());
                }
                Err(e) => tracing::info!("queue {}: not yet: {e:#}", self.url),
            }
        }
    }

    /// A job of ours that reached the delivery limit without an answer (its
    /// workers died on it): its failure is published as its result, so it
    /// is recorded like any other, and the job is taken off the queue.
    fn take_advisory(&mut self, payload: &[u8]) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Advisory {
            stream_seq: u64,
            deliveries: u64,
        }
        let Ok(a) = serde_json::from_slice::<Advisory>(payload) else {
            return Ok(());
        };
        self.give_up(
            a.stream_seq,
            format!(
                "the job was delivered {} times and no worker finished it (each died or lost \
                 its connection while evaluating it): given up",
                a.deliveries
            ),
        )
    }

    /// Record the job at `seq` of the jobs stream as failed with `why` (a
    /// result in the results stream, read back like any other) and take it
    /// off the queue; nothing when it is not a pending job of this study.
    fn give_up(&mut self, seq: u64, why: String) -> Result<()> {
        let jobs = &self.conn.jobs;
        let Ok(raw) = self.rt.block_on(jobs.get_raw_message(seq)) else {
            return Ok(()); // already answered and gone
        };
        let Ok(job) = serde_json::from_slice::<JobMsg>(&raw.payload) else {
            return Ok(());
        };
        if job.study != self.study
            || self.pending.get(&job.cid).map(|p| p.attempt) != Some(job.attempt)
        {
            return Ok(()); // another coordinator's job, or answered
        }
        let results = self.results_subject.clone();
        let js = &self.conn.js;
        let key = self.key.clone();
        self.rt.block_on(async move {
            let r = ResultMsg::answering(&job, "queue", 0.0, Err(why), None);
            let payload = serde_json::to_vec(&r)?;
            let id = r.message_id_signed(key.as_ref(), &results, &payload);
            publish(js, results, Some(id), payload, key.as_ref()).await?;
            let _ = jobs.delete_message(seq).await;
            anyhow::Ok(())
        })
    }

    /// Jobs of ours still in the stream while the workers' consumer has
    /// nothing left to deliver and nothing in flight: their deliveries ran
    /// out while no coordinator listened for the server's advisory (this
    /// one was down). They are given up as the advisory would have made it.
    fn give_up_stranded(&mut self) -> Result<()> {
        let jobs = self.conn.jobs.clone();
        let idle = self.rt.block_on(async move {
            let Ok(mut c) = jobs.get_consumer::<pull::Config>(WORKERS_CONSUMER).await else {
                return false; // no worker has connected yet
            };
            match c.info().await {
                Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
                Err(_) => false,
            }
        });
        if !idle {
            return Ok(());
        }
        let seqs: Vec<u64> = self.pending.values().map(|p| p.seq).collect();
        for seq in seqs {
            self.give_up(
                seq,
                "the job's deliveries ran out while the coordinator was away (every worker \
                 that took it died or lost its connection): given up"
                    .into(),
            )?;
        }
        Ok(())
    }
}

impl Drop for NatsWorkers {
    fn drop(&mut self) {
        if self.forged > 0 {
            eprintln!(
                "queue {}: {} results without a valid signature were dropped",
                self.url, self.forged
            );
        }
        if self.published > 0 {
            eprintln!(
                "queue {}: {} jobs published ({:.2} ms each until stored), {} answered in this run \
                 (round trip beyond the worker's own time, waiting in the queue included: {:.1} ms each)",
                self.url,
                self.published,
                1e3 * self.publish_seconds / self.published as f64,
                self.answered,
                1e3 * self.overhead_seconds / self.answered.max(1) as f64
            );
        }
    }
}

impl Workers for NatsWorkers {
    fn submit(&mut self, job: Job) -> Result<()> {
        let cid = content_id(&self.context_key, &job.kind);
        if let Some(r) = self.known.remove(&cid) {
            self.ready.push_back(Done {
                id: job.id,
                result: r.result,
                seconds: r.seconds,
                worker: r.worker,
            });
            return Ok(());
        }
        if self.pending.contains_key(&cid) {
            bail!("job {cid} is already waiting for an answer (the same computation asked twice)");
        }
        let attempt = self.failures.get(&cid).copied().unwrap_or(0);
        let msg = JobMsg {
            format: FORMAT,
            evocomp: VERSION.into(),
            study: self.study.clone(),
            cid: cid.clone(),
            attempt,
            results: self.results_subject.clone(),
            context: self.context.clone(),
            kind: job.kind,
        };
        let t0 = Instant::now();
        let id = msg.message_id();
        let payload = serde_json::to_vec(&msg)?;
        // A server that is restarting is waited for (its stream keeps the
        // job's id, so a publish that did get through is not queued twice).
        let mut waited = 0u32;
        let seq = loop {
            match self.rt.block_on(publish(
                &self.conn.js,
                self.jobs_subject.clone(),
                Some(id.clone()),
                payload.clone(),
                self.key.as_ref(),
            )) {
                Ok(seq) => break seq,
                Err(e) if waited < 600 && !self.stop.load(Ordering::SeqCst) => {
                    if waited == 0 {
                        eprintln!(
                            "queue {}: {e:#}; waiting for the server (up to 10 min)",
                            self.url
                        );
                    }
                    waited += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e).with_context(|| format!("queue {}", self.url)),
            }
        };
        self.publish_seconds += t0.elapsed().as_secs_f64();
        self.published += 1;
        self.pending.insert(
            cid,
            Pending {
                id: job.id,
                attempt,
                published: Instant::now(),
                seq,
            },
        );
        Ok(())
    }

    fn recv(&mut self) -> Result<Done> {
        let mut warned = Instant::now();
        loop {
            if let Some(d) = self.ready.pop_front() {
                return Ok(d);
            }
            let Some(cid) = self.pending.keys().next().cloned() else {
                bail!("no job is waiting for an answer");
            };
            if self.stop.load(Ordering::SeqCst) {
                // Stopping: the job stays queued; a resumed run reads its result.
                let p = self.pending.remove(&cid).expect("present");
                return Ok(Done {
                    id: p.id,
                    result: Ok(Output::Skipped),
                    seconds: 0.0,
                    worker: "queue".into(),
                });
            }
            self.next_message(Duration::from_millis(200))?;
            if self.last_news.elapsed() > Duration::from_secs(5)
                && self.last_check.elapsed() > Duration::from_secs(5)
            {
                self.last_check = Instant::now();
                self.give_up_stranded()?;
            }
            if self.last_news.elapsed() > Duration::from_secs(60)
                && warned.elapsed() > Duration::from_secs(60)
            {
                warned = Instant::now();
                eprintln!(
                    "queue {}: {} jobs waiting, no result for {:.0} s (are workers running? \
                     `evocomp status DIR --queue {}` lists them)",
                    self.url,
                    self.pending.len(),
                    self.last_news.elapsed().as_secs_f64(),
                    self.url
                );
            }
        }
    }

    fn stats(&self) -> evocomp_engine::ReuseStats {
        self.reuse.values().copied().sum()
    }
}
