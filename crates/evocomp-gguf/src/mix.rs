//! llama.cpp's choice of tensor types: the fallback for rows a type's blocks
//! do not divide, and the hand-written rules of its quantization presets
//! (llama-quant.cpp, `llama_tensor_get_type`), for dense models of the Llama
//! family (no experts, not Falcon).

use crate::GgmlType;
use std::fmt;
use std::str::FromStr;

/// What a quantizable tensor is, as llama.cpp's rules tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorRole {
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
}

impl TensorRole {
    /// The tensor's name in a GGUF file (`blk.<layer>.` prepended for blocks).
    pub fn gguf_name(self, layer: usize) -> String {
        let t = match self {
            TensorRole::TokenEmbd => return "token_embd.weight".into(),
            TensorRole::Output => return "output.weight".into(),
            TensorRole::AttnQ => "attn_q",
            TensorRole::AttnK => "attn_k",
            TensorRole::AttnV => "attn_v",
            TensorRole::AttnOutput => "attn_output",
            TensorRole::FfnGate => "ffn_gate",
            TensorRole::FfnUp => "ffn_up",
            TensorRole::FfnDown => "ffn_down",
        };
        format!("blk.{layer}.{t}.weight")
    }
}

/// A llama.cpp quantization preset (`llama-quantize MODEL OUT <preset>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum Preset {
    Q3_K_M,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q8_0,
}

impl Preset {
    pub const ALL: [Preset; 7] = [
        Preset::Q3_K_M,
        Preset::Q4_K_S,
        Preset::Q4_K_M,
        Preset::Q5_K_S,
        Preset::Q5_K_M,
        Preset::Q6_K,
        Preset::Q8_0,
    ];

    /// The type every tensor gets unless a rule says otherwise.
    pub fn default_type(self) -> GgmlType {
        match self {
            Preset::Q3_K_M => GgmlType::Q3_K,
            Preset::Q4_K_S | Preset::Q4_K_M => GgmlType::Q4_K,
            Preset::Q5_K_S | Preset::Q5_K_M => GgmlType::Q5_K,
            Preset::Q6_K => GgmlType::Q6_K,
            Preset::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// llama.cpp's `llama_ftype` number (`general.file_type`).
    pub fn file_type(self) -> u32 {
        match self {
            Preset::Q3_K_M => 12,
            Preset::Q4_K_S => 14,
            Preset::Q4_K_M => 15,
            Preset::Q5_K_S => 16,
            Preset::Q5_K_M => 17,
            Preset::Q6_K => 18,
            Preset::Q8_0 => 7,
        }
    }

    /// The type llama.cpp gives a tensor of `role` in block `layer` of
    /// `n_layers`, whose rows have `ncols` values, without `--tensor-type`
    /// overrides; `tied`: the model has no output tensor (the token
    /// embedding is the head).
    pub fn tensor_type(
        self,
        role: TensorRole,
        layer: usize,
        n_layers: usize,
        ncols: usize,
        tied: bool,
    ) -> GgmlType {
        use GgmlType as T;
        let d = self.default_type();
        let (i, n) = (layer as i64, n_layers as i64);
        let more_bits = use_more_bits(i, n);
        let ty = match role {
            _ if role == TensorRole::Output || (tied && role == TensorRole::TokenEmbd) => {
                let block = d.block_geometry().0;
                if !ncols.is_multiple_of(block) {
                    T::Q8_0
                } else if d != T::Q8_0 {
                    T::Q6_K
                } else {
                    d
                }
            }
            TensorRole::TokenEmbd | TensorRole::Output => d,
            TensorRole::AttnV => match self {
                Preset::Q3_K_M => {
                    if i < 2 {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    }
                }
                Preset::Q4_K_M | Preset::Q5_K_M if more_bits => T::Q6_K,
                Preset::Q4_K_S if i < 4 => T::Q5_K,
                _ => d,
            },
            TensorRole::FfnDown => match self {
                // Not Falcon: Q4_K after the first sixteenth.
                Preset::Q3_K_M => {
                    if i < n / 16 {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    }
                }
                Preset::Q4_K_M | Preset::Q5_K_M if more_bits => T::Q6_K,
                Preset::Q4_K_S if i < n / 8 => T::Q5_K,
                _ => d,
            },
            TensorRole::AttnOutput => match self {
                Preset::Q3_K_M => T::Q4_K,
                _ => d,
            },
            TensorRole::AttnQ | TensorRole::AttnK | TensorRole::FfnGate | TensorRole::FfnUp => d,
        };
        fallback(ty, ncols)
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers
/// and every third one between.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// llama.cpp's `tensor_type_fallback`: the type a tensor whose rows have
/// `ncols` values gets instead of `ty` when `ty`'s blocks do not divide its
/// rows (F16 when the fallback's do not either).
pub fn fallback(ty: GgmlType, ncols: usize) -> GgmlType {
    use GgmlType as T;
    if ncols.is_multiple_of(ty.block_geometry().0) {
        return ty;
    }
    let to = match ty {
        T::IQ1_S
        | T::IQ1_M
        | T::IQ2_XXS
        | T::IQ2_XS
        | T::IQ2_S
        | T::IQ3_XXS
        | T::IQ3_S
        | T::IQ4_XS => T::IQ4_NL,
        T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(to.block_geometry().0) {
        to
    } else {
        T::F16
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<String> = Preset::ALL.iter().map(|p| p.to_string()).collect();
                format!(
                    "unknown llama.cpp preset {s:?} (known: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType as T;

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(T::Q4_K, 576), T::Q5_0);
        assert_eq!(fallback(T::Q5_K, 576), T::Q5_1);
        assert_eq!(fallback(T::Q6_K, 640), T::Q8_0);
        assert_eq!(fallback(T::Q3_K, 576), T::Q4_0);
        assert_eq!(fallback(T::Q2_K, 576), T::Q4_0);
        assert_eq!(fallback(T::Q4_K, 1536), T::Q4_K);
        assert_eq!(fallback(T::Q8_0, 40), T::F16);
        assert_eq!(fallback(T::Q4_K, 40), T::F16);
    }

    /// Gemma 3 270M's shipped Q4_K_M file (made by llama.cpp): 18 layers,
    /// rows of 640 (1024 for attn_output, 2048 for ffn_down), tied.
    #[test]
    fn q4_k_m_reproduces_the_shipped_gemma_file() {
        let p = Preset::Q4_K_M;
        let n = 18;
        let v6: Vec<usize> = (0..n)
            .filter(|&l| p.tensor_type(TensorRole::AttnV, l, n, 640, true) == T::Q8_0)
            .collect();
        assert_eq!(v6.len(), 9);
        let d6 = (0..n)
            .filter(|&l| p.tensor_type(TensorRole::FfnDown, l, n, 2048, true) == T::Q6_K)
            .count();
        assert_eq!(d6, 9);
        assert_eq!(p.tensor_type(TensorRole::AttnQ, 3, n, 640, true), T::Q5_0);
        assert_eq!(
            p.tensor_type(TensorRole::AttnOutput, 3, n, 1024, true),
            T::Q4_K
        );
        assert_eq!(
            p.tensor_type(TensorRole::TokenEmbd, 0, n, 640, true),
            T::Q8_0
        );
    }

    #[test]
    fn presets_parse_by_name() {
        assert_eq!("q4_k_m".parse::<Preset>().unwrap(), Preset::Q4_K_M);
        assert!("Q7_K".parse::<Preset>().unwrap_err().contains("Q3_K_M"));
    }
}
