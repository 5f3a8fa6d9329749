//! Fuzzing the study folder's JSON files: byte edits of real files
//! (experiment.json, summary.json, status.json, sweep.json from the
//! committed results) never panic; a damaged file is an error naming it.
//! `EVOCOMP_FUZZ_CASES=100000` for a long run (CI runs a few hundred with a
//! fixed seed).

use evocomp_gguf::testing::{Edit, fuzz_cases, fuzz_seed, mutate};
use evocomp_study::{StudyDir, SweepDir, names};
use proptest::prelude::{ProptestConfig, any};
use proptest::test_runner::{RngSeed, TestRunner};
use std::path::PathBuf;

fn committed(rel: &str) -> Vec<u8> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    std::fs::read(root.join(rel)).unwrap()
}

#[test]
fn damaged_study_files_are_errors_never_panics() {
    let files = [
        (
            names::EXPERIMENT,
            committed("results/depth-evopress/dropped3/experiment.json"),
        ),
        (
            names::SUMMARY,
            committed("results/nsga2-front/summary.json"),
        ),
        (
            names::STATUS,
            committed("results/depth-evopress/dropped3/status.json"),
        ),
        (names::SWEEP, committed("results/depth-evopress/sweep.json")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let study = StudyDir::new(dir.path());
    // The committed files read as they are.
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    study.experiment().unwrap();
    study.summary().unwrap();
    study.status().unwrap();
    assert_eq!(
        SweepDir::new(dir.path()).members().unwrap().unwrap().len(),
        3
    );
    let cfg = ProptestConfig {
        cases: fuzz_cases(400),
        rng_seed: RngSeed::Fixed(fuzz_seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let edits = proptest::collection::vec(any::<Edit>(), 1..6);
    TestRunner::new(cfg)
        .run(&(0usize..files.len(), edits), |(which, e)| {
            let (name, seed) = &files[which];
            let path = dir.path().join(name);
            std::fs::write(&path, mutate(seed, &e)).unwrap();
            let err = match which {
                0 => study.experiment().err(),
                1 => study.summary().err(),
                2 => study.status().err(),
                _ => SweepDir::new(dir.path()).members().err(),
            };
            if let Some(err) = err {
                let text = format!("{err:#}");
                assert!(text.contains(name), "{text}");
            }
            std::fs::write(&path, seed).unwrap();
            Ok(())
        })
        .unwrap();
}
