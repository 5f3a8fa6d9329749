//! A model whose forward pass gives NaN (one weight set to NaN) is an
//! error, never a score: `perplexity` and `kld` refuse it, and a study over
//! it stops with the error instead of finishing on an arbitrary genome.
//! Each error names the block whose output first stopped being finite.

mod common;

use common::{evocomp, experiment, setup};
use evocomp_model::LinearKind;
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};

#[test]
fn a_model_with_a_nan_weight_is_an_error_not_a_score() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    let mut w = random_weights(&cfg, 5);
    w.layers[1].linear_mut(LinearKind::V).data[3] = f32::NAN;
    write_gguf(&cfg, &w, &d.join("nan.gguf")).unwrap();
    let window = [
        "--text",
        "text.txt",
        "--tokens",
        "128",
        "--context",
        "64",
        "--backend",
        "cpu",
    ];
    for args in [
        vec!["perplexity", "--model", "nan.gguf"],
        vec!["kld", "--base", "tiny.gguf", "--model", "nan.gguf"],
    ] {
        let o = evocomp(d, &[&args[..], &window[..]].concat());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(
            e.contains("not finite") && e.contains("nan.gguf"),
            "{args:?}: {e}"
        );
        // Where: the block whose weight holds the NaN.
        assert!(
            e.contains("first not finite after block 1 (of 4)"),
            "{args:?}: {e}"
        );
    }
    // A study of the NaN model: the depth database stores nothing, so the
    // search runs, and its first evaluation stops it.
    let p = experiment(d, "nan", "blocks", "Dropped(1)", "ShortGpt");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("tiny.gguf", "nan.gguf");
    std::fs::write(&p, text.replace("blocks.ron", "nanblocks.ron")).unwrap();
    let spec = std::fs::read_to_string(d.join("blocks.ron"))
        .unwrap()
        .replace("tiny.gguf", "nan.gguf")
        .replace("db/blocks", "db/nanblocks");
    std::fs::write(d.join("nanblocks.ron"), spec).unwrap();
    let o = evocomp(d, &["run", p.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the study finished: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(e.contains("not finite"), "{e}");
    assert!(e.contains("first not finite after block 1 (of 4)"), "{e}");
    assert!(!d.join("results/nan/summary.json").exists());
}
