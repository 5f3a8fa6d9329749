//! The `evocomp` binary's contracts: output lines, backends, and clear errors.

use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn evocomp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evocomp"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn root() -> PathBuf {
    manifest_dir().join("../..")
}

/// A tiny random model and a text of plain bytes (one token per byte).
fn tiny(dir: &Path) -> (String, String) {
    let cfg = tiny_config();
    let model = dir.join("tiny.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 21), &model).unwrap();
    let text = dir.join("text.txt");
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    ];
    let body: Vec<&str> = (0..400)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect();
    std::fs::write(&text, body.join(" ")).unwrap();
    (model.display().to_string(), text.display().to_string())
}

fn perplexity_line(o: &Output) -> f64 {
    assert!(o.status.success(), "failed: {}", stderr(o));
    let out = stdout(o);
    let line = out
        .lines()
        .find(|l| l.starts_with("perplexity: "))
        .unwrap_or_else(|| panic!("no `perplexity: X` line in {out:?}"));
    line["perplexity: ".len()..].trim().parse().unwrap()
}

#[test]
fn inspect_prints_the_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tiny(dir.path());
    let o = evocomp(&["inspect", "--model", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "layers: 2",
        "hidden: 32",
        "heads: 4",
        "kv heads: 2",
        "vocab: 260",
        "parameters: ",
        "F32: 20",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn perplexity_prints_its_line_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let o = evocomp(&[
        "perplexity",
        "--model",
        &model,
        "--text",
        &text,
        "--tokens",
        "256",
        "--context",
        "64",
        "--backend",
        "cpu",
    ]);
    let p = perplexity_line(&o);
    assert!(p.is_finite() && p > 1.0, "{p}");
}

/// Nothing but evocomp's own lines reaches the terminal when nothing is
/// wrong: with XDG_RUNTIME_DIR unset (servers, containers), probing for a GPU
/// through Mesa's Vulkan drivers used to print "error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment." twice.
#[test]
fn the_gpu_probe_prints_nothing_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let o = Command::new(env!("CARGO_BIN_EXE_evocomp"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUST_LOG")
        .args([
            "perplexity",
            "--model",
            &model,
            "--text",
            &text,
            "--tokens",
            "128",
            "--context",
            "64",
        ])
        .output()
        .expect("the binary runs");
    perplexity_line(&o);
    let err = stderr(&o);
    for line in err.lines() {
        assert!(
            line.starts_with("backend: ") || line.contains(" predictions in "),
            "a line evocomp did not write: {line:?}\n{err}"
        );
    }
}

/// `evocomp inspect | head`: a reader that goes away ends the command
/// quietly (SIGPIPE, as for any Unix tool), never a panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tiny(dir.path());
    for args in [
        vec!["inspect", "--model", &model, "--tensors"],
        vec!["inspect", "--model", &model],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_evocomp"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command prints anything.
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(13),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

/// The wgpu path against the CPU backend. Without a GPU this runs on Mesa's
/// lavapipe (CI installs mesa-vulkan-drivers); it fails if no Vulkan adapter exists.
#[test]
fn wgpu_and_cpu_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let args = |b: &'static str| {
        vec![
            "perplexity",
            "--model",
            &model,
            "--text",
            &text,
            "--tokens",
            "256",
            "--context",
            "64",
            "--backend",
            b,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |b| {
        let a = args(b);
        evocomp(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let cpu = perplexity_line(&run("cpu"));
    let gpu_out = run("wgpu");
    assert!(
        stderr(&gpu_out).contains("backend: wgpu"),
        "{}",
        stderr(&gpu_out)
    );
    let gpu = perplexity_line(&gpu_out);
    assert!(((cpu - gpu) / cpu).abs() < 1e-3, "cpu {cpu} vs wgpu {gpu}");
    // Half-precision weights on wgpu: a perplexity close to f32's, or a
    // clear refusal where the device cannot compute in that type (lavapipe
    // has no bf16), never the garbage computing in it anyway gives.
    for dtype in ["f16", "bf16"] {
        let mut a = args("wgpu");
        a.extend(["--dtype".to_string(), dtype.to_string()]);
        let o = evocomp(&a.iter().map(String::as_str).collect::<Vec<_>>());
        if o.status.success() {
            let half = perplexity_line(&o);
            assert!(
                ((cpu - half) / cpu).abs() < 0.02,
                "{dtype}: cpu {cpu} vs {half}"
            );
        } else {
            let e = stderr(&o);
            assert!(
                e.contains(&format!("weights in {dtype} are not supported"))
                    && !e.contains("panicked"),
                "{dtype}: {e}"
            );
        }
    }
}

#[test]
fn bad_model_files_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = dir.path().join("foreign.gguf");
    std::fs::write(&foreign, b"PK\x03\x04 this is a zip file, not a model").unwrap();
    for (path, what) in [(&truncated, "truncated"), (&foreign, "not a gguf file")] {
        let p = path.display().to_string();
        for args in [
            vec!["inspect", "--model", &p],
            vec![
                "perplexity",
                "--model",
                &p,
                "--text",
                &text,
                "--backend",
                "cpu",
            ],
        ] {
            let o = evocomp(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                err.contains(&p) && err.to_lowercase().contains(what),
                "{args:?}: {err}"
            );
        }
    }
    let o = evocomp(&[
        "perplexity",
        "--model",
        &model,
        "--text",
        "/nonexistent/text.txt",
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("/nonexistent/text.txt"), "{err}");
    // The cause is said once, not once per layer of the error chain.
    let error_line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert_eq!(error_line.matches("os error 2").count(), 1, "{err}");
    // Too few tokens for the request.
    let o = evocomp(&[
        "perplexity",
        "--model",
        &model,
        "--text",
        &text,
        "--tokens",
        "100000",
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tokens"), "{}", stderr(&o));
}

/// The README's main job on the real model (after scripts/fetch-assets.sh).
#[test]
fn real_model_perplexity_matches_the_reference() {
    let model = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = root().join("assets/text/sotu/eval/2021_joseph_r_biden_d.txt");
    assert!(model.is_file(), "run scripts/fetch-assets.sh first");
    let o = evocomp(&[
        "perplexity",
        "--model",
        &model.display().to_string(),
        "--text",
        &text.display().to_string(),
        "--backend",
        "cpu",
    ]);
    let p = perplexity_line(&o);
    // PyTorch + transformers in float32: scripts/reference/make_fixtures.py.
    let reference = 20.204408133469798;
    assert!(
        ((p - reference) / reference).abs() < 0.005,
        "{p} vs {reference}"
    );
}

#[test]
fn db_build_info_verify_and_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let out = dir.path().join("db");
    let config = dir.path().join("db.ron");
    std::fs::write(
        &config,
        format!(
            r#"// A SparseGPT database of the tiny model.
DatabaseSpec(
    model: "{model}",
    output: "{}",
    calibration: (text: "{text}", sequences: 4, seq_len: 64, seed: 1),
    compression: Sparsity(method: SparseGpt, target: 0.5, step_fraction: 0.1, max_levels: 2),
)"#,
            out.display()
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let o = evocomp(&["db", "build", &cfg, "--backend", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("built 14 units, 0 already built"),
        "{}",
        stdout(&o)
    );
    let o = evocomp(&["db", "build", &cfg, "--backend", "cpu"]);
    assert!(
        stdout(&o).contains("built 0 units, 14 already built"),
        "{}",
        stdout(&o)
    );
    let d = out.display().to_string();
    let o = evocomp(&["db", "info", &d, "--levels"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = stdout(&o);
    assert!(
        info.contains("units: 14 (14 built, complete)")
            && info.contains("L01.down")
            && info.contains("error"),
        "{info}"
    );
    let o = evocomp(&["db", "verify", &d]);
    assert!(
        o.status.success() && stdout(&o).starts_with("ok"),
        "{}",
        stderr(&o)
    );

    // An unknown field: file, line and column.
    let typo = dir.path().join("typo.ron");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("seed: 1", "sead: 1"),
    )
    .unwrap();
    let o = evocomp(&["db", "build", &typo.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:5:", typo.display())) && err.contains("sead"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The crate's folder, read when the test runs (cargo sets it): a test
/// binary built from another checkout sharing the target folder (CI's
/// clone) must not point at that checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `bench` times every dtype asked for and scores each against the f32
/// model: f32's KL is exactly 0, a half precision's is small but not 0.
/// (What it checks is the report, not the speed.)
#[test]
fn bench_reports_every_dtype_against_the_f32_model() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = tiny(dir.path());
    let json = dir.path().join("bench.json");
    let json_s = json.display().to_string();
    let o = evocomp(&[
        "bench",
        "--model",
        &model,
        "--text",
        &text,
        "--sequences",
        "2",
        "--seq-len",
        "32",
        "--repeats",
        "1",
        "--backends",
        "cpu",
        "--dtypes",
        "f32,bf16",
        "--json",
        &json_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figures = r["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 2, "{r}");
    assert!(figures[0]["name"].as_str().unwrap().contains("f32"));
    assert_eq!(figures[0]["kl"].as_f64().unwrap(), 0.0);
    let half = figures[1]["kl"].as_f64().unwrap();
    assert!(half > 0.0 && half < 1e-2, "bf16 KL {half}");
    for f in figures {
        assert!(f["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(f["ppl_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(stdout(&o).contains("perplexity forward"), "{}", stdout(&o));
}
