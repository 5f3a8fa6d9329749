//! The coordinator: drives a strategy through ask/tell, serves its asks from
//! the fitness caches or the worker pool, and commits every result to the
//! study store as it arrives. A strategy checkpoint is committed together
//! with the journal entries of its step, in one transaction, so a study
//! killed at any moment resumes with nothing lost and nothing evaluated twice.

use crate::context::{Prepared, prepare};
use crate::scores::{block_influence, owl_outlier_ratios};
use crate::worker::{Job, JobKind, Output, Pool};
use anyhow::{Context as _, Result, anyhow, bail};
use burn::tensor::Device;
use evocomp_config::{BudgetSpec, Compression, Experiment, Preset, StrategySpec};
use evocomp_eval::KlResult;
use evocomp_model::LlamaModel;
use evocomp_search::heuristics::{
    lowest_scores_first, owl_genome, pyramid_genome, random_feasible,
};
use evocomp_search::{
    Budget, EvoPress, EvoPressConfig, EvolKv, EvolKvConfig, Fixed, Genome, Greedy, GreedyConfig,
    LeaveOneOut, LevelNsga2, Nsga2Config, SampleSpec, Scored, Space, Stage, Strategy, knapsack,
    rng,
};
use evocomp_store::{CacheKey, Commit, SharedCache, Study, Trial};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The study's resumable state: the strategy checkpoint and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Ask/tell rounds completed.
    pub step: u64,
    pub strategy: Strategy,
    /// Wall seconds spent in completed steps, over every run.
    pub seconds: f64,
    /// After every step: where the search stood (for convergence plots).
    #[serde(default)]
    pub history: Vec<StepRecord>,
}

/// The search after one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// Evaluations computed so far (cache hits excluded).
    pub evaluations: usize,
    pub cache_hits: usize,
    pub seconds: f64,
    /// The strategy's best fitness so far (on the sample it was last scored on).
    pub best: Option<f64>,
    pub best_cost: Option<u64>,
    /// NSGA-II: the current front as (fitness, cost), for hypervolume over time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub front: Vec<(f64, u64)>,
}

/// A configuration measured on the held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub genome: Genome,
    pub cost: u64,
    /// Fitness on the search's last sample.
    pub search_fitness: f64,
    pub held_out_kl: f64,
    pub held_out_nll: f64,
    pub held_out_perplexity: f64,
    pub held_out_tokens: usize,
}

/// What a finished study found; saved in the store and as `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub strategy: String,
    pub budget: Budget,
    pub cost_unit: String,
    /// Cost of every unit at its least compressed level.
    pub full_cost: u64,
    pub units: Vec<String>,
    /// The best configuration.
    pub best: Measured,
    /// NSGA-II's front (the best alone for other strategies), cheapest first.
    pub front: Vec<Measured>,
    pub steps: u64,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub seconds: f64,
    /// Layers run / layers a full forward would run (prefix reuse), this process.
    pub layers_run_fraction: Option<f64>,
    /// The search after every step.
    #[serde(default)]
    pub history: Vec<StepRecord>,
}

/// How a `run` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished {
        summary: Box<Summary>,
        /// Evaluations this process did.
        new_evaluations: usize,
    },
    /// Stopped cleanly (Ctrl-C) at a trial boundary; `resume` continues.
    Stopped { step: u64, evaluations: usize },
}

/// Settings of one run of the coordinator.
#[derive(Clone)]
pub struct RunOptions {
    pub progress: bool,
    /// Set to stop at the next trial boundary.
    pub stop: Arc<AtomicBool>,
    /// Also read and fill the cache shared by every study under the same results folder.
    pub shared_cache: bool,
    /// Devices (name, device) to run workers on; the first also measures scores.
    pub devices: Vec<(String, Device)>,
}

/// Live progress, written atomically after every step to `status.json`
/// (readable while the store is locked by the running process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    pub name: String,
    pub strategy: String,
    pub pid: u32,
    pub step: u64,
    pub total_steps: usize,
    pub step_label: String,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub best: Option<(Genome, f64)>,
    pub finished: bool,
}

pub const EXPERIMENT_KEY: &str = "experiment";
pub const SUMMARY_KEY: &str = "summary";

fn sample_seed(exp: &Experiment) -> u64 {
    rng::mix(exp.seed, &[0xf17])
}

fn fixed_sample(exp: &Experiment) -> SampleSpec {
    SampleSpec {
        tokens: exp.fitness.tokens,
        seed: sample_seed(exp),
    }
}

/// The least compressed level every unit has whose uniform genome meets the budget.
fn uniform_genome(space: &Space, budget: &Budget) -> Option<Genome> {
    let mut levels: Vec<i64> = space.units[0].levels.clone();
    levels.retain(|l| space.units.iter().all(|u| u.index(*l).is_some()));
    levels
        .into_iter()
        .filter_map(|l| space.uniform(l))
        .find(|g| budget.allows(space.cost(g)))
}

/// A feasible starting genome: uniform where possible, else units compressed
/// in a seeded random order until the budget holds.
fn start_genome(exp: &Experiment, space: &Space, budget: &Budget) -> Result<Genome> {
    if let Some(g) = uniform_genome(space, budget) {
        return Ok(g);
    }
    use rand::RngExt;
    let mut r = rng::rng_for(exp.seed, &[0x57a7]);
    let scores: Vec<f64> = (0..space.len()).map(|_| r.random::<f64>()).collect();
    Ok(lowest_scores_first(space, &scores, budget)?)
}

/// A fresh strategy for the experiment (measuring OWL/ShortGPT scores first).
fn new_strategy(prep: &Prepared, device: &Device) -> Result<Strategy> {
    let exp = &prep.exp;
    let space = &prep.space;
    let budget = prep.budget;
    let sample = fixed_sample(exp);
    let field_err = |m: String| -> anyhow::Error { exp.error_at("strategy", m).into() };
    let measure_sample = || -> Result<evocomp_data::Sample> {
        crate::evaluator::sample_for(&prep.calib, sample, exp.fitness.seq_len)
    };
    Ok(match &exp.strategy {
        StrategySpec::EvoPress {
            preset,
            generations,
            offspring,
            stages,
            max_flips,
        } => {
            let mut cfg = match preset {
                Preset::Sparsity => EvoPressConfig::sparsity(exp.seed),
                Preset::Quantization => EvoPressConfig::quantization(exp.seed),
                Preset::SuperFast => EvoPressConfig::super_fast(exp.seed),
                Preset::Depth => {
                    let k = match exp.budget {
                        BudgetSpec::Dropped(k) => k,
                        _ => space.len() / 4,
                    };
                    EvoPressConfig::depth(space.len(), k, exp.seed)
                }
            };
            if let Some(g) = generations {
                cfg.generations = *g;
            }
            if let Some(o) = offspring {
                cfg.offspring = *o;
            }
            if let Some(st) = stages {
                cfg.stages = st
                    .iter()
                    .map(|&(survivors, tokens)| Stage { survivors, tokens })
                    .collect();
            }
            if let Some(f) = max_flips {
                cfg.max_flips = *f;
            }
            let start = start_genome(exp, space, &budget)?;
            Strategy::EvoPress(Box::new(EvoPress::new(cfg, space, budget, start)?))
        }
        StrategySpec::Uniform => {
            let g = uniform_genome(space, &budget).ok_or_else(|| {
                field_err(format!(
                    "no level common to every unit meets the budget {budget:?}"
                ))
            })?;
            Strategy::Fixed(Fixed::new(vec![g], sample)?)
        }
        StrategySpec::Random { n } => {
            let start = start_genome(exp, space, &budget)?;
            let gs = random_feasible(space, &start, &budget, *n, exp.seed);
            Strategy::Fixed(Fixed::new(gs, sample)?)
        }
        StrategySpec::Owl { lambda, m } => {
            let Compression::Sparsity { .. } = prep.db.manifest.compression else {
                return Err(field_err(
                    "OWL allocates sparsity: it needs a Sparsity database".into(),
                ));
            };
            let model = LlamaModel::new(prep.loaded.config(), &prep.loaded.weights, device);
            let lor = owl_outlier_ratios(
                &model,
                &prep.loaded.weights,
                &measure_sample()?,
                exp.fitness.batch_size,
                *m,
            )?;
            tracing::info!("OWL outlier ratios: {lor:?}");
            // Level steps per unit of sparsity: numel / (weights zeroed per level).
            let per: Vec<f64> = prep
                .db
                .manifest
                .units
                .iter()
                .map(|u| {
                    let numel = u.shape.map_or(1, |s| s[0] * s[1]) as f64;
                    let step = u
                        .levels
                        .windows(2)
                        .map(|w| w[0].cost.abs_diff(w[1].cost))
                        .max()
                        .unwrap_or(1)
                        .max(1) as f64;
                    numel / step
                })
                .collect();
            let base = match exp.budget {
                BudgetSpec::UniformLevel(l) => l,
                _ => 0,
            };
            let g = owl_genome(space, base, &prep.unit_layer, &lor, *lambda, &per, &budget)?;
            Strategy::Fixed(Fixed::new(vec![g], sample)?)
        }
        StrategySpec::ShortGpt => {
            let model = LlamaModel::new(prep.loaded.config(), &prep.loaded.weights, device);
            let bi = block_influence(&model, &measure_sample()?, exp.fitness.batch_size)?;
            tracing::info!("block influence: {bi:?}");
            let scores: Vec<f64> = prep.unit_layer.iter().map(|&l| bi[l]).collect();
            let g = lowest_scores_first(space, &scores, &budget)?;
            Strategy::Fixed(Fixed::new(vec![g], sample)?)
        }
        StrategySpec::ShortenedLlama => {
            Strategy::LeaveOneOut(LeaveOneOut::new(space, budget, sample)?)
        }
        StrategySpec::PyramidKv { beta } => {
            if !prep.kv {
                return Err(field_err(
                    "PyramidKV allocates KV-cache budgets: it needs a KvBudget database".into(),
                ));
            }
            let g = pyramid_genome(space, &budget, *beta)?;
            Strategy::Fixed(Fixed::new(vec![g], sample)?)
        }
        StrategySpec::Greedy { max_steps, tries } => {
            let start = start_genome(exp, space, &budget)?;
            Strategy::Greedy(Greedy::new(
                GreedyConfig {
                    max_steps: *max_steps,
                    tries: *tries,
                    sample,
                },
                space,
                budget,
                start,
            )?)
        }
        StrategySpec::Dp { max_states } => {
            let errors: Vec<Vec<f64>> = prep
                .db
                .manifest
                .units
                .iter()
                .map(|u| u.errors.clone())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    field_err(
                        "DP needs per-level reconstruction errors; this database records none"
                            .into(),
                    )
                })?;
            let (g, _, exact) = knapsack(space, &errors, budget, *max_states)?;
            if !exact {
                tracing::warn!("DP rounded costs to a coarser grid (max_states); not exact");
            }
            Strategy::Fixed(Fixed::new(vec![g], sample)?)
        }
        StrategySpec::EvolKv {
            group_size,
            generations,
            sigma0,
            population,
            lambda,
            gamma,
        } => Strategy::EvolKv(Box::new(EvolKv::new(
            EvolKvConfig {
                group_size: *group_size,
                generations: *generations,
                sigma0: *sigma0,
                population: *population,
                lambda: *lambda,
                gamma: *gamma,
                sample,
                seed: exp.seed,
            },
            space,
            budget,
        )?)),
        StrategySpec::Nsga2 {
            population,
            generations,
        } => {
            let initial: Vec<Genome> = uniform_genome(space, &budget).into_iter().collect();
            Strategy::Nsga2(LevelNsga2::new(
                Nsga2Config {
                    population: *population,
                    generations: *generations,
                    seed: exp.seed,
                },
                space,
                budget.limit(),
                initial,
                sample,
            )?)
        }
    })
}

/// The progress bar's message.
fn progress_message(evaluations: usize, hits: usize, best: Option<f64>) -> String {
    format!(
        "evals {evaluations} (cache hits {hits})  best {}",
        best.map_or("-".into(), |f| format!("{f:.5}"))
    )
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    evocomp_db::write_atomic(path, &bytes)
        .with_context(|| format!("writing {} (is the disk full?)", path.display()))
}

/// The experiment as stored, for comparison: the source path does not matter.
fn comparable(exp: &Experiment) -> serde_json::Value {
    let mut v = serde_json::to_value(exp).expect("experiment serialises");
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
    }
    v
}

/// Read the experiment saved in a study folder (for `resume`, `status`, `best`).
pub fn saved_experiment(dir: &Path) -> Result<Experiment> {
    let p = dir.join("experiment.json");
    let bytes = std::fs::read(&p).with_context(|| {
        format!(
            "{}: not a study folder (no experiment.json); start one with `evocomp run CONFIG.ron`",
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: corrupt", p.display()))
}

/// Open the study for `exp`, checking it holds this experiment.
fn open_study(exp: &Experiment) -> Result<Study> {
    let study = Study::open(&exp.output, true)?;
    match study.meta(EXPERIMENT_KEY)? {
        Some(bytes) => {
            let saved: Experiment = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: corrupt experiment record", exp.output.display()))?;
            if comparable(&saved) != comparable(exp) {
                bail!(
                    "{} holds a different experiment (from {}); change `name` or `output`, or delete the folder",
                    exp.output.display(),
                    saved.source.display()
                );
            }
        }
        None => {
            let json = serde_json::to_vec_pretty(exp)?;
            write_json_atomic(&exp.output.join("experiment.json"), exp)?;
            if let Ok(raw) = std::fs::read(&exp.source) {
                evocomp_db::write_atomic(&exp.output.join("config.ron"), &raw)?;
            }
            study.put_meta(EXPERIMENT_KEY, &json)?;
        }
    }
    Ok(study)
}

/// A finished study's summary, if any.
pub fn summary_of(study: &Study) -> Result<Option<Summary>> {
    match study.meta(SUMMARY_KEY)? {
        Some(b) => Ok(Some(serde_json::from_slice(&b).context("corrupt summary")?)),
        None => Ok(None),
    }
}

/// The latest checkpoint of a study.
pub fn state_of(study: &Study) -> Result<Option<State>> {
    match study.checkpoint()? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).context("corrupt strategy checkpoint")?,
        )),
        None => Ok(None),
    }
}

fn bar(show: bool, total: u64, pos: u64, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total.max(1));
    b.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:25.cyan/blue}] {pos}/{len}  {msg}  {elapsed_precise} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_prefix(label.to_string());
    b.set_position(pos);
    b.reset_eta();
    b
}

struct Keys<'a> {
    prep: &'a Prepared,
    fitness_key: String,
    sample_ids: HashMap<SampleSpec, String>,
}

impl Keys<'_> {
    fn sample_id(&mut self, s: SampleSpec) -> Result<String> {
        if let Some(id) = self.sample_ids.get(&s) {
            return Ok(id.clone());
        }
        let id =
            crate::evaluator::sample_for(&self.prep.calib, s, self.prep.exp.fitness.seq_len)?.id;
        self.sample_ids.insert(s, id.clone());
        Ok(id)
    }

    fn key(&mut self, genome: &[i64], s: SampleSpec) -> Result<(CacheKey, String)> {
        let sid = self.sample_id(s)?;
        Ok((
            CacheKey::new(
                &self.prep.fingerprint,
                &self.prep.manifest_hash,
                &self.fitness_key,
                &sid,
                genome,
            ),
            sid,
        ))
    }

    fn held_out(&self, genome: &[i64], what: &str) -> CacheKey {
        CacheKey::new(
            &self.prep.fingerprint,
            &self.prep.manifest_hash,
            &format!("held-out/{what}/{}", self.fitness_key),
            &self.prep.held_out.id,
            genome,
        )
    }
}

/// The shared fitness cache, if any: an optimisation, so a failure to read or
/// write it (another process holding it too long, a full disk) is a warning
/// that turns it off for the rest of the run, never the study's end. Every
/// result is in the study's own store first.
struct Shared {
    cache: Option<SharedCache>,
    off: std::cell::Cell<bool>,
}

impl Shared {
    fn new(cache: Option<SharedCache>) -> Self {
        Self {
            cache,
            off: std::cell::Cell::new(false),
        }
    }

    fn usable(&self) -> Option<&SharedCache> {
        self.cache.as_ref().filter(|_| !self.off.get())
    }

    fn fail(&self, e: evocomp_store::StoreError) {
        tracing::warn!("shared fitness cache: {e}; continuing with the study's own");
        self.off.set(true);
    }

    fn get_many(&self, keys: &[CacheKey]) -> Vec<Option<f64>> {
        match self.usable().map(|c| c.get_many(keys)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.fail(e);
                vec![None; keys.len()]
            }
            None => vec![None; keys.len()],
        }
    }

    fn put(&self, entries: &[(CacheKey, f64)]) {
        if let Some(Err(e)) = self.usable().map(|c| c.put(entries)) {
            self.fail(e);
        }
    }
}

/// Run (or resume, or re-open) the study of `exp`.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<Outcome> {
    let study = open_study(exp)?;
    if let Some(s) = summary_of(&study)? {
        return Ok(Outcome::Finished {
            summary: Box::new(s),
            new_evaluations: 0,
        });
    }
    let device0 = opts
        .devices
        .first()
        .ok_or_else(|| anyhow!("no device to evaluate on"))?
        .1
        .clone();
    let prep = prepare(exp, &device0, opts.progress)?;
    let mut state = match state_of(&study)? {
        Some(s) => s,
        None => {
            let s = State {
                step: 0,
                strategy: new_strategy(&prep, &device0)?,
                seconds: 0.0,
                history: Vec::new(),
            };
            study.commit(&Commit {
                trials: Vec::new(),
                fitness: Vec::new(),
                checkpoint: Some(serde_json::to_vec(&s)?),
            })?;
            s
        }
    };
    let shared = if opts.shared_cache {
        // Beside the study, or beside the sweep it belongs to.
        let dir = exp
            .sweep_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".fitness-cache");
        match SharedCache::open(&dir) {
            Ok(c) => Shared::new(Some(c)),
            Err(e) => {
                tracing::warn!("shared fitness cache unavailable ({e}); using the study's own");
                Shared::new(None)
            }
        }
    } else {
        Shared::new(None)
    };
    let reuse = exp.prefix_reuse && !prep.kv;
    let pool = Pool::spawn(&prep, opts.devices.clone(), reuse, opts.stop.clone());
    let mut keys = Keys {
        prep: &prep,
        fitness_key: exp.fitness.key(),
        sample_ids: HashMap::new(),
    };
    let space = &prep.space;
    let journal = study.trials()?;
    let mut evaluations = journal.iter().filter(|t| !t.cached).count();
    let mut hits = journal.iter().filter(|t| t.cached).count();
    drop(journal);
    let mut new_evaluations = 0usize;
    let mut next_number = study.next_trial_number()?;
    let label = exp.strategy.label();
    let p = state.strategy.progress();
    let pb = bar(
        opts.progress,
        p.total as u64,
        p.step as u64,
        &format!("{label} {}", p.label),
    );
    let mut job_id = 0u64;
    let status = |state: &State, evaluations: usize, hits: usize, finished: bool| {
        let p = state.strategy.progress();
        let s = StatusFile {
            name: exp.name.clone(),
            strategy: label.into(),
            pid: std::process::id(),
            step: state.step,
            total_steps: p.total,
            step_label: p.label,
            evaluations,
            cache_hits: hits,
            best: state.strategy.best(),
            finished,
        };
        write_json_atomic(&exp.output.join("status.json"), &s)
    };
    status(&state, evaluations, hits, false)?;
    let mut best_so_far = state.strategy.best().map(|b| b.1);

    while !state.strategy.is_done(space) {
        if opts.stop.load(Ordering::SeqCst) {
            pb.abandon();
            return Ok(Outcome::Stopped {
                step: state.step,
                evaluations,
            });
        }
        let t_step = Instant::now();
        let asks = state.strategy.ask(space);
        for r in &asks {
            space.check(&r.genome)?;
            if !r.probe && !space.feasible(&r.genome, &prep.budget) {
                bail!(
                    "the strategy asked for a genome off the budget {:?} (cost {}): a bug",
                    prep.budget,
                    space.cost(&r.genome)
                );
            }
        }
        // Entries this step already has (from a run that was stopped or killed).
        let journaled: Vec<(String, Genome)> = study
            .trials_of_step(state.step)?
            .into_iter()
            .map(|t| (t.sample, t.genome))
            .collect();
        let mut fit: Vec<Option<f64>> = vec![None; asks.len()];
        let mut step_trials: Vec<Trial> = Vec::new();
        let mut copy_to_study: Vec<(CacheKey, f64)> = Vec::new();
        let mut pending: HashMap<CacheKey, Vec<usize>> = HashMap::new();
        let mut job_keys: HashMap<u64, CacheKey> = HashMap::new();
        let mut meta: Vec<(CacheKey, String)> = Vec::with_capacity(asks.len());
        let anchor = state.strategy.anchor();
        // Keys, the study's own cache, then the shared cache in one batch.
        let mut own: Vec<Option<f64>> = Vec::with_capacity(asks.len());
        for r in &asks {
            let (key, sid) = keys.key(&r.genome, r.sample)?;
            own.push(study.cached(&key)?);
            meta.push((key, sid));
        }
        let missing: Vec<CacheKey> = meta
            .iter()
            .zip(&own)
            .filter(|(_, o)| o.is_none())
            .map(|((k, _), _)| k.clone())
            .collect();
        let from_shared: HashMap<CacheKey, f64> = missing
            .iter()
            .zip(shared.get_many(&missing))
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
            .collect();
        for (i, r) in asks.iter().enumerate() {
            let (key, sid) = meta[i].clone();
            let cached = match own[i] {
                Some(f) => Some(f),
                None => match from_shared.get(&key) {
                    Some(&f) => {
                        if !copy_to_study.iter().any(|(k, _)| k == &key) {
                            copy_to_study.push((key.clone(), f));
                        }
                        Some(f)
                    }
                    None => None,
                },
            };
            if let Some(f) = cached {
                fit[i] = Some(f);
                let seen = journaled.iter().any(|(s, g)| s == &sid && g == &r.genome)
                    || step_trials
                        .iter()
                        .any(|t| t.sample == sid && t.genome == r.genome);
                if !seen {
                    step_trials.push(Trial {
                        number: 0,
                        step: state.step,
                        genome: r.genome.clone(),
                        cost: space.cost(&r.genome),
                        probe: r.probe,
                        sample: sid,
                        fitness: f,
                        seconds: 0.0,
                        worker: "cache".into(),
                        cached: true,
                    });
                }
                continue;
            }
            let first = !pending.contains_key(&key);
            pending.entry(key.clone()).or_default().push(i);
            if first {
                job_id += 1;
                job_keys.insert(job_id, key.clone());
                pool.submit(Job {
                    id: job_id,
                    kind: JobKind::Fitness {
                        genome: r.genome.clone(),
                        sample: r.sample,
                        anchor: anchor.clone(),
                    },
                })?;
            }
        }
        let mut stopped = false;
        for _ in 0..job_keys.len() {
            let d = pool.recv()?;
            let key = job_keys
                .get(&d.id)
                .ok_or_else(|| anyhow!("a worker answered job {} that was not asked", d.id))?
                .clone();
            let idx = pending[&key].clone();
            let f = match d.result {
                Ok(Output::Fitness(f)) => f,
                Ok(Output::Skipped) => {
                    stopped = true;
                    continue;
                }
                Ok(Output::HeldOut(_)) => bail!("a worker answered the wrong job"),
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("evaluating genome {:?}", asks[idx[0]].genome));
                }
            };
            if !f.is_finite() {
                bail!(
                    "fitness {f} for genome {:?}: the model diverged",
                    asks[idx[0]].genome
                );
            }
            let r = &asks[idx[0]];
            let trial = Trial {
                number: next_number,
                step: state.step,
                genome: r.genome.clone(),
                cost: space.cost(&r.genome),
                probe: r.probe,
                sample: meta[idx[0]].1.clone(),
                fitness: f,
                seconds: d.seconds,
                worker: d.worker,
                cached: false,
            };
            next_number += 1;
            study.commit(&Commit {
                trials: vec![trial],
                fitness: vec![(key.clone(), f)],
                checkpoint: None,
            })?;
            shared.put(&[(key.clone(), f)]);
            evaluations += 1;
            new_evaluations += 1;
            for &i in &idx {
                fit[i] = Some(f);
            }
            pb.set_message(progress_message(evaluations, hits, best_so_far));
        }
        if stopped || opts.stop.load(Ordering::SeqCst) {
            pb.abandon();
            return Ok(Outcome::Stopped {
                step: state.step,
                evaluations,
            });
        }
        let scored: Vec<Scored> = asks
            .iter()
            .zip(&fit)
            .map(|(r, f)| Scored {
                genome: r.genome.clone(),
                fitness: f.expect("every ask scored"),
            })
            .collect();
        state.strategy.tell(space, &scored)?;
        state.step += 1;
        state.seconds += t_step.elapsed().as_secs_f64();
        hits += step_trials.len();
        let best = state.strategy.best();
        state.history.push(StepRecord {
            step: state.step,
            evaluations,
            cache_hits: hits,
            seconds: state.seconds,
            best: best.as_ref().map(|b| b.1),
            best_cost: best.as_ref().map(|b| space.cost(&b.0)),
            front: match &state.strategy {
                Strategy::Nsga2(_) => state
                    .strategy
                    .front(space)
                    .into_iter()
                    .map(|(_, f, c)| (f, c))
                    .collect(),
                _ => Vec::new(),
            },
        });
        for t in &mut step_trials {
            t.number = next_number;
            next_number += 1;
        }
        study.commit(&Commit {
            trials: step_trials,
            fitness: copy_to_study,
            checkpoint: Some(serde_json::to_vec(&state)?),
        })?;
        status(&state, evaluations, hits, false)?;
        let p = state.strategy.progress();
        pb.set_length(p.total as u64);
        pb.set_position(p.step as u64);
        best_so_far = best.map(|b| b.1);
        pb.set_message(progress_message(evaluations, hits, best_so_far));
    }
    pb.finish_and_clear();

    // The result, measured on held-out data.
    let front = state.strategy.front(space);
    if front.is_empty() {
        bail!("the strategy finished without a result");
    }
    let mut measured = Vec::new();
    for (g, search_fitness, cost) in &front {
        let kk = keys.held_out(g, "kl");
        let kn = keys.held_out(g, "nll");
        let (kl, nll) = match (study.cached(&kk)?, study.cached(&kn)?) {
            (Some(kl), Some(nll)) => (Some(kl), Some(nll)),
            _ => {
                let v = shared.get_many(&[kk.clone(), kn.clone()]);
                (v[0], v[1])
            }
        };
        let r = match (kl, nll) {
            (Some(kl), Some(nll)) => {
                study.commit(&Commit {
                    trials: Vec::new(),
                    fitness: vec![(kk.clone(), kl), (kn.clone(), nll)],
                    checkpoint: None,
                })?;
                KlResult { kl, nll, tokens: 0 }
            }
            _ => {
                job_id += 1;
                pool.submit(Job {
                    id: job_id,
                    kind: JobKind::HeldOut { genome: g.clone() },
                })?;
                let d = pool.recv()?;
                let r = match d.result {
                    Ok(Output::HeldOut(r)) => r,
                    Ok(Output::Skipped) => {
                        return Ok(Outcome::Stopped {
                            step: state.step,
                            evaluations,
                        });
                    }
                    Ok(_) => bail!("a worker answered the wrong job"),
                    Err(e) => return Err(anyhow!(e)).context("held-out evaluation"),
                };
                let entries = vec![(kk, r.kl), (kn, r.nll)];
                study.commit(&Commit {
                    trials: Vec::new(),
                    fitness: entries.clone(),
                    checkpoint: None,
                })?;
                shared.put(&entries);
                new_evaluations += 1;
                r
            }
        };
        measured.push(Measured {
            genome: g.clone(),
            cost: *cost,
            search_fitness: *search_fitness,
            held_out_kl: r.kl,
            held_out_nll: r.nll,
            held_out_perplexity: r.nll.exp(),
            held_out_tokens: prep.held_out.n_tokens(),
        });
    }
    let best_genome = state.strategy.best().map(|b| b.0);
    let best = measured
        .iter()
        .find(|m| Some(&m.genome) == best_genome.as_ref())
        .unwrap_or(&measured[0])
        .clone();
    let stats = *pool.stats.lock().expect("stats lock");
    drop(pool);
    let full_cost = space
        .units
        .iter()
        .map(|u| *u.costs.iter().max().expect("levels"))
        .sum();
    let summary = Summary {
        name: exp.name.clone(),
        strategy: label.into(),
        budget: prep.budget,
        cost_unit: prep.db.manifest.cost_unit.clone(),
        full_cost,
        units: space.units.iter().map(|u| u.name.clone()).collect(),
        best,
        front: measured,
        steps: state.step,
        evaluations,
        cache_hits: hits,
        seconds: state.seconds,
        layers_run_fraction: (stats.layers_full > 0)
            .then(|| stats.layers_run as f64 / stats.layers_full as f64),
        history: state.history.clone(),
    };
    study.put_meta(SUMMARY_KEY, &serde_json::to_vec(&summary)?)?;
    write_json_atomic(&exp.output.join("summary.json"), &summary)?;
    status(&state, evaluations, hits, true)?;
    Ok(Outcome::Finished {
        summary: Box::new(summary),
        new_evaluations,
    })
}
