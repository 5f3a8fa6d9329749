//! `evocomp kld`: a study's configuration against its base model, computed
//! directly, from a saved base file, and from the export; the saved file
//! is refused for other tokens or when damaged, naming it.

mod common;

use common::{EVO, evocomp, experiment, ok, setup};

/// `evocomp kld ARGS` on the tiny text: 4 windows of 64 tokens, on the CPU.
fn run(d: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut a = vec![
        "kld",
        "--text",
        "text.txt",
        "--context",
        "64",
        "--backend",
        "cpu",
    ];
    a.extend_from_slice(args);
    if !args.contains(&"--tokens") {
        a.extend_from_slice(&["--tokens", "256"]);
    }
    evocomp(d, &a)
}

fn kld(d: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(&run(d, &a))).unwrap()
}

fn close(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!(
        (x - y).abs() <= 1e-6 * y.abs().max(1e-6),
        "{what}: {x} vs {y}"
    );
}

#[test]
fn kld_of_a_study_from_the_model_a_saved_base_and_the_export_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    experiment(d, "evo", "grid", "UniformLevel(1)", EVO);
    ok(&evocomp(d, &["run", "evo.ron"]));
    let direct = kld(
        d,
        &[
            "--base",
            "tiny.gguf",
            "--study",
            "results/evo",
            "--save-base",
            "base.kld",
        ],
    );
    let n = direct["predictions"].as_u64().unwrap();
    assert_eq!(n, 4 * 63, "every window's C-1 predictions");
    let k = direct["kld"]["mean"].as_f64().unwrap();
    assert!(k > 0.0, "a pruned model differs from its base: {direct}");
    assert!(direct["same_top"]["mean"].as_f64().unwrap() < 1.0);
    // The study's held-out perplexity is the model's, on the same windows.
    let s = common::summary(d, "results/evo");
    close(
        &direct["perplexity"]["mean"],
        &s["best"]["held_out_perplexity"],
        "perplexity vs study",
    );

    let saved = kld(d, &["--base-logits", "base.kld", "--study", "results/evo"]);
    ok(&evocomp(d, &["export", "results/evo", "--out", "exported"]));
    let exported = kld(d, &["--base", "tiny.gguf", "--model", "exported"]);
    for other in [&saved, &exported] {
        for key in ["kld_median", "kld_p90", "kld_p99", "kld_max", "delta_p_rms"] {
            close(&other[key], &direct[key], key);
        }
        for key in [
            "kld",
            "perplexity",
            "base_perplexity",
            "same_top",
            "delta_p",
            "ln_ppl_ratio",
        ] {
            close(&other[key]["mean"], &direct[key]["mean"], key);
            close(
                &other[key]["standard_error"],
                &direct[key]["standard_error"],
                key,
            );
        }
    }
    // The base against itself: nothing differs.
    let same = kld(d, &["--base", "tiny.gguf", "--model", "tiny.gguf"]);
    assert!(same["kld"]["mean"].as_f64().unwrap().abs() < 1e-9, "{same}");
    assert_eq!(same["same_top"]["mean"].as_f64(), Some(1.0));

    // A saved base for other tokens, a damaged one, and a foreign file: refused by name.
    let o = run(
        d,
        &[
            "--base-logits",
            "base.kld",
            "--study",
            "results/evo",
            "--tokens",
            "128",
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("base.kld") && e.contains("other tokens"),
        "{e}"
    );
    let bytes = std::fs::read(d.join("base.kld")).unwrap();
    std::fs::write(d.join("cut.kld"), &bytes[..bytes.len() - 4]).unwrap();
    std::fs::write(d.join("text.kld"), b"not a saved base at all").unwrap();
    for (f, why) in [("cut.kld", "partial"), ("text.kld", "not a base")] {
        let o = run(d, &["--base-logits", f, "--model", "tiny.gguf"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && e.contains(f) && e.contains(why),
            "{f}: {e}"
        );
    }
    // Text output names every figure.
    let o = ok(&run(d, &["--base", "tiny.gguf", "--model", "exported"]));
    for word in [
        "perplexity (base)",
        "mean KLD",
        "90%",
        "same top token",
        "Δp",
    ] {
        assert!(o.contains(word), "{word}: {o}");
    }
}
