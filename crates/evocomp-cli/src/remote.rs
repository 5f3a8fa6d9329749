//! `evocomp worker` and the queue parts of `run`/`resume`/`status`.

use anyhow::Result;
use evocomp::BackendChoice;
use evocomp::queue::{ServeOptions, serve, workers};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How to reach a queue besides its URL (whose `user:password@` or
/// `token@` part is sent as the server's credentials).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QueueAuth {
    /// The queue's shared secret (at least 16 bytes; `head -c 32 /dev/urandom
    /// | base64 > FILE`), given to the coordinator and every worker: jobs and
    /// results are signed with it, and unsigned ones dropped and counted.
    /// Without it, anyone who can reach the server can answer jobs.
    #[arg(long, value_name = "FILE")]
    pub queue_key: Option<PathBuf>,
    /// A file holding the NATS server's authorization token.
    #[arg(long, value_name = "FILE")]
    pub queue_token_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and nkey seed, as `nsc` writes it)
    /// for a server in operator mode.
    #[arg(long, value_name = "FILE")]
    pub queue_creds: Option<PathBuf>,
    /// A file holding a user nkey seed (SU...) for a server whose users are
    /// nkeys.
    #[arg(long, value_name = "FILE")]
    pub queue_nkey: Option<PathBuf>,
    /// A CA certificate (PEM) for the server's TLS; TLS is then required.
    #[arg(long, value_name = "FILE")]
    pub queue_ca: Option<PathBuf>,
}

impl QueueAuth {
    pub fn access(&self, url: &str) -> Result<evocomp::queue::Access> {
        evocomp::queue::access(
            url,
            self.queue_key.as_deref(),
            evocomp::queue::Login {
                token_file: self.queue_token_file.clone(),
                creds: self.queue_creds.clone(),
                nkey: self.queue_nkey.clone(),
                ca: self.queue_ca.clone(),
            },
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The NATS server with JetStream (nats-server -js), e.g. nats://host:4222
    /// (nats://user:password@host:4222 where the server asks for them).
    #[arg(long)]
    pub queue: String,
    #[command(flatten)]
    pub auth: QueueAuth,
    /// A folder whose files jobs may name (model, database, texts); repeat
    /// for more. A job naming a file elsewhere is refused unread. Default:
    /// the working directory.
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<PathBuf>,
    /// auto, wgpu or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// Batches evaluated at once (default as for `run`).
    #[arg(long)]
    pub concurrent_batches: Option<usize>,
    /// The name in heartbeats and results (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds a job may go without an (in-progress) ack before another
    /// worker gets it; the first worker to create the queue's consumer sets it.
    #[arg(long, default_value_t = 30.0)]
    pub ack_wait: f64,
    /// Deliveries of one job before it is given up as failed; set like --ack-wait.
    #[arg(long, default_value_t = 3)]
    pub max_deliver: i64,
    /// Exit after this many jobs.
    #[arg(long)]
    pub max_jobs: Option<u64>,
    /// Abandon a job still running after this many seconds and publish its
    /// failure (the worker loads the study again for the next job).
    #[arg(long, value_name = "SECONDS")]
    pub job_limit: Option<f64>,
    /// Fault injection for tests: sleep this many milliseconds in every evaluation.
    #[arg(long, hide = true)]
    pub test_delay_ms: Option<u64>,
}

/// Serve `args.queue`; `threads`: the CPU threads to compute on (the global `--threads`).
pub fn worker(args: WorkerArgs, threads: Option<usize>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\ninterrupted again: exiting now (the job in progress goes to another worker)"
            );
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after the job in progress (interrupt again to leave it to another worker)..."
        );
    });
    serve(
        &ServeOptions {
            queue: args.auth.access(&args.queue)?,
            allow: if args.allow.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                args.allow
            },
            backend: args.backend,
            threads,
            concurrent_batches: args.concurrent_batches,
            name: args.name,
            ack_wait: args.ack_wait,
            max_deliver: args.max_deliver,
            max_jobs: args.max_jobs,
            delay: args.test_delay_ms.map(Duration::from_millis),
            job_limit: match args.job_limit {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    anyhow::bail!("--job-limit must be a positive number of seconds, got {s}")
                }
                s => s.map(Duration::from_secs_f64),
            },
        },
        stop,
    )
}

fn ago(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// The workers the queue has heard from in the last day.
pub fn print_workers(access: &evocomp::queue::Access) -> Result<()> {
    let url = access.shown();
    let beats = workers(access)?;
    let now = evocomp::queue::unix_now();
    println!("workers on {url} (last heartbeat of each, the last day):");
    if beats.is_empty() {
        println!("  none");
    }
    for b in beats {
        let age = now.saturating_sub(b.seen);
        println!(
            "  {} on {} (pid {}, {}, evocomp {}): seen {}{}; {} jobs done, {} failed, {} in the last minute, busy {:.0} s",
            b.name,
            b.host,
            b.pid,
            b.device,
            b.evocomp,
            ago(age),
            if age > 10 { " (not running?)" } else { "" },
            b.jobs_done,
            b.jobs_failed,
            b.jobs_last_minute,
            b.busy_seconds,
        );
        if let Some(e) = b.last_error {
            println!("    last error: {e}");
        }
    }
    Ok(())
}
