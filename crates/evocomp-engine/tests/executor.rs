//! The executor end to end on a tiny model, in process: two worker devices
//! reach exactly what one reaches (the held-out front is measured as one
//! batch across them), and observers hear of every result and step.

use burn::tensor::Device;
use evocomp_engine::{
    Observer, Outcome, ResultEvent, RunOptions, StepEvent, WorkerDevice, run_observed,
};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_study::Summary;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    starts: usize,
    results: usize,
    steps: Vec<u64>,
    finished: usize,
    workers: Vec<String>,
}

struct Counter(Arc<Mutex<Counts>>);

impl Observer for Counter {
    fn on_start(&mut self, _at: &StepEvent) -> anyhow::Result<()> {
        self.0.lock().unwrap().starts += 1;
        Ok(())
    }
    fn on_result(&mut self, r: &ResultEvent) -> anyhow::Result<()> {
        let mut c = self.0.lock().unwrap();
        c.results += 1;
        if !c.workers.contains(&r.worker) {
            c.workers.push(r.worker.clone());
        }
        Ok(())
    }
    fn on_step(&mut self, at: &StepEvent) -> anyhow::Result<()> {
        self.0.lock().unwrap().steps.push(at.step);
        Ok(())
    }
    fn on_finish(&mut self, _s: &Summary, _at: &StepEvent) -> anyhow::Result<()> {
        self.0.lock().unwrap().finished += 1;
        Ok(())
    }
}

/// A tiny model, a text and an NSGA-II experiment on a sparsity grid, all
/// with absolute paths; the study goes to `<dir>/results/<name>`.
fn setup(dir: &Path, name: &str) -> std::path::PathBuf {
    if !dir.join("tiny.gguf").exists() {
        let mut cfg = tiny_config();
        cfg.n_layers = 2;
        write_gguf(&cfg, &random_weights(&cfg, 3), &dir.join("tiny.gguf")).unwrap();
        let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
        let body: Vec<&str> = (0..1200).map(|i| words[(i * 5 + i / 7) % 6]).collect();
        std::fs::write(dir.join("text.txt"), body.join(" ")).unwrap();
        std::fs::write(
            dir.join("grid.ron"),
            format!(
                r#"DatabaseSpec(
    model: "{d}/tiny.gguf",
    output: "{d}/db",
    calibration: (text: "{d}/text.txt", sequences: 4, seq_len: 32, seed: 0),
    compression: Sparsity(method: Magnitude, target: 0.5, step_fraction: 0.1, max_levels: 2),
)"#,
                d = dir.display()
            ),
        )
        .unwrap();
    }
    let p = dir.join(format!("{name}.ron"));
    std::fs::write(
        &p,
        format!(
            r#"Experiment(
    name: "{name}",
    model: "{d}/tiny.gguf",
    database: "{d}/grid.ron",
    data: (calibration: "{d}/text.txt", evaluation: "{d}/text.txt", held_out_tokens: 128, held_out_context: 32),
    budget: UniformLevel(0),
    strategy: Nsga2(population: 6, generations: 2),
    fitness: (metric: Kl, teacher: TopK(8), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 5,
    output: "{d}/results/{name}",
)"#,
            d = dir.display()
        ),
    )
    .unwrap();
    p
}

fn run(dir: &Path, name: &str, devices: usize) -> (Summary, Counts, usize) {
    run_limited(dir, name, devices, None).unwrap()
}

fn run_limited(
    dir: &Path,
    name: &str,
    devices: usize,
    max_buffer_bytes: Option<u64>,
) -> anyhow::Result<(Summary, Counts, usize)> {
    let exp = evocomp_config::load_experiment(&setup(dir, name)).unwrap();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let opts = RunOptions {
        progress: false,
        stop: Arc::new(AtomicBool::new(false)),
        shared_cache: false,
        devices: (0..devices)
            .map(|i| WorkerDevice {
                max_buffer_bytes,
                ..WorkerDevice::unlimited(format!("worker-{i}"), Device::flex())
            })
            .collect(),
        remote: None,
    };
    match run_observed(&exp, &opts, vec![Box::new(Counter(counts.clone()))])? {
        Outcome::Finished {
            summary,
            new_evaluations,
        } => {
            let c = counts.lock().unwrap().clone();
            Ok((*summary, c, new_evaluations))
        }
        Outcome::Stopped { .. } => panic!("stopped"),
    }
}

/// A device that allocates only small buffers (a GPU's limit) evaluates in
/// smaller batches and reaches the same configurations; one whose buffers
/// cannot hold the model's largest weight or one sequence's logits is
/// refused at the config line to change.
#[test]
fn a_device_buffer_limit_shrinks_batches_or_says_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let (free, _, _) = run(dir.path(), "free", 1);
    // The tiny model: 260 entries; held-out windows of 32 tokens: 33,280 bytes a sequence.
    let (tight, _, _) = run_limited(dir.path(), "tight", 1, Some(40_000)).unwrap();
    assert_eq!(tight.front.len(), free.front.len());
    for (a, b) in tight.front.iter().zip(&free.front) {
        assert_eq!(a.genome, b.genome);
        assert!((a.held_out_kl - b.held_out_kl).abs() <= 1e-6 * b.held_out_kl.max(1e-3));
    }
    let e = format!(
        "{:#}",
        run_limited(dir.path(), "tiny", 1, Some(30_000)).unwrap_err()
    );
    assert!(
        e.contains("tiny.ron:") && e.contains("MiB") && e.contains("--backend cpu"),
        "{e}"
    );
    // Below the tiny model's 260 x 32 embedding (33,280 bytes in f32) the
    // model itself cannot go on the device, and the error says so.
    assert!(e.contains("260 x 32 embedding"), "{e}");
}

#[test]
fn two_devices_reach_what_one_reaches_and_observers_see_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let (one, c1, new1) = run(dir.path(), "one", 1);
    let (two, c2, _) = run(dir.path(), "two", 2);
    assert_eq!(one.role, evocomp_search::Role::Front);
    assert!(one.front.len() >= 2, "a front to measure: {:?}", one.front);
    assert_eq!(one.best, two.best);
    assert_eq!(one.front, two.front);
    assert_eq!(one.evaluations, two.evaluations);
    // Every computed search result was observed; one step event per step.
    assert_eq!(c1.starts, 1);
    assert_eq!(c1.finished, 1);
    assert_eq!(c1.results, one.evaluations);
    assert_eq!(c1.steps, (1..=one.steps).collect::<Vec<_>>());
    assert_eq!(c1.workers, vec!["worker-0".to_string()]);
    // The held-out front was measured too (each member once).
    assert_eq!(new1, one.evaluations + one.front.len());
    assert_eq!(c2.results, two.evaluations);
    // The history the reports plot holds the front after every step.
    assert_eq!(one.history.len() as u64, one.steps);
    assert!(one.history.iter().all(|h| !h.front.is_empty()));
    // Re-running a finished study evaluates nothing and tells no observer of results.
    let (again, c3, new3) = run(dir.path(), "one", 1);
    assert_eq!(again, one);
    assert_eq!((new3, c3.results, c3.starts), (0, 0, 0));
}
