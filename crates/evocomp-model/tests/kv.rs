//! The chunked prefill with per-layer KV-cache budgets and quantization.

use burn::tensor::{Device, Tensor};
use evocomp_model::testing::{random_weights, tiny_config};
use evocomp_model::{Eviction, KvGroup, KvPolicy, KvQuant, LlamaModel};

fn seq(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 4 + (i * 41 + seed * 13 + i * i % 7) % 256)
        .collect()
}

fn vec3(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model() -> LlamaModel {
    let cfg = tiny_config();
    LlamaModel::new(&cfg, &random_weights(&cfg, 41), &Device::flex())
}

#[test]
fn chunked_prefill_without_limits_equals_the_causal_pass() {
    let mut m = model();
    let batch = vec![seq(40, 1), seq(40, 2)];
    let full = vec3(m.forward(&batch).unwrap());
    for chunk in [1, 7, 16, 64] {
        m.set_kv_chunk(chunk);
        m.set_kv_policy(1, Some(KvPolicy::FULL));
        let (out, lens) = m.forward_kv(&batch).unwrap();
        assert!(max_diff(&vec3(out), &full) < 1e-4, "chunk {chunk}");
        assert_eq!(lens, vec![40, 40]);
    }
}

#[test]
fn eviction_keeps_exactly_the_budget() {
    let mut m = model();
    m.set_kv_chunk(8);
    let batch = vec![seq(50, 3), seq(50, 4)];
    let full = vec3(m.forward(&batch).unwrap());
    let v = tiny_config().vocab;
    for eviction in [
        Eviction::Streaming { sinks: 4 },
        Eviction::ChunkedSnapKv {
            window: 4,
            recent: 3,
        },
    ] {
        m.set_kv_policy(
            0,
            Some(KvPolicy {
                budget: Some(12),
                eviction,
                keys: None,
                values: None,
            }),
        );
        m.set_kv_policy(
            1,
            Some(KvPolicy {
                budget: Some(30),
                ..KvPolicy::FULL
            }),
        );
        let (out, lens) = m.forward_kv(&batch).unwrap();
        assert_eq!(lens, vec![12, 30], "{eviction:?}");
        let out = vec3(out);
        // The first chunk sees an empty cache: unchanged. Later tokens lost context.
        let row = 50 * v;
        assert!(
            max_diff(&out[..8 * v], &full[..8 * v]) < 1e-4,
            "{eviction:?}"
        );
        assert!(
            max_diff(&out[40 * v..row], &full[40 * v..row]) > 1e-3,
            "{eviction:?}"
        );
        // A budget above the sequence length changes nothing.
        m.set_kv_policy(
            0,
            Some(KvPolicy {
                budget: Some(64),
                eviction,
                keys: None,
                values: None,
            }),
        );
        m.set_kv_policy(1, None);
        let (out, lens) = m.forward_kv(&batch).unwrap();
        assert_eq!(lens, vec![50, 50]);
        assert!(max_diff(&vec3(out), &full) < 1e-4);
    }
}

#[test]
fn fewer_kv_bits_cost_more_error() {
    let mut m = model();
    let batch = vec![seq(32, 5)];
    let full = vec3(m.forward(&batch).unwrap());
    let mut errs = Vec::new();
    for bits in [8u8, 4, 2] {
        for group in [KvGroup::PerToken, KvGroup::PerChannel] {
            let q = KvQuant {
                bits,
                group,
                group_size: 4,
            };
            for l in 0..2 {
                m.set_kv_policy(
                    l,
                    Some(KvPolicy {
                        keys: Some(q),
                        values: Some(q),
                        ..KvPolicy::FULL
                    }),
                );
            }
            let out = vec3(m.forward(&batch).unwrap());
            errs.push((bits, group, max_diff(&out, &full)));
        }
    }
    for g in [KvGroup::PerToken, KvGroup::PerChannel] {
        let e: Vec<f32> = errs.iter().filter(|x| x.1 == g).map(|x| x.2).collect();
        assert!(e[0] > 0.0 && e[0] < e[1] && e[1] < e[2], "{g:?}: {e:?}");
        assert!(e[0] < 0.05, "8-bit cache is nearly exact: {e:?}");
    }
}

/// SnapKV as published over a 32-token prompt: 4-token window, pooling over 7.
fn snapkv(budget: usize) -> Option<KvPolicy> {
    Some(KvPolicy {
        budget: Some(budget),
        eviction: Eviction::SnapKv {
            window: 4,
            kernel: 7,
            prompt: 32,
        },
        keys: None,
        values: None,
    })
}

#[test]
fn snapkv_compresses_once_after_the_prompt_and_keeps_later_tokens() {
    let mut m = model();
    m.set_kv_chunk(8);
    let batch = vec![seq(50, 5), seq(50, 6)];
    let full = vec3(m.forward(&batch).unwrap());
    let v = tiny_config().vocab;
    m.set_kv_policy(0, snapkv(12));
    let (out, lens) = m.forward_kv(&batch).unwrap();
    // 12 kept from the 32-token prompt, then the 18 later tokens appended.
    assert_eq!(lens[0], 12 + 18);
    let out = vec3(out);
    // The prompt is prefilled with full attention: unchanged; what follows lost context.
    for r in 0..2 {
        let row = r * 50 * v;
        assert!(max_diff(&out[row..row + 32 * v], &full[row..row + 32 * v]) < 1e-4);
        assert!(
            max_diff(
                &out[row + 32 * v..row + 50 * v],
                &full[row + 32 * v..row + 50 * v]
            ) > 1e-4
        );
    }
    // A budget as large as the prompt changes nothing.
    m.set_kv_policy(0, snapkv(32));
    let (out, _) = m.forward_kv(&batch).unwrap();
    assert!(max_diff(&vec3(out), &full) < 1e-4);
}

#[test]
fn the_exact_prefix_is_the_first_prefill_piece_unless_the_cache_is_quantized() {
    let mut m = model();
    m.set_kv_chunk(8);
    assert_eq!(m.exact_prefix(), 0, "no policy: nothing to leave out");
    m.set_kv_policy(0, snapkv(12));
    assert_eq!(m.exact_prefix(), 32, "SnapKV's prompt");
    // The prefix is exact: the logits of those positions are the model's own.
    let batch = vec![seq(50, 2)];
    let (out, _) = m.forward_kv(&batch).unwrap();
    let mut plain = model();
    plain.set_kv_chunk(8);
    let full = vec3(plain.forward(&batch).unwrap());
    let v = tiny_config().vocab;
    assert!(max_diff(&vec3(out)[..32 * v], &full[..32 * v]) < 1e-4);
    // A budget policy without SnapKV: its first chunk.
    m.set_kv_policy(
        0,
        Some(KvPolicy {
            budget: Some(16),
            eviction: Eviction::Streaming { sinks: 4 },
            keys: None,
            values: None,
        }),
    );
    assert_eq!(m.exact_prefix(), 8);
    // A quantized cache changes the first piece too.
    m.set_kv_policy(
        1,
        Some(KvPolicy {
            budget: None,
            eviction: Eviction::Streaming { sinks: 4 },
            keys: Some(KvQuant {
                bits: 4,
                group: KvGroup::PerToken,
                group_size: 8,
            }),
            values: None,
        }),
    );
    assert_eq!(m.exact_prefix(), 0);
}
