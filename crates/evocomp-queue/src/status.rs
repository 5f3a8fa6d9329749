//! The workers a queue has seen: the last heartbeat of each.

use crate::messages::*;
use crate::nats::{Access, connect};
use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use std::time::Duration;

/// The last heartbeat of every worker seen in the last day, most recent first.
pub fn workers(access: &Access) -> Result<Vec<Beat>> {
    let shown = access.shown();
    let url = shown.as_str();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the queue client")?;
    rt.block_on(async {
        let conn = connect(access, "evocomp status").await?;
        let consumer = conn
            .workers
            .create_consumer(pull::OrderedConfig {
                filter_subject: WORKERS_SUBJECTS.into(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("reading heartbeats from {url}: {e}"))?;
        let n = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow!("reading heartbeats from {url}: {e}"))?;
        let mut out = Vec::new();
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => {
                    if let Ok(b) = serde_json::from_slice::<Beat>(&m.payload) {
                        out.push(b);
                    }
                }
                _ => break,
            }
        }
        out.sort_by(|a: &Beat, b: &Beat| b.seen.cmp(&a.seen).then(a.name.cmp(&b.name)));
        anyhow::Ok(out)
    })
}
