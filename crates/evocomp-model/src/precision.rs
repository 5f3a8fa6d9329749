//! The precisions a model runs in: its weights' dtype on the device and its
//! matmuls' products.

/// The dtype the linear, embedding and head weights are held in on the
/// device. Activations, norms and every matmul's accumulation stay f32: a
/// half-precision weight is widened to f32 where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum WeightDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
        })
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightDtype::F32),
            "bf16" => Ok(WeightDtype::Bf16),
            "f16" => Ok(WeightDtype::F16),
            other => Err(format!("dtype {other:?} (expected f32, bf16 or f16)")),
        }
    }
}

/// The precision of every linear layer's products (projections, MLP, head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Matmul {
    /// f32 inputs (a half-precision weight widened), f32 sums.
    #[default]
    F32,
    /// Both inputs rounded to bf16, the products summed in f32, as a GPU's
    /// bf16 matmul with f32 accumulation (`kernels::bf16`): on CPUs with
    /// AVX512_BF16 at twice the f32 rate, elsewhere the same bits emulated.
    /// CPU (flex) only.
    Bf16,
}

impl std::fmt::Display for Matmul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Matmul::F32 => "f32",
            Matmul::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Matmul {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Matmul::F32),
            "bf16" => Ok(Matmul::Bf16),
            other => Err(format!("matmul {other:?} (expected f32 or bf16)")),
        }
    }
}
