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
    ok(&evocomp(
        d,
        &[
            "resume",
            "results/q",
            "--no-shared-cache",
            "--queue",
            &nats.url,
        ],
    ));
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
    ok(&evocomp(
        d,
        &[
            "resume",
            "results/q",
            "--no-shared-cache",
            "--queue",
            &nats.url,
        ],
    ));
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
    let o = evocomp(
        d,
        &[
            "resume",
            "results/q",
            "--no-shared-cache",
            "--queue",
            &nats.url,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("ran out while the coordinator was away"),
        "{err}"
    );
    // Retried as a new attempt, the study finishes.
    ok(&evocomp(
        d,
        &[
            "resume",
            "results/q",
            "--no-shared-cache",
            "--queue",
            &nats.url,
        ],
    ));
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
    ok(&evocomp(
        d,
        &[
            "resume",
            "results/q",
            "--no-shared-cache",
            "--queue",
            &nats.url,
        ],
    ));
    same_best(&summary(d, "results/q"), &summary(d, "results/local"));
    let computed = computed_once(&d.join("results/q"));
    assert_eq!(fleet.done(), computed + 1, "a job was evaluated twice");
}
