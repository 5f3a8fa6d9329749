//! Loading and running small seeded random models, written as real files.

mod common;

use burn::tensor::{Device, Tensor};
use common::{logits, max_diff, tokens};
use evocomp_model::testing::{random_weights, tiny_config, write_gguf, write_gguf_filtered};
use evocomp_model::{
    ForwardHook, LinearKind, LlamaModel, ModelError, inspect_model, load_model, save_hf_safetensors,
};
use std::path::Path;

#[test]
fn gguf_round_trip_restores_weights_and_rope_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 7);
    let path = dir.path().join("tiny.gguf");
    write_gguf(&cfg, &w, &path).unwrap();
    let m = load_model(&path).unwrap();
    assert_eq!(m.config(), &cfg);
    // Q and K were written permuted (llama.cpp order) and come back in HF order.
    assert_eq!(*m.weights().unwrap(), w);
    let info = inspect_model(&path).unwrap();
    assert_eq!(
        info.dtype_counts().get("F32"),
        Some(&(2 + 9 * cfg.n_layers))
    );
}

#[test]
fn hf_safetensors_folder_gives_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 8);
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&cfg, &w, &gguf).unwrap();
    let from_gguf = load_model(&gguf).unwrap();
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    std::fs::write(
        hf.join("tokenizer.json"),
        from_gguf.tokenizer.to_json().unwrap(),
    )
    .unwrap();
    let from_hf = load_model(&hf).unwrap();
    assert_eq!(from_hf.config(), &cfg);
    assert_eq!(*from_hf.weights().unwrap(), w);
    let text = "Hello, world! 12345 tokens.";
    assert_eq!(
        from_hf.tokenizer.encode(text).unwrap(),
        from_gguf.tokenizer.encode(text).unwrap()
    );
    let d = Device::flex();
    let batch = vec![tokens(1, 16)];
    let a = logits(
        &LlamaModel::new(&cfg, from_gguf.weights().unwrap(), &d),
        &batch,
    );
    let b = logits(
        &LlamaModel::new(&cfg, from_hf.weights().unwrap(), &d),
        &batch,
    );
    assert_eq!(a, b);
}

#[test]
fn sharded_safetensors_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 9);
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&cfg, &w, &gguf).unwrap();
    let tk = load_model(&gguf).unwrap().tokenizer;
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    // Split the single file into two shards plus an index.
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &hf.join(shard)).unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(shard.into()));
        }
    }
    std::fs::remove_file(hf.join("model.safetensors")).unwrap();
    std::fs::write(
        hf.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": map }).to_string(),
    )
    .unwrap();
    std::fs::write(hf.join("tokenizer.json"), tk.to_json().unwrap()).unwrap();
    let m = load_model(&hf).unwrap();
    assert_eq!(*m.weights().unwrap(), w);
    // An index naming a shard outside the folder is refused, naming it.
    let mut hostile = map.clone();
    hostile.insert(
        names[0].clone(),
        serde_json::Value::String("../../../etc/passwd".into()),
    );
    std::fs::write(
        hf.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": hostile }).to_string(),
    )
    .unwrap();
    let Err(e) = load_model(&hf) else {
        panic!("refused")
    };
    let e = e.to_string();
    assert!(
        e.contains("etc/passwd") && e.contains("not a file name in this folder"),
        "{e}"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_as_a_model_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &random_weights(&cfg, 3), &hf).unwrap();
    for name in ["model.safetensors", "config.json"] {
        let keep = std::fs::read(hf.join(name)).unwrap();
        std::fs::remove_file(hf.join(name)).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(hf.join(name))
                .status()
                .unwrap()
                .success()
        );
        let Err(e) = load_model(&hf) else {
            panic!("refused")
        };
        let e = e.to_string();
        assert!(e.contains(name) && e.contains("not a regular file"), "{e}");
        std::fs::remove_file(hf.join(name)).unwrap();
        std::fs::write(hf.join(name), keep).unwrap();
    }
    let fifo = dir.path().join("model.gguf");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let Err(e) = load_model(&fifo) else {
        panic!("refused")
    };
    let e = e.to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

fn expect_err(path: &Path) -> String {
    let e = load_model(path).expect_err("loading must fail");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.file_name().unwrap().to_string_lossy().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn missing_tensor_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 1);
    let path = dir.path().join("missing.gguf");
    write_gguf_filtered(&cfg, &w, &path, |n| n != "blk.1.ffn_up.weight").unwrap();
    let msg = expect_err(&path);
    assert!(
        msg.contains("blk.1.ffn_up.weight") && msg.contains("missing"),
        "{msg}"
    );
    match load_model(&path) {
        Err(ModelError::MissingTensor { name, .. }) => assert_eq!(name, "blk.1.ffn_up.weight"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}

#[test]
fn config_shape_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 1);
    // The metadata claims a wider MLP than the tensors have.
    let mut lying = cfg.clone();
    lying.intermediate = 48;
    let path = dir.path().join("mismatch.gguf");
    write_gguf(&lying, &w, &path).unwrap();
    let msg = expect_err(&path);
    assert!(msg.contains("ffn_gate") && msg.contains("48"), "{msg}");

    // The same in an HF folder: config.json disagrees with the safetensors.
    let hf = dir.path().join("hf-mismatch");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    c["hidden_size"] = 40.into();
    std::fs::write(hf.join("config.json"), c.to_string()).unwrap();
    let ok = dir.path().join("ok.gguf");
    write_gguf(&cfg, &w, &ok).unwrap();
    let tk = load_model(&ok).unwrap().tokenizer;
    std::fs::write(hf.join("tokenizer.json"), tk.to_json().unwrap()).unwrap();
    let e = load_model(&hf).expect_err("must fail").to_string();
    assert!(
        e.contains("hf-mismatch") && (e.contains("shape") || e.contains("hidden")),
        "{e}"
    );
}

#[test]
fn hf_folder_without_weights_or_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_model(dir.path())
        .expect_err("no config.json")
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let e = load_model(dir.path()).expect_err("bad json").to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn causal_and_batch_independent() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 3), &Device::flex());
    let a = tokens(1, 24);
    let mut b = a.clone();
    b[20] = 100;
    let v = cfg.vocab;
    let la = logits(&m, std::slice::from_ref(&a));
    let lb = logits(&m, std::slice::from_ref(&b));
    // Positions before the change see the same prefix.
    assert!(max_diff(&la[..20 * v], &lb[..20 * v]) < 1e-5);
    assert!(max_diff(&la[20 * v..], &lb[20 * v..]) > 1e-3);
    // A sequence's logits do not depend on its batch-mates.
    let both = logits(&m, &[a.clone(), b.clone()]);
    assert!(max_diff(&both[..24 * v], &la) < 1e-4);
    assert!(max_diff(&both[24 * v..], &lb) < 1e-4);
}

#[test]
fn skipping_and_swapping_change_the_output() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 4);
    let d = Device::flex();
    let mut m = LlamaModel::new(&cfg, &w, &d);
    let batch = vec![tokens(2, 16)];
    let base = logits(&m, &batch);
    m.set_skip_mlp(1, true);
    let no_mlp = logits(&m, &batch);
    assert!(max_diff(&base, &no_mlp) > 1e-3);
    m.set_skip_mlp(1, false);
    assert_eq!(logits(&m, &batch), base);
    m.set_skip_attention(0, true);
    assert!(max_diff(&base, &logits(&m, &batch)) > 1e-3);
    m.set_skip_attention(0, false);

    // Swapping in the same weight changes nothing; zeroing it does.
    let up = w.layers[0].linear(LinearKind::Up).clone();
    m.set_linear(0, LinearKind::Up, &up).unwrap();
    assert_eq!(logits(&m, &batch), base);
    let mut zero = up.clone();
    zero.data.iter_mut().for_each(|x| *x = 0.0);
    m.set_linear(0, LinearKind::Up, &zero).unwrap();
    assert!(max_diff(&base, &logits(&m, &batch)) > 1e-3);
    // A weight of the wrong shape is refused.
    let wrong = w.layers[0].linear(LinearKind::Down).clone();
    assert!(m.set_linear(0, LinearKind::Up, &wrong).is_err());
}

#[test]
fn hooks_see_every_linear_input_with_its_shape() {
    struct Capture(Vec<(usize, LinearKind, [usize; 2])>);
    impl ForwardHook for Capture {
        fn linear_input(&mut self, layer: usize, kind: LinearKind, x: &Tensor<2>) {
            self.0.push((layer, kind, x.dims()));
        }
    }
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 5), &Device::flex());
    let mut cap = Capture(Vec::new());
    m.forward_hooked(&[tokens(0, 10), tokens(1, 10)], &mut cap)
        .unwrap();
    assert_eq!(cap.0.len(), 7 * cfg.n_layers);
    for (layer, kind, dims) in cap.0 {
        assert!(layer < cfg.n_layers);
        assert_eq!(dims, [20, kind.shape(&cfg)[1]], "{kind:?}");
    }
}

#[test]
fn layer_ranges_compose() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 6), &Device::flex());
    let batch = vec![tokens(3, 12)];
    let full = logits(&m, &batch);
    let h = m.embed(m.tokens_to_device(&batch).unwrap());
    let mut none = evocomp_model::NoHook;
    let h = m.forward_layers(h, 0..1, &mut none).unwrap();
    let h = m.forward_layers(h, 1..2, &mut none).unwrap();
    let split: Vec<f32> = m.head(h).into_data().try_into_vec().unwrap();
    assert!(max_diff(&full, &split) < 1e-6);
    assert!(
        m.forward_layers(
            m.embed(m.tokens_to_device(&batch).unwrap()),
            1..3,
            &mut none
        )
        .is_err()
    );
}

#[test]
fn bad_batches_are_errors() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 6), &Device::flex());
    assert!(m.forward(&[]).is_err());
    assert!(m.forward(&[vec![1, 2, 3], vec![1, 2]]).is_err());
    assert!(m.forward(&[vec![1, 2, 9999]]).is_err());
    assert!(m.forward(&[vec![5; cfg.max_context + 1]]).is_err());
}

#[test]
fn untied_head_is_used() {
    let mut cfg = tiny_config();
    cfg.tied_embeddings = false;
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(&cfg, 10);
    assert!(w.lm_head.is_some());
    let path = dir.path().join("untied.gguf");
    write_gguf(&cfg, &w, &path).unwrap();
    let m = load_model(&path).unwrap();
    assert!(!m.config().tied_embeddings);
    assert_eq!(m.weights().unwrap().lm_head, w.lm_head);
}

/// A block count read from a file is checked against the tensors before
/// anything is allocated for it (0xFFFFFFFF blocks used to abort with a
/// 1.8 TB allocation).
#[test]
fn a_block_count_the_tensors_do_not_hold_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 4);
    for (blocks, name) in [
        (u32::MAX as usize, "huge.gguf"),
        (cfg.n_layers + 1, "one-more.gguf"),
    ] {
        let mut lying = cfg.clone();
        lying.n_layers = blocks;
        let p = dir.path().join(name);
        write_gguf(&lying, &w, &p).unwrap();
        for e in [
            inspect_model(&p).unwrap_err().to_string(),
            load_model(&p).unwrap_err().to_string(),
        ] {
            assert!(
                e.contains(name)
                    && e.contains(&format!("says {blocks} blocks"))
                    && e.contains(&format!("hold {}", cfg.n_layers)),
                "{e}"
            );
        }
    }
    // An HF folder whose config.json claims a block more.
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    c["num_hidden_layers"] = (cfg.n_layers + 1).into();
    std::fs::write(hf.join("config.json"), c.to_string()).unwrap();
    let e = inspect_model(&hf).unwrap_err().to_string();
    assert!(e.contains("says") && e.contains("blocks"), "{e}");
}

#[test]
fn half_precision_weights_stay_close_to_f32() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 4);
    let d = Device::flex();
    let batch = vec![tokens(1, 16)];
    let full = logits(&LlamaModel::new(&cfg, &w, &d), &batch);
    let scale = full.iter().fold(0f32, |a, v| a.max(v.abs()));
    for dtype in [
        evocomp_model::WeightDtype::Bf16,
        evocomp_model::WeightDtype::F16,
    ] {
        let mut m = LlamaModel::with_dtype(&cfg, &w, &d, dtype).unwrap();
        assert_eq!(m.weight_dtype(), dtype);
        let half = logits(&m, &batch);
        let diff = max_diff(&full, &half);
        // The weights were rounded (so the logits moved), but not far.
        assert!(
            diff > 0.0 && diff < 0.05 * scale,
            "{dtype:?}: {diff} (scale {scale})"
        );
        // A swapped-in weight is stored in the same dtype: putting the
        // original back changes nothing.
        m.set_linear(0, LinearKind::Q, w.layers[0].linear(LinearKind::Q))
            .unwrap();
        assert_eq!(logits(&m, &batch), half, "{dtype:?}");
    }
}

#[test]
fn bf16_matmuls_stay_close_to_f32_and_ignore_the_weight_dtype() {
    use evocomp_model::{Matmul, WeightDtype};
    let cfg = tiny_config();
    let w = random_weights(&cfg, 5);
    let d = Device::flex();
    let batch = vec![tokens(1, 16), tokens(2, 16)];
    let full = logits(&LlamaModel::new(&cfg, &w, &d), &batch);
    let scale = full.iter().fold(0f32, |a, v| a.max(v.abs()));
    let mut m = LlamaModel::new(&cfg, &w, &d);
    m.set_matmul(Matmul::Bf16).unwrap();
    assert_eq!(m.matmul(), Matmul::Bf16);
    let bf = logits(&m, &batch);
    let diff = max_diff(&full, &bf);
    assert!(diff > 0.0 && diff < 0.05 * scale, "{diff} (scale {scale})");
    // Weights stored in bf16 go through the same kernel (the embedding
    // rows are rounded too, so the logits move a little further).
    let mut h = LlamaModel::with_dtype(&cfg, &w, &d, WeightDtype::Bf16).unwrap();
    h.set_matmul(Matmul::Bf16).unwrap();
    let hb = logits(&h, &batch);
    assert!(hb != bf && max_diff(&hb, &full) < 0.05 * scale);
    // The matmuls do not depend on the fused kernels being on.
    m.set_fused_kernels(false);
    let unfused = logits(&m, &batch);
    // (Attention and SiLU differ in their last bits between the two paths.)
    assert!(max_diff(&unfused, &bf) < 1e-4 * scale);
    // Back to f32: the f32 bits again.
    m.set_fused_kernels(true);
    m.set_matmul(Matmul::F32).unwrap();
    assert_eq!(logits(&m, &batch), full);
}

#[test]
fn a_shard_truncated_while_open_is_an_error_naming_it_not_a_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let w = random_weights(&cfg, 4);
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&cfg, &w, &gguf).unwrap();
    let hf = dir.path().join("hf");
    save_hf_safetensors(&cfg, &w, &hf).unwrap();
    let tk = load_model(&gguf).unwrap().tokenizer;
    std::fs::write(hf.join("tokenizer.json"), tk.to_json().unwrap()).unwrap();
    let m = load_model(&hf).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(hf.join("model.safetensors"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    let Err(e) = m.weights() else {
        panic!("read past the new end")
    };
    let e = e.to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("shrank"),
        "{e}"
    );
}
