//! The connection and the three streams, created by whichever side comes
//! first (the same settings on both sides).

use crate::messages::*;
use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::{self, stream};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the queue: the server's URL (`nats://[user:password@]host:port`,
/// `tls://` for TLS), the credentials it asks for, and the key that signs
/// this study's messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub url: String,
    /// Signs jobs and results (see [`QueueKey`]); without one, any client
    /// of the server can answer jobs, and a warning says so.
    pub key: Option<QueueKey>,
    /// The files that log in to the server, besides the URL's own.
    pub login: Login,
}

/// The files that log in to a NATS server, besides a URL's own
/// `user:password@` or `token@` (each optional; a server asks for one kind).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Login {
    /// A file holding the server's authorization token.
    pub token_file: Option<PathBuf>,
    /// A NATS credentials file (a user JWT and its nkey seed, as `nsc`
    /// writes them), for a server in operator (decentralised JWT) mode.
    pub creds: Option<PathBuf>,
    /// A file holding a user nkey seed (`SU...`), for a server whose
    /// users are nkeys: the server's nonce is signed with it.
    pub nkey: Option<PathBuf>,
    /// A CA certificate (PEM) the server's TLS certificate must chain to;
    /// TLS is then required.
    pub ca: Option<PathBuf>,
}

impl Access {
    /// The URL alone: no credentials, no key.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The URL to show in messages and logs: its password as `***`.
    pub fn shown(&self) -> String {
        self.parse().shown
    }

    /// The URL split once: what to connect to (no user or password: async-nats
    /// does not send a URL's own, they are passed as options), what to show,
    /// and the user and password it carries.
    fn parse(&self) -> ParsedUrl {
        let plain = |url: &str| ParsedUrl {
            connect: url.to_string(),
            shown: url.to_string(),
            auth: None,
        };
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return plain(&self.url);
        };
        let host_start = rest.find('/').unwrap_or(rest.len());
        let Some(at) = rest[..host_start].rfind('@') else {
            return plain(&self.url);
        };
        let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
        let (user, pass) = match userinfo.split_once(':') {
            Some((u, p)) => (u.to_string(), Some(p.to_string())),
            None => (userinfo.to_string(), None),
        };
        ParsedUrl {
            connect: format!("{scheme}://{host}"),
            shown: format!(
                "{scheme}://{user}{}@{host}",
                if pass.is_some() { ":***" } else { "" }
            ),
            auth: Some((user, pass)),
        }
    }
}

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

struct ParsedUrl {
    connect: String,
    shown: String,
    auth: Option<(String, Option<String>)>,
}

/// The user nkey seed in file `f`, checked (a seed that does not decode,
/// or one of an operator or account rather than a user, is refused here
/// rather than as a bare authentication failure at the server).
fn read_nkey_seed(f: &std::path::Path) -> Result<String> {
    let text =
        std::fs::read_to_string(f).map_err(|e| anyhow!("queue nkey {}: {e}", f.display()))?;
    let seed = text.trim().to_string();
    let pair = nkeys::KeyPair::from_seed(&seed).map_err(|e| {
        anyhow!(
            "queue nkey {}: not an nkey seed ({e}); it holds the seed that `nk -gen user` \
             prints (SU...), not the public key (U...)",
            f.display()
        )
    })?;
    if !matches!(pair.key_pair_type(), nkeys::KeyPairType::User) {
        return Err(anyhow!(
            "queue nkey {}: the seed of {:?} key, not of a user (SU...)",
            f.display(),
            pair.key_pair_type()
        ));
    }
    Ok(seed)
}

/// Connect with `access` and make sure the streams exist.
pub async fn connect(access: &Access, name: &str) -> Result<Connection> {
    let parsed = access.parse();
    let url = parsed.shown.as_str();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    if let Some((user, pass)) = parsed.auth.clone() {
        opts = match pass {
            Some(pass) => opts.user_and_password(user, pass),
            // `nats://TOKEN@host`, as the NATS tools read it.
            None => opts.token(user),
        };
    }
    if let Some(f) = &access.login.token_file {
        let token =
            std::fs::read_to_string(f).map_err(|e| anyhow!("queue token {}: {e}", f.display()))?;
        opts = opts.token(token.trim().to_string());
    }
    if let Some(f) = &access.login.nkey {
        opts = opts.nkey(read_nkey_seed(f)?);
    }
    if let Some(f) = &access.login.creds {
        if !f.is_file() {
            return Err(anyhow!("queue credentials {}: not a file", f.display()));
        }
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| anyhow!("queue credentials {}: {e}", f.display()))?;
    }
    if let Some(ca) = &access.login.ca {
        if !ca.is_file() {
            return Err(anyhow!("queue CA certificate {}: not a file", ca.display()));
        }
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = opts
        .connect(parsed.connect.as_str())
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

/// Publish `payload` with a message id (and, with a key, its signature in
/// the [`MAC_HEADER`] header) and wait for the stream's ack: the message's
/// sequence in the stream (the earlier copy's, for a duplicate).
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: Option<String>,
    payload: Vec<u8>,
    key: Option<&QueueKey>,
) -> Result<u64> {
    let mac = key.map(|k| k.sign(&subject, &payload));
    let mut m = jetstream::message::PublishMessage::build().payload(payload.into());
    if let Some(id) = id {
        m = m.message_id(id);
    }
    if let Some(mac) = mac {
        m = m.header(MAC_HEADER, mac.as_str());
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
