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
    setup_with(dir, name, "Nsga2(population: 6, generations: 2)", "")
}

/// [`setup`] with another strategy and more experiment fields.
fn setup_with(dir: &Path, name: &str, strategy: &str, extra: &str) -> std::path::PathBuf {
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
    strategy: {strategy},
    fitness: (metric: Kl, teacher: TopK(8), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 5,
    output: "{d}/results/{name}",{extra}
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
    run_config(&setup(dir, name), devices, max_buffer_bytes)
}

fn run_config(
    config: &Path,
    devices: usize,
    max_buffer_bytes: Option<u64>,
) -> anyhow::Result<(Summary, Counts, usize)> {
    let exp = evocomp_config::load_experiment(config).unwrap();
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

/// EvoPress raced in chunks that never drops (confidence 1) selects as
/// EvoPress does on whole samples (both as published: from uniform, no
/// final choice): the chunks are the stage's sample in pieces. Racing that drops scores fewer tokens. The history counts
/// tokens, and the anytime points measure the best genome along the way.
#[test]
fn racing_in_chunks_is_evopress_on_whole_samples_and_anytime_points_follow_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let evo = |more: &str| {
        format!(
            "EvoPress(preset: Sparsity, generations: Some(4), offspring: Some(6), stages: Some([(2, 64), (1, 256)]), start: Some(Random){more})"
        )
    };
    let anytime = "\n    anytime: Some(4),";
    let (plain, _, _) = run_config(&setup_with(d, "plain", &evo(""), anytime), 1, None).unwrap();
    let (whole, _, _) = run_config(
        &setup_with(
            d,
            "whole",
            &evo(", racing: (chunk: 32, confidence: 1.0)"),
            anytime,
        ),
        1,
        None,
    )
    .unwrap();
    assert_eq!(plain.best.genome, whole.best.genome);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1e-3);
    assert!(close(plain.best.search_fitness, whole.best.search_fitness));
    let bests = |s: &Summary| -> Vec<f64> { s.history.iter().filter_map(|h| h.best).collect() };
    let (pb, wb) = (bests(&plain), bests(&whole));
    // The same parent after every generation (raced steps repeat it in between).
    let mut wd = wb.clone();
    wd.dedup();
    let mut pd = pb.clone();
    pd.dedup();
    assert_eq!(pd.len(), wd.len(), "{pd:?} vs {wd:?}");
    assert!(
        pd.iter().zip(&wd).all(|(a, b)| close(*a, *b)),
        "{pd:?} vs {wd:?}"
    );
    // Every token of every stage, in chunks: the same total.
    let last = |s: &Summary| s.history.last().unwrap().tokens;
    assert_eq!(last(&plain), last(&whole));
    assert_eq!(last(&plain), 4 * (6 * 64 + 3 * 256));
    assert!(whole.history.windows(2).all(|w| w[0].tokens <= w[1].tokens));
    // Anytime points: the best genome after each quarter of the tokens,
    // measured on the held-out text; the last is the study's best.
    assert_eq!(plain.anytime.len(), 4);
    assert_eq!(plain.anytime[3].tokens, last(&plain));
    assert_eq!(plain.anytime[3].held_out_kl, plain.best.held_out_kl);
    assert!(
        plain
            .anytime
            .iter()
            .all(|p| p.held_out_kl.is_finite() && p.cost == plain.best.cost)
    );
    // Racing that drops asks for fewer tokens over the same generations.
    let (fast, _, _) = run_config(
        &setup_with(
            d,
            "fast",
            &evo(", racing: (chunk: 32, confidence: 0.6, min_chunks: 2)"),
            "",
        ),
        1,
        None,
    )
    .unwrap();
    assert!(
        last(&fast) < last(&plain),
        "{} vs {}",
        last(&fast),
        last(&plain)
    );
    assert!(fast.anytime.is_empty());
}

/// A sample's parts (`skip`) are the sample's sequences in pieces.
#[test]
fn sample_parts_are_the_sample_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["alpha", "beta", "gamma", "delta"];
    let body: Vec<&str> = (0..3000).map(|i| words[(i * 7 + i / 5) % 4]).collect();
    let p = dir.path().join("t.txt");
    std::fs::write(&p, body.join(" ")).unwrap();
    let calib = evocomp_data::tokenize_path(
        &p,
        &|s: &str| Ok::<_, String>(s.bytes().map(u32::from).collect()),
        "bytes",
        &[],
    )
    .unwrap();
    let whole = evocomp_search::SampleDraw::new(256, 9);
    let full = evocomp_engine::sample_for(&calib, whole, 32).unwrap();
    let mut pieces = Vec::new();
    for i in 0..4 {
        let part = evocomp_engine::sample_for(&calib, whole.part(64, i), 32).unwrap();
        assert_eq!(part.sequences.len(), 2);
        pieces.extend(part.sequences);
    }
    assert_eq!(pieces, full.sequences);
    // A part that does not start at a sequence boundary is refused.
    let odd = evocomp_search::SampleDraw { skip: 10, ..whole };
    assert!(evocomp_engine::sample_for(&calib, odd, 32).is_err());
}
