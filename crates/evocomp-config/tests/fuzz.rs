//! Fuzzing the config readers: byte edits of valid experiment and database
//! configs (RON) never panic; a broken config is an error naming the file.
//! `EVOCOMP_FUZZ_CASES=100000` for a long run (CI runs a few hundred with a
//! fixed seed).

use evocomp_config::{load_database_config, load_experiments};
use evocomp_gguf::testing::{Edit, fuzz_cases, fuzz_seed, mutate};
use proptest::prelude::{ProptestConfig, any};
use proptest::test_runner::{RngSeed, TestRunner};

#[test]
fn damaged_configs_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
    std::fs::write(dir.path().join("t.txt"), b"hello").unwrap();
    let db = format!(
        r#"DatabaseSpec(
    model: "{d}/m.gguf",
    output: "{d}/db",
    calibration: (text: "{d}/t.txt", sequences: 8, seq_len: 128, seed: 3),
    compression: Quantization(method: Gptq, bits: [2, 3, 4], group_size: 128, act_order: true),
)"#
    );
    let exp = format!(
        r#"Experiment(
    name: "fuzz",
    model: "{d}/m.gguf",
    database: "{d}/db.ron",
    data: (calibration: "{d}/t.txt", evaluation: "{d}/t.txt", held_out_tokens: 512),
    sweep: [UniformLevel(0), AtMost(1000), Fraction(0.5)],
    strategy: EvoPress(preset: Sparsity, generations: Some(3), stages: [(2, 512), (1, 1024)]),
    fitness: (metric: Kl, teacher: TopK(8), seq_len: 64, tokens: 512),
    seed: 1,
)"#
    );
    let db_path = dir.path().join("db.ron");
    let exp_path = dir.path().join("exp.ron");
    std::fs::write(&db_path, &db).unwrap();
    load_database_config(&db_path).unwrap();
    std::fs::write(&exp_path, &exp).unwrap();
    assert_eq!(load_experiments(&exp_path).unwrap().len(), 3);
    let cfg = ProptestConfig {
        cases: fuzz_cases(400),
        rng_seed: RngSeed::Fixed(fuzz_seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let edits = proptest::collection::vec(any::<Edit>(), 1..6);
    TestRunner::new(cfg)
        .run(&(any::<bool>(), edits), |(is_db, e)| {
            let (path, seed) = if is_db {
                (&db_path, &db)
            } else {
                (&exp_path, &exp)
            };
            std::fs::write(path, mutate(seed.as_bytes(), &e)).unwrap();
            let r = if is_db {
                load_database_config(path).map(|_| ())
            } else {
                load_experiments(path).map(|_| ())
            };
            if let Err(err) = r {
                assert!(
                    err.to_string().contains(&path.display().to_string()),
                    "{err}"
                );
            }
            // The experiment reads the database config too: keep it valid.
            std::fs::write(&db_path, &db).unwrap();
            Ok(())
        })
        .unwrap();
}
