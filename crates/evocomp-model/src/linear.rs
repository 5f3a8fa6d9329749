//! The linear layers of a block, by kind (no other module's types: the
//! shapes under a config are `weights.rs`'s).

use serde::{Deserialize, Serialize};

/// The seven linear layers of a Llama block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LinearKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    pub const ALL: [LinearKind; 7] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LinearKind::Q => "q",
            LinearKind::K => "k",
            LinearKind::V => "v",
            LinearKind::O => "o",
            LinearKind::Gate => "gate",
            LinearKind::Up => "up",
            LinearKind::Down => "down",
        }
    }

    pub fn gguf_name(self, layer: usize) -> String {
        let s = match self {
            LinearKind::Q => "attn_q",
            LinearKind::K => "attn_k",
            LinearKind::V => "attn_v",
            LinearKind::O => "attn_output",
            LinearKind::Gate => "ffn_gate",
            LinearKind::Up => "ffn_up",
            LinearKind::Down => "ffn_down",
        };
        format!("blk.{layer}.{s}.weight")
    }

    pub fn hf_name(self, layer: usize) -> String {
        let s = match self {
            LinearKind::Q => "self_attn.q_proj",
            LinearKind::K => "self_attn.k_proj",
            LinearKind::V => "self_attn.v_proj",
            LinearKind::O => "self_attn.o_proj",
            LinearKind::Gate => "mlp.gate_proj",
            LinearKind::Up => "mlp.up_proj",
            LinearKind::Down => "mlp.down_proj",
        };
        format!("model.layers.{layer}.{s}.weight")
    }
}
