//! Calibration statistics: `XᵀX` of every linear layer's input, accumulated
//! on the device through the model's forward hook, one block at a time.

use burn::tensor::Tensor;
use evocomp_compress::Hessian;
use evocomp_model::{ForwardHook, LinearKind};

/// The four distinct inputs of a block's linear layers.
pub const INPUT_GROUPS: [LinearKind; 4] = [
    LinearKind::Q,
    LinearKind::O,
    LinearKind::Gate,
    LinearKind::Down,
];

/// Which input a linear layer reads (Q, K, V share one; Gate and Up share one).
pub fn input_group(k: LinearKind) -> LinearKind {
    match k {
        LinearKind::Q | LinearKind::K | LinearKind::V => LinearKind::Q,
        LinearKind::Gate | LinearKind::Up => LinearKind::Gate,
        other => other,
    }
}

/// Accumulates `XᵀX` for some of one block's four input groups.
pub struct XtxCapture {
    pub layer: usize,
    wanted: [bool; 4],
    sums: [Option<Tensor<2>>; 4],
    tokens: [usize; 4],
}

impl XtxCapture {
    /// All four input groups of block `layer`.
    pub fn new(layer: usize) -> Self {
        Self::only(layer, &INPUT_GROUPS)
    }

    /// Only the input groups `groups` (members of [`INPUT_GROUPS`]).
    pub fn only(layer: usize, groups: &[LinearKind]) -> Self {
        Self {
            layer,
            wanted: INPUT_GROUPS.map(|g| groups.contains(&g)),
            sums: [None, None, None, None],
            tokens: [0; 4],
        }
    }

    /// The Hessians `2XᵀX/n`, indexed like [`INPUT_GROUPS`] (`None` for a
    /// group not asked for).
    pub fn finish(self) -> Result<[Option<Hessian>; 4], String> {
        let mut out = [None, None, None, None];
        for (g, s) in self.sums.into_iter().enumerate() {
            if !self.wanted[g] {
                continue;
            }
            let n = self.tokens[g];
            let s = s.ok_or("no calibration input reached this layer")?;
            out[g] = Some({
                let [d, _] = s.dims();
                let v: Vec<f32> = s
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .map_err(|e| format!("{e:?}"))?;
                let v: Vec<f64> = v.into_iter().map(f64::from).collect();
                Hessian::from_xtx(d, &v, n)
            });
        }
        Ok(out)
    }
}

impl ForwardHook for XtxCapture {
    fn linear_input(&mut self, layer: usize, kind: LinearKind, x: &Tensor<2>) {
        if layer != self.layer || input_group(kind) != kind {
            return;
        }
        let g = INPUT_GROUPS
            .iter()
            .position(|&k| k == kind)
            .expect("a group");
        if !self.wanted[g] {
            return;
        }
        self.tokens[g] += x.dims()[0];
        let xtx = x.clone().transpose().matmul(x.clone());
        self.sums[g] = Some(match self.sums[g].take() {
            Some(s) => s + xtx,
            None => xtx,
        });
    }
}
