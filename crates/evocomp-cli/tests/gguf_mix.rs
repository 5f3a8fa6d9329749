//! GGUF quantization mixes end to end on a small random model whose MLP rows
//! take K-quants: llama.cpp's preset as a study, a search at the preset's
//! size and at a bits-per-weight budget, and `export --format gguf` read
//! back by evocomp to the perplexity the study measured.

mod common;

use common::{evocomp, experiment, ok, summary};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use std::path::Path;

/// A 4-layer model with rows of 64 (fallback types) and 256 (ffn_down:
/// K-quants), a text, and a GGUF-types database config.
fn setup(dir: &Path) {
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    cfg.hidden = 64;
    cfg.intermediate = 256;
    cfg.head_dim = 16;
    write_gguf(&cfg, &random_weights(&cfg, 5), &dir.join("tiny.gguf")).unwrap();
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    ];
    let body: Vec<&str> = (0..1500)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect();
    std::fs::write(dir.join("text.txt"), body.join(" ")).unwrap();
    for (name, compression) in [
        (
            "types",
            "GgufTypes(types: [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0])",
        ),
        (
            "grid",
            "Sparsity(method: Magnitude, target: 0.5, max_levels: 2)",
        ),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ron")),
            format!(
                r#"DatabaseSpec(
    model: "tiny.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: {compression},
)"#
            ),
        )
        .unwrap();
    }
}

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

fn err(dir: &Path, args: &[&str]) -> String {
    let o = evocomp(dir, args);
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn presets_searches_and_gguf_exports_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    // llama.cpp's Q4_K_M as a study of its own: one genome, at its own cost.
    let p = experiment(d, "preset", "types", "LlamaCpp(Q4_K_M)", "LlamaCpp(Q4_K_M)");
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    let preset = summary(d, "results/preset");
    assert_eq!(preset["strategy"], "llama.cpp Q4_K_M");
    let preset_cost = preset["best"]["cost"].as_u64().unwrap();
    assert_eq!(preset["budget"]["AtMost"].as_u64(), Some(preset_cost));
    // A search at the preset's size stays within it.
    let evo = "EvoPress(preset: Quantization, generations: Some(6), offspring: Some(6), stages: Some([(2, 64), (1, 128)]))";
    let p = experiment(d, "evo", "types", "LlamaCpp(Q4_K_M)", evo);
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    let s = summary(d, "results/evo");
    assert!(s["best"]["cost"].as_u64().unwrap() <= preset_cost);
    // Warm-started from the preset: the search's first parent is the preset.
    let warm = "EvoPress(preset: Quantization, generations: Some(2), offspring: Some(4), stages: Some([(2, 64), (1, 128)]), start: Some(Best(of: [Given(\"Q4_K_M\")], tokens: 64)))";
    let p = experiment(d, "warm", "types", "LlamaCpp(Q4_K_M)", warm);
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    let w = summary(d, "results/warm");
    assert_eq!(w["history"][0]["best_genome"], preset["best"]["genome"]);
    assert!(w["best"]["cost"].as_u64().unwrap() <= preset_cost);
    let p = experiment(
        d,
        "warm-bad",
        "types",
        "LlamaCpp(Q4_K_M)",
        &warm.replace("\"Q4_K_M\"", "\"Q9\""),
    );
    let e = err(d, &["run", p.to_str().unwrap()]);
    assert!(
        e.contains("strategy.start")
            && e.contains("no configuration named Q9")
            && e.contains("Q4_K_M"),
        "{e}"
    );
    // Bits per weight over the units: DP's answer is within 5.0 of them.
    let p = experiment(d, "bpw", "types", "Bpw(5.0)", "Dp(max_states: 100000)");
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    let b = summary(d, "results/bpw");
    let full = b["full_cost"].as_u64().unwrap();
    // The least compressed level is Q8_0 everywhere: 8.5 bits per weight.
    let weights = full as f64 / 8.5;
    let limit = (weights * 5.0).floor() as u64;
    assert_eq!(b["budget"]["AtMost"].as_u64(), Some(limit));
    assert!(b["best"]["cost"].as_u64().unwrap() <= limit);

    // The search's genome as a GGUF: read back by evocomp, the perplexity
    // the study measured on the same windows.
    let out = ok(&evocomp(
        d,
        &[
            "export",
            "results/evo",
            "--format",
            "gguf",
            "--out",
            "evo-gguf",
        ],
    ));
    assert!(out.contains("bits per weight"), "{out}");
    let got = perplexity_of(d, "evo-gguf/model.gguf");
    let want = s["best"]["held_out_perplexity"].as_f64().unwrap();
    assert!(
        (got - want).abs() <= 1e-4 * want,
        "exported {got} vs study {want}"
    );
    let levels = std::fs::read_to_string(d.join("evo-gguf/levels.txt")).unwrap();
    assert!(levels.contains("token_embd"), "{levels}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("evo-gguf/evocomp.json")).unwrap()).unwrap();
    assert_eq!(meta["format"], "gguf");
    assert_eq!(meta["genome"], s["best"]["genome"]);
    // llama-quantize's arguments name each quantized tensor of the file
    // once, by an anchored pattern (llama.cpp searches it in the name), with
    // the type the file holds.
    assert!(out.contains("llama-quantize $(cat"), "{out}");
    let args = std::fs::read_to_string(d.join("evo-gguf/llama-quantize.args")).unwrap();
    let file = evocomp_gguf::GgufFile::open(d.join("evo-gguf/model.gguf")).unwrap();
    let mut named = 0;
    for t in file.tensors() {
        let ty = t.ty.to_string().to_ascii_lowercase();
        let want = match t.name.as_str() {
            "token_embd.weight" => format!("--token-embedding-type {ty}"),
            "output.weight" => format!("--output-tensor-type {ty}"),
            n if t.dims.len() == 2 => {
                format!("--tensor-type ^{}$={ty}", n.replace('.', "\\."))
            }
            _ => continue,
        };
        let hits = args
            .lines()
            .filter(|l| l.split('=').next() == want.split('=').next())
            .count();
        assert_eq!(hits, 1, "{want}: {hits} lines in\n{args}");
        assert!(args.lines().any(|l| l == want), "{want} not in\n{args}");
        named += 1;
    }
    assert_eq!(args.lines().count(), named, "{args}");
    // A database built from that file: each tensor's own type is the file's
    // weights exactly, and `db info` warns that a search would choose it.
    std::fs::write(
        d.join("again.ron"),
        r#"DatabaseSpec(
    model: "evo-gguf/model.gguf",
    output: "db/again",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: GgufTypes(types: [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0]),
)"#,
    )
    .unwrap();
    ok(&evocomp(d, &["db", "build", "again.ron"]));
    let info = ok(&evocomp(d, &["db", "info", "db/again"]));
    assert!(
        info.contains("warning:") && info.contains("reproduces the source's weights exactly"),
        "{info}"
    );
    let plain = ok(&evocomp(d, &["db", "info", "db/types"]));
    assert!(!plain.contains("warning:"), "{plain}");

    // What does not make sense says so.
    let p = experiment(d, "bad-budget", "grid", "LlamaCpp(Q4_K_M)", "Uniform");
    let e = err(d, &["run", p.to_str().unwrap()]);
    assert!(e.contains("bad-budget.ron") && e.contains("budget"), "{e}");
    assert!(e.contains("GGUF-types database"), "{e}");
    let p = experiment(d, "sparse", "grid", "UniformLevel(0)", "Uniform");
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    let e = err(
        d,
        &[
            "export",
            "results/sparse",
            "--format",
            "gguf",
            "--out",
            "sparse-gguf",
        ],
    );
    assert!(e.contains("GGUF export writes GGUF-types studies"), "{e}");
    let e = err(
        d,
        &[
            "export",
            "results/evo",
            "--format",
            "gguf",
            "--dtype",
            "bf16",
            "--out",
            "x",
        ],
    );
    assert!(e.contains("--dtype applies to --format hf"), "{e}");
}

/// A BF16 copy of `src` (2-D tensors BF16, the rest as they are, every
/// metadata key): what `convert_hf_to_gguf.py --outtype bf16` writes.
fn bf16_copy(src: &Path, dst: &Path) {
    let f = evocomp_gguf::GgufFile::open(src).unwrap();
    let mut w = evocomp_gguf::GgufWriter::new();
    for (k, v) in f.metadata() {
        w.meta(k.clone(), v.clone());
    }
    for t in f.tensors() {
        if t.dims.len() == 2 {
            let (_, values) = f.dequantize(&t.name).unwrap();
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|&x| {
                    // Round to nearest even, as llama.cpp's converter does.
                    let b = x.to_bits();
                    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
                    (r as u16).to_le_bytes()
                })
                .collect();
            w.tensor_raw(t.name.clone(), &t.dims, evocomp_gguf::GgmlType::BF16, bytes)
                .unwrap();
        } else {
            w.tensor_raw(t.name.clone(), &t.dims, t.ty, f.tensor_bytes(t).to_vec())
                .unwrap();
        }
    }
    w.write(dst).unwrap();
}

#[test]
fn a_bf16_source_builds_a_gguf_types_database_with_no_lossless_level() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    bf16_copy(&d.join("tiny.gguf"), &d.join("tiny-bf16.gguf"));
    let info = ok(&evocomp(d, &["inspect", "--model", "tiny-bf16.gguf"]));
    assert!(info.contains("BF16"), "{info}");
    // Its perplexity is the f32 model's up to BF16 rounding.
    let (a, b) = (
        perplexity_of(d, "tiny.gguf"),
        perplexity_of(d, "tiny-bf16.gguf"),
    );
    assert!((a - b).abs() < 1e-2 * a && a != b, "{a} vs {b}");
    std::fs::write(
        d.join("bf16.ron"),
        r#"DatabaseSpec(
    model: "tiny-bf16.gguf",
    output: "db/bf16",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: GgufTypes(types: [Q4_0, Q4_1, Q5_1, Q8_0]),
)"#,
    )
    .unwrap();
    ok(&evocomp(d, &["db", "build", "bf16.ron"]));
    let info = ok(&evocomp(d, &["db", "info", "db/bf16", "--levels"]));
    assert!(
        !info.contains("warning:"),
        "no level is the source itself: {info}"
    );
    // A search over it exports a GGUF that keeps the source's metadata.
    let p = experiment(d, "bf16-dp", "bf16", "Bpw(5.0)", "Dp(max_states: 100000)");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("tiny.gguf", "tiny-bf16.gguf");
    std::fs::write(&p, text).unwrap();
    ok(&evocomp(d, &["run", p.to_str().unwrap()]));
    ok(&evocomp(
        d,
        &[
            "export",
            "results/bf16-dp",
            "--format",
            "gguf",
            "--out",
            "bf16-gguf",
        ],
    ));
    let out = evocomp_gguf::GgufFile::open(d.join("bf16-gguf/model.gguf")).unwrap();
    assert!(out.get("tokenizer.ggml.tokens").is_some());
}

#[test]
fn an_importance_matrix_file_in_either_format_builds_the_same_database() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    ok(&evocomp(d, &["db", "build", "types.ron"]));
    // The matrix the build computed, as llama-imatrix's GGUF file...
    ok(&evocomp(
        d,
        &[
            "db",
            "imatrix",
            "db/types",
            "--model",
            "tiny.gguf",
            "--out",
            "im.gguf",
        ],
    ));
    // ...and as its legacy .dat (2 calls: the values are sums over calls).
    let f = evocomp_gguf::GgufFile::open(d.join("im.gguf")).unwrap();
    let mut dat = Vec::new();
    let entries: Vec<&str> = f
        .tensors()
        .iter()
        .filter_map(|t| t.name.strip_suffix(".in_sum2"))
        .collect();
    dat.extend((entries.len() as i32).to_le_bytes());
    for name in &entries {
        let (_, sums) = f.dequantize(&format!("{name}.in_sum2")).unwrap();
        let (_, count) = f.dequantize(&format!("{name}.counts")).unwrap();
        dat.extend((name.len() as i32).to_le_bytes());
        dat.extend(name.as_bytes());
        dat.extend(2i32.to_le_bytes());
        dat.extend((sums.len() as i32).to_le_bytes());
        for s in &sums {
            // Twice the mean: llama-quantize divides by the calls.
            dat.extend((s / count[0] * 2.0).to_le_bytes());
        }
    }
    std::fs::write(d.join("im.dat"), &dat).unwrap();
    let spec = |name: &str, file: &str| {
        std::fs::write(
            d.join(format!("{name}.ron")),
            format!(
                r#"DatabaseSpec(
    model: "tiny.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: GgufTypes(types: [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0], imatrix_file: Some("{file}")),
)"#
            ),
        )
        .unwrap();
    };
    let hashes = |db: &str| -> Vec<serde_json::Value> {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(db).join("manifest.json")).unwrap())
                .unwrap();
        m["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["sha256"].clone())
            .collect()
    };
    for (name, file) in [("fromgguf", "im.gguf"), ("fromdat", "im.dat")] {
        spec(name, file);
        ok(&evocomp(d, &["db", "build", &format!("{name}.ron")]));
        assert_eq!(hashes(&format!("db/{name}")), hashes("db/types"), "{file}");
        let o = evocomp(
            d,
            &[
                "db",
                "imatrix",
                &format!("db/{name}"),
                "--model",
                "tiny.gguf",
                "--out",
                "x.gguf",
            ],
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(file), "{e}");
    }
    // The file is what the quantizers weigh by: a flat matrix gives other variants.
    let mut flat = Vec::new();
    flat.extend((entries.len() as i32).to_le_bytes());
    for name in &entries {
        let n = f
            .tensor_info(&format!("{name}.in_sum2"))
            .unwrap()
            .n_elements() as usize;
        flat.extend((name.len() as i32).to_le_bytes());
        flat.extend(name.as_bytes());
        flat.extend(1i32.to_le_bytes());
        flat.extend((n as i32).to_le_bytes());
        for _ in 0..n {
            flat.extend(1f32.to_le_bytes());
        }
    }
    std::fs::write(d.join("flat.dat"), &flat).unwrap();
    spec("flat", "flat.dat");
    ok(&evocomp(d, &["db", "build", "flat.ron"]));
    assert_ne!(hashes("db/flat"), hashes("db/types"));
    // A changed file is another database; a damaged or foreign one is named.
    std::fs::write(d.join("im.dat"), &dat[..dat.len() - 3]).unwrap();
    spec("cut", "im.dat");
    let o = evocomp(d, &["db", "build", "cut.ron"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("im.dat") && e.contains("ends inside"),
        "{e}"
    );
    let o = evocomp(d, &["db", "build", "fromdat.ron"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "a changed file must not pass as the old one: {e}"
    );
    std::fs::write(d.join("none.dat"), 0i32.to_le_bytes()).unwrap();
    spec("none", "none.dat");
    let o = evocomp(d, &["db", "build", "none.ron"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("none.dat"));
}
