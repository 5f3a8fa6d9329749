//! What travels through JetStream: versioned job and result messages, the
//! study context a job names (so a worker with other files refuses it), and
//! the workers' heartbeats.

use evocomp_config::Experiment;
use evocomp_engine::{JobKind, Output, Prepared, ReuseStats};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of the job and result messages. A message of another
/// version is refused (a job by the worker, a result by the coordinator),
/// never read as if it were this one.
pub const FORMAT: u32 = 1;
/// This build's version, carried in every message for the error text.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The work-queue stream of jobs (subjects `evocomp.jobs.<study>`).
pub const JOBS_STREAM: &str = "EVOCOMP_JOBS";
pub const JOBS_SUBJECTS: &str = "evocomp.jobs.>";
/// The durable pull consumer every worker takes jobs from.
pub const WORKERS_CONSUMER: &str = "evocomp-workers";
/// Results (subjects `evocomp.results.<study>`), kept for a week: the
/// coordinator reads its study's from the start when it (re)starts.
pub const RESULTS_STREAM: &str = "EVOCOMP_RESULTS";
pub const RESULTS_SUBJECTS: &str = "evocomp.results.>";
/// Heartbeats, the last one per worker (subjects `evocomp.workers.<name>`).
pub const WORKERS_STREAM: &str = "EVOCOMP_WORKERS";
pub const WORKERS_SUBJECTS: &str = "evocomp.workers.>";

/// The header that carries a message's [`QueueKey`] signature.
pub const MAC_HEADER: &str = "Evocomp-Mac";

/// The queue's shared secret, given to the coordinator and to every worker
/// it trusts (`--queue-key FILE`, `worker --key FILE`): jobs and results
/// carry an HMAC-SHA256 of their subject and body under it, and a message
/// without a valid one is dropped and counted. Whoever can reach the NATS
/// server but lacks the key can neither answer a study's jobs nor hand
/// workers jobs of their own.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueKey(std::sync::Arc<Vec<u8>>);

impl std::fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueKey(..)")
    }
}

impl QueueKey {
    /// At least this many bytes of secret.
    pub const MIN_BYTES: usize = 16;

    /// The key in `path`: its bytes, surrounding whitespace left out (so
    /// `head -c 32 /dev/urandom | base64 > key` works).
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("queue key {}: {e}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!("queue key {}: not a regular file", path.display());
        }
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("queue key {}: {e}", path.display()))?;
        let key = bytes.trim_ascii();
        if key.len() < Self::MIN_BYTES {
            anyhow::bail!(
                "queue key {}: {} bytes; a key needs at least {} (make one: \
                 head -c 32 /dev/urandom | base64 > {})",
                path.display(),
                key.len(),
                Self::MIN_BYTES,
                path.display()
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "queue key {}: other users can read it (chmod 600 it)",
                    path.display()
                );
            }
        }
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: &[u8]) -> Self {
        Self(std::sync::Arc::new(key.to_vec()))
    }

    /// The signature of `payload` published on `subject` (hex).
    pub fn sign(&self, subject: &str, payload: &[u8]) -> String {
        hex::encode(hmac_sha256(&self.0, &[subject.as_bytes(), &[0], payload]))
    }

    /// Whether `mac` is the signature of `payload` on `subject`, compared in
    /// time that does not depend on where they differ.
    pub fn verify(&self, subject: &str, payload: &[u8], mac: Option<&str>) -> bool {
        let Some(mac) = mac else { return false };
        let want = self.sign(subject, payload);
        want.len() == mac.len()
            && want
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Everything a fitness value depends on besides the job itself: the
/// experiment (paths resolved as the coordinator resolved them) and the
/// fingerprints of what the coordinator loaded from those paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub experiment: Experiment,
    pub model_fingerprint: String,
    pub database_fingerprint: String,
    pub fitness_key: String,
    pub calibration_id: String,
    pub held_out_id: String,
}

impl Context {
    pub fn of(prep: &Prepared) -> Self {
        Self {
            experiment: prep.exp.clone(),
            model_fingerprint: prep.fingerprint.clone(),
            database_fingerprint: prep.db.fingerprint().to_string(),
            fitness_key: prep.exp.fitness.key(),
            calibration_id: prep.calib.id.clone(),
            held_out_id: prep.held_out.id.clone(),
        }
    }

    /// What must be equal for two evaluations to be the same computation.
    pub fn key(&self) -> String {
        sha(&[
            &self.model_fingerprint,
            &self.database_fingerprint,
            &self.fitness_key,
            &self.calibration_id,
            &self.held_out_id,
        ])
    }

    /// Where this context and a worker's own loaded files differ, one line
    /// each (empty when they agree).
    pub fn differences(&self, local: &Context) -> Vec<String> {
        let e = &self.experiment;
        let mut out = Vec::new();
        let mut check = |what: String, theirs: &str, ours: &str| {
            if theirs != ours {
                out.push(format!(
                    "{what}: the job's is {theirs}, this worker's is {ours}"
                ));
            }
        };
        check(
            format!("model {} fingerprint", e.model.display()),
            &self.model_fingerprint,
            &local.model_fingerprint,
        );
        check(
            format!("database {} fingerprint", e.database.display()),
            &self.database_fingerprint,
            &local.database_fingerprint,
        );
        check(
            "fitness settings".into(),
            &self.fitness_key,
            &local.fitness_key,
        );
        check(
            format!("calibration text {} tokens", e.data.calibration.display()),
            &self.calibration_id,
            &local.calibration_id,
        );
        check(
            format!("held-out text {} tokens", e.data.evaluation.display()),
            &self.held_out_id,
            &local.held_out_id,
        );
        out
    }
}

/// The identity of a job's computation: the same for the same context and
/// the same genome on the same sample, whatever the run or process.
pub fn content_id(context_key: &str, kind: &JobKind) -> String {
    // The anchor only makes an evaluation faster; it is not part of what is computed.
    let what = match kind {
        JobKind::Fitness { genome, sample, .. } => {
            serde_json::json!({"fitness": genome, "sample": sample})
        }
        JobKind::HeldOut { genome } => serde_json::json!({"held_out": genome}),
    };
    sha(&[context_key, &what.to_string()])[..32].to_string()
}

/// The study token in subjects and consumer names: from what the study is
/// (its name, context, strategy, budget, seed), not from where it lives,
/// so a study resumed from another working directory finds its results.
pub fn study_token(exp: &Experiment, context: &Context) -> String {
    let what = serde_json::json!({
        "strategy": exp.strategy,
        "budget": exp.budget,
        "seed": exp.seed,
        "sweep": exp.sweep,
    });
    sha(&[&exp.name, &context.key(), &what.to_string()])[..16].to_string()
}

/// A job as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMsg {
    pub format: u32,
    pub evocomp: String,
    pub study: String,
    /// [`content_id`].
    pub cid: String,
    /// How many times this computation failed before (0 first): part of
    /// the message id, so a retry in a later run is not taken for a duplicate.
    pub attempt: u32,
    /// The subject the result goes to.
    pub results: String,
    pub context: Context,
    pub kind: JobKind,
}

impl JobMsg {
    pub fn message_id(&self) -> String {
        format!("{}.{}.{}", self.study, self.cid, self.attempt)
    }
}

/// A result as published (`result` is `Err` with the reason when the job
/// failed, was refused, or exhausted its deliveries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMsg {
    pub format: u32,
    pub evocomp: String,
    pub study: String,
    pub cid: String,
    pub attempt: u32,
    pub worker: String,
    pub seconds: f64,
    pub result: Result<Output, String>,
    /// The worker's prefix-reuse counts for the study so far (absent from
    /// results that are not a worker's evaluation).
    #[serde(default)]
    pub reuse: Option<ReuseStats>,
}

impl ResultMsg {
    /// The answer to `job` from `worker` (this version's format).
    pub fn answering(
        job: &JobMsg,
        worker: &str,
        seconds: f64,
        result: Result<Output, String>,
        reuse: Option<ReuseStats>,
    ) -> Self {
        Self {
            format: FORMAT,
            evocomp: VERSION.into(),
            study: job.study.clone(),
            cid: job.cid.clone(),
            attempt: job.attempt,
            worker: worker.into(),
            seconds,
            result,
            reuse,
        }
    }

    pub fn message_id(&self) -> String {
        format!("{}.{}.{}", self.study, self.cid, self.attempt)
    }

    /// The message id of a result published with `key`: the signature's
    /// start joins it, so a forged result published first under the same
    /// study, job and attempt (which JetStream would keep, dropping the
    /// real one as its duplicate) has another id.
    pub fn message_id_signed(
        &self,
        key: Option<&QueueKey>,
        subject: &str,
        payload: &[u8],
    ) -> String {
        match key {
            Some(k) => format!("{}.{}", self.message_id(), &k.sign(subject, payload)[..16]),
            None => self.message_id(),
        }
    }
}

/// A result whose numbers JSON can carry: a non-finite value (a diverged
/// model) becomes an error saying so, instead of a `null` no one can read.
pub fn finite(result: Result<Output, String>) -> Result<Output, String> {
    match result {
        Ok(Output::Fitness(f)) if !f.is_finite() => Err(format!("fitness {f}: the model diverged")),
        Ok(Output::HeldOut(r))
            if !(r.kl.is_finite()
                && r.nll.is_finite()
                && r.per_sequence.iter().all(|x| x.is_finite())) =>
        {
            Err(format!(
                "held-out KL {} / NLL {}: the model diverged",
                r.kl, r.nll
            ))
        }
        r => r,
    }
}

/// A worker's heartbeat: the last one of each worker is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Beat {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub device: String,
    pub evocomp: String,
    pub format: u32,
    /// Unix seconds.
    pub started: u64,
    pub seen: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// Jobs dropped for want of a valid signature.
    #[serde(default)]
    pub jobs_forged: u64,
    pub busy_seconds: f64,
    /// Jobs finished in the last minute.
    pub jobs_last_minute: u64,
    pub last_error: Option<String>,
    pub study: Option<String>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The version fields of a message that may be of another version.
#[derive(Deserialize)]
pub struct Versioned {
    pub format: Option<u32>,
    pub evocomp: Option<String>,
    pub study: Option<String>,
    pub cid: Option<String>,
    pub attempt: Option<u32>,
    pub results: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use evocomp_search::SampleDraw;

    #[test]
    fn content_ids_ignore_the_anchor_and_tell_kinds_apart() {
        let s = SampleDraw::new(64, 3);
        let a = JobKind::Fitness {
            genome: vec![1, 0],
            sample: s,
            anchor: None,
        };
        let b = JobKind::Fitness {
            genome: vec![1, 0],
            sample: s,
            anchor: Some(vec![0, 0]),
        };
        let c = JobKind::Fitness {
            genome: vec![0, 1],
            sample: s,
            anchor: None,
        };
        let h = JobKind::HeldOut { genome: vec![1, 0] };
        assert_eq!(content_id("k", &a), content_id("k", &b));
        assert_ne!(content_id("k", &a), content_id("k", &c));
        assert_ne!(content_id("k", &a), content_id("k", &h));
        assert_ne!(content_id("k", &a), content_id("other", &a));
    }

    #[test]
    fn hmac_matches_rfc_4231_and_signatures_bind_subject_and_body() {
        // RFC 4231, test cases 2 and 6 (a key longer than a block).
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let k = QueueKey::from_bytes(b"0123456789abcdef");
        let mac = k.sign("evocomp.results.s", b"{}");
        assert!(k.verify("evocomp.results.s", b"{}", Some(&mac)));
        assert!(!k.verify("evocomp.results.t", b"{}", Some(&mac)));
        assert!(!k.verify("evocomp.results.s", b"{ }", Some(&mac)));
        assert!(!k.verify("evocomp.results.s", b"{}", None));
        let other = QueueKey::from_bytes(b"0123456789abcdeF");
        assert!(!other.verify("evocomp.results.s", b"{}", Some(&mac)));
    }

    #[test]
    fn non_finite_results_become_errors() {
        assert!(finite(Ok(Output::Fitness(f64::NAN))).is_err());
        assert!(finite(Ok(Output::Fitness(f64::INFINITY))).is_err());
        assert_eq!(finite(Ok(Output::Fitness(0.5))), Ok(Output::Fitness(0.5)));
        let m = ResultMsg {
            format: FORMAT,
            evocomp: VERSION.into(),
            study: "s".into(),
            cid: "c".into(),
            attempt: 0,
            worker: "w".into(),
            seconds: 1.0,
            result: finite(Ok(Output::Fitness(0.25))),
            reuse: None,
        };
        let back: ResultMsg = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
