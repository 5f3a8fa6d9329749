//! The CPU kernels' speed on each instruction set this machine has (the
//! copies `EVOCOMP_ISA` / `force_isa` select): log-sum-exp rows the size of
//! SmolLM2's vocabulary, and the forward pass of one SmolLM2-shaped block
//! (fused attention, SiLU-gate, linears; a 512-entry head) on 2 × 512
//! tokens, with f32 and with bf16 matmuls.
//!
//!   cargo run --release -p evocomp-model --example kernels_by_isa [-- --json OUT]
//!
//! Every copy gives the same bits (the tests check it); this prints what
//! each costs, the median of several timed runs after a warm-up.

use burn::tensor::Device;
use evocomp_model::kernels::isa::{Cpu, force_isa};
use evocomp_model::kernels::lse::log_sum_exp_on;
use evocomp_model::testing::{random_weights, tiny_config};
use evocomp_model::{LlamaModel, Matmul, WeightDtype};
use std::time::Instant;

/// Median seconds of `runs` calls of `f` after one untimed call.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() {
    let json = std::env::args()
        .skip_while(|a| a != "--json")
        .nth(1)
        .map(std::path::PathBuf::from);
    // SmolLM2-135M's shapes: hidden 576, 9 heads of 64 on 3 KV heads,
    // MLP 1536, vocabulary 49,152.
    let vocab = 49_152;
    let rows: Vec<f32> = (0..64 * vocab)
        .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 30.0)
        .collect();
    let mut cfg = tiny_config();
    cfg.hidden = 576;
    cfg.n_heads = 9;
    cfg.n_kv_heads = 3;
    cfg.head_dim = 64;
    cfg.intermediate = 1536;
    cfg.n_layers = 1;
    cfg.vocab = 512;
    cfg.max_context = 512;
    let w = random_weights(&cfg, 3);
    let d = Device::flex();
    let tokens: Vec<Vec<u32>> = (0..2)
        .map(|s| (0..512).map(|i| ((i * 31 + s * 7) % 512) as u32).collect())
        .collect();

    let mut out = Vec::new();
    println!(
        "{:<12} {:>18} {:>22} {:>26}",
        "copy", "log-sum-exp rows/s", "block forward tok/s", "bf16-matmul forward tok/s"
    );
    for cpu in Cpu::all() {
        force_isa(Some(cpu.isa())).expect("detected");
        let lse = time(7, || {
            for r in rows.chunks_exact(vocab) {
                std::hint::black_box(log_sum_exp_on(cpu, r));
            }
        });
        let mut model = LlamaModel::with_dtype(&cfg, &w, &d, WeightDtype::F32).unwrap();
        let forward = |m: &LlamaModel| {
            time(5, || {
                std::hint::black_box(m.forward(&tokens).unwrap().into_data());
            })
        };
        let fwd = forward(&model);
        model.set_matmul(Matmul::Bf16).unwrap();
        let bf16 = forward(&model);
        let lse_rate = 64.0 / lse;
        let (fwd_rate, bf16_rate) = (1024.0 / fwd, 1024.0 / bf16);
        println!(
            "{:<12} {lse_rate:>18.0} {fwd_rate:>22.0} {bf16_rate:>26.0}",
            cpu.isa().name()
        );
        out.push(serde_json::json!({
            "isa": cpu.isa().name(),
            "lse_rows_per_s": lse_rate,
            "block_forward_tokens_per_s": fwd_rate,
            "bf16_matmul_forward_tokens_per_s": bf16_rate,
        }));
    }
    force_isa(None).unwrap();
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    }
}
