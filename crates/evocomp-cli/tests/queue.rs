//! Studies evaluated by `evocomp worker` processes through a real
//! `nats-server -js` on loopback: the same result as the thread pool with
//! 1, 2 and 4 workers; a worker killed mid-job (its job redelivered and
//! recorded once); a coordinator killed and resumed (nothing lost, nothing
//! evaluated twice); a poison job and a crashing job given up after the
//! delivery limit; a worker with another model refusing.

mod common;

use common::*;
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_queue::testing::NatsServer;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SHORT: &str = "EvoPress(preset: Sparsity, generations: Some(6), offspring: Some(6), stages: Some([(2, 64), (1, 128)]))";

/// Worker processes, killed when dropped.
#[derive(Default)]
struct Fleet(Vec<(Child, PathBuf)>);

impl Fleet {
    fn spawn(&mut self, dir: &Path, url: &str, name: &str, extra: &[&str]) -> PathBuf {
        let log = dir.join(format!("{name}.log"));
        let child = bin()
            .current_dir(dir)
            .env("RUST_LOG", "evocomp_queue=info")
            .args([
                "worker",
                "--queue",
                url,
                "--backend",
                "cpu",
                "--threads",
                "1",
                "--name",
                name,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.0.push((child, log.clone()));
        log
    }

    /// Jobs the workers finished (their logs' "done" lines).
    fn done(&self) -> usize {
        self.0.iter().map(|(_, log)| count(log, "done in")).sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn count(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill9(c: &mut Child) {
    std::process::Command::new("kill")
        .args(["-9", &c.id().to_string()])
        .status()
        .unwrap();
    let _ = c.wait();
}

/// `evocomp run q.ron --queue URL` in the background, stderr as given.
fn coordinator(d: &Path, url: &str, stderr: Stdio) -> Child {
    bin()
        .current_dir(d)
        .args(["run", "q.ron", "--no-shared-cache", "--queue", url])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `evocomp run q.ron --queue URL` with `extra` arguments, to its end.
fn queued_run(d: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    bin()
        .current_dir(d)
        .args(["run", "q.ron", "--no-shared-cache", "--queue", url])
        .args(extra)
        .output()
        .unwrap()
}

/// `evocomp resume results/q` through the queue at `url`.
fn resume(d: &Path, url: &str) -> std::process::Output {
    evocomp(
        d,
        &["resume", "results/q", "--no-shared-cache", "--queue", url],
    )
}

fn server() -> NatsServer {
    NatsServer::start().expect(
        "these tests need nats-server on PATH (scripts/setup.sh installs Debian's nats-server)",
    )
}

/// The grid database built and `q.ron` (SHORT) written, for a study the queue runs.
fn built_study(d: &Path) {
    setup(d);
    ok(&evocomp(
        d,
        &["db", "build", "grid.ron", "--backend", "cpu"],
    ));
    experiment(d, "q", "grid", "UniformLevel(0)", SHORT);
}

/// `local.ron` run on this process's threads (the result the queue must
/// reach), and `q.ron`, the same study, written for the queue.
fn local_then_queued(d: &Path, strategy: &str) {
    setup(d);
    experiment(d, "local", "grid", "UniformLevel(0)", strategy);
    ok(&evocomp(d, &["run", "local.ron", "--no-shared-cache"]));
    experiment(d, "q", "grid", "UniformLevel(0)", strategy);
}

/// A worker whose job outlives its 1 s ack wait and gets one delivery.
const DOOMED: &[&str] = &[
    "--ack-wait",
    "1",
    "--max-deliver",
    "1",
    "--test-delay-ms",
    "60000",
];

/// Every computed (sample, genome) of a study appears once in its journal.
fn computed_once(dir: &Path) -> usize {
    let c = computed(&journal(dir));
    let distinct: HashSet<_> = c.iter().collect();
    assert_eq!(distinct.len(), c.len(), "an evaluation was recorded twice");
    c.len()
}

fn same_best(a: &serde_json::Value, b: &serde_json::Value) {
    for k in ["genome", "search_fitness", "held_out_kl"] {
        assert!(!a["best"][k].is_null(), "no best.{k} in {a}");
    }
    assert_eq!(a["best"]["genome"], b["best"]["genome"]);
    assert_eq!(a["best"]["search_fitness"], b["best"]["search_fitness"]);
    assert_eq!(a["best"]["held_out_kl"], b["best"]["held_out_kl"]);
}

#[test]
fn one_two_and_four_workers_reach_the_thread_pools_result() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    experiment(d, "local", "grid", "UniformLevel(0)", EVO);
    ok(&evocomp(d, &["run", "local.ron", "--no-shared-cache"]));
    let reference = summary(d, "results/local");
    for n in [1, 2, 4] {
        let name = format!("q{n}");
        experiment(d, &name, "grid", "UniformLevel(0)", EVO);
        let mut fleet = Fleet::default();
        for i in 0..n {
            fleet.spawn(d, &nats.url, &format!("w{n}-{i}"), &[]);
        }
        let cfg = format!("{name}.ron");
        ok(&evocomp(
            d,
            &["run", &cfg, "--no-shared-cache", "--queue", &nats.url],
        ));
        let study = d.join("results").join(&name);
        let s = summary(d, &format!("results/{name}"));
        same_best(&s, &reference);
        // The workers report their prefix reuse (each keeps its own anchors).
        let f = s["layers_run_fraction"].as_f64().expect("reported");
        assert!(f > 0.0 && f < 2.0, "{f}");
        // Every evaluation by a worker of this fleet, each recorded once:
        // the journal's plus the one held-out measurement.
        let computed = computed_once(&study);
        assert_eq!(fleet.done(), computed + 1);
        let workers: HashSet<String> = journal(&study)
            .iter()
            .filter(|t| !t.cached)
            .map(|t| t.worker.clone())
            .collect();
        assert!(
            workers.iter().all(|w| w.starts_with(&format!("w{n}-"))),
            "{workers:?}"
        );
        if n > 1 {
            assert!(workers.len() > 1, "only {workers:?} took jobs");
        }
        let st = ok(&evocomp(
            d,
            &["status", &format!("results/{name}"), "--queue", &nats.url],
        ));
        assert!(st.contains(&format!("w{n}-0 on ")), "{st}");
    }
}

#[test]
fn a_worker_killed_mid_job_has_the_job_redelivered_and_recorded_once() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, SHORT);
    let mut fleet = Fleet::default();
    // The first worker creates the consumer: 2 s ack wait.
    let slow = fleet.spawn(
        d,
        &nats.url,
        "slow",
        &["--ack-wait", "2", "--test-delay-ms", "60000"],
    );
    let mut coordinator = coordinator(d, &nats.url, Stdio::null());
    wait_for("the slow worker to start a job", || {
        count(&slow, "started") > 0
    });
    // In-progress acks keep its job while it lives (several ack waits pass).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(count(&slow, "started"), 1);
    kill9(&mut fleet.0[0].0);
    let log = std::fs::read_to_string(&slow).unwrap();
    let cid = log
        .lines()
        .find(|l| l.contains("started"))
        .and_then(|l| l.split("job ").nth(1))
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .to_string();
    let fast = fleet.spawn(d, &nats.url, "fast", &[]);
    let st = coordinator.wait().unwrap();
    assert!(st.success(), "{st:?}");
    same_best(&summary(d, "results/q"), &summary(d, "results/local"));
    let text = std::fs::read_to_string(&fast).unwrap();
    assert!(
        text.contains(&format!("job {cid} (attempt 0, delivery 2): started")),
        "the killed worker's job was not redelivered:\n{text}"
    );
    let computed = computed_once(&d.join("results/q"));
    assert_eq!(count(&fast, "done in"), computed + 1);
}

#[test]
fn a_killed_coordinator_resumes_with_nothing_lost_or_evaluated_twice() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, EVO);
    let mut fleet = Fleet::default();
    fleet.spawn(d, &nats.url, "a", &["--test-delay-ms", "20"]);
    fleet.spawn(d, &nats.url, "b", &["--test-delay-ms", "20"]);
    let step = || study_step(&d.join("results/q"));
    for target in [4, 11, 19] {
        let mut c = coordinator(d, &nats.url, Stdio::null());
        wait_for("the coordinator's steps", || step() >= target);
        // Mid-step: jobs published, some answered, none of them committed yet.
        std::thread::sleep(Duration::from_millis(15));
        kill9(&mut c);
    }
    ok(&resume(d, &nats.url));
    same_best(&summary(d, "results/q"), &summary(d, "results/local"));
    let computed = computed_once(&d.join("results/q"));
    assert_eq!(fleet.done(), computed + 1, "a job was evaluated twice");
}

/// A second folder with the same files as `d` (model, text, configs, built database).
fn replica(d: &Path, name: &str) -> PathBuf {
    let r = d.join(name);
    for f in ["tiny.gguf", "text.txt", "grid.ron"] {
        std::fs::create_dir_all(&r).unwrap();
        std::fs::copy(d.join(f), r.join(f)).unwrap();
    }
    copy_tree(&d.join("db"), &r.join("db"));
    r
}

#[test]
fn a_poison_job_fails_after_the_delivery_limit_and_the_study_resumes() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_study(d);
    // A worker whose copy of one unit's variants is damaged: every job fails there.
    let bad = replica(d, "bad");
    let unit = std::fs::read_dir(bad.join("db/grid/units"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&unit).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&unit, bytes).unwrap();
    let mut fleet = Fleet::default();
    let log = fleet.spawn(&bad, &nats.url, "bad", &["--max-deliver", "3"]);
    let o = evocomp(
        d,
        &["run", "q.ron", "--no-shared-cache", "--queue", &nats.url],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("failed on all 3 deliveries"), "{err}");
    assert!(count(&log, "delivery 3): started") >= 1);
    // The rest of the step's jobs fail there too, each to its last delivery
    // (a worker killed in the middle of that would leave a job the server
    // gives up on: a failure as well, as the next test shows).
    let t0 = Instant::now();
    let mut last = (0, Instant::now());
    while last.1.elapsed() < Duration::from_secs(4) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the worker never went quiet"
        );
        let n = std::fs::read_to_string(&log).unwrap().len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its heartbeat tells what went wrong there.
    let st = ok(&evocomp(d, &["status", "results/q", "--queue", &nats.url]));
    assert!(
        st.contains("bad on ") && st.contains("last error: worker bad: db/grid/units/"),
        "{st}"
    );
    drop(fleet);
    // With a sound worker the study goes on from where it stopped.
    let mut fleet = Fleet::default();
    fleet.spawn(d, &nats.url, "good", &[]);
    ok(&resume(d, &nats.url));
    computed_once(&d.join("results/q"));
}

#[test]
fn a_job_whose_workers_keep_dying_is_given_up_after_the_delivery_limit() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_study(d);
    let mut fleet = Fleet::default();
    let log = fleet.spawn(d, &nats.url, "doomed", DOOMED);
    let coordinator = coordinator(d, &nats.url, Stdio::piped());
    wait_for("the worker to start a job", || count(&log, "started") > 0);
    kill9(&mut fleet.0[0].0);
    // The server gives up the job when it would deliver it again: to the
    // next worker that asks for one.
    fleet.spawn(d, &nats.url, "next", &[]);
    let o = coordinator.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no worker finished it"), "{err}");
}

#[test]
fn a_worker_with_another_model_refuses_the_job() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_study(d);
    let other = replica(d, "other");
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    write_gguf(&cfg, &random_weights(&cfg, 6), &other.join("tiny.gguf")).unwrap();
    let mut fleet = Fleet::default();
    let log = fleet.spawn(&other, &nats.url, "other", &[]);
    let o = evocomp(
        d,
        &["run", "q.ron", "--no-shared-cache", "--queue", &nats.url],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("worker other refuses the job"), "{err}");
    assert_eq!(count(&log, "done in"), 0);
    // Nothing was recorded from it.
    assert_eq!(computed_once(&d.join("results/q")), 0);
}

#[test]
fn a_job_given_up_while_the_coordinator_was_down_is_recorded_on_resume() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_study(d);
    let mut fleet = Fleet::default();
    let log = fleet.spawn(d, &nats.url, "doomed", DOOMED);
    let mut coordinator = coordinator(d, &nats.url, Stdio::null());
    wait_for("the worker to start a job", || count(&log, "started") > 0);
    kill9(&mut coordinator);
    kill9(&mut fleet.0[0].0);
    // The next worker's request makes the server give the job up; no
    // coordinator hears the advisory. The step's other jobs are evaluated.
    fleet.spawn(d, &nats.url, "next", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let o = resume(d, &nats.url);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("ran out while the coordinator was away"),
        "{err}"
    );
    // Retried as a new attempt, the study finishes.
    ok(&resume(d, &nats.url));
    computed_once(&d.join("results/q"));
}

#[test]
fn a_coordinator_stopped_with_ctrl_c_resumes_to_the_same_result() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, EVO);
    let mut fleet = Fleet::default();
    fleet.spawn(d, &nats.url, "a", &["--test-delay-ms", "20"]);
    let mut c = coordinator(d, &nats.url, Stdio::null());
    wait_for("a few steps", || study_step(&d.join("results/q")) >= 5);
    std::process::Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status()
        .unwrap();
    let st = c.wait().unwrap();
    assert_eq!(st.code(), Some(130), "{st:?}");
    // The jobs it left queued are answered while it is away.
    std::thread::sleep(Duration::from_millis(500));
    ok(&resume(d, &nats.url));
    same_best(&summary(d, "results/q"), &summary(d, "results/local"));
    let computed = computed_once(&d.join("results/q"));
    assert_eq!(fleet.done(), computed + 1, "a job was evaluated twice");
}

/// What a hostile client publishes: (subject, message id, payload).
type Forged = Vec<(String, String, Vec<u8>)>;

/// A client of the same server without the queue key: it sees every job as
/// it is published (a plain subscription) and publishes what `on_job` makes
/// of it, until the returned flag is set.
fn hostile(
    url: &str,
    on_job: impl Fn(&evocomp_queue::messages::JobMsg) -> Forged + Send + 'static,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use futures::StreamExt;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let url = url.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let client = async_nats::connect(&url).await.unwrap();
            let js = async_nats::jetstream::new(client.clone());
            let mut sub = client.subscribe("evocomp.jobs.>").await.unwrap();
            client.flush().await.unwrap();
            ready_tx.send(()).unwrap();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(100), sub.next()).await
                else {
                    continue;
                };
                let Ok(job) = serde_json::from_slice(&m.payload) else {
                    continue;
                };
                for (subject, id, payload) in on_job(&job) {
                    let m = async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload.into())
                        .message_id(id);
                    js.send_publish(subject, m).await.unwrap().await.unwrap();
                }
            }
        });
    });
    ready_rx.recv().unwrap();
    (stop, h)
}

fn key_file(d: &Path) -> PathBuf {
    let p = d.join("queue.key");
    std::fs::write(&p, "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Qtb25seQ==\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

#[test]
fn with_a_queue_key_forged_results_published_first_are_dropped_and_counted() {
    use evocomp_queue::messages::{FORMAT, ResultMsg, VERSION};
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, SHORT);
    let reference = summary(d, "results/local");
    let key = key_file(d);
    // For every job, at once: a result saying KL -1 (held-out: 0.000123),
    // with the message id the real result would have had without a key.
    let (stop, h) = hostile(&nats.url, |job| {
        let output = match &job.kind {
            evocomp_engine::JobKind::Fitness { .. } => evocomp_engine::Output::Fitness(-1.0),
            evocomp_engine::JobKind::HeldOut { .. } => {
                evocomp_engine::Output::HeldOut(evocomp_eval::KlResult {
                    kl: 0.000123,
                    nll: 0.1,
                    tokens: 1,
                    per_sequence: vec![0.000123],
                })
            }
        };
        let forged = ResultMsg {
            format: FORMAT,
            evocomp: VERSION.into(),
            study: job.study.clone(),
            cid: job.cid.clone(),
            attempt: job.attempt,
            worker: "forger".into(),
            seconds: 0.0,
            result: Ok(output),
            reuse: None,
        };
        vec![(
            job.results.clone(),
            forged.message_id(),
            serde_json::to_vec(&forged).unwrap(),
        )]
    });
    let mut fleet = Fleet::default();
    let k = key.to_str().unwrap();
    fleet.spawn(d, &nats.url, "w", &["--queue-key", k]);
    let o = queued_run(d, &nats.url, &["--queue-key", k]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    h.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    same_best(&summary(d, "results/q"), &reference);
    assert!(
        err.contains("results without a valid signature were dropped"),
        "{err}"
    );
    // Nothing the forger sent reached the journal.
    assert!(
        journal(&d.join("results/q"))
            .iter()
            .all(|t| t.worker != "forger")
    );
}

#[test]
fn crafted_jobs_fail_alone_and_read_nothing_outside_the_workers_folders() {
    use evocomp_queue::messages::JobMsg;
    use futures::StreamExt;
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, SHORT);
    let reference = summary(d, "results/local");
    // From the first real job, four crafted ones: a model outside the
    // worker's folder, seq_len 0, a genome one unit too long, a sample of
    // u64's maximum in tokens; answers to a subject of the attacker's.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = sent.clone();
    let (stop, h) = hostile(&nats.url, move |job| {
        if job.cid.starts_with("evil") || s2.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let mut variants: Vec<JobMsg> = Vec::new();
        let mut j = job.clone();
        j.context.experiment.model = "/etc/passwd".into();
        variants.push(j);
        let mut j = job.clone();
        j.context.experiment.fitness.seq_len = 0;
        variants.push(j);
        let mut j = job.clone();
        if let evocomp_engine::JobKind::Fitness { genome, .. } = &mut j.kind {
            genome.push(0);
        }
        variants.push(j);
        let mut j = job.clone();
        if let evocomp_engine::JobKind::Fitness { sample, .. } = &mut j.kind {
            sample.tokens = usize::MAX;
        }
        variants.push(j);
        variants
            .into_iter()
            .enumerate()
            .map(|(i, mut j)| {
                j.cid = format!("evil{i}");
                j.results = "evocomp.results.evil".into();
                (
                    format!("evocomp.jobs.{}", j.study),
                    format!("evil.{i}"),
                    serde_json::to_vec(&j).unwrap(),
                )
            })
            .collect()
    });
    let mut fleet = Fleet::default();
    let log = fleet.spawn(d, &nats.url, "w", &[]);
    ok(&evocomp(
        d,
        &["run", "q.ron", "--no-shared-cache", "--queue", &nats.url],
    ));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    h.join().unwrap();
    // The worker went on: the study finished on it with the local result.
    same_best(&summary(d, "results/q"), &reference);
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst));
    // The four refusals, read from the attacker's subject.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refusals: Vec<String> = rt.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let consumer = js
            .get_stream("EVOCOMP_RESULTS")
            .await
            .unwrap()
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: "evocomp.results.evil".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut m = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while out.len() < 4 {
            let msg = tokio::time::timeout(Duration::from_secs(60), m.next())
                .await
                .expect("four answers within 60 s")
                .unwrap()
                .unwrap();
            let r: evocomp_queue::messages::ResultMsg =
                serde_json::from_slice(&msg.payload).unwrap();
            out.push(format!("{}: {}", r.cid, r.result.expect_err("refused")));
        }
        out.sort();
        out
    });
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let first_line = passwd.lines().next().unwrap_or("root:x:0:0");
    for r in &refusals {
        assert!(!r.contains(first_line), "file contents echoed: {r}");
    }
    assert!(
        refusals[0].contains("not a file under the folders"),
        "{}",
        refusals[0]
    );
    assert!(refusals[1].contains("seq_len"), "{}", refusals[1]);
    assert!(refusals[2].contains("units"), "{}", refusals[2]);
    assert!(refusals[3].contains("at most"), "{}", refusals[3]);
    let w = std::fs::read_to_string(&log).unwrap();
    assert!(!w.contains("panicked"), "{w}");
}

#[test]
fn a_server_with_a_user_and_password_takes_them_from_the_url_and_never_shows_the_password() {
    let nats = NatsServer::start_with_user("evo", "s3cret-pw").expect("nats-server on PATH");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, SHORT);
    let reference = summary(d, "results/local");
    let url = nats.url.replacen("nats://", "nats://evo:s3cret-pw@", 1);
    let mut fleet = Fleet::default();
    let log = fleet.spawn(d, &url, "w", &[]);
    let o = bin()
        .current_dir(d)
        .args(["run", "q.ron", "--no-shared-cache", "--queue", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    same_best(&summary(d, "results/q"), &reference);
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(err.contains("evo:***@"), "{err}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("s3cret-pw"));
    // A wrong password is refused by the server, and said so without it.
    let bad = nats.url.replacen("nats://", "nats://evo:wrong-pw@", 1);
    let o = evocomp(d, &["status", "results/q", "--queue", &bad]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("evo:***@") && !err.contains("wrong-pw"),
        "{err}"
    );
}

/// A study through a server that asks for a login file (`flag FILE` on the
/// coordinator and the worker) reaches the thread pool's result; a
/// stranger's file of the same kind is refused by the server, and a file
/// that is not one is refused before connecting, naming it.
fn study_with_login_file(nats: &NatsServer, d: &Path, flag: &str, file: &str, stranger: &str) {
    local_then_queued(d, SHORT);
    let reference = summary(d, "results/local");
    let mut fleet = Fleet::default();
    fleet.spawn(d, &nats.url, "w", &[flag, file]);
    let o = queued_run(d, &nats.url, &[flag, file]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same_best(&summary(d, "results/q"), &reference);
    // Without the file, or with another holder's, the server says no.
    for extra in [vec![], vec![flag, stranger]] {
        let mut args = vec!["status", "results/q", "--queue", nats.url.as_str()];
        args.extend(extra);
        let o = evocomp(d, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} connected");
        assert!(err.contains("connecting to the queue"), "{err}");
    }
    // Not a seed or credentials file at all: refused, naming it.
    std::fs::write(d.join("junk.txt"), "not a key\n").unwrap();
    let o = evocomp(
        d,
        &[
            "status",
            "results/q",
            "--queue",
            &nats.url,
            flag,
            "junk.txt",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("junk.txt"), "{err}");
}

#[test]
fn a_server_whose_users_are_nkeys_takes_a_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nats = NatsServer::start_with_nkey_user(&d.join("user.nk")).expect("nats-server on PATH");
    // A stranger's seed: a valid user nkey the server does not know.
    let other = tempfile::tempdir().unwrap();
    drop(NatsServer::start_with_nkey_user(&other.path().join("x.nk")).unwrap());
    std::fs::copy(other.path().join("x.nk"), d.join("stranger.nk")).unwrap();
    study_with_login_file(&nats, d, "--queue-nkey", "user.nk", "stranger.nk");
    // The public key where the seed belongs: said so.
    let seed = std::fs::read_to_string(d.join("user.nk")).unwrap();
    let public = evocomp_queue::testing::public_key_of(seed.trim()).unwrap();
    std::fs::write(d.join("public.nk"), public).unwrap();
    let o = evocomp(
        d,
        &[
            "status",
            "results/q",
            "--queue",
            &nats.url,
            "--queue-nkey",
            "public.nk",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("public.nk") && err.contains("not an nkey seed"),
        "{err}"
    );
}

#[test]
fn a_server_in_operator_mode_takes_a_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nats =
        NatsServer::start_in_operator_mode(&d.join("user.creds")).expect("nats-server on PATH");
    // Credentials from another operator: a JWT this server cannot verify.
    let other = tempfile::tempdir().unwrap();
    drop(NatsServer::start_in_operator_mode(&other.path().join("x.creds")).unwrap());
    std::fs::copy(other.path().join("x.creds"), d.join("stranger.creds")).unwrap();
    study_with_login_file(&nats, d, "--queue-creds", "user.creds", "stranger.creds");
}

#[test]
fn a_server_restarted_mid_study_is_waited_for_and_the_study_finishes() {
    let mut nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    local_then_queued(d, SHORT);
    let reference = summary(d, "results/local");
    let mut fleet = Fleet::default();
    // Slow jobs, so the restart lands mid-study.
    let log = fleet.spawn(d, &nats.url, "w", &["--test-delay-ms", "150"]);
    let err_log = d.join("coordinator.log");
    let mut c = coordinator(d, &nats.url, Stdio::from(File::create(&err_log).unwrap()));
    wait_for("a few jobs done", || count(&log, "done in") >= 3);
    nats.restart(Duration::from_millis(500)).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the study did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_log).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("reading results again"), "{err}");
    same_best(&summary(d, "results/q"), &reference);
    computed_once(&d.join("results/q"));
}

#[test]
fn a_job_past_the_workers_limit_is_abandoned_reported_and_the_worker_goes_on() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_study(d);
    let mut slow = Fleet::default();
    // Every job takes 3 s here, the limit is 1 s.
    let log = slow.spawn(
        d,
        &nats.url,
        "slow",
        &["--job-limit", "1", "--test-delay-ms", "3000"],
    );
    let t0 = Instant::now();
    let o = bin()
        .current_dir(d)
        .args(["run", "q.ron", "--no-shared-cache", "--queue", &nats.url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("ran past the limit of 1 s (--job-limit) and was abandoned"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    // The worker is still there, and said nothing of a panic.
    assert!(
        slow.0[0].0.try_wait().unwrap().is_none(),
        "the worker exited"
    );
    let w = std::fs::read_to_string(&log).unwrap();
    assert!(!w.contains("panicked"), "{w}");
    // Without the slow worker, the study resumes to its end.
    drop(slow);
    let mut fast = Fleet::default();
    fast.spawn(d, &nats.url, "fast", &[]);
    ok(&resume(d, &nats.url));
}
