//! One worker's evaluator: a student model that genomes are applied to, the
//! uncompressed teacher's outputs per token sample (computed once), and the
//! prefix cache: the hidden states of an anchor genome (EvoPress's parent)
//! at its layer boundaries (every one, or every s-th when a large sample
//! would not fit the anchor's memory bound, and always the last), from which
//! a child resumes at the last kept boundary before the first layer where it
//! differs.

use anyhow::{Context as _, Result};
use burn::tensor::{Device, Tensor};
use evocomp_config::{FitnessSpec, Metric, TeacherSpec};
use evocomp_data::{Sample, TokenSet};
use evocomp_db::{Applier, Database};
use evocomp_eval::{
    EvalOptions, KlResult, Teacher, TeacherMode, batches, compute_teacher, for_batches,
    kl_to_teacher_with,
};
use evocomp_model::{LlamaModel, LoadedModel, NoHook};
use evocomp_search::{Genome, SampleDraw};
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::sync::Arc;

/// The token sample a spec names: ⌈tokens / seq_len⌉ random windows of the
/// calibration text, drawn with the spec's seed, after the draw's first
/// `skip / seq_len` windows.
pub fn sample_for(calib: &TokenSet, spec: SampleDraw, seq_len: usize) -> Result<Sample> {
    let n = spec.tokens.div_ceil(seq_len).max(1);
    if spec.skip == 0 {
        return calib
            .sample(n, seq_len, spec.seed)
            .with_context(|| format!("a sample of {n} x {seq_len} tokens"));
    }
    if !spec.skip.is_multiple_of(seq_len) {
        anyhow::bail!(
            "a sample part skipping {} tokens: not a whole number of {seq_len}-token sequences",
            spec.skip
        );
    }
    let skip = spec.skip / seq_len;
    Ok(calib
        .sample_with_held_out(skip, n, seq_len, spec.seed)
        .with_context(|| format!("a sample of {n} x {seq_len} tokens after {skip} sequences"))?
        .1)
}

/// The model on `device` as the fitness spec computes it: the weights in its
/// dtype, the matmuls in its precision.
pub fn model_for(
    loaded: &LoadedModel,
    device: &Device,
    fitness: &FitnessSpec,
) -> Result<LlamaModel> {
    let mut model = loaded
        .to_device(device, fitness.dtype)
        .with_context(|| format!("loading {}", loaded.info.path.display()))?;
    model.set_matmul(fitness.matmul)?;
    Ok(model)
}

/// Layers run, against layers a full forward would have run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReuseStats {
    pub layers_run: u64,
    pub layers_full: u64,
    pub anchors_built: u64,
}

impl std::iter::Sum for ReuseStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| Self {
            layers_run: a.layers_run + b.layers_run,
            layers_full: a.layers_full + b.layers_full,
            anchors_built: a.anchors_built + b.anchors_built,
        })
    }
}

struct Anchor {
    sample_id: String,
    genome: Genome,
    /// The layer boundaries kept, ascending: boundary l is the input of
    /// layer l, boundary L the output of the last layer.
    kept: Vec<usize>,
    /// Per batch, the hidden states at each kept boundary.
    states: Vec<Vec<Tensor<3>>>,
}

/// The boundaries an anchor keeps: every `stride`-th of `0..=n` and `n`
/// itself, with the smallest stride whose boundaries take at most
/// `max_bytes` at `boundary_bytes` each; `None` when not even the first and
/// the last fit.
fn kept_boundaries(n: usize, boundary_bytes: usize, max_bytes: usize) -> Option<Vec<usize>> {
    (1..=n.max(1)).find_map(|stride| {
        let mut kept: Vec<usize> = (0..=n).step_by(stride).collect();
        if kept.last() != Some(&n) {
            kept.push(n);
        }
        (kept.len().saturating_mul(boundary_bytes) <= max_bytes).then_some(kept)
    })
}

pub struct Evaluator {
    teacher_model: LlamaModel,
    model: LlamaModel,
    applier: Applier,
    db: Arc<Database>,
    unit_layer: Vec<usize>,
    calib: Arc<TokenSet>,
    fitness: FitnessSpec,
    opts: EvalOptions,
    samples: HashMap<SampleDraw, Sample>,
    teachers: Vec<Teacher>,
    anchor: Option<Anchor>,
    reuse: bool,
    /// Most bytes of hidden states one anchor may hold.
    max_anchor_bytes: usize,
    pub stats: ReuseStats,
}

impl Evaluator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        loaded: &LoadedModel,
        db: Arc<Database>,
        unit_layer: Vec<usize>,
        calib: Arc<TokenSet>,
        fitness: FitnessSpec,
        reuse: bool,
        device: &Device,
    ) -> Result<Self> {
        // The student starts as the teacher's clone: the two share every
        // weight buffer on the device until a genome replaces one.
        let teacher_model = model_for(loaded, device, &fitness)?;
        let model = teacher_model.clone();
        let applier = Applier::new(&db);
        Ok(Self {
            teacher_model,
            model,
            applier,
            db,
            unit_layer,
            calib,
            opts: EvalOptions {
                batch_size: fitness.batch_size,
                ..Default::default()
            },
            fitness,
            samples: HashMap::new(),
            teachers: Vec::new(),
            anchor: None,
            reuse,
            max_anchor_bytes: 2 << 30,
            stats: ReuseStats::default(),
        })
    }

    /// Batches evaluated at once (see `EvalOptions::concurrent_batches`).
    pub fn set_concurrent_batches(&mut self, n: usize) {
        self.opts.concurrent_batches = n.max(1);
    }

    /// Bounds the memory of one anchor's hidden states (default 2 GiB);
    /// a sample whose every layer boundary does not fit keeps every s-th.
    pub fn set_max_anchor_bytes(&mut self, bytes: usize) {
        self.max_anchor_bytes = bytes;
    }

    fn mode(&self) -> TeacherMode {
        match self.fitness.teacher {
            TeacherSpec::Full => TeacherMode::Full,
            TeacherSpec::TopK(k) => TeacherMode::TopK(k),
        }
    }

    fn sample(&mut self, spec: SampleDraw) -> Result<Sample> {
        if let Some(s) = self.samples.get(&spec) {
            return Ok(s.clone());
        }
        let s = sample_for(&self.calib, spec, self.fitness.seq_len)?;
        if self.samples.len() > 64 {
            self.samples.clear();
        }
        self.samples.insert(spec, s.clone());
        Ok(s)
    }

    /// Drop every cache (samples, teacher outputs, the anchor's hidden
    /// states) and forget which genome the model holds: after an evaluation
    /// that was cut short (a panic), nothing half written is used again.
    pub fn clear_caches(&mut self) {
        self.samples.clear();
        self.teachers.clear();
        self.anchor = None;
        self.applier.forget();
    }

    /// The teacher's outputs on `sample`, computed once and kept (the last few samples).
    fn teacher(&mut self, sample: &Sample) -> Result<usize> {
        if let Some(i) = self.teachers.iter().position(|t| t.sample_id == sample.id) {
            return Ok(i);
        }
        let t = compute_teacher(
            &self.teacher_model,
            sample,
            self.mode(),
            &self.opts,
            &ProgressBar::hidden(),
        )?;
        if self.teachers.len() >= 4 {
            self.teachers.remove(0);
        }
        self.teachers.push(t);
        Ok(self.teachers.len() - 1)
    }

    fn value(&self, r: &KlResult) -> f64 {
        match self.fitness.metric {
            Metric::Kl => r.kl,
            Metric::Nll => r.nll,
        }
    }

    /// The first layer whose units differ between two genomes (n_layers if none).
    fn first_diff(&self, a: &[i64], b: &[i64]) -> usize {
        a.iter()
            .zip(b)
            .zip(&self.unit_layer)
            .filter(|((x, y), _)| x != y)
            .map(|(_, &l)| l)
            .min()
            .unwrap_or(self.model.n_layers())
    }

    /// Makes the anchor hold `genome`'s hidden states on `sample` (built
    /// once per sample and genome); false when not even its first and last
    /// layer boundaries fit the memory bound.
    fn ensure_anchor(&mut self, sample: &Sample, genome: &[i64]) -> Result<bool> {
        if self
            .anchor
            .as_ref()
            .is_some_and(|a| a.sample_id == sample.id && a.genome == genome)
        {
            return Ok(true);
        }
        self.anchor = None;
        let n = self.model.n_layers();
        let boundary_bytes = sample.n_tokens() * self.model.config().hidden * 4;
        let Some(kept) = kept_boundaries(n, boundary_bytes, self.max_anchor_bytes) else {
            return Ok(false);
        };
        self.applier.apply(&self.db, &mut self.model, genome)?;
        let model = &self.model;
        let one = |_: usize, r: std::ops::Range<usize>| -> evocomp_eval::Result<Vec<Tensor<3>>> {
            let tokens = model.tokens_to_device(&sample.sequences[r])?;
            let mut h = model.embed(tokens);
            let mut per = Vec::with_capacity(kept.len());
            per.push(h.clone());
            for w in kept.windows(2) {
                h = model.forward_layers(h, w[0]..w[1], &mut NoHook)?;
                per.push(h.clone());
            }
            Ok(per)
        };
        let mut states = Vec::new();
        for_batches(
            &batches(&sample.sequences, self.opts.batch_size),
            self.opts.concurrent_batches,
            &one,
            &mut |per| {
                states.push(per);
                Ok(())
            },
        )?;
        self.stats.anchors_built += 1;
        self.stats.layers_run += n as u64;
        self.anchor = Some(Anchor {
            sample_id: sample.id.clone(),
            genome: genome.to_vec(),
            kept,
            states,
        });
        Ok(true)
    }

    /// The fitness of `genome` on the sample `spec` names (lower is better).
    /// With an `anchor` (a genome most requests share prefixes with), the
    /// anchor's hidden states on this sample are kept and children resume
    /// from them.
    pub fn fitness(
        &mut self,
        genome: &[i64],
        spec: SampleDraw,
        anchor: Option<&Genome>,
    ) -> Result<f64> {
        let sample = self.sample(spec)?;
        let ti = self.teacher(&sample)?;
        let n = self.model.n_layers();
        let reuse = match anchor {
            Some(anchor) if self.reuse => self.ensure_anchor(&sample, anchor)?,
            _ => false,
        };
        // The kept boundary the child resumes from, and its index.
        let (start, at) = match &self.anchor {
            Some(a) if reuse => {
                let diff = self.first_diff(&a.genome, genome);
                let at = a.kept.iter().rposition(|&b| b <= diff).expect("0 is kept");
                (a.kept[at], at)
            }
            _ => (0, 0),
        };
        self.applier.apply(&self.db, &mut self.model, genome)?;
        let Self {
            model,
            anchor,
            teachers,
            opts,
            stats,
            ..
        } = self;
        // A KV policy's exact first piece is not scored (its loss is the teacher's).
        let opts = &EvalOptions {
            skip_positions: model.exact_prefix(),
            ..*opts
        };
        let located = |e| evocomp_eval::locate_nonfinite(e, model, &sample.sequences);
        let r = if reuse {
            let states = &anchor.as_ref().expect("built").states;
            kl_to_teacher_with(
                &sample,
                &teachers[ti],
                opts,
                &ProgressBar::hidden(),
                &|bi, _| {
                    let h = states[bi][at].clone();
                    let h = model.forward_layers(h, start..n, &mut NoHook)?;
                    Ok(model.head(h))
                },
            )
            .map_err(located)?
        } else {
            kl_to_teacher_with(
                &sample,
                &teachers[ti],
                opts,
                &ProgressBar::hidden(),
                &|_, batch| Ok(model.forward(batch)?),
            )
            .map_err(located)?
        };
        stats.layers_run += (n - start) as u64;
        stats.layers_full += n as u64;
        Ok(self.value(&r))
    }

    /// KL to the teacher and NLL of `genome` on a held-out sample.
    pub fn held_out(&mut self, genome: &[i64], sample: &Sample) -> Result<KlResult> {
        let ti = self.teacher(sample)?;
        self.applier.apply(&self.db, &mut self.model, genome)?;
        let opts = EvalOptions {
            skip_positions: self.model.exact_prefix(),
            ..self.opts
        };
        let r = kl_to_teacher_with(
            sample,
            &self.teachers[ti],
            &opts,
            &ProgressBar::hidden(),
            &|_, batch| Ok(self.model.forward(batch)?),
        )
        .map_err(|e| evocomp_eval::locate_nonfinite(e, &self.model, &sample.sequences))?;
        Ok(r)
    }

    /// The live student model (for measurements such as OWL's or ShortGPT's scores).
    pub fn teacher_model(&self) -> &LlamaModel {
        &self.teacher_model
    }
}

#[cfg(test)]
mod tests {
    use super::kept_boundaries;

    #[test]
    fn anchors_keep_every_boundary_that_fits_and_always_the_last() {
        assert_eq!(kept_boundaries(4, 10, 50), Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(kept_boundaries(4, 10, 49), Some(vec![0, 2, 4]));
        assert_eq!(
            kept_boundaries(30, 10, 110),
            Some((0..=30).step_by(3).collect())
        );
        assert_eq!(kept_boundaries(5, 10, 30), Some(vec![0, 3, 5]));
        assert_eq!(kept_boundaries(4, 10, 20), Some(vec![0, 4]));
        assert_eq!(kept_boundaries(4, 10, 19), None);
    }
}
