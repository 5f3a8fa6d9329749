//! Model measurements the one-shot heuristics need, taken on the
//! uncompressed model: OWL's layer outlier ratios and ShortGPT's block
//! influence.

use crate::{EvalError, Result};
use burn::tensor::Tensor;
use evocomp_data::Sample;
use evocomp_model::{ForwardHook, LayerWeights, LinearKind, LlamaModel, NoHook};
use std::collections::HashMap;

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| EvalError::Backend(format!("{e:?}")))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EvalError::Backend(format!("{e:?}")))
}

/// Sums of squares of every linear layer's input columns.
#[derive(Default)]
struct ColumnNorms {
    sums: HashMap<(usize, LinearKind), Vec<f64>>,
    error: Option<String>,
}

impl ForwardHook for ColumnNorms {
    fn linear_input(&mut self, layer: usize, kind: LinearKind, x: &Tensor<2>) {
        match host(x.clone().square().sum_dim(0)) {
            Ok(v) => {
                let e = self
                    .sums
                    .entry((layer, kind))
                    .or_insert_with(|| vec![0.0; v.len()]);
                for (a, b) in e.iter_mut().zip(v) {
                    *a += b as f64;
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

/// OWL's layer outlier ratio: the share of Wanda scores |W_ij|·‖X_j‖ over all
/// linear layers of a block that exceed `m` times their mean.
///
/// `block(l)` gives block `l`'s weights on the host (read one block at a
/// time, so no whole f32 copy of the model need be held for this).
pub fn owl_outlier_ratios(
    model: &LlamaModel,
    block: &dyn Fn(usize) -> std::result::Result<LayerWeights, evocomp_model::ModelError>,
    sample: &Sample,
    batch_size: usize,
    m: f64,
) -> Result<Vec<f64>> {
    let mut hook = ColumnNorms::default();
    for chunk in sample.sequences.chunks(batch_size.max(1)) {
        model.forward_hooked(chunk, &mut hook)?;
        if let Some(e) = hook.error.take() {
            return Err(EvalError::Backend(format!("reading linear inputs: {e}")));
        }
    }
    let n = model.n_layers();
    let mut out = Vec::with_capacity(n);
    for l in 0..n {
        let lw = block(l).map_err(|e| EvalError::Backend(format!("block {l}'s weights: {e}")))?;
        let mut scores: Vec<f64> = Vec::new();
        for kind in LinearKind::ALL {
            let w = lw.linear(kind);
            let norms = hook.sums.get(&(l, kind)).ok_or_else(|| {
                EvalError::Invalid(format!("no input seen for layer {l} {}", kind.name()))
            })?;
            let cols = w.shape[1];
            if norms.len() != cols {
                return Err(EvalError::Invalid(format!(
                    "layer {l} {}: {} input columns seen, weight has {cols}",
                    kind.name(),
                    norms.len()
                )));
            }
            let sq: Vec<f64> = norms.iter().map(|s| s.sqrt()).collect();
            scores.extend(
                w.data
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x as f64).abs() * sq[i % cols]),
            );
        }
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        let n = scores.iter().filter(|&&s| s > m * mean).count();
        out.push(n as f64 / scores.len().max(1) as f64);
    }
    Ok(out)
}

/// ShortGPT's block influence per layer: 1 − mean cosine similarity of the
/// block's input and output hidden states over every token.
pub fn block_influence(model: &LlamaModel, sample: &Sample, batch_size: usize) -> Result<Vec<f64>> {
    let n = model.n_layers();
    let mut sum = vec![0.0f64; n];
    let mut count = 0usize;
    for chunk in sample.sequences.chunks(batch_size.max(1)) {
        let tokens = model.tokens_to_device(chunk)?;
        let mut h = model.embed(tokens);
        let [b, t, _] = h.dims();
        for (l, s) in sum.iter_mut().enumerate() {
            let out = model.forward_layers(h.clone(), l..l + 1, &mut NoHook)?;
            let dot = (h.clone() * out.clone()).sum_dim(2);
            let na = h.clone().square().sum_dim(2).sqrt();
            let nb = out.clone().square().sum_dim(2).sqrt();
            let cos = dot / (na * nb + 1e-12);
            let v = host(cos.reshape([b, t]))?;
            *s += v.iter().map(|&x| x as f64).sum::<f64>();
            h = out;
        }
        count += b * t;
    }
    Ok(sum.iter().map(|s| 1.0 - s / count.max(1) as f64).collect())
}
