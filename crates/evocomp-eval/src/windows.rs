//! Per-window scores of several students against one teacher on the same
//! windows: what a paired comparison (the bootstrap over windows) needs.

use crate::{EvalError, EvalOptions, Result, batches, check_batch, model_rows};
use evocomp_model::LlamaModel;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

/// One window of one student.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowScore {
    /// Mean full-vocabulary KL(teacher ‖ student) over the window's positions, in nats.
    pub kl: f64,
    /// The student's mean next-token NLL over the window's C − 1 predictions.
    pub nll: f64,
    /// The teacher's, on the same predictions.
    pub teacher_nll: f64,
    /// Share of positions where the student's most likely token is the teacher's.
    pub top1_agree: f64,
}

/// Every student's [`WindowScore`] on every window (`[student][window]`).
/// The teacher's log-probabilities are computed once per batch; each
/// student then costs one forward pass and one pass over its logits.
/// `progress` counts tokens through a model (the teacher's and each student's).
pub fn window_scores(
    teacher: &LlamaModel,
    students: &[&LlamaModel],
    windows: &[Vec<u32>],
    opts: &EvalOptions,
    progress: &ProgressBar,
) -> Result<Vec<Vec<WindowScore>>> {
    check_batch(opts)?;
    if windows.is_empty() || windows.iter().any(|w| w.len() < 2) {
        return Err(EvalError::Invalid(
            "windows of at least 2 tokens are needed".into(),
        ));
    }
    let mut out = vec![Vec::with_capacity(windows.len()); students.len()];
    for r in batches(windows, opts.batch_size) {
        let batch = &windows[r];
        let t_rows = model_rows(teacher, batch)?;
        let [b, t, v] = t_rows.dims;
        // Per position: the teacher's log-probabilities, probabilities and argmax.
        let mut logp = vec![0f32; b * t * v];
        let mut probs = vec![0f32; b * t * v];
        let mut argmax = Vec::with_capacity(b * t);
        for i in 0..b {
            for pos in 0..t {
                let (row, lse) = t_rows.row(i, pos);
                let at = (i * t + pos) * v..(i * t + pos + 1) * v;
                let mut arg = 0usize;
                for (k, (&x, (lp, pk))) in row
                    .iter()
                    .zip(
                        logp[at.clone()]
                            .iter_mut()
                            .zip(probs[at.clone()].iter_mut()),
                    )
                    .enumerate()
                {
                    *lp = x - lse;
                    *pk = (*lp as f64).exp() as f32;
                    if x > row[arg] {
                        arg = k;
                    }
                }
                argmax.push(arg);
            }
        }
        let t_nll = t_rows.target_logp(batch);
        for (si, s) in students.iter().enumerate() {
            let rows = model_rows(s, batch)?;
            if rows.dims != t_rows.dims {
                return Err(EvalError::Invalid(format!(
                    "student logits {:?} differ from the teacher's {:?}",
                    rows.dims, t_rows.dims
                )));
            }
            let s_nll = rows.target_logp(batch);
            for i in 0..b {
                let (mut kl, mut agree) = (0f64, 0usize);
                for pos in 0..t {
                    let (row, lse) = rows.row(i, pos);
                    let at = (i * t + pos) * v..(i * t + pos + 1) * v;
                    // Σ p (log p − log q), term by term (no cancellation).
                    let sum: f64 = probs[at.clone()]
                        .iter()
                        .zip(&logp[at])
                        .zip(row)
                        .map(|((&p, &lp), &x)| p as f64 * (lp as f64 - (x - lse) as f64))
                        .sum();
                    kl += sum.max(0.0);
                    agree += usize::from(crate::argmax(row) == argmax[i * t + pos]);
                }
                let span = i * (t - 1)..(i + 1) * (t - 1);
                let mean = |x: &[f32]| -x.iter().map(|&y| y as f64).sum::<f64>() / x.len() as f64;
                out[si].push(WindowScore {
                    kl: kl / t as f64,
                    nll: mean(&s_nll[span.clone()]),
                    teacher_nll: mean(&t_nll[span]),
                    top1_agree: agree as f64 / t as f64,
                });
            }
        }
        // Tokens through a model: the teacher's and every student's.
        let tokens: u64 = batch.iter().map(|w| w.len() as u64).sum();
        progress.inc(tokens * (1 + students.len() as u64));
    }
    Ok(out)
}
