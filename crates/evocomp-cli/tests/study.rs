//! Studies end to end on a small random model: every strategy runs, a study
//! killed with SIGKILL (and stopped with SIGINT) again and again resumes to
//! exactly the uninterrupted result without evaluating anything twice, a
//! finished study re-run evaluates nothing, and a second process is refused.

mod common;

use common::*;
use evocomp_model::testing::tiny_config;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_strategy_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let uniform = {
        experiment(d, "uniform", "grid", "UniformLevel(0)", "Uniform");
        ok(&evocomp(d, &["run", "uniform.ron", "--no-shared-cache"]));
        summary(d, "results/uniform")
    };
    let u_fit = uniform["best"]["search_fitness"].as_f64().unwrap();
    let u_cost = uniform["best"]["cost"].as_u64().unwrap();
    for (name, db, budget, strategy) in [
        ("evo", "grid", "UniformLevel(0)", EVO),
        (
            "evo-published",
            "grid",
            "UniformLevel(0)",
            "EvoPress(preset: Sparsity, generations: Some(40), offspring: Some(8), stages: Some([(2, 64), (1, 128)]), start: Some(Random))",
        ),
        ("random", "grid", "UniformLevel(0)", "Random(n: 6)"),
        ("owl", "grid", "UniformLevel(0)", "Owl(lambda: 0.1, m: 3.0)"),
        (
            "greedy",
            "grid",
            "UniformLevel(0)",
            "Greedy(max_steps: 3, tries: 3)",
        ),
        ("dp", "grid", "UniformLevel(0)", "Dp(max_states: 100000)"),
        (
            "nsga",
            "grid",
            "UniformLevel(-2)",
            "Nsga2(population: 8, generations: 4)",
        ),
        ("shortgpt", "blocks", "Dropped(1)", "ShortGpt"),
        ("shortgpt-sub", "subblocks", "Dropped(1)", "ShortGpt"),
        (
            "depth-sub",
            "subblocks",
            "Dropped(1)",
            "EvoPress(preset: Depth, generations: Some(3), stages: Some([(2, 64), (1, 128)]), start: Some(BestOfRandom(candidates: 4, tokens: 64)))",
        ),
        (
            "depth",
            "blocks",
            "Dropped(1)",
            "EvoPress(preset: Depth, generations: Some(3), stages: Some([(2, 64), (1, 128)]))",
        ),
        (
            "evolkv",
            "kv",
            "UniformLevel(1)",
            "EvolKv(group_size: 2, generations: 2)",
        ),
    ] {
        experiment(d, name, db, budget, strategy);
        ok(&evocomp(
            d,
            &["run", &format!("{name}.ron"), "--no-shared-cache"],
        ));
        let s = summary(d, &format!("results/{name}"));
        // The status counts the strategy's own steps (generations) against their total.
        let status: serde_json::Value = serde_json::from_slice(
            &std::fs::read(d.join(format!("results/{name}/status.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            status["progress"], status["total_steps"],
            "{name}: a finished study is at its last step: {status}"
        );
        let best = &s["best"];
        assert!(best["held_out_kl"].as_f64().unwrap() >= 0.0, "{name}: {s}");
        // Each held-out window's KL is kept (for intervals); windows are of
        // equal length, so their mean is the KL.
        let w: Vec<f64> = serde_json::from_value(best["held_out_kl_windows"].clone()).unwrap();
        assert!(w.len() >= 2, "{name}: {w:?}");
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let kl = best["held_out_kl"].as_f64().unwrap();
        assert!(
            (mean - kl).abs() <= 1e-9 * kl.max(1e-3),
            "{name}: {mean} vs {kl}"
        );
        assert!(
            best["held_out_perplexity"].as_f64().unwrap() > 1.0,
            "{name}"
        );
        let cost = best["cost"].as_u64().unwrap();
        match name {
            "nsga" => {
                let front = s["front"].as_array().unwrap();
                assert!(!front.is_empty(), "{s}");
                let limit = s["budget"]["AtMost"].as_u64().unwrap();
                for m in front {
                    assert!(m["cost"].as_u64().unwrap() <= limit);
                }
            }
            "shortgpt" | "depth" => {
                let g: Vec<i64> = serde_json::from_value(best["genome"].clone()).unwrap();
                assert_eq!(g.iter().sum::<i64>(), 1, "one block dropped: {g:?}");
            }
            "shortgpt-sub" | "depth-sub" => {
                // Units alternate attention, MLP: one of each type dropped.
                let g: Vec<i64> = serde_json::from_value(best["genome"].clone()).unwrap();
                let dropped = |t: usize| g.iter().skip(t).step_by(2).sum::<i64>();
                assert_eq!((dropped(0), dropped(1)), (1, 1), "{name}: {g:?}");
            }
            "evolkv" => {
                assert!(cost <= s["budget"]["AtMost"].as_u64().unwrap(), "{s}");
            }
            _ => {
                // Sparsity strategies keep the uniform total exactly.
                assert_eq!(cost, u_cost, "{name}");
            }
        }
        if name == "evo-published" {
            assert!(
                best["search_fitness"].as_f64().unwrap() <= u_fit,
                "EvoPress as published starts from uniform and never gets worse"
            );
        }
        if name == "evo" {
            // The default ends with the final choice: its standard error is
            // in the last step's metrics, and the result is its lowest mean.
            let last = s["history"].as_array().unwrap().last().unwrap();
            let metric = |k: &str| last["metrics"][k].as_f64();
            let se = metric("final_standard_error").expect("the final choice ran");
            assert!(se.is_finite() && se > 0.0, "{last}");
            assert_eq!(
                metric("final_fitness"),
                best["search_fitness"].as_f64(),
                "{last}"
            );
        }
    }
    // `status` of a finished study.
    let out = ok(&evocomp(d, &["status", "results/evo"]));
    assert!(out.contains("finished"), "{out}");
    // `compare`: the same windows of two named texts for every study; the
    // first is the reference, a study against itself is a tie at 0.
    let out = ok(&evocomp(
        d,
        &[
            "compare",
            "results/uniform",
            "results/dp",
            "results/uniform",
            "--text",
            "a=text.txt",
            "--text",
            "b=text.txt",
            "--tokens",
            "256",
            "--context",
            "64",
            "--resamples",
            "500",
            "--backend",
            "cpu",
            "--json",
            "compare.json",
        ],
    ));
    assert!(
        out.contains("**a** (4 windows") && out.contains("**pooled** (8 windows"),
        "{out}"
    );
    assert!(
        out.contains("| +0.0000 [+0.0000, +0.0000] | tie |"),
        "{out}"
    );
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("compare.json")).unwrap()).unwrap();
    assert_eq!(c["scores"].as_array().unwrap().len(), 2);
    assert_eq!(c["entries"][1]["strategy"], "DP");
    let e = evocomp(d, &["compare", "results/uniform", "--text", "text.txt"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("NAME=PATH"));
}

#[test]
fn killed_studies_resume_to_the_same_result_without_repeating_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    experiment(d, "ref", "grid", "UniformLevel(0)", EVO);
    ok(&evocomp(d, &["run", "ref.ron", "--no-shared-cache"]));
    let reference = summary(d, "results/ref");
    let ref_journal = journal(&d.join("results/ref"));
    let total_steps = reference["steps"].as_u64().unwrap();

    // The same experiment under another name, interrupted again and again:
    // each time after a few more steps (read from status.json), plus a few
    // milliseconds so that some interruptions land inside an evaluation or a commit.
    experiment(d, "killed", "grid", "UniformLevel(0)", EVO);
    let study = d.join("results/killed");
    let step_now = || study_step(&study);
    let mut interruptions = 0;
    let mut attempt = 0u64;
    let mut finished = false;
    while interruptions < 6 && attempt < 40 {
        attempt += 1;
        let target = step_now() + 1 + (attempt * 7) % (total_steps / 12).max(2);
        let mut child = bin()
            .current_dir(d)
            .args(["run", "killed.ron", "--no-shared-cache"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while step_now() < target
            && child.try_wait().unwrap().is_none()
            && t0.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis((attempt * 3) % 7));
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        if attempt.is_multiple_of(3) {
            // Ctrl-C, or SIGTERM as a job scheduler sends it: a clean stop
            // at the next trial boundary.
            let signal = if attempt.is_multiple_of(2) {
                "-TERM"
            } else {
                "-INT"
            };
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            let st = child.wait().unwrap();
            assert!(
                st.code() == Some(130) || st.success(),
                "{signal} exit status {st:?}"
            );
        } else {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        interruptions += 1;
    }
    assert!(
        interruptions >= 5,
        "only {interruptions} interruptions before the run finished ({finished})"
    );
    ok(&evocomp(
        d,
        &["resume", "results/killed", "--no-shared-cache"],
    ));
    let resumed = summary(d, "results/killed");
    for field in ["best", "front", "steps", "evaluations"] {
        assert_eq!(
            resumed[field], reference[field],
            "{field} differs after resume"
        );
    }
    // Every evaluation was computed exactly once.
    let j = journal(&study);
    let c = computed(&j);
    let unique: HashSet<_> = c.iter().cloned().collect();
    assert_eq!(unique.len(), c.len(), "an evaluation was computed twice");
    assert_eq!(c.len(), computed(&ref_journal).len());

    // Re-running the finished study's config evaluates nothing.
    let before = journal(&study).len();
    let o = evocomp(d, &["run", "killed.ron", "--no-shared-cache"]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 new evaluations"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(journal(&study).len(), before);

    // Read-only commands on a finished study write nothing (with the disk
    // full they used to fail on the store's writes).
    let snapshot = || -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut files = Vec::new();
        files_under(&study, &mut files);
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let m = std::fs::metadata(&f).unwrap();
                (f, m.len(), m.modified().unwrap())
            })
            .collect()
    };
    let before = snapshot();
    std::thread::sleep(Duration::from_millis(20));
    ok(&evocomp(d, &["status", "results/killed"]));
    ok(&evocomp(d, &["best", "results/killed"]));
    ok(&evocomp(d, &["best", "results/killed", "--json"]));
    ok(&evocomp(
        d,
        &["report", "results/killed", "--out", "elsewhere"],
    ));
    assert_eq!(
        snapshot(),
        before,
        "a read-only command wrote into the study"
    );

    // summary.json is derived from the store: lost, the study is still
    // finished for every command, and `resume` writes it again.
    let file = study.join("summary.json");
    let original = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(ok(&evocomp(d, &["status", "results/killed"])).starts_with("finished"));
    assert_eq!(summary(d, "results/killed"), resumed);
    ok(&evocomp(d, &["report", "results/killed", "--out", "rep"]));
    ok(&evocomp(
        d,
        &["resume", "results/killed", "--no-shared-cache"],
    ));
    assert_eq!(std::fs::read(&file).unwrap(), original);
}

#[test]
fn a_later_study_reuses_the_shared_fitness_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let new_evals = |o: &Output| -> String {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        err.lines()
            .find(|l| l.contains("new evaluations"))
            .unwrap_or_else(|| panic!("{err}"))
            .to_string()
    };
    experiment(d, "first", "grid", "UniformLevel(0)", "Random(n: 4)");
    let o = evocomp(d, &["run", "first.ron"]);
    ok(&o);
    // 4 candidates and the best one's held-out measurement.
    assert!(
        new_evals(&o).starts_with("5 new evaluations"),
        "{}",
        new_evals(&o)
    );
    // Another study asking for some of the same candidates on the same samples
    // evaluates nothing.
    experiment(d, "second", "grid", "UniformLevel(0)", "Random(n: 3)");
    let o = evocomp(d, &["run", "second.ron"]);
    ok(&o);
    let j = journal(&d.join("results/second"));
    assert_eq!(j.len(), 3);
    assert!(j.iter().all(|t| t.cached), "{j:?}");
    // Without the shared cache, the same study evaluates again.
    experiment(d, "third", "grid", "UniformLevel(0)", "Random(n: 3)");
    let o = evocomp(d, &["run", "third.ron", "--no-shared-cache"]);
    ok(&o);
    assert!(
        new_evals(&o).starts_with("4 new evaluations"),
        "{}",
        new_evals(&o)
    );
    // Weights in bf16 give other fitness values: nothing is served from the
    // f32 cache, and the results are close to the f32 ones but not equal.
    let p = experiment(d, "fourth", "grid", "UniformLevel(0)", "Random(n: 3)");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace("batch_size: 2)", "batch_size: 2, dtype: Bf16)"),
    )
    .unwrap();
    let o = evocomp(d, &["run", "fourth.ron"]);
    ok(&o);
    assert!(
        new_evals(&o).starts_with("4 new evaluations"),
        "{}",
        new_evals(&o)
    );
    let fitness = |study: &str| -> Vec<(Vec<i64>, f64)> {
        journal(&d.join("results").join(study))
            .iter()
            .map(|t| (t.genome.clone(), t.fitness))
            .collect()
    };
    let (f32s, halves) = (fitness("second"), fitness("fourth"));
    assert_eq!(f32s.len(), halves.len());
    for ((g, a), (h, b)) in f32s.iter().zip(&halves) {
        assert_eq!(g, h);
        assert!(
            a != b && (a - b).abs() < 0.05 * a.abs().max(1e-3),
            "{a} vs {b}"
        );
    }
}

#[test]
fn a_second_process_is_refused_with_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    experiment(d, "busy", "grid", "UniformLevel(0)", EVO);
    let mut child = bin()
        .current_dir(d)
        .args(["run", "busy.ron", "--no-shared-cache"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = d.join("results/busy/status.json");
    let t0 = Instant::now();
    while !status.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = evocomp(d, &["run", "busy.ron", "--no-shared-cache"]);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().unwrap();
    if still_running {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("study is in use by pid {}", child.id())),
            "{err}"
        );
    }
    assert!(still_running, "the first run finished before the check");
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let p = experiment(d, "bad", "grid", "UniformLevel(0)", EVO);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("seed: 11", "seeed: 11")).unwrap();
    let o = evocomp(d, &["run", "bad.ron"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.ron:10:") && err.contains("seeed"),
        "{err}"
    );
    // An impossible budget, found once the database's levels are known.
    experiment(d, "bad2", "grid", "UniformLevel(7)", "Uniform");
    let o = evocomp(d, &["run", "bad2.ron"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("bad2.ron:6:") && err.contains("level 7"),
        "{err}"
    );
    // Budgets that leave no block of the model, at the budget's line, before
    // anything is evaluated (they used to run and fail without a location,
    // or measure a model with no blocks).
    for (i, budget) in [
        "Dropped(4)",
        "AtMost(1)",
        "Fraction(0.000001)",
        "Exact(123)",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("nothing{i}");
        experiment(d, &name, "blocks", budget, "ShortGpt");
        let o = evocomp(d, &["run", &format!("{name}.ron")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success()
                && err.contains(&format!("{name}.ron:6:"))
                && err.contains("no block"),
            "{budget}: {err}"
        );
    }
    // A strategy for another kind of database, at the strategy's line.
    experiment(d, "bad4", "blocks", "Dropped(1)", "EvolKv(group_size: 2)");
    let o = evocomp(d, &["run", "bad4.ron"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("bad4.ron:7:") && err.contains("KvBudget"),
        "{err}"
    );
    // Settings the model makes impossible, found before anything is evaluated.
    let max_context = tiny_config().max_context;
    let long = format!("seq_len: {}, tokens: {}", max_context + 1, 4 * max_context);
    let held = format!("held_out_context: {}", 2 * max_context);
    for (from, to, at, says) in [
        ("TopK(16)", "TopK(1000000)", "bad3.ron:8:", "vocabulary"),
        (
            "seq_len: 32, tokens: 64",
            long.as_str(),
            "bad3.ron:8:",
            "context",
        ),
        (
            "held_out_context: 64",
            held.as_str(),
            "bad3.ron:5:",
            "context",
        ),
    ] {
        let p = experiment(d, "bad3", "grid", "UniformLevel(0)", "Uniform");
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace(from, to).replace(
            "held_out_tokens: 256",
            &format!("held_out_tokens: {}", 4 * max_context),
        );
        std::fs::write(&p, text).unwrap();
        let o = evocomp(d, &["run", "bad3.ron"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(at) && err.contains(says),
            "{to}: {err}"
        );
        assert!(!d.join("results/bad3/summary.json").exists());
        std::fs::remove_dir_all(d.join("results/bad3")).ok();
    }
}

/// The perplexity `evocomp perplexity` prints for a model folder.
fn perplexity_of(dir: &Path, model: &str) -> f64 {
    let out = ok(&evocomp(
        dir,
        &[
            "perplexity",
            "--model",
            model,
            "--text",
            "text.txt",
            "--tokens",
            "256",
            "--context",
            "64",
            "--backend",
            "cpu",
        ],
    ));
    out.lines()
        .find_map(|l| l.strip_prefix("perplexity: "))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_sweep_runs_every_budget_and_exports_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // A sweep over three depth budgets: one study each, one shared cache.
    let p = experiment(d, "drop", "blocks", "Dropped(1)", "ShortenedLlama");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace(
            "budget: Dropped(1)",
            "sweep: [Dropped(1), Dropped(2), Dropped(3)]",
        ),
    )
    .unwrap();
    let o = evocomp(d, &["run", "drop.ron"]);
    ok(&o);
    let mut dropped = Vec::new();
    for (n, label) in [(1, "dropped1"), (2, "dropped2"), (3, "dropped3")] {
        let s = summary(d, &format!("results/drop/{label}"));
        let g: Vec<i64> = serde_json::from_value(s["best"]["genome"].clone()).unwrap();
        assert_eq!(g.iter().sum::<i64>(), n, "{label}: {g:?}");
        dropped.push(g);
    }
    // Leave-one-out scores are one ranking: each budget drops a superset.
    for w in dropped.windows(2) {
        assert!(w[0].iter().zip(&w[1]).all(|(a, b)| a <= b), "{dropped:?}");
    }
    // The single-block probes were computed once, by the first budget.
    let later = journal(&d.join("results/drop/dropped2"));
    assert!(
        later.iter().filter(|t| t.probe).all(|t| t.cached),
        "{later:?}"
    );
    // status / best / report take the sweep folder.
    assert!(ok(&evocomp(d, &["status", "results/drop"])).contains("dropped3"));
    ok(&evocomp(d, &["report", "results/drop"]));
    let md = std::fs::read_to_string(d.join("results/drop/report.md")).unwrap();
    for label in ["dropped1", "dropped2", "dropped3"] {
        assert!(md.contains(&format!("drop-{label}")), "{md}");
    }

    // Export: a sweep needs --budget; the exported model loads and its
    // perplexity is the one the study measured.
    let o = evocomp(d, &["export", "results/drop", "--out", "x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("dropped2"));
    ok(&evocomp(
        d,
        &[
            "export",
            "results/drop",
            "--budget",
            "dropped2",
            "--out",
            "exported-depth",
        ],
    ));
    let s = summary(d, "results/drop/dropped2");
    let want = s["best"]["held_out_perplexity"].as_f64().unwrap();
    let info = ok(&evocomp(d, &["inspect", "--model", "exported-depth"]));
    assert!(info.contains("layers: 2"), "{info}");
    let got = perplexity_of(d, "exported-depth");
    assert!(
        (got - want).abs() / want < 1e-3,
        "exported {got} vs study {want}"
    );
    let levels = std::fs::read_to_string(d.join("exported-depth/levels.txt")).unwrap();
    assert_eq!(levels.lines().filter(|l| !l.starts_with('#')).count(), 4);

    // A sparsity configuration (non-uniform, from DP) round-trips too.
    experiment(d, "dp", "grid", "UniformLevel(0)", "Dp(max_states: 100000)");
    ok(&evocomp(d, &["run", "dp.ron"]));
    ok(&evocomp(
        d,
        &["export", "results/dp", "--out", "exported-dp"],
    ));
    let want = summary(d, "results/dp")["best"]["held_out_perplexity"]
        .as_f64()
        .unwrap();
    let got = perplexity_of(d, "exported-dp");
    assert!(
        (got - want).abs() / want < 1e-3,
        "exported {got} vs study {want}"
    );
    let ron_levels = std::fs::read_to_string(d.join("exported-dp/levels.ron")).unwrap();
    assert!(ron_levels.contains("(\"L00.q\", "), "{ron_levels}");
    // In bf16: half the bytes, the sparse zeros kept, the perplexity close.
    ok(&evocomp(
        d,
        &[
            "export",
            "results/dp",
            "--out",
            "exported-dp-bf16",
            "--dtype",
            "bf16",
        ],
    ));
    let size = |m: &str| {
        std::fs::metadata(d.join(m).join("model.safetensors"))
            .unwrap()
            .len()
    };
    let ratio = size("exported-dp-bf16") as f64 / size("exported-dp") as f64;
    // (The tiny model's header is a visible part of the file.)
    assert!((0.49..0.53).contains(&ratio), "bf16 / f32 size {ratio}");
    let cfg = std::fs::read_to_string(d.join("exported-dp-bf16/config.json")).unwrap();
    assert!(cfg.contains("\"bfloat16\""), "{cfg}");
    let zeros = |m: &str| -> usize {
        let w = evocomp_model::load_model(d.join(m)).unwrap();
        let w = w.weights().unwrap();
        w.layers
            .iter()
            .flat_map(|l| l.linears.iter())
            .map(|t| t.data.iter().filter(|v| **v == 0.0).count())
            .sum()
    };
    assert_eq!(zeros("exported-dp-bf16"), zeros("exported-dp"));
    let half = perplexity_of(d, "exported-dp-bf16");
    assert!(
        half != got && (half - got).abs() / got < 0.02,
        "bf16 {half} vs f32 {got}"
    );

    // Export never writes where it would destroy something: a folder that
    // is not empty (unless --replace), and never the study's own inputs.
    let err = |args: &[&str]| -> String {
        let o = evocomp(d, args);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(&["export", "results/dp", "--out", "exported-dp"]);
    assert!(e.contains("not empty") && e.contains("--replace"), "{e}");
    ok(&evocomp(
        d,
        &["export", "results/dp", "--out", "exported-dp", "--replace"],
    ));
    for (out, what) in [
        ("results/dp", "study folder"),
        ("db/grid", "database"),
        (".", "study folder"),
    ] {
        let e = err(&["export", "results/dp", "--out", out, "--replace"]);
        assert!(e.contains(what), "{out}: {e}");
    }
    assert!(d.join("tiny.gguf").is_file() && d.join("db/grid/manifest.json").is_file());
    // --budget names a sweep member or a front member; a single result has neither.
    let e = err(&["export", "results/dp", "--budget", "level-9", "--out", "e2"]);
    assert!(e.contains("neither a sweep nor a front"), "{e}");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else if std::fs::metadata(&p).unwrap().len() > 0 {
            out.push(p);
        }
    }
}

/// A way to damage a file's bytes, and its name.
type Damage = (&'static str, fn(&mut Vec<u8>));

/// One flipped byte, a cut or a zeroed file, in any file a study or its database writes: every
/// command that reads it ends with a clear error or the right result
/// (recovered from what is intact), never a panic and never a wrong result.
#[test]
fn a_flipped_byte_in_any_study_or_database_file_is_never_a_wrong_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    experiment(d, "f", "grid", "UniformLevel(0)", "Random(n: 3)");
    ok(&evocomp(d, &["run", "f.ron"]));
    let reference = summary(d, "results/f");
    let pristine = d.join("pristine");
    copy_tree(&d.join("results"), &pristine.join("results"));
    copy_tree(&d.join("db"), &pristine.join("db"));
    let mut files = Vec::new();
    files_under(&pristine, &mut files);
    assert!(files.len() > 10, "{files:?}");
    let mut outcomes = Vec::new();
    let damages: [Damage; 3] = [
        ("a flipped byte", |b| {
            let at = b.len() / 2;
            b[at] ^= 0x55;
        }),
        ("cut in half", |b| b.truncate(b.len() / 2)),
        ("zeroed", |b| b.iter_mut().for_each(|x| *x = 0)),
    ];
    for (f, (how, damage)) in files
        .iter()
        .flat_map(|f| damages.iter().map(move |d| (f, d)))
    {
        let rel = f.strip_prefix(&pristine).unwrap();
        copy_tree(&pristine.join("results"), &d.join("results"));
        copy_tree(&pristine.join("db"), &d.join("db"));
        let target = d.join(rel);
        let mut bytes = std::fs::read(&target).unwrap();
        damage(&mut bytes);
        std::fs::write(&target, &bytes).unwrap();
        let rel = PathBuf::from(format!("{} ({how})", rel.display()));
        for args in [
            vec!["best", "results/f", "--json"],
            vec!["status", "results/f"],
            vec!["report", "results/f", "--out", "rep"],
            vec!["resume", "results/f"],
            vec!["best", "results/f", "--json"],
            vec!["export", "results/f", "--out", "ex", "--replace"],
        ] {
            let o = evocomp(d, &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                matches!(o.status.code(), Some(0) | Some(1)) && !err.contains("panicked"),
                "{}: {args:?}: {:?}\n{err}",
                rel.display(),
                o.status
            );
            if o.status.success() && args[0] == "best" {
                let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(
                    got,
                    reference,
                    "{}: {args:?}: a wrong result",
                    rel.display()
                );
            }
            if !o.status.success() {
                let last = err.lines().last().unwrap_or_default();
                // It names the study or the damaged file.
                let name = target.file_name().unwrap().to_string_lossy();
                assert!(
                    last.starts_with("error: ")
                        && (last.contains("results/f") || last.contains(name.as_ref())),
                    "{}: {args:?}: {err}",
                    rel.display()
                );
            }
            outcomes.push((rel.display().to_string(), args[0], o.status.success()));
        }
    }
    // Summary files are derived from the store: damaged, they are recovered.
    assert!(
        outcomes
            .iter()
            .filter(|(f, c, _)| f.contains("summary.json") && *c == "best")
            .all(|(_, _, ok)| *ok),
        "{outcomes:?}"
    );
}

#[test]
fn cpu_workers_in_their_own_pools_reach_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    experiment(d, "one", "grid", "UniformLevel(0)", EVO);
    experiment(d, "two", "grid", "UniformLevel(0)", EVO);
    ok(&evocomp(d, &["run", "one.ron", "--no-shared-cache"]));
    ok(&evocomp(
        d,
        &["run", "two.ron", "--no-shared-cache", "--cpu-workers", "2"],
    ));
    let (a, b) = (summary(d, "results/one"), summary(d, "results/two"));
    assert_eq!(a["best"]["genome"], b["best"]["genome"]);
    assert_eq!(a["best"]["search_fitness"], b["best"]["search_fitness"]);
    assert_eq!(a["best"]["held_out_kl"], b["best"]["held_out_kl"]);
    // Both workers took jobs.
    let workers: std::collections::BTreeSet<String> = journal(&d.join("results/two"))
        .iter()
        .filter(|t| !t.cached)
        .map(|t| t.worker.clone())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let o = evocomp(d, &["run", "two.ron", "--cpu-workers", "0"]);
    assert!(!o.status.success());
}

#[test]
fn calibration_text_that_is_the_evaluation_text_is_warned_of() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    // common's experiments calibrate and evaluate on text.txt.
    experiment(d, "same", "grid", "UniformLevel(0)", "Random(n: 1)");
    let o = evocomp(d, &["run", "same.ron"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not held out") && err.contains("text.txt"),
        "{err}"
    );
    // Another evaluation text: no warning.
    std::fs::write(
        d.join("other.txt"),
        std::fs::read(d.join("text.txt")).unwrap(),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(d.join("same.ron"))
        .unwrap()
        .replace("evaluation: \"text.txt\"", "evaluation: \"other.txt\"")
        .replace("name: \"same\"", "name: \"apart\"");
    std::fs::write(d.join("apart.ron"), cfg).unwrap();
    let o = evocomp(d, &["run", "apart.ron"]);
    ok(&o);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("not held out"));
}

#[test]
fn two_builds_of_one_database_at_once_both_end_with_it_built() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let spawn = || {
        bin()
            .current_dir(d)
            .args(["db", "build", "grid.ron"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    // One built every unit, the other waited and found them built.
    let outs = [
        String::from_utf8_lossy(&a.stdout).into_owned(),
        String::from_utf8_lossy(&b.stdout).into_owned(),
    ];
    let idle = outs.iter().filter(|o| o.contains("built 0 units")).count();
    assert_eq!(idle, 1, "{outs:?}");
    ok(&evocomp(d, &["db", "verify", "db/grid"]));
}

#[cfg(unix)]
#[test]
fn an_export_killed_midway_leaves_nothing_the_next_one_keeps_and_odd_folder_names_export() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    experiment(d, "e", "grid", "UniformLevel(0)", "Random(n: 1)");
    ok(&evocomp(d, &["run", "e.ron"]));
    // What a killed export leaves: the staging folder with safetensors'
    // temporary file in it, and a GGUF's temporary file.
    let out = d.join("out");
    std::fs::create_dir_all(out.join(".evocomp-partial")).unwrap();
    std::fs::write(out.join(".evocomp-partial/.tmpAbC123"), vec![0u8; 4096]).unwrap();
    std::fs::write(out.join("model.gguf.tmp"), vec![0u8; 4096]).unwrap();
    ok(&evocomp(
        d,
        &["export", "results/e", "--out", "out", "--replace"],
    ));
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A folder holding only what a killed export left counts as empty.
    let again = d.join("again");
    std::fs::create_dir_all(again.join(".evocomp-partial")).unwrap();
    ok(&evocomp(d, &["export", "results/e", "--out", "again"]));
    // A study in a folder whose name is not UTF-8 exports (its name lossy
    // in evocomp.json).
    let odd = d.join(std::ffi::OsStr::from_bytes(b"res\xff"));
    std::fs::create_dir(&odd).unwrap();
    std::fs::rename(d.join("results/e"), odd.join("e")).unwrap();
    let o = bin()
        .current_dir(d)
        .arg("export")
        .arg(odd.join("e"))
        .arg("--out")
        .arg(odd.join("out"))
        .output()
        .unwrap();
    ok(&o);
    let meta = std::fs::read_to_string(odd.join("out/evocomp.json")).unwrap();
    assert!(meta.contains("res\u{fffd}"), "{meta}");
}

#[test]
fn a_hand_edited_manifest_cost_fails_verify_and_the_study() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    ok(&evocomp(d, &["db", "verify", "db/grid"]));
    // Every cost of the first unit set to 210, as the hostile round did.
    let path = d.join("db/grid/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for l in m["units"][0]["levels"].as_array_mut().unwrap() {
        l["cost"] = 210.into();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    for args in [vec!["db", "verify", "db/grid"], vec!["run", "e.ron"]] {
        if args[0] == "run" {
            experiment(d, "e", "grid", "UniformLevel(0)", "Random(n: 1)");
        }
        let o = evocomp(d, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} accepted it");
        assert!(
            err.contains("manifest.json") && err.contains("costs 210"),
            "{args:?}: {err}"
        );
    }
}

/// The fitness cache key names the model, database, fitness settings (dtype
/// and matmul included), sample and genome, but not the backend: a value
/// computed on the CPU serves a wgpu study and back (README, "Fitness
/// cache"). A study served from the cache repeats the first one's choices
/// bit for bit; computed afresh on the other backend, each value agrees to
/// far below the gaps a search decides on, but not to the last bit.
#[test]
fn the_shared_cache_serves_one_backends_values_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let short = "EvoPress(preset: Sparsity, generations: Some(3), offspring: Some(4), stages: Some([(1, 64)]))";
    let on = |name: &str, backend: &str| {
        let p = experiment(d, name, "grid", "UniformLevel(0)", short);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replace("backend: Cpu", &format!("backend: {backend}")),
        )
        .unwrap();
    };
    on("cpu", "Cpu");
    ok(&evocomp(d, &["run", "cpu.ron"]));
    on("gpu", "Wgpu");
    ok(&evocomp(d, &["run", "gpu.ron"]));
    let cpu = journal(&d.join("results/cpu"));
    let served = journal(&d.join("results/gpu"));
    assert!(!computed(&cpu).is_empty());
    assert!(
        computed(&served).is_empty(),
        "the wgpu study computed {:?}",
        computed(&served)
    );
    let (a, b) = (summary(d, "results/cpu"), summary(d, "results/gpu"));
    same_search(&a, &b);
    // Afresh on wgpu: every value close to the CPU's.
    on("fresh", "Wgpu");
    ok(&evocomp(d, &["run", "fresh.ron", "--no-shared-cache"]));
    let fresh = journal(&d.join("results/fresh"));
    assert!(!computed(&fresh).is_empty());
    let mut compared = 0;
    for t in &fresh {
        if let Some(c) = cpu
            .iter()
            .find(|c| c.sample == t.sample && c.genome == t.genome)
        {
            let rel = ((t.fitness - c.fitness) / c.fitness).abs();
            assert!(
                rel < 1e-4,
                "{:?}: cpu {} wgpu {}",
                t.genome,
                c.fitness,
                t.fitness
            );
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} evaluations in common");
}

fn same_search(a: &serde_json::Value, b: &serde_json::Value) {
    assert_eq!(a["best"]["genome"], b["best"]["genome"]);
    assert_eq!(a["best"]["search_fitness"], b["best"]["search_fitness"]);
}
