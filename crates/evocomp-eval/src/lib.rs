//! Fitness evaluation on burn: teacher outputs computed once and kept,
//! KL(teacher ‖ student) per token, and perplexity.
//!
//! The forward pass runs on the model's device; its logits come back to the
//! host once per batch, where `rows.rs` reads each row in one pass (its
//! log-sum-exp, the teacher's top-k by partial selection, the entries KL and
//! NLL need), instead of writing a `[tokens, vocab]` log-softmax and sorting
//! whole rows.
//! `measure.rs` holds the model measurements heuristics use (OWL's outlier
//! ratios, ShortGPT's block influence).

use burn::tensor::Tensor;
use evocomp_data::Sample;
use evocomp_model::{ForwardError, LlamaModel};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

mod kld;
mod measure;
mod rows;
mod windows;
use evocomp_model::kernels::lse::log_sum_exp_rows;
pub use kld::{Base, BaseLogits, Estimate, KldSummary, TokenScores, quantile, token_scores};
pub use measure::{block_influence, owl_outlier_ratios};
use rows::top_k;
pub use windows::{WindowScore, window_scores};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("the backend failed: {0}")]
    Backend(String),
    #[error(
        "full teacher logits for {tokens} tokens x {vocab} vocab need {need_mib} MiB, over the limit of {limit_mib} MiB; use top-k teacher outputs instead"
    )]
    Memory {
        tokens: usize,
        vocab: usize,
        need_mib: usize,
        limit_mib: usize,
    },
    #[error(
        "teacher outputs were computed for sample {teacher}, but the evaluation sample is {sample}"
    )]
    SampleMismatch { teacher: String, sample: String },
    #[error("invalid evaluation settings: {0}")]
    Invalid(String),
    /// The model's logits hold NaN or an infinity: a weight (or a database
    /// variant) is not finite. Nothing is scored, so nothing non-finite
    /// reaches a store or a cache.
    #[error(
        "the model's output is not finite (NaN or infinite) at sequence {sequence}, position {position}{}: \
         a weight or a database variant holds NaN or infinity; no score was recorded",
        origin.as_ref().map_or(String::new(), |o| format!(" (first not finite after {o})"))
    )]
    NonFinite {
        /// The sequence in its batch (as [`HostRows::new`] sees it), or in
        /// the sample once a caller that knows the batch's place says so.
        sequence: usize,
        position: usize,
        /// The first stage of the forward pass whose output is not finite
        /// ([`LlamaModel::first_nonfinite`]), where it was looked for.
        origin: Option<String>,
    },
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// What is kept of the teacher's output distribution per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeacherMode {
    /// Every log-probability: exact KL, 4 bytes x vocab per token.
    Full,
    /// The `k` most likely tokens' log-probabilities: KL over the partition
    /// {top-k tokens, everything else}, 8 bytes x k per token.
    TopK(usize),
}

impl TeacherMode {
    /// A stable name, used in cache keys.
    pub fn key(&self) -> String {
        match self {
            TeacherMode::Full => "full".into(),
            TeacherMode::TopK(k) => format!("top{k}"),
        }
    }
}

/// The teacher's outputs for one sequence.
#[derive(Debug, Clone, PartialEq)]
enum TeacherSeq {
    /// `[T, vocab]` log-probabilities.
    Full(Vec<f32>),
    /// `[T, k]` token ids and their log-probabilities.
    TopK { ids: Vec<i64>, logp: Vec<f32> },
}

/// Teacher outputs for every sequence of one sample, computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Teacher {
    pub sample_id: String,
    pub mode: TeacherMode,
    vocab: usize,
    seqs: Vec<TeacherSeq>,
}

impl Teacher {
    /// Bytes held on the host.
    pub fn host_bytes(&self) -> usize {
        self.seqs
            .iter()
            .map(|s| match s {
                TeacherSeq::Full(v) => v.len() * 4,
                TeacherSeq::TopK { ids, logp } => ids.len() * 8 + logp.len() * 4,
            })
            .sum()
    }
}

/// Settings of an evaluation run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Most host memory full teacher logits may take.
    pub max_teacher_bytes: usize,
    /// Batches in flight at once, on the current rayon pool (1: one after
    /// another). On a CPU two keep both cores busy through the parts of a
    /// forward pass that do not split across threads; results are folded in
    /// batch order, so every sum is bit-identical to one batch at a time.
    pub concurrent_batches: usize,
    /// Positions at the start of every sequence that KL and NLL leave out:
    /// a KV policy's prompt, which it runs exactly (its loss is the
    /// teacher's by construction and would only dilute the mean).
    #[serde(default)]
    pub skip_positions: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 4,
            max_teacher_bytes: 4 << 30,
            concurrent_batches: 1,
            skip_positions: 0,
        }
    }
}

/// `f` over every batch (index, range), `concurrent` at a time (in parallel
/// on the current rayon pool when more than one), each result handed to
/// `fold` in batch order.
pub fn for_batches<T: Send>(
    ranges: &[Range<usize>],
    concurrent: usize,
    f: &(dyn Fn(usize, Range<usize>) -> Result<T> + Sync),
    fold: &mut dyn FnMut(T) -> Result<()>,
) -> Result<()> {
    let per = concurrent.max(1);
    for (gi, group) in ranges.chunks(per).enumerate() {
        let outs: Vec<Result<T>> = if group.len() == 1 {
            vec![f(gi * per, group[0].clone())]
        } else {
            group
                .par_iter()
                .enumerate()
                .map(|(j, r)| f(gi * per + j, r.clone()))
                .collect()
        };
        for o in outs {
            fold(o?)?;
        }
    }
    Ok(())
}

/// A progress bar over tokens with rate and ETA, drawn on stderr when it is a terminal.
pub fn token_progress(total_tokens: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total_tokens);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30.cyan/blue}] {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Consecutive runs of equal-length sequences, at most `batch` long: the
/// batches every evaluation of a sample uses, in order.
pub fn batches(seqs: &[Vec<u32>], batch: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < seqs.len() {
        let mut end = start + 1;
        while end < seqs.len() && end - start < batch && seqs[end].len() == seqs[start].len() {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| EvalError::Backend(format!("{e:?}")))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EvalError::Backend(format!("{e:?}")))
}

fn check_batch(opts: &EvalOptions) -> Result<()> {
    if opts.batch_size == 0 {
        return Err(EvalError::Invalid("batch size must be at least 1".into()));
    }
    Ok(())
}

/// `model`'s logits of `batch` on the host; logits that are not finite are
/// an error that says where in the model they first stopped being finite.
fn model_rows(model: &LlamaModel, batch: &[Vec<u32>]) -> Result<HostRows> {
    HostRows::new(model.forward(batch)?).map_err(|e| locate_nonfinite(e, model, batch))
}

/// `e` with the stage of `model` whose output is first not finite on the
/// sequence it names (of `sequences`), when it is a [`EvalError::NonFinite`]
/// without one; any other error as it is.
pub fn locate_nonfinite(e: EvalError, model: &LlamaModel, sequences: &[Vec<u32>]) -> EvalError {
    match e {
        EvalError::NonFinite {
            sequence,
            position,
            origin: None,
        } => {
            let origin = sequences
                .get(sequence)
                .and_then(|s| model.first_nonfinite(s).ok().flatten());
            EvalError::NonFinite {
                sequence,
                position,
                origin,
            }
        }
        e => e,
    }
}

/// A batch's logits on the host: `[B, T, vocab]` row-major, with each
/// row's log-sum-exp (so a log-probability is `logit - lse`).
struct HostRows {
    logits: Vec<f32>,
    lse: Vec<f32>,
    dims: [usize; 3],
}

impl HostRows {
    fn new(logits: Tensor<3>) -> Result<Self> {
        let dims = logits.dims();
        let logits = read_f32(logits)?;
        let lse = log_sum_exp_rows(&logits, dims[2]);
        // A row with NaN or an infinity has a log-sum-exp that is not finite.
        if let Some(r) = lse.iter().position(|x| !x.is_finite()) {
            return Err(EvalError::NonFinite {
                sequence: r / dims[1].max(1),
                position: r % dims[1].max(1),
                origin: None,
            });
        }
        Ok(Self { logits, lse, dims })
    }

    /// Row of sequence `i`, position `pos`, and its log-sum-exp.
    fn row(&self, i: usize, pos: usize) -> (&[f32], f32) {
        let [_, t, v] = self.dims;
        let r = i * t + pos;
        (&self.logits[r * v..(r + 1) * v], self.lse[r])
    }

    /// Per-position next-token log-likelihoods, `B x (T-1)`.
    fn target_logp(&self, batch: &[Vec<u32>]) -> Vec<f32> {
        let [b, t, _] = self.dims;
        let mut out = Vec::with_capacity(b * (t - 1));
        for (i, s) in batch.iter().enumerate().take(b) {
            for pos in 0..t - 1 {
                let (row, lse) = self.row(i, pos);
                out.push(row[s[pos + 1] as usize] - lse);
            }
        }
        out
    }
}

/// Compute and keep the teacher's outputs on `sample`.
pub fn compute_teacher(
    model: &LlamaModel,
    sample: &Sample,
    mode: TeacherMode,
    opts: &EvalOptions,
    progress: &ProgressBar,
) -> Result<Teacher> {
    check_batch(opts)?;
    let vocab = model.config().vocab;
    if let TeacherMode::TopK(k) = mode
        && (k == 0 || k > vocab)
    {
        return Err(EvalError::Invalid(format!(
            "top-k must be in 1..={vocab}, got {k}"
        )));
    }
    if mode == TeacherMode::Full {
        let tokens = sample.n_tokens();
        let need = tokens * vocab * 4;
        if need > opts.max_teacher_bytes {
            return Err(EvalError::Memory {
                tokens,
                vocab,
                need_mib: need >> 20,
                limit_mib: opts.max_teacher_bytes >> 20,
            });
        }
    }
    let one = |_: usize, r: Range<usize>| -> Result<(Vec<TeacherSeq>, u64)> {
        let batch = &sample.sequences[r];
        let rows = model_rows(model, batch)?;
        let [b, t, v] = rows.dims;
        let mut seqs = Vec::with_capacity(b);
        for i in 0..b {
            match mode {
                TeacherMode::Full => {
                    let mut all = Vec::with_capacity(t * v);
                    for pos in 0..t {
                        let (row, lse) = rows.row(i, pos);
                        all.extend(row.iter().map(|x| x - lse));
                    }
                    seqs.push(TeacherSeq::Full(all));
                }
                TeacherMode::TopK(k) => {
                    let (mut ids, mut logp) =
                        (Vec::with_capacity(t * k), Vec::with_capacity(t * k));
                    for pos in 0..t {
                        let (row, lse) = rows.row(i, pos);
                        for (id, x) in top_k(row, k) {
                            ids.push(id as i64);
                            logp.push(x - lse);
                        }
                    }
                    seqs.push(TeacherSeq::TopK { ids, logp });
                }
            }
        }
        Ok((seqs, batch.iter().map(|s| s.len() as u64).sum()))
    };
    let mut seqs = Vec::with_capacity(sample.sequences.len());
    for_batches(
        &batches(&sample.sequences, opts.batch_size),
        opts.concurrent_batches,
        &one,
        &mut |(batch_seqs, tokens)| {
            seqs.extend(batch_seqs);
            progress.inc(tokens);
            Ok(())
        },
    )?;
    Ok(Teacher {
        sample_id: sample.id.clone(),
        mode,
        vocab,
        seqs,
    })
}

/// KL over the partition {each of the teacher's top-k tokens, the rest}:
/// exact when k covers the vocabulary, a lower bound otherwise, and 0 when
/// the two distributions agree.
pub fn topk_kl(teacher_logp: &[f32], student_logp: &[f32]) -> f64 {
    let (mut kl, mut p_sum, mut q_sum) = (0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in teacher_logp.iter().zip(student_logp) {
        let (a, b) = (a as f64, b as f64);
        let p = a.exp();
        kl += p * (a - b);
        p_sum += p;
        q_sum += b.exp();
    }
    let rest_p = 1.0 - p_sum;
    let rest_q = 1.0 - q_sum;
    if rest_p > 1e-9 {
        kl += rest_p * (rest_p.ln() - rest_q.max(1e-30).ln());
    }
    kl.max(0.0)
}

/// The result of scoring a student against its teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlResult {
    /// Mean KL(teacher ‖ student) per token, in nats.
    pub kl: f64,
    /// Mean next-token negative log-likelihood of the student on the sample.
    pub nll: f64,
    pub tokens: usize,
    /// Each sequence's mean KL over its scored positions, in sample order
    /// (the values a paired comparison over windows resamples).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_sequence: Vec<f64>,
}

/// The index of a row's largest value (the first of equals).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut a = 0;
    for (k, &x) in row.iter().enumerate() {
        if x > row[a] {
            a = k;
        }
    }
    a
}

/// The standard error of the mean of `v` (NaN with fewer than two values).
pub fn standard_error(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
}

impl KlResult {
    pub fn perplexity(&self) -> f64 {
        self.nll.exp()
    }
}

/// Score `model` against the teacher outputs for `sample`.
pub fn kl_to_teacher(
    model: &LlamaModel,
    sample: &Sample,
    teacher: &Teacher,
    opts: &EvalOptions,
    progress: &ProgressBar,
) -> Result<KlResult> {
    kl_to_teacher_with(sample, teacher, opts, progress, &|_, batch| {
        Ok(model.forward(batch)?)
    })
    .map_err(|e| locate_nonfinite(e, model, &sample.sequences))
}

/// Makes the logits `[B, T, vocab]` of batch `i` (of [`batches`]).
/// Called from several threads at once when batches run concurrently.
pub type LogitsFn<'a> = dyn Fn(usize, &[Vec<u32>]) -> Result<Tensor<3>> + Sync + 'a;

/// [`kl_to_teacher`] with the logits of batch `i` (of [`batches`]) made by
/// `logits`: the hook that lets a caller resume from cached hidden states.
pub fn kl_to_teacher_with(
    sample: &Sample,
    teacher: &Teacher,
    opts: &EvalOptions,
    progress: &ProgressBar,
    logits: &LogitsFn<'_>,
) -> Result<KlResult> {
    check_batch(opts)?;
    if teacher.sample_id != sample.id || teacher.seqs.len() != sample.sequences.len() {
        return Err(EvalError::SampleMismatch {
            teacher: teacher.sample_id.clone(),
            sample: sample.id.clone(),
        });
    }
    // Per batch: its next-token log-probs and each position's KL, in order.
    let one = |bi: usize, r: Range<usize>| -> Result<(Vec<f32>, Vec<f64>, u64, usize)> {
        let batch = &sample.sequences[r.clone()];
        // A sequence that is not finite named by its place in the sample.
        let rows = HostRows::new(logits(bi, batch)?).map_err(|e| match e {
            EvalError::NonFinite {
                sequence,
                position,
                origin,
            } => EvalError::NonFinite {
                sequence: r.start + sequence,
                position,
                origin,
            },
            e => e,
        })?;
        let [b, t, v] = rows.dims;
        if v != teacher.vocab {
            return Err(EvalError::Invalid(format!(
                "student vocab {v} differs from the teacher's {}",
                teacher.vocab
            )));
        }
        let skip = opts.skip_positions;
        if skip + 1 >= t {
            return Err(EvalError::Invalid(format!(
                "{skip} positions left out of sequences of {t}: nothing is scored"
            )));
        }
        // Next-token log-likelihoods of the scored positions only (copied
        // only when some are left out: the fitness loop's usual case is not).
        let all = rows.target_logp(batch);
        let tl: Vec<f32> = if skip == 0 {
            all
        } else {
            all.chunks(t - 1)
                .flat_map(|s| s[skip..].iter().copied())
                .collect()
        };
        let mut kls = Vec::with_capacity(b * (t - skip));
        let mut slp = Vec::new();
        for (i, s) in teacher.seqs[r].iter().enumerate() {
            for pos in skip..t {
                let (row, lse) = rows.row(i, pos);
                kls.push(match s {
                    TeacherSeq::Full(tlp) => {
                        let tlp = &tlp[pos * v..(pos + 1) * v];
                        let kl: f64 = tlp
                            .iter()
                            .zip(row)
                            .map(|(&p, &x)| (p as f64).exp() * (p as f64 - (x - lse) as f64))
                            .sum();
                        kl.max(0.0)
                    }
                    TeacherSeq::TopK { ids, logp } => {
                        let k = ids.len() / t;
                        let o = pos * k;
                        slp.clear();
                        slp.extend(ids[o..o + k].iter().map(|&id| row[id as usize] - lse));
                        topk_kl(&logp[o..o + k], &slp)
                    }
                });
            }
        }
        Ok((
            tl,
            kls,
            batch.iter().map(|s| s.len() as u64).sum(),
            t - skip,
        ))
    };
    let (mut kl_sum, mut kl_n, mut nll_sum, mut nll_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    let mut per_sequence = Vec::with_capacity(sample.sequences.len());
    for_batches(
        &batches(&sample.sequences, opts.batch_size),
        opts.concurrent_batches,
        &one,
        &mut |(tl, kls, tokens, per)| {
            nll_sum -= tl.iter().map(|&x| x as f64).sum::<f64>();
            nll_n += tl.len();
            for kl in &kls {
                kl_sum += kl;
            }
            kl_n += kls.len();
            per_sequence.extend(
                kls.chunks(per)
                    .map(|c| c.iter().sum::<f64>() / c.len() as f64),
            );
            progress.inc(tokens);
            Ok(())
        },
    )?;
    Ok(KlResult {
        kl: kl_sum / kl_n.max(1) as f64,
        nll: nll_sum / nll_n.max(1) as f64,
        tokens: kl_n,
        per_sequence,
    })
}

/// Perplexity over whole windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PplResult {
    pub perplexity: f64,
    pub nll: f64,
    /// Scored next-token predictions (each window of C tokens gives C-1).
    pub predictions: usize,
}

/// exp(mean NLL) over every window's next-token predictions.
pub fn perplexity(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    opts: &EvalOptions,
    progress: &ProgressBar,
) -> Result<PplResult> {
    check_batch(opts)?;
    if windows.is_empty() {
        return Err(EvalError::Invalid("no windows to score".into()));
    }
    let one = |_: usize, r: Range<usize>| -> Result<(Vec<f32>, u64)> {
        let batch = &windows[r];
        if batch[0].len() < 2 {
            return Err(EvalError::Invalid(
                "a window needs at least 2 tokens".into(),
            ));
        }
        let tl = model_rows(model, batch)?.target_logp(batch);
        Ok((tl, batch.iter().map(|s| s.len() as u64).sum()))
    };
    let (mut sum, mut n) = (0.0f64, 0usize);
    for_batches(
        &batches(windows, opts.batch_size),
        opts.concurrent_batches,
        &one,
        &mut |(tl, tokens)| {
            sum -= tl.iter().map(|&x| x as f64).sum::<f64>();
            n += tl.len();
            progress.inc(tokens);
            Ok(())
        },
    )?;
    let nll = sum / n as f64;
    Ok(PplResult {
        perplexity: nll.exp(),
        nll,
        predictions: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_keeps_equal_lengths_together() {
        let seqs = vec![vec![0; 4], vec![0; 4], vec![0; 4], vec![0; 2]];
        assert_eq!(batches(&seqs, 2), vec![0..2, 2..3, 3..4]);
        assert_eq!(batches(&seqs, 8), vec![0..3, 3..4]);
    }

    #[test]
    fn topk_kl_is_zero_for_equal_and_positive_otherwise() {
        let p = [-0.5f32, -1.5, -2.5];
        assert_eq!(topk_kl(&p, &p), 0.0);
        let q = [-0.7f32, -1.2, -2.5];
        assert!(topk_kl(&p, &q) > 0.0);
        // With k covering the whole vocabulary it is the exact KL.
        let full_p = [0.5f64.ln() as f32, 0.5f64.ln() as f32];
        let full_q = [0.25f64.ln() as f32, 0.75f64.ln() as f32];
        let exact = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((topk_kl(&full_p, &full_q) - exact).abs() < 1e-6);
    }
}
