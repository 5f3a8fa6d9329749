//! Every numeric field of an experiment and a database config, given its
//! extremes (0, 1, 2^32, u64's maximum, -1; NaN, ±inf, 1e308 for floats),
//! must give a run or an error, never a panic and never a hang: a count
//! nobody checked once overflowed in sampling and the strategies, or meant
//! days of work at step 0 with no progress.

mod common;

use common::{bin, setup};
use std::path::Path;
use std::time::{Duration, Instant};

/// The experiment and database the fields are varied in; `{x}` marks the
/// field under test, every other field has a small valid value.
const EXPERIMENT: &str = r#"Experiment(
    name: "{name}",
    model: "tiny.gguf",
    database: "{name}-db.ron",
    data: (calibration: "text.txt", evaluation: "text.txt", held_out_tokens: {held_out_tokens}, held_out_context: {held_out_context}),
    budget: UniformLevel(0),
    strategy: {strategy},
    fitness: (metric: Kl, teacher: TopK({top_k}), seq_len: {seq_len}, tokens: {tokens}, batch_size: {batch_size}),
    backend: Cpu,
    seed: {seed},
)"#;

const DATABASE: &str = r#"DatabaseSpec(
    model: "tiny.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: {sequences}, seq_len: {db_seq_len}, seed: {db_seed}, held_out: {held_out}),
    compression: Sparsity(method: SparseGpt, target: {target}, step_fraction: {step_fraction}, max_sparsity: {max_sparsity}, max_levels: {max_levels}),
)"#;

/// The strategy of every case but those of [`STRATEGIES`].
const EVOPRESS: &str = "EvoPress(preset: Sparsity, generations: Some({generations}), offspring: Some({offspring}), stages: Some([({survivors}, {stage_tokens}), (1, 64)]), max_flips: Some({max_flips}), start: Some(BestOfRandom(candidates: {candidates}, tokens: {start_tokens})))";

/// Other strategies' counts: (field, strategy with `{x}` for it).
const STRATEGIES: &[(&str, &str)] = &[
    ("nsga2.population", "Nsga2(population: {x}, generations: 2)"),
    (
        "nsga2.generations",
        "Nsga2(population: 8, generations: {x})",
    ),
    ("random.n", "Random(n: {x})"),
    (
        "surrogate.screen",
        "EvoPress(preset: Sparsity, generations: Some(2), offspring: Some(2), stages: Some([(1, 32)]), surrogate: (screen: {x}))",
    ),
    (
        "surrogate.explore",
        "EvoPress(preset: Sparsity, generations: Some(2), offspring: Some(2), stages: Some([(1, 32)]), surrogate: (explore: {x}))",
    ),
    (
        "start.Random",
        "EvoPress(preset: Sparsity, generations: Some(2), offspring: Some(2), stages: Some([(1, 32)]), start: Some(Best(of: [Random({x})], tokens: 32)))",
    ),
];

const DEFAULTS: &[(&str, &str)] = &[
    ("held_out_tokens", "128"),
    ("held_out_context", "64"),
    ("generations", "2"),
    ("offspring", "2"),
    ("survivors", "2"),
    ("stage_tokens", "32"),
    ("max_flips", "2"),
    ("candidates", "2"),
    ("start_tokens", "32"),
    ("top_k", "8"),
    ("seq_len", "32"),
    ("tokens", "64"),
    ("batch_size", "2"),
    ("seed", "3"),
    ("sequences", "2"),
    ("db_seq_len", "32"),
    ("db_seed", "0"),
    ("held_out", "1"),
    ("target", "0.5"),
    ("step_fraction", "0.2"),
    ("max_sparsity", "0.9"),
    ("max_levels", "1"),
];

const FLOATS: &[&str] = &[
    "target",
    "step_fraction",
    "max_sparsity",
    "surrogate.explore",
];

fn fill(template: &str, name: &str, field: &str, value: &str) -> String {
    let strategy = STRATEGIES
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(EVOPRESS.to_string(), |(_, s)| s.replace("{x}", value));
    let mut s = template
        .replace("{name}", name)
        .replace("{strategy}", &strategy);
    for (k, v) in DEFAULTS {
        let v = if *k == field { value } else { v };
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// Write the case `name` (the experiment and its database, `field` set to
/// `value`) and run it; a run past `limit` is a hang.
fn run(
    dir: &Path,
    name: &str,
    field: &str,
    value: &str,
    limit: Duration,
) -> (Option<bool>, String) {
    std::fs::write(
        dir.join(format!("{name}.ron")),
        fill(EXPERIMENT, name, field, value),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{name}-db.ron")),
        fill(DATABASE, name, field, value),
    )
    .unwrap();
    let mut child = bin()
        .current_dir(dir)
        .args(["run", &format!("{name}.ron")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (Some(status.success()), err);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return (None, String::new());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_numeric_config_field_at_its_extremes_gives_a_run_or_a_located_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let mut failures = Vec::new();
    let mut outcomes = (0, 0);
    // The templates themselves run, so the errors below come from the
    // values, not from a misspelt config.
    for (field, value) in [
        ("seed", "3"),
        ("nsga2.population", "8"),
        ("nsga2.generations", "2"),
        ("random.n", "2"),
        ("surrogate.screen", "4"),
        ("surrogate.explore", "0.5"),
        ("start.Random", "2"),
    ] {
        let name = format!("valid-{}", field.replace('.', "-"));
        let (status, err) = run(d, &name, field, value, Duration::from_secs(120));
        assert_eq!(status, Some(true), "{field}: {value}: {err}");
    }
    let fields = DEFAULTS.iter().chain(STRATEGIES).map(|(f, _)| *f);
    for field in fields {
        let values: &[&str] = if FLOATS.contains(&field) {
            &["0.0", "1.0", "NaN", "inf", "-inf", "1e308", "-1.0"]
        } else {
            &["0", "1", "4294967296", "18446744073709551615", "-1"]
        };
        for (i, value) in values.iter().enumerate() {
            let name = format!("{}-{i}", field.replace('.', "-"));
            let (status, err) = run(d, &name, field, value, Duration::from_secs(60));
            let case = format!("{field}: {value}");
            match status {
                None => failures.push(format!("{case}: still running after 60 s")),
                Some(true) => outcomes.0 += 1,
                Some(false) => {
                    outcomes.1 += 1;
                    if err.contains("panicked") || err.contains("overflow") {
                        failures.push(format!("{case}: panicked: {err}"));
                    } else if !err.contains(&format!("{name}.ron:"))
                        && !err.contains(&format!("{name}-db.ron:"))
                    {
                        failures.push(format!("{case}: error without a config location: {err}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The extremes both run and fail: the test sees both outcomes.
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
}
