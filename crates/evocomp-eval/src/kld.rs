//! A KL-divergence report of one model against a base model, as users of
//! `llama-perplexity --kl-divergence` know it: per prediction (every window's
//! C − 1 next-token predictions) the full-vocabulary KL(base ‖ model), both
//! models' log-likelihood of the true next token and whether their most
//! likely tokens agree; then the summary statistics.
//!
//! The base's log-probabilities can be saved once ([`BaseLogits`]) and
//! reused for other models on the same tokens, as llama.cpp's
//! `--kl-divergence-base` file is.

use crate::{EvalError, EvalOptions, HostRows, Result, argmax, batches, check_batch, model_rows};
use evocomp_model::LlamaModel;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Per prediction, in window order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenScores {
    /// KL(base ‖ model) in nats.
    pub kl: Vec<f64>,
    /// ln p(true next token) under the base and under the model.
    pub base_logp: Vec<f64>,
    pub logp: Vec<f64>,
    /// The two models' most likely tokens are the same.
    pub same_top: Vec<bool>,
}

const MAGIC: &[u8; 8] = b"EVOKLD01";

/// What a saved base file holds besides the log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    vocab: usize,
    /// The scored windows' token ids.
    windows: Vec<Vec<u32>>,
    /// The base model, as given (for the error messages).
    model: String,
}

/// The base model's log-probabilities on a set of windows, on disk:
/// `EVOKLD01`, a u64 header length, a JSON header (vocabulary size, the
/// windows' tokens, the base model's name), then f32 log-probabilities,
/// window after window, C − 1 rows of `vocab` each.
pub struct BaseLogits {
    path: PathBuf,
    header: Header,
    data_start: u64,
}

impl BaseLogits {
    /// Open a saved file, refusing one for other tokens or another vocabulary.
    pub fn open(path: &Path, windows: &[Vec<u32>], vocab: usize) -> Result<Self> {
        let bad = |m: String| EvalError::Invalid(format!("{}: {m}", path.display()));
        let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut magic = [0u8; 8];
        let mut n = [0u8; 8];
        f.read_exact(&mut magic)
            .and_then(|_| f.read_exact(&mut n))
            .map_err(|_| bad("not a base log-probability file (too short)".into()))?;
        if &magic != MAGIC {
            return Err(bad(
                "not a base log-probability file (written by `evocomp kld --save-base`)".into(),
            ));
        }
        let n = u64::from_le_bytes(n);
        if n > len.saturating_sub(16) || n > 1 << 32 {
            return Err(bad(format!("header of {n} bytes in a file of {len}")));
        }
        let mut text = vec![0u8; n as usize];
        f.read_exact(&mut text).map_err(|e| bad(e.to_string()))?;
        let header: Header =
            serde_json::from_slice(&text).map_err(|e| bad(format!("header: {e}")))?;
        if header.vocab != vocab {
            return Err(bad(format!(
                "log-probabilities over {} tokens, but the model has a vocabulary of {vocab}",
                header.vocab
            )));
        }
        if header.windows != windows {
            return Err(bad(format!(
                "saved for other tokens ({} windows of {}; these are {} of {}): save it again \
                 with --save-base on this text, --tokens and --context",
                header.windows.len(),
                header.windows.first().map_or(0, Vec::len),
                windows.len(),
                windows.first().map_or(0, Vec::len)
            )));
        }
        let rows: u64 = windows.iter().map(|w| w.len() as u64 - 1).sum();
        let want = 16 + n + rows * vocab as u64 * 4;
        if len != want {
            return Err(bad(format!(
                "{len} bytes, but {want} are needed for its windows (a partial file?)"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            data_start: 16 + n,
        })
    }

    /// The base model's name, as it was given when saving.
    pub fn model(&self) -> &str {
        &self.header.model
    }

    /// Window `w`'s log-probabilities, `(C − 1) × vocab`.
    fn window(&self, w: usize) -> Result<Vec<f32>> {
        let v = self.header.vocab;
        let before: u64 = self.header.windows[..w]
            .iter()
            .map(|x| x.len() as u64 - 1)
            .sum();
        let rows = self.header.windows[w].len() - 1;
        let io = |e: std::io::Error| EvalError::Invalid(format!("{}: {e}", self.path.display()));
        let mut f = std::fs::File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(self.data_start + before * v as u64 * 4))
            .map_err(io)?;
        let mut bytes = vec![0u8; rows * v * 4];
        f.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect())
    }
}

/// Where the base's log-probabilities come from.
pub enum Base<'a> {
    /// Run this model; with `save`, also write its log-probabilities there
    /// (named `model` in the file).
    Model {
        model: &'a LlamaModel,
        save: Option<(&'a Path, &'a str)>,
    },
    Saved(&'a BaseLogits),
}

/// Log-softmax of each of a window's C − 1 predicting rows, `(C − 1) × v`.
fn window_logp(rows: &HostRows, i: usize) -> Vec<f32> {
    let [_, t, v] = rows.dims;
    let mut out = Vec::with_capacity((t - 1) * v);
    for pos in 0..t - 1 {
        let (row, lse) = rows.row(i, pos);
        out.extend(row.iter().map(|&x| x - lse));
    }
    out
}

/// Score `model` against `base` on every prediction of `windows`.
/// `progress` counts tokens through a model.
pub fn token_scores(
    base: Base<'_>,
    model: &LlamaModel,
    windows: &[Vec<u32>],
    opts: &EvalOptions,
    progress: &ProgressBar,
) -> Result<TokenScores> {
    check_batch(opts)?;
    if windows.is_empty() || windows.iter().any(|w| w.len() < 2) {
        return Err(EvalError::Invalid(
            "windows of at least 2 tokens are needed".into(),
        ));
    }
    let vocab = model.config().vocab;
    let mut writer = match &base {
        Base::Model {
            model: b,
            save: Some((path, name)),
        } => {
            if b.config().vocab != vocab {
                return Err(EvalError::Invalid(format!(
                    "the base model's vocabulary has {} tokens, the other's {vocab}",
                    b.config().vocab
                )));
            }
            let header = serde_json::to_vec(&Header {
                vocab,
                windows: windows.to_vec(),
                model: name.to_string(),
            })
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
            let tmp = path.with_extension("partial");
            let io = |e: std::io::Error| EvalError::Invalid(format!("{}: {e}", tmp.display()));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
            f.write_all(MAGIC)
                .and_then(|_| f.write_all(&(header.len() as u64).to_le_bytes()))
                .and_then(|_| f.write_all(&header))
                .map_err(io)?;
            Some((f, tmp, path.to_path_buf()))
        }
        Base::Model { model: b, .. } if b.config().vocab != vocab => {
            return Err(EvalError::Invalid(format!(
                "the base model's vocabulary has {} tokens, the other's {vocab}",
                b.config().vocab
            )));
        }
        _ => None,
    };
    let mut out = TokenScores::default();
    let mut done = 0usize;
    for r in batches(windows, opts.batch_size) {
        let batch = &windows[r.clone()];
        let rows = model_rows(model, batch)?;
        let base_rows = match &base {
            Base::Model { model: b, .. } => Some(model_rows(b, batch)?),
            Base::Saved(_) => None,
        };
        for (i, w) in batch.iter().enumerate() {
            let base_logp = match (&base, &base_rows) {
                (_, Some(br)) => window_logp(br, i),
                (Base::Saved(s), None) => s.window(done + i)?,
                _ => unreachable!("a base model gives rows"),
            };
            if let Some((f, tmp, _)) = writer.as_mut() {
                let bytes: Vec<u8> = base_logp.iter().flat_map(|x| x.to_le_bytes()).collect();
                f.write_all(&bytes)
                    .map_err(|e| EvalError::Invalid(format!("{}: {e}", tmp.display())))?;
            }
            for pos in 0..w.len() - 1 {
                let (row, lse) = rows.row(i, pos);
                let bl = &base_logp[pos * vocab..(pos + 1) * vocab];
                let kl: f64 = bl
                    .iter()
                    .zip(row)
                    .map(|(&p, &x)| (p as f64).exp() * (p as f64 - (x - lse) as f64))
                    .sum();
                let next = w[pos + 1] as usize;
                out.kl.push(kl.max(0.0));
                out.base_logp.push(bl[next] as f64);
                out.logp.push((row[next] - lse) as f64);
                out.same_top.push(argmax(row) == argmax(bl));
            }
        }
        done += batch.len();
        let tokens: u64 = batch.iter().map(|w| w.len() as u64).sum();
        let passes = if base_rows.is_some() { 2 } else { 1 };
        progress.inc(tokens * passes);
    }
    if let Some((f, tmp, path)) = writer {
        let io = |e: std::io::Error| EvalError::Invalid(format!("{}: {e}", path.display()));
        f.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
    }
    Ok(out)
}

/// A mean and its standard error over independent values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub standard_error: f64,
}

fn estimate(v: impl Iterator<Item = f64>) -> Estimate {
    let v: Vec<f64> = v.collect();
    Estimate {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        standard_error: crate::standard_error(&v),
    }
}

/// The `q` quantile of sorted values, interpolated linearly between the
/// two nearest ranks (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The report: every figure llama-perplexity's KL-divergence mode gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldSummary {
    pub predictions: usize,
    /// Perplexities with standard errors (`ppl · s.e.(mean NLL)`).
    pub base_perplexity: Estimate,
    pub perplexity: Estimate,
    /// Mean ln(PPL(model) / PPL(base)) over predictions (paired).
    pub ln_ppl_ratio: Estimate,
    /// KL(base ‖ model): mean (s.e. over predictions, as llama.cpp gives it),
    /// the standard error over windows (predictions within a window are not
    /// independent), and its distribution.
    pub kld: Estimate,
    pub kld_window_standard_error: f64,
    pub kld_median: f64,
    pub kld_p90: f64,
    pub kld_p99: f64,
    pub kld_max: f64,
    /// Share of predictions whose most likely token is the base's.
    pub same_top: Estimate,
    /// Mean change in the probability of the true next token, model − base.
    pub delta_p: Estimate,
    pub delta_p_rms: f64,
}

impl TokenScores {
    /// The summary; `per_window` is the number of predictions per window
    /// (for the standard error over windows).
    pub fn summary(&self, per_window: usize) -> KldSummary {
        let n = self.kl.len();
        let nll = |v: &[f64]| estimate(v.iter().map(|x| -x));
        let ppl = |e: Estimate| Estimate {
            mean: e.mean.exp(),
            standard_error: e.mean.exp() * e.standard_error,
        };
        let mut sorted = self.kl.clone();
        sorted.sort_by(f64::total_cmp);
        let windows: Vec<f64> = self
            .kl
            .chunks(per_window.max(1))
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect();
        let dp: Vec<f64> = self
            .logp
            .iter()
            .zip(&self.base_logp)
            .map(|(a, b)| a.exp() - b.exp())
            .collect();
        KldSummary {
            predictions: n,
            base_perplexity: ppl(nll(&self.base_logp)),
            perplexity: ppl(nll(&self.logp)),
            ln_ppl_ratio: estimate(self.base_logp.iter().zip(&self.logp).map(|(b, a)| b - a)),
            kld: estimate(self.kl.iter().copied()),
            kld_window_standard_error: estimate(windows.iter().copied()).standard_error,
            kld_median: quantile(&sorted, 0.5),
            kld_p90: quantile(&sorted, 0.9),
            kld_p99: quantile(&sorted, 0.99),
            kld_max: sorted[n - 1],
            same_top: estimate(self.same_top.iter().map(|&s| f64::from(u8::from(s)))),
            delta_p: estimate(dp.iter().copied()),
            delta_p_rms: (dp.iter().map(|x| x * x).sum::<f64>() / n as f64).sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks_as_numpy_does() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 10.0);
        // numpy.quantile([1,2,3,4,10], 0.9) = 7.6
        assert!((quantile(&v, 0.9) - 7.6).abs() < 1e-12);
        assert_eq!(quantile(&[5.0], 0.99), 5.0);
    }

    #[test]
    fn a_summary_of_known_values() {
        let s = TokenScores {
            kl: vec![0.0, 0.2, 0.4, 0.6],
            base_logp: vec![-1.0; 4],
            logp: vec![-1.0, -2.0, -1.0, -2.0],
            same_top: vec![true, false, true, true],
        };
        let m = s.summary(2);
        assert!((m.kld.mean - 0.3).abs() < 1e-12);
        // Sample s.d. of 0, .2, .4, .6 is 0.2582; over √4.
        assert!((m.kld.standard_error - 0.258_198_889_747_161_1 / 2.0).abs() < 1e-12);
        // Windows: means 0.1 and 0.5: s.e. = |0.5 − 0.1| / 2.
        assert!((m.kld_window_standard_error - 0.2).abs() < 1e-12);
        assert!((m.base_perplexity.mean - 1f64.exp()).abs() < 1e-12);
        assert_eq!(m.base_perplexity.standard_error, 0.0);
        assert!((m.perplexity.mean - 1.5f64.exp()).abs() < 1e-12);
        assert!((m.ln_ppl_ratio.mean - 0.5).abs() < 1e-12);
        assert_eq!(m.same_top.mean, 0.75);
        let dp = ((-2f64).exp() - (-1f64).exp()) / 2.0;
        assert!((m.delta_p.mean - dp).abs() < 1e-12);
        assert_eq!(m.kld_max, 0.6);
        assert!((m.kld_median - 0.3).abs() < 1e-12);
    }
}
