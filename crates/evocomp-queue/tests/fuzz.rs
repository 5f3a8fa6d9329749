//! Fuzzing job messages as a worker takes them: byte edits of a valid job
//! and hostile values in its fields (paths out of the worker's folder, a
//! link leading out, extreme counts and genomes) never panic; a job that
//! passes [`vet`] names only files under the worker's folder, and its
//! genomes and sample pass the database's check or are refused by it.
//! `EVOCOMP_FUZZ_CASES=100000` for a long run (CI runs a few hundred with a
//! fixed seed).

use evocomp_engine::JobKind;
use evocomp_gguf::testing::{Edit, fuzz_cases, fuzz_seed, mutate};
use evocomp_queue::messages::{Context, FORMAT, JobMsg, VERSION};
use evocomp_queue::vet;
use evocomp_search::{SampleDraw, Space, UnitLevels};
use proptest::prelude::{ProptestConfig, any};
use proptest::test_runner::{RngSeed, TestRunner};
use std::path::{Path, PathBuf};

/// A worker's folder with the files a study names, and a job for it.
fn setup(root: &Path) -> (PathBuf, Vec<u8>) {
    std::fs::write(root.join("tiny.gguf"), b"GGUF").unwrap();
    std::fs::write(root.join("text.txt"), "some text ".repeat(50)).unwrap();
    std::fs::create_dir_all(root.join("db/grid")).unwrap();
    // Absolute paths, as a coordinator in another folder would send them
    // (and no change of the process's folder, which tests share).
    let r = root.display();
    std::fs::write(
        root.join("grid.ron"),
        format!(
            r#"DatabaseSpec(
    model: "{r}/tiny.gguf",
    output: "{r}/db/grid",
    calibration: (text: "{r}/text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: Sparsity(method: Magnitude, target: 0.5, max_levels: 1),
)"#
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("q.ron"),
        format!(
            r#"Experiment(
    name: "q",
    model: "{r}/tiny.gguf",
    database: "{r}/grid.ron",
    data: (calibration: "{r}/text.txt", evaluation: "{r}/text.txt", held_out_tokens: 256, held_out_context: 64),
    budget: UniformLevel(0),
    strategy: EvoPress(preset: Sparsity, generations: Some(4), offspring: Some(4), stages: Some([(2, 64), (1, 128)])),
    fitness: (metric: Kl, teacher: TopK(16), seq_len: 32, tokens: 64, batch_size: 2),
    backend: Cpu,
    seed: 11,
)"#
        ),
    )
    .unwrap();
    // A link inside the folder that leads out of it.
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", root.join("out.gguf")).unwrap();
    let exp = evocomp_config::load_experiments(&root.join("q.ron"))
        .unwrap()
        .remove(0);
    let job = JobMsg {
        format: FORMAT,
        evocomp: VERSION.into(),
        study: "s".into(),
        cid: "c".into(),
        attempt: 0,
        results: "evocomp.results.s".into(),
        context: Context {
            experiment: exp,
            model_fingerprint: "m".into(),
            database_fingerprint: "d".into(),
            fitness_key: "f".into(),
            calibration_id: "c".into(),
            held_out_id: "h".into(),
        },
        kind: JobKind::Fitness {
            genome: vec![0, 1, -1, 0],
            sample: SampleDraw::new(64, 3),
            anchor: Some(vec![0; 4]),
        },
    };
    (
        std::fs::canonicalize(root).unwrap(),
        serde_json::to_vec(&job).unwrap(),
    )
}

fn space() -> Space {
    Space::new(
        (0..4)
            .map(|i| UnitLevels {
                name: format!("u{i}"),
                levels: vec![-1, 0, 1],
                costs: vec![3, 2, 1],
            })
            .collect(),
    )
    .unwrap()
}

/// What must hold for any input: no panic (the runner catches one and
/// fails), and an accepted job names only files under `root`.
fn check(payload: &[u8], root: &Path, space: &Space) {
    if let Ok(job) = vet(payload, &[root.to_path_buf()]) {
        let e = &job.context.experiment;
        for p in [
            &e.model,
            &e.database_config,
            &e.database,
            &e.data.calibration,
            &e.data.evaluation,
        ] {
            let real = std::fs::canonicalize(p).expect("an accepted job's files exist");
            assert!(real.starts_with(root), "{} accepted", p.display());
        }
        let _ = job.kind.check(space);
    }
}

/// Hostile values for the fields a job carries.
const PATHS: &[&str] = &[
    "/etc/passwd",
    "/sys",
    "/proc/self/environ",
    "../../../../etc/passwd",
    "out.gguf",
    "",
    ".",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "18446744073709551615",
    "4294967296",
    "1e308",
    "-1e308",
    "null",
    "[]",
    "{}",
];
const FIELDS: &[&str] = &[
    "/context/experiment/model",
    "/context/experiment/database_config",
    "/context/experiment/database",
    "/context/experiment/data/calibration",
    "/context/experiment/data/evaluation",
    "/context/experiment/data/held_out_tokens",
    "/context/experiment/data/held_out_context",
    "/context/experiment/fitness/seq_len",
    "/context/experiment/fitness/tokens",
    "/context/experiment/fitness/batch_size",
    "/context/experiment/seed",
    "/context/experiment/anytime",
    "/kind/Fitness/genome",
    "/kind/Fitness/genome/0",
    "/kind/Fitness/anchor",
    "/kind/Fitness/sample/tokens",
    "/kind/Fitness/sample/skip",
    "/format",
];

#[test]
fn job_messages_never_panic_a_worker_nor_reach_outside_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (root, seed) = setup(dir.path());
    let sp = space();
    vet(&seed, std::slice::from_ref(&root)).expect("the seed job is a valid one");
    let cfg = ProptestConfig {
        cases: fuzz_cases(300),
        rng_seed: RngSeed::Fixed(fuzz_seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // Byte edits of the JSON.
    let edits = proptest::collection::vec(any::<Edit>(), 1..6);
    TestRunner::new(cfg.clone())
        .run(&edits, |edits| {
            check(&mutate(&seed, &edits), &root, &sp);
            Ok(())
        })
        .unwrap();
    // Hostile values in one to three fields.
    let value: serde_json::Value = serde_json::from_slice(&seed).unwrap();
    let picks = proptest::collection::vec((0..FIELDS.len(), 0..PATHS.len() + NUMBERS.len()), 1..4);
    TestRunner::new(cfg)
        .run(&picks, |picks| {
            let mut v = value.clone();
            for (f, x) in picks {
                let new = match PATHS.get(x) {
                    Some(p) if *p == "out.gguf" => serde_json::json!(root.join(p)),
                    Some(p) => serde_json::json!(p),
                    None => serde_json::from_str(NUMBERS[x - PATHS.len()]).unwrap(),
                };
                if let Some(slot) = v.pointer_mut(FIELDS[f]) {
                    *slot = new;
                }
            }
            check(&serde_json::to_vec(&v).unwrap(), &root, &sp);
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_job_naming_a_file_outside_the_folder_is_refused_with_its_own_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let (root, seed) = setup(dir.path());
    let mut v: serde_json::Value = serde_json::from_slice(&seed).unwrap();
    for bad in ["/etc/passwd".into(), root.join("out.gguf")] {
        v["context"]["experiment"]["model"] = serde_json::json!(bad);
        let e = vet(
            &serde_json::to_vec(&v).unwrap(),
            std::slice::from_ref(&root),
        )
        .unwrap_err();
        assert!(e.contains("not a file under the folders"), "{e}");
        assert!(!e.contains("root:"), "{e}");
    }
}
