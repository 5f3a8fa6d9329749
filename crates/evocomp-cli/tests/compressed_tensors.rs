//! `evocomp export --format compressed-tensors`: a mixed 2/3/4-bit GPTQ
//! genome written as packed integers, read back here by the format's rules
//! (codes at bit `i · bits` of each row, zero points packed along the
//! output dimension, signed around `2^(bits−1)`), must be the weights the
//! study evaluated (the dense HF export of the same genome), and its
//! quantized layers must cost what the study counted.

mod common;

use common::{evocomp, experiment, ok, setup};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

fn unpack(words: &[i32], per_line: usize, line: usize, n: usize, bits: usize) -> Vec<i64> {
    let w: Vec<u64> = words[line * per_line..(line + 1) * per_line]
        .iter()
        .map(|&x| x as u32 as u64)
        .collect();
    (0..n)
        .map(|i| {
            let (k, off) = (i * bits / 32, i * bits % 32);
            let mut v = w[k] >> off;
            if off + bits > 32 {
                v |= w[k + 1] << (32 - off);
            }
            (v & ((1 << bits) - 1)) as i64 - (1 << (bits - 1))
        })
        .collect()
}

fn tensor<'a>(st: &'a SafeTensors, name: &str) -> safetensors::tensor::TensorView<'a> {
    st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn i32s(t: &safetensors::tensor::TensorView) -> Vec<i32> {
    assert_eq!(t.dtype(), Dtype::I32);
    t.data()
        .chunks(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn f32s(t: &safetensors::tensor::TensorView) -> Vec<f32> {
    t.data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Every quantized weight of the compressed-tensors folder `ct`, dequantized
/// by the format's rules, against the dense export `dense`. Returns the
/// bytes the quantized layers take, and (bits, group) per module.
fn check_against_dense(ct: &Path, dense: &Path) -> (u64, Vec<(String, usize, usize)>) {
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ct.join("config.json")).unwrap()).unwrap();
    let q = &cfg["quantization_config"];
    assert_eq!(q["quant_method"], "compressed-tensors");
    assert_eq!(q["format"], "pack-quantized");
    assert_eq!(q["quantization_status"], "compressed");
    let ct_bytes = std::fs::read(ct.join("model.safetensors")).unwrap();
    let dense_bytes = std::fs::read(dense.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&ct_bytes).unwrap();
    let de = SafeTensors::deserialize(&dense_bytes).unwrap();
    let mut modules = Vec::new();
    let mut quantized = 0u64;
    for group in q["config_groups"].as_object().unwrap().values() {
        let w = &group["weights"];
        assert_eq!(w["type"], "int");
        let bits = w["num_bits"].as_u64().unwrap() as usize;
        let symmetric = w["symmetric"].as_bool().unwrap();
        for m in group["targets"].as_array().unwrap() {
            let m = m.as_str().unwrap();
            let want = f32s(&tensor(&de, &format!("{m}.weight")));
            assert!(st.tensor(&format!("{m}.weight")).is_err(), "{m}: dense too");
            let shape = tensor(&st, &format!("{m}.weight_shape"));
            assert_eq!(shape.dtype(), Dtype::I64);
            let dims: Vec<usize> = shape
                .data()
                .chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                .collect();
            let (rows, cols) = (dims[0], dims[1]);
            assert_eq!(want.len(), rows * cols);
            let g = match w["strategy"].as_str().unwrap() {
                "group" => w["group_size"].as_u64().unwrap() as usize,
                "channel" => cols,
                other => panic!("{m}: strategy {other}"),
            };
            assert_eq!(
                cols % g,
                0,
                "{m}: the format needs the group to divide the columns"
            );
            let groups = cols / g;
            let packed = tensor(&st, &format!("{m}.weight_packed"));
            let per_row = (cols * bits).div_ceil(32);
            assert_eq!(packed.shape(), &[rows, per_row]);
            let scale = tensor(&st, &format!("{m}.weight_scale"));
            assert_eq!(scale.shape(), &[rows, groups]);
            let scales = f32s(&scale);
            let zeros: Vec<i64> = if symmetric {
                assert!(st.tensor(&format!("{m}.weight_zero_point")).is_err());
                vec![0; rows * groups]
            } else {
                let zp = tensor(&st, &format!("{m}.weight_zero_point"));
                let per_col = (rows * bits).div_ceil(32);
                assert_eq!(zp.shape(), &[per_col, groups]);
                // Packed along rows: transpose, unpack each column.
                let words = i32s(&zp);
                let t: Vec<i32> = (0..groups)
                    .flat_map(|c| (0..per_col).map(move |k| (k, c)))
                    .map(|(k, c)| words[k * groups + c])
                    .collect();
                let by_group: Vec<Vec<i64>> = (0..groups)
                    .map(|c| unpack(&t, per_col, c, rows, bits))
                    .collect();
                (0..rows * groups)
                    .map(|i| by_group[i % groups][i / groups])
                    .collect()
            };
            let words = i32s(&packed);
            let mut worst = 0.0f32;
            for r in 0..rows {
                let q = unpack(&words, per_row, r, cols, bits);
                for c in 0..cols {
                    let k = r * groups + c / g;
                    let v = ((q[c] - zeros[k]) as f32) * scales[k];
                    let d = (v - want[r * cols + c]).abs();
                    worst = worst.max(d / want[r * cols + c].abs().max(1e-3));
                }
            }
            assert!(
                worst < 1e-5,
                "{m}: dequantized weights differ by {worst} (relative)"
            );
            quantized += [
                format!("{m}.weight_packed"),
                format!("{m}.weight_scale"),
                format!("{m}.weight_zero_point"),
                format!("{m}.weight_shape"),
            ]
            .iter()
            .filter_map(|n| st.tensor(n).ok())
            .map(|t| t.data().len() as u64)
            .sum::<u64>();
            modules.push((m.to_string(), bits, g));
        }
    }
    (quantized, modules)
}

#[test]
fn a_mixed_bit_gptq_genome_exports_as_packed_integers_that_are_the_studys_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    // A model whose 48 columns groups of 32 do not divide: the file uses 16
    // there (and 32 for the MLP's 96).
    let mut cfg = evocomp_model::testing::tiny_config();
    (cfg.n_layers, cfg.hidden, cfg.head_dim, cfg.intermediate) = (4, 48, 12, 96);
    let w = evocomp_model::testing::random_weights(&cfg, 9);
    evocomp_model::testing::write_gguf(&cfg, &w, &d.join("odd.gguf")).unwrap();
    for (name, model, group, symmetric) in
        [("quant", "odd", 32, false), ("quantsym", "tiny", 16, true)]
    {
        std::fs::write(
            d.join(format!("db-{name}.ron")),
            format!(
                r#"DatabaseSpec(
    model: "{model}.gguf",
    output: "db/{name}",
    calibration: (text: "text.txt", sequences: 4, seq_len: 64, seed: 0),
    compression: Quantization(method: Gptq, bits: [2, 3, 4], group_size: {group}, symmetric: {symmetric}),
)"#
            ),
        )
        .unwrap();
        ok(&evocomp(d, &["db", "build", &format!("db-{name}.ron")]));
        let exp = experiment(
            d,
            name,
            &format!("db-{name}"),
            "UniformLevel(1)",
            "Dp(max_states: 100000)",
        );
        let text = std::fs::read_to_string(&exp).unwrap();
        std::fs::write(&exp, text.replace("tiny.gguf", &format!("{model}.gguf"))).unwrap();
        ok(&evocomp(d, &["run", &format!("{name}.ron")]));
        let study = format!("results/{name}");
        ok(&evocomp(
            d,
            &["export", &study, "--out", &format!("{name}-dense")],
        ));
        let out = ok(&evocomp(
            d,
            &[
                "export",
                &study,
                "--out",
                &format!("{name}-ct"),
                "--format",
                "compressed-tensors",
            ],
        ));
        assert!(out.contains("bits per weight"), "{out}");
        let (_, modules) = check_against_dense(
            &d.join(format!("{name}-ct")),
            &d.join(format!("{name}-dense")),
        );
        assert_eq!(modules.len(), 4 * 7, "every linear layer, once");
        let levels = std::fs::read_to_string(d.join(format!("{name}-ct/levels.txt"))).unwrap();
        let bits: std::collections::BTreeSet<usize> = modules.iter().map(|m| m.1).collect();
        assert!(
            bits.len() > 1,
            "DP at a 3-bit average mixes bit-widths: {levels}"
        );
        if model == "odd" {
            for (m, _, g) in &modules {
                assert_eq!(*g, if m.contains("down_proj") { 32 } else { 16 }, "{m}");
            }
            assert!(out.contains("groups of 16"), "{out}");
        } else {
            assert!(modules.iter().all(|m| m.2 == 16), "{modules:?}");
        }
    }
    // f16 scales, groups that divide: the quantized layers cost what the
    // study counted (b bits a weight, a 16-bit scale and for asymmetric
    // grids a b-bit zero point per group), plus 16 bytes of shape per layer.
    ok(&evocomp(
        d,
        &[
            "export",
            "results/quantsym",
            "--out",
            "quantsym-f16",
            "--format",
            "compressed-tensors",
            "--dtype",
            "f16",
        ],
    ));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("quantsym-f16/evocomp.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(d.join("quantsym-f16/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let quantized: u64 = st
        .tensors()
        .iter()
        .filter(|(n, _)| n.contains("weight_"))
        .map(|(_, t)| t.data().len() as u64)
        .sum();
    let cost = meta["cost"].as_u64().unwrap();
    assert_eq!(
        8 * quantized,
        cost + 4 * 7 * 128,
        "file bits vs the study's cost"
    );
    // A depth study is refused, with what to do instead.
    experiment(d, "depth", "blocks", "Dropped(1)", "ShortGpt");
    ok(&evocomp(d, &["db", "build", "blocks.ron"]));
    ok(&evocomp(d, &["run", "depth.ron"]));
    let o = evocomp(
        d,
        &[
            "export",
            "results/depth",
            "--out",
            "dp",
            "--format",
            "compressed-tensors",
        ],
    );
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--format hf") && e.contains("--format gguf"),
        "{e}"
    );
}

/// One bitmask-compressed layer of `st` by the format's rules: values in
/// row order, one bit a weight (least significant first), rows starting at
/// their offsets.
fn unbitmask(st: &SafeTensors, m: &str, value_bytes: usize) -> (Vec<f32>, usize, usize) {
    let shape = tensor(st, &format!("{m}.shape"));
    assert_eq!(shape.dtype(), Dtype::I64);
    let dims: Vec<usize> = shape
        .data()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let (rows, cols) = (dims[0], dims[1]);
    let values = tensor(st, &format!("{m}.compressed"));
    let values: Vec<f32> = match value_bytes {
        4 => f32s(&values),
        _ => {
            assert_eq!(values.dtype(), Dtype::F16);
            values
                .data()
                .chunks(2)
                .map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32())
                .collect()
        }
    };
    let mask = tensor(st, &format!("{m}.bitmask"));
    assert_eq!(mask.dtype(), Dtype::U8);
    let stride = cols.div_ceil(8);
    assert_eq!(mask.shape(), &[rows, stride]);
    let offsets = tensor(st, &format!("{m}.row_offsets"));
    assert_eq!(offsets.dtype(), Dtype::I64);
    let offsets: Vec<usize> = offsets
        .data()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let mut dense = vec![0.0f32; rows * cols];
    let mut k = 0;
    for r in 0..rows {
        assert_eq!(offsets[r], k, "{m}: row {r}'s offset");
        for c in 0..cols {
            if mask.data()[r * stride + c / 8] >> (c % 8) & 1 == 1 {
                dense[r * cols + c] = values[k];
                k += 1;
            }
        }
    }
    assert_eq!(k, values.len(), "{m}: values left over");
    (dense, rows, cols)
}

#[test]
fn a_sparsity_genome_exports_as_bitmasks_that_are_the_studys_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    setup(d);
    experiment(
        d,
        "sparse",
        "grid",
        "UniformLevel(1)",
        "Dp(max_states: 100000)",
    );
    ok(&evocomp(d, &["db", "build", "grid.ron"]));
    ok(&evocomp(d, &["run", "sparse.ron"]));
    ok(&evocomp(d, &["export", "results/sparse", "--out", "dense"]));
    let out = ok(&evocomp(
        d,
        &[
            "export",
            "results/sparse",
            "--out",
            "ct",
            "--format",
            "compressed-tensors",
        ],
    ));
    assert!(out.contains("sparse bitmasks"), "{out}");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ct/config.json")).unwrap()).unwrap();
    let q = &cfg["quantization_config"];
    assert_eq!(q["quant_method"], "compressed-tensors");
    let sc = &q["sparsity_config"];
    assert_eq!(sc["format"], "sparse-bitmask");
    assert_eq!(sc["sparsity_structure"], "unstructured");
    let targets: Vec<&str> = sc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(!targets.is_empty());
    let ct_bytes = std::fs::read(d.join("ct/model.safetensors")).unwrap();
    let dense_bytes = std::fs::read(d.join("dense/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&ct_bytes).unwrap();
    let de = SafeTensors::deserialize(&dense_bytes).unwrap();
    let (mut zeros, mut total) = (0usize, 0usize);
    for m in &targets {
        assert!(st.tensor(&format!("{m}.weight")).is_err(), "{m}: dense too");
        let (got, rows, cols) = unbitmask(&st, m, 4);
        let want = f32s(&tensor(&de, &format!("{m}.weight")));
        assert_eq!(got, want, "{m}: the decoded weights are the study's");
        zeros += want.iter().filter(|x| **x == 0.0).count();
        total += rows * cols;
    }
    // Every tensor that is not a target is the dense export's, unchanged.
    for (name, t) in de.tensors() {
        let module = name.strip_suffix(".weight").unwrap_or(&name);
        if !targets.contains(&module) {
            assert_eq!(tensor(&st, &name).data(), t.data(), "{name}");
        }
    }
    let global = sc["global_sparsity"].as_f64().unwrap();
    assert!(
        (global - zeros as f64 / total as f64).abs() < 1e-12,
        "{global}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ct/evocomp.json")).unwrap()).unwrap();
    assert_eq!(meta["layout"], "sparse-bitmask");
    // The study's sparsity, from its cost, is what the file holds: the
    // pruned weights are the zeros (a random model has no others).
    let study = meta["study_sparsity"].as_f64().unwrap();
    assert!(
        (global - study).abs() < 1e-9,
        "file {global} vs study {study}"
    );
    assert!(global > 0.3, "{global}");
    // In f16 the file is smaller than the dense f16 export by what the
    // format says: 2 bytes a value, a bit a weight, 8 bytes a row, 16 of shape.
    for (dir, dtype) in [("ct16", "compressed-tensors"), ("dense16", "hf")] {
        ok(&evocomp(
            d,
            &[
                "export",
                "results/sparse",
                "--out",
                dir,
                "--format",
                dtype,
                "--dtype",
                "f16",
            ],
        ));
    }
    let b16 = std::fs::read(d.join("ct16/model.safetensors")).unwrap();
    let st16 = SafeTensors::deserialize(&b16).unwrap();
    let mut want_bytes = 0usize;
    for m in &targets {
        let (got, rows, cols) = unbitmask(&st16, m, 2);
        let want = f32s(&tensor(&de, &format!("{m}.weight")));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(*g, half::f16::from_f32(*w).to_f32(), "{m}");
        }
        let nnz = got.iter().filter(|x| **x != 0.0).count();
        want_bytes += 2 * nnz + rows * cols.div_ceil(8) + 8 * rows + 16;
    }
    let got_bytes: usize = st16
        .tensors()
        .iter()
        .filter(|(n, _)| {
            [".compressed", ".bitmask", ".row_offsets", ".shape"]
                .iter()
                .any(|s| n.ends_with(s))
        })
        .map(|(_, t)| t.data().len())
        .sum();
    assert_eq!(got_bytes, want_bytes);
    let dense16 = std::fs::metadata(d.join("dense16/model.safetensors"))
        .unwrap()
        .len();
    assert!((b16.len() as u64) < dense16, "{} vs {dense16}", b16.len());
}
