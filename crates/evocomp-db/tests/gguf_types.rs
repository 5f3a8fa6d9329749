//! GGUF-types databases on a seeded model whose MLP rows (256) take K-quants
//! and whose other rows (64) take llama.cpp's fallbacks: units and exact
//! costs, stored blocks, the embedding and head units in a live model,
//! llama.cpp's presets as genomes, and the GGUF export read back.

use burn::tensor::{Device, Tensor};
use evocomp_data::Sample;
use evocomp_db::{
    Applier, BuildOptions, Compression, Database, UnitTarget, build_database, export_gguf,
    preset_genome,
};
use evocomp_gguf::{GgmlType, GgufFile, Preset, Value, quantize};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf};
use evocomp_model::{LlamaConfig, LlamaModel, LoadedModel, load_model, unpermute_rope_rows};
use std::path::Path;

fn config(tied: bool) -> LlamaConfig {
    let mut cfg = tiny_config();
    cfg.hidden = 64;
    cfg.intermediate = 256;
    cfg.head_dim = 16;
    cfg.tied_embeddings = tied;
    cfg
}

fn model(dir: &Path, tied: bool) -> (LoadedModel, String) {
    let cfg = config(tied);
    let path = dir.join(if tied { "tied.gguf" } else { "untied.gguf" });
    write_gguf(&cfg, &random_weights(&cfg, 17), &path).unwrap();
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

fn types(imatrix: bool) -> Compression {
    Compression::GgufTypes {
        types: vec![
            GgmlType::Q2_K,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q8_0,
        ],
        imatrix,
        imatrix_file: None,
    }
}

fn build(m: &LoadedModel, fp: &str, c: &Compression, dir: &Path) -> Database {
    build_database(
        m,
        fp,
        Some(&calib(0)),
        c,
        dir,
        &Device::flex(),
        &BuildOptions {
            stop_after_units: None,
            progress: false,
            held_out: Some(calib(5)),
        },
    )
    .unwrap();
    Database::open(dir).unwrap()
}

fn logits(m: &LlamaModel) -> Vec<f32> {
    let t: Tensor<3> = m.forward(&calib(9).sequences[..2]).unwrap();
    t.into_data().try_into_vec().unwrap()
}

fn level_types(db: &Database, ui: usize) -> Vec<GgmlType> {
    db.manifest.units[ui]
        .levels
        .iter()
        .map(|l| evocomp_db::level_type(l).unwrap())
        .collect()
}

#[test]
fn units_are_every_tensor_with_llama_cpps_fallbacks_and_exact_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = model(tmp.path(), true);
    let db = build(&m, &fp, &types(false), &tmp.path().join("db"));
    let units = &db.manifest.units;
    // The token embedding first, then 7 linear layers per block; tied: no head.
    assert_eq!(units.len(), 1 + 2 * 7);
    assert_eq!(units[0].unit.target, UnitTarget::Embedding);
    assert_eq!(units[0].name, "token_embd");
    use GgmlType as T;
    // Rows of 256 (ffn_down) keep the K-quants; rows of 64 fall back as
    // llama.cpp does (Q2_K -> Q4_0, Q4_K -> Q5_0, Q6_K -> Q8_0), most bits first.
    let down = units
        .iter()
        .position(|u| u.name == "L00.down")
        .expect("a down unit");
    assert_eq!(level_types(&db, down), [T::Q8_0, T::Q6_K, T::Q4_K, T::Q2_K]);
    assert_eq!(level_types(&db, 1), [T::Q8_0, T::Q5_0, T::Q4_0]);
    assert_eq!(level_types(&db, 0), [T::Q8_0, T::Q5_0, T::Q4_0]);
    // Costs are the blocks' exact bits: 4.5 bits per weight for Q4_0, 2.625 for Q2_K.
    let [r, c] = units[down].shape.unwrap();
    assert_eq!(units[down].levels[3].cost, (r * c / 256 * 84 * 8) as u64);
    let [r, c] = units[1].shape.unwrap();
    assert_eq!(units[1].levels[2].cost, (r * c / 32 * 18 * 8) as u64);
    // Without an importance matrix every stored variant is llama.cpp's
    // quantizer on the unit's weights, and decodes to what the model gets.
    let w = m.weights().unwrap();
    for (ui, u) in units.iter().enumerate() {
        let orig = match u.unit.target {
            UnitTarget::Embedding => w.embed.clone(),
            UnitTarget::Linear(k) => w.layers[u.unit.layer].linear(k).clone(),
            other => panic!("unexpected unit {other:?}"),
        };
        for l in &u.levels {
            let (ty, bytes) = db.ggml_variant(ui, l.level).unwrap().unwrap();
            assert_eq!(Some(ty), evocomp_db::level_type(l));
            let want = quantize(ty, &orig.data, orig.shape[1], None).unwrap();
            assert!(bytes == want.as_slice(), "{} {ty}", u.name);
            let decoded = evocomp_gguf::dequantize(ty, bytes, orig.data.len()).unwrap();
            assert_eq!(db.variant(ui, l.level).unwrap().data, decoded);
        }
    }
}

#[test]
fn the_importance_matrix_changes_the_block_tensors_but_not_the_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = model(tmp.path(), true);
    let plain = build(&m, &fp, &types(false), &tmp.path().join("plain"));
    let weighted = build(&m, &fp, &types(true), &tmp.path().join("weighted"));
    let same = |ui: usize, level: i64| {
        plain.ggml_variant(ui, level).unwrap() == weighted.ggml_variant(ui, level).unwrap()
    };
    // llama-imatrix collects nothing for the token embedding.
    assert!((0..3).all(|l| same(0, l)));
    // Every K-quant level of every down projection differs (Q8_0 ignores it).
    let mut differing = 0;
    for (ui, u) in plain.manifest.units.iter().enumerate().skip(1) {
        for l in &u.levels {
            if !same(ui, l.level) {
                differing += 1;
            }
        }
    }
    assert!(differing >= 2 * 3 + 7, "only {differing} variants differ");
}

#[test]
fn embedding_and_head_units_change_the_live_model_as_fresh_weights_would() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Device::flex();
    for tied in [true, false] {
        let (m, fp) = model(tmp.path(), tied);
        let db = build(
            &m,
            &fp,
            &types(true),
            &tmp.path().join(format!("db-{tied}")),
        );
        let n = db.manifest.units.len();
        let head = db
            .manifest
            .units
            .iter()
            .position(|u| u.unit.target == UnitTarget::Head);
        assert_eq!(head.is_some(), !tied);
        let mut g = vec![0i64; n];
        g[0] = 2;
        if let Some(h) = head {
            g[h] = 1;
        }
        let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
        Applier::new(&db).apply(&db, &mut live, &g).unwrap();
        let mut w = m.weights().unwrap().clone();
        for (ui, u) in db.manifest.units.iter().enumerate() {
            let v = db.variant(ui, g[ui]).unwrap();
            match u.unit.target {
                UnitTarget::Embedding => w.embed = v,
                UnitTarget::Head => w.lm_head = Some(v),
                UnitTarget::Linear(k) => *w.layers[u.unit.layer].linear_mut(k) = v,
                other => panic!("unexpected unit {other:?}"),
            }
        }
        let fresh = LlamaModel::new(m.config(), &w, &d);
        assert_eq!(logits(&live), logits(&fresh), "tied: {tied}");
        let original = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
        assert_ne!(logits(&live), logits(&original));
    }
}

#[test]
fn presets_are_genomes_of_llama_cpps_types() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = model(tmp.path(), true);
    let db = build(&m, &fp, &types(true), &tmp.path().join("db"));
    let g = preset_genome(&db, Preset::Q4_K_M).unwrap();
    let units = &db.manifest.units;
    let ty = |name: &str| {
        let ui = units.iter().position(|u| u.name == name).unwrap();
        evocomp_db::level_type(db.level(ui, g[ui]).unwrap()).unwrap()
    };
    use GgmlType as T;
    // Of two layers, llama.cpp's `use_more_bits` picks the second (i >= 7n/8).
    assert_eq!(ty("L00.down"), T::Q4_K);
    assert_eq!(ty("L01.down"), T::Q6_K);
    assert_eq!(
        ty("L00.v"),
        T::Q5_0,
        "Q4_K falls back to Q5_0 on rows of 64"
    );
    assert_eq!(ty("L01.v"), T::Q8_0, "Q6_K falls back to Q8_0");
    assert_eq!(ty("L00.q"), T::Q5_0, "Q4_K falls back to Q5_0");
    assert_eq!(ty("token_embd"), T::Q8_0, "a tied head on rows of 64");
    // A preset needing a type the database lacks is an error naming it.
    let small = build(
        &m,
        &fp,
        &Compression::GgufTypes {
            types: vec![GgmlType::Q4_K, GgmlType::Q8_0],
            imatrix: false,
            imatrix_file: None,
        },
        &tmp.path().join("small"),
    );
    let e = preset_genome(&small, Preset::Q4_K_M)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("L01.down (blk.1.ffn_down.weight) type Q6_K"),
        "{e}"
    );
    assert!(e.contains("add Q6_K"), "{e}");
}

#[test]
fn an_exported_gguf_loads_back_to_the_applied_genome() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Device::flex();
    for tied in [true, false] {
        let (m, fp) = model(tmp.path(), tied);
        let db = build(
            &m,
            &fp,
            &types(true),
            &tmp.path().join(format!("db-{tied}")),
        );
        let n = db.manifest.units.len();
        // A mixed genome: every unit at a different level where it can.
        let g: Vec<i64> = (0..n)
            .map(|ui| (ui % db.manifest.units[ui].levels.len()) as i64)
            .collect();
        let out = tmp.path().join(format!("mix-{tied}.gguf"));
        let source = GgufFile::open(m.info.path.as_path()).unwrap();
        let extra = vec![("evocomp.test".to_string(), Value::String("yes".into()))];
        let report = export_gguf(&db, m.config(), &source, &g, &out, extra).unwrap();
        assert_eq!(report.tensors, source.tensors().len());
        let file = GgufFile::open(&out).unwrap();
        // Metadata copied (the tokenizer too), the extra added, the file type set.
        for (k, v) in source.metadata() {
            if k != "general.file_type" {
                assert_eq!(file.get(k), Some(v), "{k}");
            }
        }
        assert_eq!(file.get("evocomp.test"), Some(&Value::String("yes".into())));
        assert!(file.get("general.file_type").is_some());
        // Q/K blocks are in llama.cpp's RoPE row order: unpermuting what the
        // file holds gives the database's variant.
        let q = db
            .manifest
            .units
            .iter()
            .position(|u| u.name == "L01.q")
            .unwrap();
        let (_, qd) = file.dequantize("blk.1.attn_q.weight").unwrap();
        let shape = db.manifest.units[q].shape.unwrap();
        let back = unpermute_rope_rows(&evocomp_model::HostTensor::new(shape.to_vec(), qd), 4);
        assert_eq!(back.data, db.variant(q, g[q]).unwrap().data);
        // The whole model read back computes what the applied genome computes.
        let loaded = load_model(&out).unwrap();
        let from_file = LlamaModel::new(loaded.config(), loaded.weights().unwrap(), &d);
        let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
        Applier::new(&db).apply(&db, &mut live, &g).unwrap();
        assert_eq!(logits(&from_file), logits(&live), "tied: {tied}");
        // Bits per weight count every tensor, the F32 norms included.
        assert!(report.bits_per_weight > 4.0 && report.bits_per_weight < 9.0);
    }
}

#[test]
fn depth_genomes_export_with_blocks_removed_or_zeroed_and_others_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Device::flex();
    let (m, fp) = model(tmp.path(), true);
    let source = GgufFile::open(m.info.path.as_path()).unwrap();
    // Whole blocks: the first of two removed, the second renumbered.
    let blocks = build(
        &m,
        &fp,
        &Compression::Depth {
            unit: evocomp_db::DepthUnit::Block,
        },
        &tmp.path().join("blocks"),
    );
    let out = tmp.path().join("short.gguf");
    export_gguf(&blocks, m.config(), &source, &[1, 0], &out, Vec::new()).unwrap();
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.get("llama.block_count"), Some(&Value::U32(1)));
    assert!(file.tensor_info("blk.1.attn_q.weight").is_none());
    assert!(
        file.tensor_bytes(file.tensor_info("blk.0.ffn_up.weight").unwrap())
            == source.tensor_bytes(source.tensor_info("blk.1.ffn_up.weight").unwrap())
    );
    let loaded = load_model(&out).unwrap();
    assert_eq!(loaded.config().n_layers, 1);
    let from_file = LlamaModel::new(loaded.config(), loaded.weights().unwrap(), &d);
    let mat = evocomp_db::materialize(
        &blocks,
        m.config(),
        std::borrow::Cow::Borrowed(m.weights().unwrap()),
        &[1, 0],
    )
    .unwrap();
    let removed = LlamaModel::new(&mat.config, &mat.weights, &d);
    assert_eq!(logits(&from_file), logits(&removed));
    // Sub-blocks: a dropped attention is a zero output projection.
    let subs = build(
        &m,
        &fp,
        &Compression::Depth {
            unit: evocomp_db::DepthUnit::SubBlock,
        },
        &tmp.path().join("subs"),
    );
    let g = vec![0, 0, 1, 0];
    let out = tmp.path().join("skip.gguf");
    export_gguf(&subs, m.config(), &source, &g, &out, Vec::new()).unwrap();
    let loaded = load_model(&out).unwrap();
    let from_file = LlamaModel::new(loaded.config(), loaded.weights().unwrap(), &d);
    let mut live = LlamaModel::new(m.config(), m.weights().unwrap(), &d);
    Applier::new(&subs).apply(&subs, &mut live, &g).unwrap();
    assert_eq!(logits(&from_file), logits(&live));
    // Gemma 3's sliding-window blocks follow their index: no blocks removed.
    let cfg = evocomp_model::testing::tiny_gemma3_config(8);
    let path = tmp.path().join("gemma.gguf");
    write_gguf(&cfg, &random_weights(&cfg, 3), &path).unwrap();
    let gm = load_model(&path).unwrap();
    let gdb = build(
        &gm,
        &gm.info.fingerprint().unwrap(),
        &Compression::Depth {
            unit: evocomp_db::DepthUnit::Block,
        },
        &tmp.path().join("gemma-blocks"),
    );
    let e = export_gguf(
        &gdb,
        gm.config(),
        &GgufFile::open(&path).unwrap(),
        &[0, 1],
        &tmp.path().join("g.gguf"),
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sliding-window blocks from their index"), "{e}");
    // Sparsity has no GGUF form.
    let sparse = build(
        &m,
        &fp,
        &Compression::Sparsity {
            method: evocomp_compress::SparsityMethod::Magnitude,
            target: 0.5,
            step_fraction: 0.1,
            max_sparsity: 0.9,
            max_levels: 1,
            obs: evocomp_compress::ObsConfig::default(),
            propagation: evocomp_db::Propagation::Uncompressed,
        },
        &tmp.path().join("sparse"),
    );
    let n = sparse.manifest.units.len();
    let e = export_gguf(
        &sparse,
        m.config(),
        &source,
        &vec![0; n],
        &tmp.path().join("x.gguf"),
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("llama.cpp has no sparse tensors"), "{e}");
    assert!(!tmp.path().join("x.gguf").exists());
    let e = preset_genome(&sparse, Preset::Q4_K_M)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not one"), "{e}");
}

/// `model`'s GGUF rewritten with ffn_down as Q8_0 blocks that llama.cpp's
/// quantizer would not write (each scale doubled, each value halved: the
/// largest value is 63, not 127) and attn_q as Q5_0 (rows in the file's own
/// order, as llama.cpp quantizes them).
fn requantized(dir: &Path) -> (LoadedModel, String) {
    let (_, _) = model(dir, true);
    let f32_file = GgufFile::open(dir.join("tied.gguf")).unwrap();
    let mut w = evocomp_gguf::GgufWriter::new();
    for (k, v) in f32_file.metadata() {
        w.meta(k.clone(), v.clone());
    }
    for info in f32_file.tensors() {
        let ty = if info.name.ends_with("ffn_down.weight") {
            GgmlType::Q8_0
        } else if info.name.ends_with("attn_q.weight") {
            GgmlType::Q5_0
        } else {
            GgmlType::F32
        };
        let bytes = if ty == GgmlType::F32 {
            f32_file.tensor_bytes(info).to_vec()
        } else {
            let (_, data) = f32_file.dequantize(&info.name).unwrap();
            let mut b = quantize(ty, &data, info.dims[0] as usize, None).unwrap();
            if ty == GgmlType::Q8_0 {
                for block in b.chunks_exact_mut(34) {
                    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                    block[..2].copy_from_slice(&half::f16::from_f32(2.0 * d).to_le_bytes());
                    for q in &mut block[2..] {
                        *q = ((*q as i8) / 2) as u8;
                    }
                }
            }
            b
        };
        w.tensor_raw(info.name.clone(), &info.dims, ty, bytes)
            .unwrap();
    }
    let path = dir.join("mixed.gguf");
    w.write(&path).unwrap();
    let m = load_model(&path).unwrap();
    let fp = m.info.fingerprint().unwrap();
    (m, fp)
}

#[test]
fn a_level_of_the_sources_own_type_is_the_sources_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = requantized(tmp.path());
    let db = build(&m, &fp, &types(true), &tmp.path().join("db"));
    let source = GgufFile::open(tmp.path().join("mixed.gguf")).unwrap();
    let level_of = |ui: usize, ty: GgmlType| {
        db.manifest.units[ui]
            .levels
            .iter()
            .find(|l| evocomp_db::level_type(l) == Some(ty))
            .unwrap()
            .level
    };
    let units = &db.manifest.units;
    let down = units.iter().position(|u| u.name == "L01.down").unwrap();
    let theirs = source.tensor_bytes(source.tensor_info("blk.1.ffn_down.weight").unwrap());
    let (_, ours) = db
        .ggml_variant(down, level_of(down, GgmlType::Q8_0))
        .unwrap()
        .unwrap();
    assert!(
        ours == theirs,
        "kept as llama-quantize keeps a tensor of the target type"
    );
    // Requantizing the decoded weights would not have given them back.
    let w = m.weights().unwrap().layers[1].linear(evocomp_model::LinearKind::Down);
    let again = quantize(GgmlType::Q8_0, &w.data, w.shape[1], None).unwrap();
    assert!(
        again != theirs,
        "the test needs a tensor that requantizes differently"
    );
    // Q rows come back from llama.cpp's RoPE order: exporting puts them back.
    let q = units.iter().position(|u| u.name == "L00.q").unwrap();
    let g: Vec<i64> = (0..units.len())
        .map(|ui| {
            if ui == q {
                level_of(q, GgmlType::Q5_0)
            } else {
                0
            }
        })
        .collect();
    let out = tmp.path().join("out.gguf");
    export_gguf(&db, m.config(), &source, &g, &out, Vec::new()).unwrap();
    let file = GgufFile::open(&out).unwrap();
    let name = "blk.0.attn_q.weight";
    assert!(
        file.tensor_bytes(file.tensor_info(name).unwrap())
            == source.tensor_bytes(source.tensor_info(name).unwrap())
    );
    // And the level is exactly the model's weights: no error at all.
    assert_eq!(
        db.level_errors().unwrap()[down][level_of(down, GgmlType::Q8_0) as usize],
        0.0
    );
}

#[test]
fn the_importance_matrix_file_gives_back_the_databases_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, fp) = model(tmp.path(), true);
    let dir = tmp.path().join("db");
    let db = build(&m, &fp, &types(true), &dir);
    let im = evocomp_db::importance_matrix(&dir, &m, &Device::flex()).unwrap();
    assert_eq!(im.entries.len(), 2 * 7);
    assert_eq!((im.chunks, im.chunk_size), (6, 32));
    let out = tmp.path().join("imatrix.gguf");
    evocomp_db::write_imatrix(&im, &out).unwrap();
    // Read back as llama-quantize does: each value is sum / count.
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(
        file.get("general.type"),
        Some(&Value::String("imatrix".into()))
    );
    let w = m.weights().unwrap();
    for (ui, u) in db.manifest.units.iter().enumerate() {
        let UnitTarget::Linear(kind) = u.unit.target else {
            continue;
        };
        let name = evocomp_db::tensor_role(u.unit.target)
            .unwrap()
            .gguf_name(u.unit.layer);
        let (_, sums) = file.dequantize(&format!("{name}.in_sum2")).unwrap();
        let (_, count) = file.dequantize(&format!("{name}.counts")).unwrap();
        let values: Vec<f32> = sums.iter().map(|s| s / count[0]).collect();
        let orig = w.layers[u.unit.layer].linear(kind);
        for l in &u.levels {
            let (ty, bytes) = db.ggml_variant(ui, l.level).unwrap().unwrap();
            let again = quantize(ty, &orig.data, orig.shape[1], Some(&values)).unwrap();
            assert!(again == bytes, "{} {ty}", u.name);
        }
    }
}
