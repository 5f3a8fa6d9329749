//! The connection and the three streams, created by whichever side comes
//! first (the same settings on both sides).

use crate::messages::*;
use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long a job's message id is remembered: a job re-published within
/// this window (a coordinator resumed) is recognised and not queued twice.
pub const JOB_DEDUP_WINDOW: Duration = Duration::from_secs(6 * 3600);
/// Results are kept this long (a coordinator may resume this much later).
pub const RESULTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Connection {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub jobs: stream::Stream,
    pub results: stream::Stream,
    pub workers: stream::Stream,
}

/// Connect to `url` and make sure the streams exist.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| anyhow!("connecting to the queue {url}: {e}"))?;
    let js = jetstream::new(client.clone());
    let make = |name: &str, subjects: &str| stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let jobs = js
        .get_or_create_stream(stream::Config {
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: JOB_DEDUP_WINDOW,
            ..make(JOBS_STREAM, JOBS_SUBJECTS)
        })
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!("the {JOBS_STREAM} stream on {url} (is JetStream on: nats-server -js?)")
        })?;
    let results = js
        .get_or_create_stream(stream::Config {
            max_age: RESULTS_MAX_AGE,
            duplicate_window: JOB_DEDUP_WINDOW,
            ..make(RESULTS_STREAM, RESULTS_SUBJECTS)
        })
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("the {RESULTS_STREAM} stream on {url}"))?;
    let workers = js
        .get_or_create_stream(stream::Config {
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(24 * 3600),
            ..make(WORKERS_STREAM, WORKERS_SUBJECTS)
        })
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("the {WORKERS_STREAM} stream on {url}"))?;
    Ok(Connection {
        client,
        js,
        jobs,
        results,
        workers,
    })
}

/// Publish `payload` with a message id and wait for the stream's ack: the
/// message's sequence in the stream (the earlier copy's, for a duplicate).
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: Option<String>,
    payload: Vec<u8>,
) -> Result<u64> {
    let mut m = jetstream::message::PublishMessage::build().payload(payload.into());
    if let Some(id) = id {
        m = m.message_id(id);
    }
    let ack = js
        .send_publish(subject.clone(), m)
        .await
        .map_err(|e| anyhow!("publishing to {subject}: {e}"))?
        .await
        .map_err(|e| anyhow!("publishing to {subject}: {e}"))?;
    Ok(ack.sequence)
}

/// This machine's name, for heartbeats and default worker names.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
