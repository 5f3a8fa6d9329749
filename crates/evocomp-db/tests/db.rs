//! Building, resuming, checking and applying databases on a seeded tiny model.

use burn::tensor::{Device, Tensor};
use evocomp_compress::{ObsConfig, QuantConfig, QuantMethod, SparsityMethod};
use evocomp_data::Sample;
use evocomp_db::{Applier, BuildOptions, Database, DbError, Manifest, UnitTarget, build_database};
use evocomp_db::{Compression, DepthUnit, Propagation};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_model::{LlamaModel, LoadedModel, load_model};
use std::path::Path;

fn tiny_model(dir: &Path) -> (LoadedModel, String) {
    let cfg = tiny_config();
    let path = dir.join("tiny.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 31), &path).unwrap();
    let m = load_model(&path).unwrap();
    let fp = m.info.fingerprint().unwrap();
    (m, fp)
}

fn calib(seed: u32) -> Sample {
    Sample {
        id: format!("calib-{seed}"),
        seq_len: 32,
        sequences: (0..6u32)
            .map(|s| {
                (0..32u32)
                    .map(|i| 4 + (i * 13 + s * 29 + seed * 7) % 256)
                    .collect()
            })
            .collect(),
    }
}

fn sparsity() -> Compression {
    sparsity_through(Propagation::Sequential { level: 0 })
}

fn sparsity_through(propagation: Propagation) -> Compression {
    Compression::Sparsity {
        method: SparsityMethod::SparseGpt,
        target: 0.5,
        step_fraction: 0.1,
        max_sparsity: 0.9,
        max_levels: 2,
        obs: ObsConfig {
            block_size: 16,
            damp: 0.01,
        },
        propagation,
    }
}

fn build(
    m: &LoadedModel,
    fp: &str,
    c: &Compression,
    dir: &Path,
    stop: Option<usize>,
) -> Result<evocomp_db::BuildReport, DbError> {
    build_database(
        m,
        fp,
        Some(&calib(0)),
        c,
        dir,
        &Device::flex(),
        &BuildOptions {
            stop_after_units: stop,
            progress: false,
            held_out: Some(calib(5)),
        },
    )
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        "manifest.json".to_string(),
        std::fs::read(dir.join("manifest.json")).unwrap(),
    )];
    let mut names: Vec<_> = std::fs::read_dir(dir.join("units"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for p in names {
        out.push((
            p.file_name().unwrap().to_string_lossy().into(),
            std::fs::read(&p).unwrap(),
        ));
    }
    out
}

fn same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(
        fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
        fb.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        if x != y {
            let (x, y) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
            let line = x.lines().zip(y.lines()).find(|(p, q)| p != q);
            panic!("{name} differs: {line:?}");
        }
    }
}

fn logits(m: &LlamaModel) -> Vec<f32> {
    let t: Tensor<3> = m.forward(&calib(9).sequences[..2]).unwrap();
    t.into_data().try_into_vec().unwrap()
}

#[test]
fn levels_have_exact_costs_and_switches_keep_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let r = build(&m, &fp, &sparsity(), &dir, None).unwrap();
    assert_eq!(r.built, 7 * 2);
    // Streamed block by block: the build never read the whole model into
    // host memory (nor left it there).
    assert!(!m.weights_on_host());
    let db = Database::open(&dir).unwrap();
    db.verify().unwrap();
    for (ui, u) in db.manifest.units.iter().enumerate() {
        let [o, i] = u.shape.unwrap();
        assert_eq!(u.levels.len(), 5, "{}", u.name);
        for l in &u.levels {
            let w = db.variant(ui, l.level).unwrap();
            let zeros = w.data.iter().filter(|&&x| x == 0.0).count() as u64;
            assert_eq!(zeros, l.param, "{} level {}", u.name, l.level);
            assert_eq!(l.cost, (o * i) as u64 - zeros);
        }
        // Errors grow with sparsity.
        let e = u.errors.as_ref().unwrap();
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "{}: {e:?}", u.name);
    }
    // +1 on one unit and -1 on another, between units of different shapes.
    let base = vec![0i64; db.manifest.units.len()];
    let total = db.manifest.cost(&base).unwrap();
    let q = db
        .manifest
        .units
        .iter()
        .position(|u| u.name == "L00.q")
        .unwrap();
    let down = db
        .manifest
        .units
        .iter()
        .position(|u| u.name == "L01.down")
        .unwrap();
    let k = db
        .manifest
        .units
        .iter()
        .position(|u| u.name == "L01.k")
        .unwrap();
    for (a, b) in [(q, down), (down, k), (k, q)] {
        let mut g = base.clone();
        g[a] += 1;
        g[b] -= 1;
        assert_eq!(db.manifest.cost(&g).unwrap(), total);
    }
    let mut bad = base.clone();
    bad[0] = 7;
    assert!(matches!(db.manifest.cost(&bad), Err(DbError::BadGenome(_))));
}

#[test]
fn a_killed_build_continues_to_identical_files_and_a_finished_one_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let whole = tmp.path().join("whole");
    build(&m, &fp, &sparsity(), &whole, None).unwrap();

    let parts = tmp.path().join("parts");
    let r = build(&m, &fp, &sparsity(), &parts, Some(5)).unwrap();
    assert!(r.stopped && r.built == 5);
    assert!(
        Database::open(&parts).is_err(),
        "an unfinished database must not open"
    );
    // A half-written file left by the kill is ignored and removed.
    std::fs::write(parts.join("units/L01.up.safetensors.tmp"), b"half").unwrap();
    let r = build(&m, &fp, &sparsity(), &parts, None).unwrap();
    assert_eq!((r.built, r.skipped), (9, 5));
    same_files(&parts, &whole);

    let again = build(&m, &fp, &sparsity(), &whole, None).unwrap();
    assert_eq!((again.built, again.skipped), (0, 14));
    same_files(&parts, &whole);
}

#[test]
fn another_model_or_calibration_set_is_refused_naming_both_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    build(&m, &fp, &sparsity(), &dir, Some(1)).unwrap();
    let e = build(&m, "0123other", &sparsity(), &dir, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&fp) && e.contains("0123other") && e.contains("model"),
        "{e}"
    );
    let e = build_database(
        &m,
        &fp,
        Some(&calib(1)),
        &sparsity(),
        &dir,
        &Device::flex(),
        &BuildOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("calib-0") && e.contains("calib-1") && e.contains("calibration"),
        "{e}"
    );
    build(&m, &fp, &sparsity(), &dir, None).unwrap();
    let db = Database::open(&dir).unwrap();
    assert!(db.check_model("0123other").is_err());
    db.check_model(&fp).unwrap();
}

#[test]
fn corrupt_or_partial_variant_files_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    build(&m, &fp, &sparsity(), &dir, None).unwrap();
    let f = dir.join("units/L01.o.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    // A flipped byte: same size, caught by the checksum.
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&f, &bytes).unwrap();
    let e = Database::open(&dir)
        .unwrap()
        .verify()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("L01.o.safetensors") && e.contains("sha256"),
        "{e}"
    );
    // Without `db verify`: the first read of the damaged unit refuses it,
    // every other unit still serves (a study never scores unverified weights).
    let db = Database::open(&dir).unwrap();
    let o = db
        .manifest
        .units
        .iter()
        .position(|u| u.name == "L01.o")
        .unwrap();
    let e = db.variant(o, 0).unwrap_err().to_string();
    assert!(
        e.contains("L01.o.safetensors") && e.contains("sha256"),
        "{e}"
    );
    assert!(
        db.variant(o, 0).is_err(),
        "checked once, refused every time"
    );
    assert!(db.variant((o + 1) % db.manifest.units.len(), 0).is_ok());
    // A truncated file: caught on open.
    std::fs::write(&f, &bytes[..n / 2]).unwrap();
    let e = Database::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains("L01.o.safetensors") && e.contains("partial"),
        "{e}"
    );
    // Building again repairs it.
    let r = build(&m, &fp, &sparsity(), &dir, None).unwrap();
    assert_eq!(r.built, 1);
    Database::open(&dir).unwrap().verify().unwrap();
    // Cut short while open (mapped): an error naming it, not a SIGBUS.
    let db = Database::open(&dir).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(64)
        .unwrap();
    let e = db.variant(o, 0).unwrap_err().to_string();
    assert!(
        e.contains("L01.o.safetensors") && e.contains("shrank"),
        "{e}"
    );
}

#[test]
fn applying_reloads_only_changed_units_and_matches_a_fresh_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let quant = Compression::Quantization {
        method: QuantMethod::Gptq,
        bits: vec![2, 3, 4, 8],
        spec: QuantConfig {
            bits: 2,
            group_size: 16,
            symmetric: false,
            act_order: false,
        },
        obs: ObsConfig::default(),
        propagation: Propagation::Uncompressed,
    };
    build(&m, &fp, &quant, &dir, None).unwrap();
    let db = Database::open(&dir).unwrap();
    let n = db.manifest.units.len();
    // Level 0 is the most bits.
    assert_eq!(db.manifest.units[0].levels[0].label, "8 bits");
    let d = Device::flex();
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    let mut ap = Applier::new(&db);
    let g1 = vec![1i64; n];
    assert_eq!(ap.apply(&db, &mut live, &g1).unwrap().changed, n);
    let mut g2 = g1.clone();
    g2[3] = 3;
    g2[10] = 0;
    assert_eq!(ap.apply(&db, &mut live, &g2).unwrap().changed, 2);
    assert_eq!(ap.apply(&db, &mut live, &g2).unwrap().changed, 0);
    // The same genome put into a fresh model from scratch gives the same logits.
    let mut fresh = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    for (ui, u) in db.manifest.units.iter().enumerate() {
        let UnitTarget::Linear(k) = u.unit.target else {
            unreachable!()
        };
        fresh
            .set_linear(u.unit.layer, k, &db.variant(ui, g2[ui]).unwrap())
            .unwrap();
    }
    assert_eq!(logits(&live), logits(&fresh));
    // Fewer bits cost less, exactly as counted.
    let cheap = db.manifest.cost(&vec![3; n]).unwrap();
    let dear = db.manifest.cost(&vec![0; n]).unwrap();
    assert!(cheap * 3 < dear);
}

#[test]
fn dropping_a_block_equals_removing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let depth = Compression::Depth {
        unit: DepthUnit::Block,
    };
    let r = build_database(
        &m,
        &fp,
        None,
        &depth,
        &dir,
        &Device::flex(),
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(r.built, 0);
    let db = Database::open(&dir).unwrap();
    assert_eq!(db.manifest.units.len(), 2);
    let d = Device::flex();
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    Applier::new(&db).apply(&db, &mut live, &[0, 1]).unwrap();
    // The same model without its last block.
    let mut cfg = m.config().clone();
    cfg.n_layers = 1;
    let mut w = m.weights().unwrap().clone();
    w.layers.truncate(1);
    let removed = LlamaModel::new(&cfg, &w, &d);
    assert_eq!(logits(&live), logits(&removed));
    // Costs: a kept block costs its parameters, a dropped one nothing.
    let kept = db.manifest.cost(&[0, 0]).unwrap();
    assert_eq!(db.manifest.cost(&[0, 1]).unwrap() * 2, kept);
    assert!(Manifest::read(&dir).unwrap().unwrap().complete);
}

#[test]
fn kv_units_set_the_cache_policy_and_cost_tokens_or_bits() {
    use evocomp_model::{Eviction, KvGroup};
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let d = Device::flex();
    let budget = Compression::KvBudget {
        budgets: vec![64, 16, 8],
        eviction: Eviction::Streaming { sinks: 2 },
        chunk: 8,
    };
    let dir = tmp.path().join("kv");
    build_database(&m, &fp, None, &budget, &dir, &d, &BuildOptions::default()).unwrap();
    let db = Database::open(&dir).unwrap();
    assert_eq!(db.manifest.cost_unit, "cached tokens");
    assert_eq!(db.manifest.cost(&[0, 2]).unwrap(), 64 + 8);
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    Applier::new(&db).apply(&db, &mut live, &[1, 2]).unwrap();
    let (_, lens) = live.forward_kv(&[calib(3).sequences[0].clone()]).unwrap();
    assert_eq!(lens, vec![16, 8]);

    let bits = Compression::KvBits {
        bits: vec![16, 4, 2],
        keys: KvGroup::PerChannel,
        values: KvGroup::PerToken,
        group_size: 4,
        chunk: 8,
    };
    let dir = tmp.path().join("kvbits");
    build_database(&m, &fp, None, &bits, &dir, &d, &BuildOptions::default()).unwrap();
    let db = Database::open(&dir).unwrap();
    assert_eq!(db.manifest.units.len(), 4);
    let cfg = m.config();
    let width = (cfg.n_kv_heads * cfg.head_dim) as u64;
    // Values at 4 bits per token: the values plus a scale and a minimum per group of 4.
    assert_eq!(
        db.manifest.units[1].levels[1].cost,
        width * 4 + (width / 4) * 32
    );
    assert_eq!(db.manifest.units[0].levels[0].cost, width * 16);
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    let before = logits(&live);
    Applier::new(&db)
        .apply(&db, &mut live, &[2, 2, 0, 0])
        .unwrap();
    assert!(live.kv_policy(0).unwrap().keys.is_some());
    assert!(live.kv_policy(1).unwrap().keys.is_none());
    assert_ne!(logits(&live), before);
}

#[test]
fn materialized_sub_blocks_compute_what_the_applied_genome_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let depth = Compression::Depth {
        unit: DepthUnit::SubBlock,
    };
    build_database(
        &m,
        &fp,
        None,
        &depth,
        &dir,
        &Device::flex(),
        &BuildOptions::default(),
    )
    .unwrap();
    let db = Database::open(&dir).unwrap();
    // Units: L0.attn, L0.mlp, L1.attn, L1.mlp. Skip layer 0's MLP and layer 1's attention.
    let genome = [0, 1, 1, 0];
    let d = Device::flex();
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    Applier::new(&db).apply(&db, &mut live, &genome).unwrap();
    let mat = evocomp_db::materialize(
        &db,
        m.config(),
        std::borrow::Cow::Borrowed(m.weights().unwrap()),
        &genome,
    )
    .unwrap();
    assert!(mat.removed_layers.is_empty() && mat.runtime_only.is_empty());
    assert_eq!(mat.config.n_layers, 2);
    let exported = LlamaModel::new(&mat.config, &mat.weights, &d);
    let (a, b) = (logits(&live), logits(&exported));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max |diff| {worst}");
    // Both blocks dropped through both of their sub-blocks: no layer is removed
    // (a sub-block database zeroes projections), and the weights differ from the original.
    let all = evocomp_db::materialize(
        &db,
        m.config(),
        std::borrow::Cow::Borrowed(m.weights().unwrap()),
        &[1, 1, 1, 1],
    )
    .unwrap();
    assert_eq!(all.weights.layers.len(), 2);
    assert!(
        all.weights.layers[1]
            .linears
            .iter()
            .any(|t| t.data.iter().all(|&x| x == 0.0))
    );
    assert!(
        evocomp_db::materialize(
            &db,
            m.config(),
            std::borrow::Cow::Borrowed(m.weights().unwrap()),
            &[0, 2, 0, 0]
        )
        .is_err()
    );
}

/// Each unit's recorded error, recomputed from inputs captured here: through
/// the earlier blocks (and, when `in_block`, the block's earlier input
/// groups) set to the `through` level (None: the uncompressed model).
fn recomputed_errors(
    m: &LoadedModel,
    db: &Database,
    ui: usize,
    through: Option<i64>,
    in_block: bool,
) -> Vec<f64> {
    use evocomp_compress::Matrix;
    use evocomp_db::{INPUT_GROUPS, XtxCapture, input_group};
    let u = &db.manifest.units[ui];
    let UnitTarget::Linear(kind) = u.unit.target else {
        panic!("a linear unit")
    };
    let pos = |k| {
        INPUT_GROUPS
            .iter()
            .position(|&g| g == input_group(k))
            .unwrap()
    };
    let mut net = LlamaModel::new(m.config(), m.weights().unwrap(), &Device::flex());
    if let Some(level) = through {
        for (vi, v) in db.manifest.units.iter().enumerate() {
            let UnitTarget::Linear(k) = v.unit.target else {
                continue;
            };
            if v.unit.layer < u.unit.layer
                || (in_block && v.unit.layer == u.unit.layer && pos(k) < pos(kind))
            {
                net.set_linear(v.unit.layer, k, &db.variant(vi, level).unwrap())
                    .unwrap();
            }
        }
    }
    let mut cap = XtxCapture::only(u.unit.layer, &[input_group(kind)]);
    for batch in calib(0).sequences.chunks(4) {
        let h = net.embed(net.tokens_to_device(batch).unwrap());
        net.forward_layers(h, 0..u.unit.layer + 1, &mut cap)
            .unwrap();
    }
    let h = cap.finish().unwrap()[pos(kind)].clone().unwrap();
    let w = m.weights().unwrap().layers[u.unit.layer].linear(kind);
    let w = Matrix::new(w.shape[0], w.shape[1], w.data.clone());
    u.levels
        .iter()
        .map(|l| {
            let v = db.variant(ui, l.level).unwrap();
            w.reconstruction_error(&Matrix::new(v.shape[0], v.shape[1], v.data), &h)
        })
        .collect()
}

/// Equal to a relative 1e-6, element by element.
fn close(a: &[f64], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()))
}

#[test]
fn a_blockwise_build_fits_a_blocks_units_together_on_the_compressed_prefix() {
    // LLM Compressor's pipeline: block 0's units all see uncompressed
    // inputs; block 1's see block 0 compressed, but not each other.
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let c = sparsity_through(Propagation::Blockwise { level: 1 });
    build(&m, &fp, &c, &dir, None).unwrap();
    let db = Database::open(&dir).unwrap();
    for (ui, u) in db.manifest.units.iter().enumerate() {
        let recorded = u.errors.as_ref().unwrap();
        let blockwise = recomputed_errors(&m, &db, ui, Some(1), false);
        assert!(
            close(recorded, &blockwise),
            "{}: {recorded:?} vs {blockwise:?}",
            u.name
        );
        let uncompressed = recomputed_errors(&m, &db, ui, None, false);
        assert_eq!(
            close(recorded, &uncompressed),
            u.unit.layer == 0,
            "{}: only block 0 sees the uncompressed model's inputs",
            u.name
        );
    }
}

#[test]
fn a_sequential_build_fits_each_unit_to_the_compressed_prefix_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    let c = sparsity_through(Propagation::Sequential { level: 1 });
    build(&m, &fp, &c, &dir, None).unwrap();
    let db = Database::open(&dir).unwrap();
    let mut differs = 0;
    for (ui, u) in db.manifest.units.iter().enumerate() {
        let recorded = u.errors.as_ref().unwrap();
        let seq = recomputed_errors(&m, &db, ui, Some(1), true);
        assert!(close(recorded, &seq), "{}: {recorded:?} vs {seq:?}", u.name);
        // Held-out errors are recorded, normalised, and above zero where weights changed.
        let held = u.held_out_errors.as_ref().unwrap();
        assert_eq!(held.len(), u.levels.len());
        assert!(
            held.iter().all(|&e| e > 0.0 && e < 10.0),
            "{}: {held:?}",
            u.name
        );
        assert!(u.output_energy.unwrap() > 0.0);
        // The first unit group of block 0 sees the uncompressed inputs; every
        // later one sees compressed inputs, so its errors are not those of an
        // uncompressed-input build.
        if !close(recorded, &recomputed_errors(&m, &db, ui, None, false)) {
            differs += 1;
        }
    }
    let n = db.manifest.units.len();
    assert_eq!(
        differs,
        n - 3,
        "all but L00's q, k and v see compressed inputs"
    );
    // What DP reads: each error over the unit's output energy ‖WX‖².
    let nmse = db.level_errors().unwrap();
    for (u, e) in db.manifest.units.iter().zip(&nmse) {
        let energy = u.output_energy.unwrap();
        for (a, b) in e.iter().zip(u.errors.as_ref().unwrap()) {
            assert_eq!(*a, b / energy);
        }
        assert!(e.iter().all(|&x| x < 1.0), "{}: {e:?}", u.name);
    }
}

/// `dump_levels` writes each requested level of each linear unit as the
/// variant the database applies, under its HF module name, with an index;
/// a database without weights of its own and an unknown level are refused.
#[test]
fn dumped_levels_are_the_stored_variants_under_hf_module_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let dir = tmp.path().join("db");
    build(&m, &fp, &sparsity(), &dir, None).unwrap();
    let db = Database::open(&dir).unwrap();
    let out = tmp.path().join("dump");
    let files = evocomp_db::dump_levels(&db, &out, Some(&[0, 1]), false).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let units = index["units"].as_array().unwrap();
    assert_eq!(units.len(), db.manifest.units.len());
    let mut seen = 0;
    for (ui, u) in units.iter().enumerate() {
        let module = u["module"].as_str().unwrap();
        assert!(module.starts_with("model.layers."), "{module}");
        for lv in u["levels"].as_array().unwrap() {
            let level = lv["level"].as_i64().unwrap();
            let path = out.join(module).join(format!("{level}.safetensors"));
            assert_eq!(lv["dumped"].as_bool().unwrap(), level == 0 || level == 1);
            if !(level == 0 || level == 1) {
                assert!(!path.exists(), "{}", path.display());
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let w = st.tensor("weight").unwrap();
            let want = db.variant(ui, level).unwrap();
            assert_eq!(w.shape(), want.shape.as_slice());
            let got: Vec<f32> = w
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(got, want.data, "{module} level {level}");
            seen += 1;
        }
    }
    assert_eq!(seen as u64, files);
    assert!(files > 0);

    let e = evocomp_db::dump_levels(&db, &out, Some(&[99]), false).unwrap_err();
    assert!(e.to_string().contains("no unit has level 99"), "{e}");
    let depth_dir = tmp.path().join("depth");
    build_database(
        &m,
        &fp,
        None,
        &Compression::Depth {
            unit: DepthUnit::Block,
        },
        &depth_dir,
        &Device::flex(),
        &BuildOptions::default(),
    )
    .unwrap();
    let e = evocomp_db::dump_levels(&Database::open(&depth_dir).unwrap(), &out, None, false)
        .unwrap_err();
    assert!(e.to_string().contains("no weight of its own"), "{e}");
}

#[test]
fn a_build_streamed_from_the_file_equals_one_from_host_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = tiny_model(tmp.path());
    let streamed = tmp.path().join("streamed");
    build(&m, &fp, &sparsity(), &streamed, None).unwrap();
    assert!(!m.weights_on_host());
    m.weights().unwrap();
    let held = tmp.path().join("held");
    build(&m, &fp, &sparsity(), &held, None).unwrap();
    let hashes = |d: &Path| -> Vec<Option<String>> {
        let db = Database::open(d).unwrap();
        db.manifest.units.iter().map(|u| u.sha256.clone()).collect()
    };
    let a = hashes(&streamed);
    assert!(a.iter().filter(|h| h.is_some()).count() >= 7);
    assert_eq!(a, hashes(&held));
}
