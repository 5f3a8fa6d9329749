//! llama.cpp's preset rules as evocomp computes them, against the types
//! llama.cpp itself chose: `llama-quantize` run on SmolLM2-135M at Q3_K_M,
//! Q4_K_M and Q5_K_M, and the shipped Gemma 3 270M Q4_K_M file
//! (tests/fixtures/presets.json).

use evocomp_gguf::{GgmlType, Preset, TensorRole};

fn role(name: &str) -> Option<(TensorRole, usize)> {
    if name == "token_embd.weight" {
        return Some((TensorRole::TokenEmbd, 0));
    }
    if name == "output.weight" {
        return Some((TensorRole::Output, 0));
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, t) = rest.split_once('.')?;
    let role = match t {
        "attn_q.weight" => TensorRole::AttnQ,
        "attn_k.weight" => TensorRole::AttnK,
        "attn_v.weight" => TensorRole::AttnV,
        "attn_output.weight" => TensorRole::AttnOutput,
        "ffn_gate.weight" => TensorRole::FfnGate,
        "ffn_up.weight" => TensorRole::FfnUp,
        "ffn_down.weight" => TensorRole::FfnDown,
        _ => return None,
    };
    Some((role, layer.parse().ok()?))
}

fn ty(name: &str) -> GgmlType {
    (0..64)
        .filter_map(GgmlType::from_id)
        .find(|t| t.to_string() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn preset_rules_give_llama_cpps_types_for_every_tensor() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/presets.json")).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (model, m) in fixture["models"].as_object().unwrap() {
        let n_layers = m["n_layers"].as_u64().unwrap() as usize;
        let tied = m["tied"].as_bool().unwrap();
        for (preset, tensors) in m["presets"].as_object().unwrap() {
            let p: Preset = preset.parse().unwrap();
            for (name, v) in tensors.as_object().unwrap() {
                let Some((role, layer)) = role(name) else {
                    continue;
                };
                let ncols = v[1][0].as_u64().unwrap() as usize;
                let want = ty(v[0].as_str().unwrap());
                let got = p.tensor_type(role, layer, n_layers, ncols, tied);
                checked += 1;
                if got != want {
                    wrong.push(format!("{model} {p} {name}: ours {got}, llama.cpp {want}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        checked,
        3 * 211 + 18 * 7 + 1,
        "every quantized tensor was checked"
    );
}
