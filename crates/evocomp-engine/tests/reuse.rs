//! Prefix reuse is exact: a child resumed from its anchor's hidden states
//! scores bit-identically to a full forward pass, whatever layer it changes first.

use burn::tensor::Device;
use evocomp_compress::{ObsConfig, SparsityMethod};
use evocomp_config::{FitnessSpec, Metric, TeacherSpec};
use evocomp_data::{Sample, TokenSet};
use evocomp_db::Compression;
use evocomp_db::{BuildOptions, Database, Propagation, build_database};
use evocomp_engine::Evaluator;
use evocomp_model::load_model;
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_search::SampleDraw;
use std::sync::Arc;

#[test]
fn children_resumed_from_the_anchor_score_exactly_like_full_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config();
    cfg.n_layers = 4;
    let path = dir.path().join("tiny.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 9), &path).unwrap();
    let m = load_model(&path).unwrap();
    let fp = m.info.fingerprint().unwrap();
    let calib = Sample {
        id: "calib".into(),
        seq_len: 32,
        sequences: (0..4u32)
            .map(|s| (0..32u32).map(|i| 4 + (i * 13 + s * 29) % 256).collect())
            .collect(),
    };
    let db_dir = dir.path().join("db");
    build_database(
        &m,
        &fp,
        Some(&calib),
        &Compression::Sparsity {
            method: SparsityMethod::Magnitude,
            target: 0.5,
            step_fraction: 0.1,
            max_sparsity: 0.9,
            max_levels: 2,
            obs: ObsConfig::default(),
            propagation: Propagation::Sequential { level: 0 },
        },
        &db_dir,
        &Device::flex(),
        &BuildOptions::default(),
    )
    .unwrap();
    let db = Arc::new(Database::open(&db_dir).unwrap());
    let unit_layer: Vec<usize> = db.unit_layers();
    let tokens = TokenSet {
        source: path.clone(),
        files: Default::default(),
        tokens: (0..2000u32).map(|i| 4 + (i * 7 + i / 5) % 250).collect(),
        id: "tokens".into(),
    };
    let fitness = FitnessSpec {
        metric: Metric::Kl,
        teacher: TeacherSpec::TopK(8),
        seq_len: 32,
        tokens: 128,
        batch_size: 2,
        ..Default::default()
    };
    let make = |reuse| {
        Evaluator::new(
            &m,
            db.clone(),
            unit_layer.clone(),
            Arc::new(tokens.clone()),
            fitness,
            reuse,
            &Device::flex(),
        )
        .unwrap()
    };
    let mut with = make(true);
    let mut without = make(false);
    let spec = SampleDraw::new(128, 5);
    let n = unit_layer.len();
    let anchor = vec![0i64; n];
    // Children that first differ in every layer, and the anchor itself.
    let mut children = vec![anchor.clone()];
    for layer in 0..4 {
        let mut c = anchor.clone();
        let first = unit_layer.iter().position(|&l| l == layer).unwrap();
        c[first] = 1;
        c[n - 1] = -1;
        children.push(c);
    }
    for c in &children {
        let a = with.fitness(c, spec, Some(&anchor)).unwrap();
        let b = without.fitness(c, spec, None).unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "child {c:?}: {a} vs {b}");
        assert!(a >= 0.0);
    }
    // The anchor was built once; the children ran fewer layers than full passes.
    assert_eq!(with.stats.anchors_built, 1);
    assert!(with.stats.layers_run < with.stats.layers_full + 4);
    let skipped: u64 = with.stats.layers_full + 4 - with.stats.layers_run;
    assert_eq!(skipped, 4 + 3 + 2 + 1, "{:?}", with.stats);
    assert_eq!(without.stats.layers_run, without.stats.layers_full);

    // Two batches at once (anchor, children): the same bits.
    let mut concurrent = make(true);
    concurrent.set_concurrent_batches(2);
    for c in &children {
        let a = concurrent.fitness(c, spec, Some(&anchor)).unwrap();
        let b = without.fitness(c, spec, None).unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "child {c:?}: {a} vs {b}");
    }

    // A memory bound that holds 3 of the 5 layer boundaries keeps 0, 2 and
    // 4: children resume from the kept boundary at or before their first
    // changed layer, still bit-identical.
    let boundary = 128 * cfg.hidden * 4;
    let mut strided = make(true);
    strided.set_max_anchor_bytes(3 * boundary + boundary / 2);
    for c in &children {
        let a = strided.fitness(c, spec, Some(&anchor)).unwrap();
        let b = without.fitness(c, spec, None).unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "child {c:?}: {a} vs {b}");
    }
    let skipped: u64 = strided.stats.layers_full + 4 - strided.stats.layers_run;
    // The anchor itself skips 4 layers, children changing layer 2 or 3 skip 2.
    assert_eq!(skipped, 8, "{:?}", strided.stats);
    // Not even the first and last boundary fit: full passes.
    let mut none = make(true);
    none.set_max_anchor_bytes(2 * boundary - 1);
    for c in &children {
        none.fitness(c, spec, Some(&anchor)).unwrap();
    }
    assert_eq!(none.stats.anchors_built, 0);
    assert_eq!(none.stats.layers_run, none.stats.layers_full);
}
