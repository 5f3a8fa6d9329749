//! How many sequences a device evaluates per forward pass.

use crate::prepare::Prepared;
use anyhow::Result;
use evocomp_config::Experiment;

/// Sequences per forward pass, at most `want`, such that the logits of a
/// batch of sequences of `tokens` tokens over `vocab` entries (f32) fit one
/// buffer of `max` bytes; None when not even one sequence fits.
pub fn batch_that_fits(
    want: usize,
    tokens: usize,
    vocab: usize,
    max: Option<u64>,
) -> Option<usize> {
    let want = want.max(1);
    let Some(max) = max else {
        return Some(want);
    };
    let per_sequence = (tokens as u64 * vocab as u64 * 4).max(1);
    match max / per_sequence {
        0 => None,
        n => Some(want.min(usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// Sequences per forward pass on a device whose buffers hold at most `max`
/// bytes: the logits of a batch (`[batch, tokens, vocab]` f32, and their
/// log-softmax) must each fit one buffer, so a GPU with a modest limit
/// evaluates in smaller batches (the config's `fitness.batch_size` where no
/// limit applies). One sequence that does not fit is an error at the config
/// line to change.
pub fn batch_for_device(exp: &Experiment, prep: &Prepared, max: Option<u64>) -> Result<usize> {
    // The weights first; the logits are fitted below by shrinking batches.
    if let Some(why) = max.and_then(|max| prep.loaded.config().buffer_limit_error(max, 0)) {
        return Err(exp.error_at("model", why).into());
    }
    let vocab = prep.loaded.config().vocab;
    let longest = exp.fitness.seq_len.max(exp.data.held_out_context);
    let want = exp.fitness.batch_size.max(1);
    match batch_that_fits(want, longest, vocab, max) {
        Some(batch) => {
            if batch < want {
                tracing::info!(
                    "batches of {batch} sequences (not {want}): the device allocates at most {max:?} bytes at once"
                );
            }
            Ok(batch)
        }
        None => {
            let field = if exp.data.held_out_context > exp.fitness.seq_len {
                "data.held_out_context"
            } else {
                "fitness.seq_len"
            };
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            Err(exp
                .error_at(
                    field,
                    format!(
                        "the logits of one sequence of {longest} tokens take {:.1} MiB, over the \
                         {:.1} MiB the device allocates at once; use shorter sequences, or the \
                         CPU (--backend cpu)",
                        mib(longest as u64 * vocab as u64 * 4),
                        mib(max.unwrap_or(0))
                    ),
                )
                .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::batch_that_fits;

    #[test]
    fn batches_shrink_to_fit_the_device_buffer() {
        // SmolLM2: 49152 entries; 256 tokens are 48 MiB of logits a sequence.
        let seq = 256 * 49152 * 4;
        assert_eq!(batch_that_fits(4, 256, 49152, None), Some(4));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(128 << 20)), Some(2));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(seq)), Some(1));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(seq - 1)), None);
        assert_eq!(batch_that_fits(2, 8, 10, Some(1 << 30)), Some(2));
        assert_eq!(batch_that_fits(0, 8, 10, None), Some(1));
    }
}
