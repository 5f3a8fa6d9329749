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

/// Accumulates `XᵀX` for one block's four input groups.
pub struct XtxCapture {
    pub layer: usize,
    sums: [Option<Tensor<2>>; 4],
    tokens: usize,
}

impl XtxCapture {
    pub fn new(layer: usize) -> Self {
        Self {
            layer,
            sums: [None, None, None, None],
            tokens: 0,
        }
    }

    /// The Hessians `2XᵀX/n`, indexed like [`INPUT_GROUPS`].
    pub fn finish(self) -> Result<Vec<Hessian>, String> {
        let n = self.tokens;
        self.sums
            .into_iter()
            .map(|s| {
                let s = s.ok_or("no calibration input reached this layer")?;
                let [d, _] = s.dims();
                let v: Vec<f32> = s
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .map_err(|e| format!("{e:?}"))?;
                let v: Vec<f64> = v.into_iter().map(f64::from).collect();
                Ok(Hessian::from_xtx(d, &v, n))
            })
            .collect()
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
        if g == 0 {
            self.tokens += x.dims()[0];
        }
        let xtx = x.clone().transpose().matmul(x.clone());
        self.sums[g] = Some(match self.sums[g].take() {
            Some(s) => s + xtx,
            None => xtx,
        });
    }
}
