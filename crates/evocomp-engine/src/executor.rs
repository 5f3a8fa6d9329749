//! The executor: runs a study's strategy through ask → caches → jobs →
//! commit → tell → checkpoint, then measures the result on held-out data.
//!
//! Every computed result is committed to the study store as it arrives; a
//! strategy checkpoint is committed together with the journal entries of
//! its step, in one transaction, so a study killed at any moment resumes
//! with nothing lost and nothing evaluated twice. Observers (progress bar,
//! status file, history) watch; they never change what is computed.

use crate::batches::batch_for_device;
use crate::jobs::{Job, JobKind, Output, Pool, Remote, WorkerDevice, Workers};
use crate::observer::{History, Observer, ProgressObserver, ResultEvent, StatusWriter, StepEvent};
use crate::prepare::{Prepared, prepare};
use crate::start::new_strategy;
use anyhow::{Context as _, Result, anyhow, bail};
use evocomp_config::Experiment;
use evocomp_eval::KlResult;
use evocomp_search::{FrontMember, Genome, Request, Role, SampleDraw, Scored, Strategy};
use evocomp_store::{CacheKey, Commit, SharedCache, Trial};
use evocomp_study::{
    AnytimePoint, Measured, OpenStudy, State, StepRecord, StudyDir, Summary, best_genome_at,
    shared_cache_dir,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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

/// Settings of one run.
#[derive(Clone)]
pub struct RunOptions {
    pub progress: bool,
    /// Set to stop at the next trial boundary.
    pub stop: Arc<AtomicBool>,
    /// Also read and fill the cache shared by every study under the same results folder.
    pub shared_cache: bool,
    /// Devices to run workers on; the first also builds a missing database
    /// and takes the heuristics' model measurements.
    pub devices: Vec<WorkerDevice>,
    /// Workers elsewhere (a job queue) instead of threads on `devices`;
    /// the first device still prepares the study.
    pub remote: Option<Remote>,
}

/// Run (or resume, or re-open) the study of `exp`.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<Outcome> {
    run_observed(exp, opts, Vec::new())
}

/// [`run`], with `extra` observers told about every result and step after
/// the built-in ones (progress bar, status file).
pub fn run_observed(
    exp: &Experiment,
    opts: &RunOptions,
    extra: Vec<Box<dyn Observer>>,
) -> Result<Outcome> {
    let study = StudyDir::open_for(exp)?;
    if let Some(s) = study.finished(exp)? {
        return Ok(Outcome::Finished {
            summary: Box::new(s),
            new_evaluations: 0,
        });
    }
    let device0 = opts
        .devices
        .first()
        .ok_or_else(|| anyhow!("no device to evaluate on"))?
        .device
        .clone();
    let prep = prepare(exp, &device0, opts.progress)?;
    let devices = opts
        .devices
        .iter()
        .map(|d| Ok((d.clone(), batch_for_device(exp, &prep, d.max_buffer_bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    let state = match study.state()? {
        Some(s) => s,
        None => {
            let s = State {
                step: 0,
                strategy: new_strategy(&prep, &device0, devices[0].1)?,
                seconds: 0.0,
                history: Vec::new(),
            };
            study.commit_state(Vec::new(), Vec::new(), &s)?;
            s
        }
    };
    let label = exp.strategy.label();
    let mut observers: Vec<Box<dyn Observer>> = vec![
        Box::new(ProgressObserver::new(opts.progress, &label)),
        Box::new(StatusWriter::new(study.dir().clone(), &exp.name, &label)),
    ];
    observers.extend(extra);
    let reuse = exp.prefix_reuse && !prep.db.is_kv();
    let mut ex = Executor {
        prep: &prep,
        study: &study,
        shared: Shared::open(opts.shared_cache.then(|| shared_cache_dir(exp))),
        pool: match &opts.remote {
            Some(remote) => remote(&prep, opts.stop.clone())?,
            None => Box::new(Pool::spawn(&prep, devices, reuse, opts.stop.clone())),
        },
        stop: opts.stop.clone(),
        keys: Keys::new(&prep),
        history: History {
            records: state.history.clone(),
        },
        state,
        evaluations: 0,
        hits: 0,
        tokens: 0,
        new_evaluations: 0,
        next_number: study.store().next_trial_number()?,
        job_id: 0,
    };
    let journal = study.store().trials()?;
    ex.evaluations = journal.iter().filter(|t| !t.cached).count();
    ex.tokens = journal
        .iter()
        .filter(|t| !t.cached)
        .map(|t| t.tokens as u64)
        .sum();
    ex.hits = journal.len() - ex.evaluations;
    drop(journal);
    ex.run(&mut observers)
}

/// One run of a study.
struct Executor<'a> {
    prep: &'a Prepared,
    study: &'a OpenStudy,
    shared: Shared,
    pool: Box<dyn Workers>,
    stop: Arc<AtomicBool>,
    keys: Keys<'a>,
    history: History,
    state: State,
    evaluations: usize,
    hits: usize,
    /// Tokens of the evaluations computed (cache hits excluded), over every run.
    tokens: u64,
    new_evaluations: usize,
    next_number: u64,
    job_id: u64,
}

/// One step's requests as they are served.
struct StepWork {
    /// Per request: its cache key and sample id.
    keys: Vec<(CacheKey, String)>,
    /// Per request: its fitness, once known.
    fitness: Vec<Option<f64>>,
    /// Journal entries of the requests served from a cache.
    cached_trials: Vec<Trial>,
    /// Values from the shared cache, to keep in the study's own.
    copy_to_study: Vec<(CacheKey, f64)>,
    /// The requests (by position) each job answers.
    jobs: HashMap<u64, Vec<usize>>,
}

/// The outcome of one step.
enum Step {
    Done,
    Stopped,
}

impl Executor<'_> {
    fn at(&self) -> StepEvent {
        let space = &self.prep.space;
        let best = self.state.strategy.best();
        StepEvent {
            step: self.state.step,
            progress: self.state.strategy.progress(),
            evaluations: self.evaluations,
            cache_hits: self.hits,
            seconds: self.state.seconds,
            best_cost: best.as_ref().map(|b| space.cost(&b.genome)),
            best,
            front: match self.state.strategy.role() {
                Role::Front => self.state.strategy.front(space),
                _ => Vec::new(),
            },
            tokens: self.tokens,
            metrics: self.state.strategy.metrics(),
        }
    }

    fn stopped(&self, observers: &mut [Box<dyn Observer>]) -> Outcome {
        for o in observers.iter_mut() {
            o.on_stop();
        }
        Outcome::Stopped {
            step: self.state.step,
            evaluations: self.evaluations,
        }
    }

    fn run(mut self, observers: &mut [Box<dyn Observer>]) -> Result<Outcome> {
        let at = self.at();
        for o in observers.iter_mut() {
            o.on_start(&at)?;
        }
        while !self.state.strategy.is_done() {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(self.stopped(observers));
            }
            if let Step::Stopped = self.step(observers)? {
                return Ok(self.stopped(observers));
            }
        }
        for o in observers.iter_mut() {
            o.on_search_end();
        }
        let front = self.state.strategy.front(&self.prep.space);
        if front.is_empty() {
            bail!("the strategy finished without a result");
        }
        let anytime = match self.prep.exp.anytime {
            Some(n) => anytime_members(&self.state.history, n, &self.prep.space),
            None => Vec::new(),
        };
        // One batch: the front and the anytime genomes are measured together.
        let members: Vec<FrontMember> = front
            .iter()
            .cloned()
            .chain(anytime.iter().map(|(_, _, m)| m.clone()))
            .collect();
        let Some(mut measured) = self.held_out(&members)? else {
            return Ok(self.stopped(observers));
        };
        let anytime = measured
            .split_off(front.len())
            .into_iter()
            .zip(anytime)
            .map(|(m, (tokens, evaluations, _))| AnytimePoint {
                tokens,
                evaluations,
                cost: m.cost,
                search_fitness: m.search_fitness,
                held_out_kl: m.held_out_kl,
                held_out_nll: m.held_out_nll,
            })
            .collect();
        let mut summary = self.summary(measured);
        summary.anytime = anytime;
        self.study.finish(&summary)?;
        let at = self.at();
        for o in observers.iter_mut() {
            o.on_finish(&summary, &at)?;
        }
        Ok(Outcome::Finished {
            summary: Box::new(summary),
            new_evaluations: self.new_evaluations,
        })
    }

    /// One ask/tell round.
    fn step(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<Step> {
        let t_step = Instant::now();
        let (prep, study) = (self.prep, self.study);
        let space = &prep.space;
        let asks = self.state.strategy.ask(space);
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
        let mut work = self.serve_from_caches(&asks)?;
        self.submit(&asks, &mut work)?;
        if self.collect(&asks, &mut work, observers)? || self.stop.load(Ordering::SeqCst) {
            return Ok(Step::Stopped);
        }
        let results: Vec<Scored> = asks
            .iter()
            .zip(&work.fitness)
            .map(|(r, f)| Scored {
                id: r.id,
                fitness: f.expect("every request answered"),
            })
            .collect();
        self.state.strategy.tell(space, &results)?;
        self.state.step += 1;
        self.state.seconds += t_step.elapsed().as_secs_f64();
        self.hits += work.cached_trials.len();
        let at = self.at();
        self.history.on_step(&at)?;
        self.state.history.clone_from(&self.history.records);
        for t in &mut work.cached_trials {
            t.number = self.next_number;
            self.next_number += 1;
        }
        study.commit_state(work.cached_trials, work.copy_to_study, &self.state)?;
        for o in observers.iter_mut() {
            o.on_step(&at)?;
        }
        Ok(Step::Done)
    }

    /// Each request's cache key and the fitness values the caches hold: the
    /// study's own, then the shared one in one batch. A cached value gets a
    /// journal entry (once per step, also across a killed run) and is copied
    /// into the study when it came from the shared cache.
    fn serve_from_caches(&mut self, asks: &[Request]) -> Result<StepWork> {
        let (prep, study) = (self.prep, self.study);
        let store = study.store();
        // Entries this step already has (from a run that was stopped or killed).
        let journaled: Vec<(String, Genome)> = store
            .trials_of_step(self.state.step)?
            .into_iter()
            .map(|t| (t.sample, t.genome))
            .collect();
        let mut keys: Vec<(CacheKey, String)> = Vec::with_capacity(asks.len());
        let mut own: Vec<Option<f64>> = Vec::with_capacity(asks.len());
        for r in asks {
            let (key, sid) = self.keys.key(&r.genome, r.sample)?;
            own.push(store.cached(&key)?);
            keys.push((key, sid));
        }
        let missing: Vec<CacheKey> = keys
            .iter()
            .zip(&own)
            .filter(|(_, o)| o.is_none())
            .map(|((k, _), _)| k.clone())
            .collect();
        let from_shared: HashMap<CacheKey, f64> = missing
            .iter()
            .zip(self.shared.get_many(&missing))
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
            .collect();
        let mut work = StepWork {
            fitness: vec![None; asks.len()],
            keys,
            cached_trials: Vec::new(),
            copy_to_study: Vec::new(),
            jobs: HashMap::new(),
        };
        for (i, r) in asks.iter().enumerate() {
            let (key, sid) = &work.keys[i];
            let cached = own[i].or_else(|| {
                let f = from_shared.get(key).copied()?;
                if !work.copy_to_study.iter().any(|(k, _)| k == key) {
                    work.copy_to_study.push((key.clone(), f));
                }
                Some(f)
            });
            let Some(f) = cached else { continue };
            work.fitness[i] = Some(f);
            let seen = journaled.iter().any(|(s, g)| s == sid && g == &r.genome)
                || work
                    .cached_trials
                    .iter()
                    .any(|t| &t.sample == sid && t.genome == r.genome);
            if !seen {
                work.cached_trials.push(Trial {
                    number: 0,
                    step: self.state.step,
                    genome: r.genome.clone(),
                    cost: prep.space.cost(&r.genome),
                    probe: r.probe,
                    sample: sid.clone(),
                    tokens: r.sample.tokens,
                    fitness: f,
                    seconds: 0.0,
                    worker: "cache".into(),
                    cached: true,
                });
            }
        }
        Ok(work)
    }

    /// A job for every distinct uncached request (requests with the same key share one).
    fn submit(&mut self, asks: &[Request], work: &mut StepWork) -> Result<()> {
        let anchor = self.state.strategy.anchor();
        let mut job_of: HashMap<&CacheKey, u64> = HashMap::new();
        for (i, r) in asks.iter().enumerate() {
            if work.fitness[i].is_some() {
                continue;
            }
            let key = &work.keys[i].0;
            if let Some(id) = job_of.get(key) {
                work.jobs.get_mut(id).expect("submitted").push(i);
                continue;
            }
            self.job_id += 1;
            job_of.insert(key, self.job_id);
            work.jobs.insert(self.job_id, vec![i]);
            self.pool.submit(Job {
                id: self.job_id,
                kind: JobKind::Fitness {
                    genome: r.genome.clone(),
                    sample: r.sample,
                    anchor: anchor.clone(),
                },
            })?;
        }
        Ok(())
    }

    /// Every job's answer, committed (journal entry + fitness) as it
    /// arrives; true when the workers skipped jobs because the run is stopping.
    fn collect(
        &mut self,
        asks: &[Request],
        work: &mut StepWork,
        observers: &mut [Box<dyn Observer>],
    ) -> Result<bool> {
        let (prep, study) = (self.prep, self.study);
        let mut stopped = false;
        let step_jobs = work.jobs.len();
        for answered in 1..=step_jobs {
            let d = self.pool.recv()?;
            let idx = work
                .jobs
                .get(&d.id)
                .ok_or_else(|| anyhow!("a worker answered job {} that was not asked", d.id))?
                .clone();
            let r = &asks[idx[0]];
            let f = match d.result {
                Ok(Output::Fitness(f)) => f,
                Ok(Output::Skipped) => {
                    stopped = true;
                    continue;
                }
                Ok(Output::HeldOut(_)) => bail!("a worker answered the wrong job"),
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("evaluating genome {:?}", r.genome));
                }
            };
            if !f.is_finite() {
                bail!("fitness {f} for genome {:?}: the model diverged", r.genome);
            }
            let (key, sid) = work.keys[idx[0]].clone();
            let trial = Trial {
                number: self.next_number,
                step: self.state.step,
                genome: r.genome.clone(),
                cost: prep.space.cost(&r.genome),
                probe: r.probe,
                sample: sid,
                tokens: r.sample.tokens,
                fitness: f,
                seconds: d.seconds,
                worker: d.worker.clone(),
                cached: false,
            };
            self.next_number += 1;
            study.store().commit(&Commit {
                trials: vec![trial],
                fitness: vec![(key.clone(), f)],
                checkpoint: None,
            })?;
            self.shared.put(&[(key, f)]);
            self.evaluations += 1;
            self.tokens += r.sample.tokens as u64;
            self.new_evaluations += 1;
            for &i in &idx {
                work.fitness[i] = Some(f);
            }
            let ev = ResultEvent {
                fitness: f,
                seconds: d.seconds,
                worker: d.worker,
                evaluations: self.evaluations,
                cache_hits: self.hits,
                step_done: answered,
                step_jobs,
            };
            for o in observers.iter_mut() {
                o.on_result(&ev)?;
            }
        }
        Ok(stopped)
    }

    /// The front measured on the held-out sample, as one batch: every job is
    /// queued before any answer is awaited, so every device works. None
    /// when the run was stopped.
    fn held_out(&mut self, front: &[FrontMember]) -> Result<Option<Vec<Measured>>> {
        let study = self.study;
        let store = study.store();
        let mut results: Vec<Option<KlResult>> = vec![None; front.len()];
        // A genome listed twice is measured once.
        let mut jobs: HashMap<u64, Vec<usize>> = HashMap::new();
        // Per genome: its KL, its NLL and each window's KL (for paired comparisons).
        let windows = self.prep.held_out.sequences.len();
        let mut keys: Vec<Vec<CacheKey>> = Vec::with_capacity(front.len());
        for (i, m) in front.iter().enumerate() {
            if let Some(ids) = jobs
                .values_mut()
                .find(|ids| front[ids[0]].genome == m.genome)
            {
                ids.push(i);
                keys.push(keys[ids[0]].clone());
                continue;
            }
            let mut ks = vec![
                self.keys.held_out(&m.genome, "kl"),
                self.keys.held_out(&m.genome, "nll"),
            ];
            ks.extend((0..windows).map(|w| self.keys.held_out(&m.genome, &format!("kl/{w}"))));
            let mut vals = ks
                .iter()
                .map(|k| store.cached(k))
                .collect::<Result<Vec<Option<f64>>, _>>()?;
            if vals.iter().any(Option::is_none) {
                vals = self.shared.get_many(&ks);
            }
            if vals.iter().all(Option::is_some) {
                let vals: Vec<f64> = vals.into_iter().flatten().collect();
                store.commit(&Commit {
                    trials: Vec::new(),
                    fitness: ks.iter().cloned().zip(vals.iter().copied()).collect(),
                    checkpoint: None,
                })?;
                results[i] = Some(KlResult {
                    kl: vals[0],
                    nll: vals[1],
                    tokens: 0,
                    per_sequence: vals[2..].to_vec(),
                });
            } else {
                self.job_id += 1;
                jobs.insert(self.job_id, vec![i]);
                self.pool.submit(Job {
                    id: self.job_id,
                    kind: JobKind::HeldOut {
                        genome: m.genome.clone(),
                    },
                })?;
            }
            keys.push(ks);
        }
        let mut stopped = false;
        for _ in 0..jobs.len() {
            let d = self.pool.recv()?;
            let ids = jobs
                .get(&d.id)
                .ok_or_else(|| anyhow!("a worker answered job {} that was not asked", d.id))?
                .clone();
            let i = ids[0];
            let r = match d.result {
                Ok(Output::HeldOut(r)) => r,
                Ok(Output::Skipped) => {
                    stopped = true;
                    continue;
                }
                Ok(_) => bail!("a worker answered the wrong job"),
                Err(e) => return Err(anyhow!(e)).context("held-out evaluation"),
            };
            if r.per_sequence.len() != windows {
                bail!(
                    "a worker measured {} held-out windows, the study has {windows}",
                    r.per_sequence.len()
                );
            }
            let values = [r.kl, r.nll]
                .into_iter()
                .chain(r.per_sequence.iter().copied());
            let entries: Vec<(CacheKey, f64)> = keys[i].iter().cloned().zip(values).collect();
            store.commit(&Commit {
                trials: Vec::new(),
                fitness: entries.clone(),
                checkpoint: None,
            })?;
            self.shared.put(&entries);
            self.new_evaluations += 1;
            for j in ids {
                results[j] = Some(r.clone());
            }
        }
        if stopped {
            return Ok(None);
        }
        let tokens = self.prep.held_out.n_tokens();
        Ok(Some(
            front
                .iter()
                .zip(results)
                .map(|(m, r)| {
                    let r = r.expect("every member measured");
                    Measured {
                        genome: m.genome.clone(),
                        cost: m.cost,
                        search_fitness: m.fitness,
                        held_out_kl: r.kl,
                        held_out_nll: r.nll,
                        held_out_perplexity: r.nll.exp(),
                        held_out_tokens: tokens,
                        held_out_kl_windows: r.per_sequence,
                    }
                })
                .collect(),
        ))
    }

    fn summary(&self, measured: Vec<Measured>) -> Summary {
        let space = &self.prep.space;
        let exp = &self.prep.exp;
        let best_genome = self.state.strategy.best().map(|b| b.genome);
        let best = measured
            .iter()
            .find(|m| Some(&m.genome) == best_genome.as_ref())
            .unwrap_or(&measured[0])
            .clone();
        let stats = self.pool.stats();
        Summary {
            name: exp.name.clone(),
            strategy: exp.strategy.label(),
            role: self.state.strategy.role(),
            budget: self.prep.budget,
            cost_unit: self.prep.db.cost_unit().to_string(),
            full_cost: space
                .units
                .iter()
                .map(|u| *u.costs.iter().max().expect("levels"))
                .sum(),
            units: space.units.iter().map(|u| u.name.clone()).collect(),
            best,
            held_out_id: Some(self.prep.held_out.id.clone()),
            front: measured,
            steps: self.state.step,
            evaluations: self.evaluations,
            cache_hits: self.hits,
            seconds: self.state.seconds,
            layers_run_fraction: (stats.layers_full > 0)
                .then(|| stats.layers_run as f64 / stats.layers_full as f64),
            history: self.state.history.clone(),
            anytime: Vec::new(),
        }
    }
}

/// The best genome after each `n`-th of the search's tokens, from the
/// history (the last record at or before each point): (tokens, evaluations,
/// genome with its search fitness and cost).
fn anytime_members(
    history: &[StepRecord],
    n: usize,
    space: &evocomp_search::Space,
) -> Vec<(u64, usize, FrontMember)> {
    let total = history.last().map_or(0, |r| r.tokens);
    let mut out = Vec::new();
    for k in 1..=n as u64 {
        let at = total * k / n as u64;
        let last = history.iter().take_while(|r| r.tokens <= at).last();
        let genome = best_genome_at(history, at);
        if let (Some(g), Some(r), Some(fitness)) = (genome, last, last.and_then(|r| r.best)) {
            out.push((
                at,
                r.evaluations,
                FrontMember {
                    genome: g.clone(),
                    fitness,
                    cost: space.cost(g),
                },
            ));
        }
    }
    out
}

/// Cache keys: sha256 of (model, database, fitness spec, sample, genome).
struct Keys<'a> {
    prep: &'a Prepared,
    fitness_key: String,
    sample_ids: HashMap<SampleDraw, String>,
}

impl<'a> Keys<'a> {
    fn new(prep: &'a Prepared) -> Self {
        Self {
            prep,
            // KV-cache scores leave out the exact first prefill piece since
            // it was added; values cached before then counted it.
            fitness_key: if prep.db.is_kv() {
                format!("{}/kv-after-prefix", prep.exp.fitness.key())
            } else {
                prep.exp.fitness.key()
            },
            sample_ids: HashMap::new(),
        }
    }

    fn sample_id(&mut self, s: SampleDraw) -> Result<String> {
        if let Some(id) = self.sample_ids.get(&s) {
            return Ok(id.clone());
        }
        // A sample the strategy asked for: a token count the text cannot
        // give is the strategy's setting, so the error points at it.
        let id = crate::evaluator::sample_for(&self.prep.calib, s, self.prep.exp.fitness.seq_len)
            .map_err(|e| self.prep.exp.error_at("strategy", format!("{e:#}")))?
            .id;
        self.sample_ids.insert(s, id.clone());
        Ok(id)
    }

    fn key(&mut self, genome: &[i64], s: SampleDraw) -> Result<(CacheKey, String)> {
        let sid = self.sample_id(s)?;
        Ok((
            CacheKey::new(
                &self.prep.fingerprint,
                self.prep.db.fingerprint(),
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
            self.prep.db.fingerprint(),
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
    off: bool,
}

impl Shared {
    fn open(dir: Option<std::path::PathBuf>) -> Self {
        let cache = dir.and_then(|d| match SharedCache::open(&d) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("shared fitness cache unavailable ({e}); using the study's own");
                None
            }
        });
        Self { cache, off: false }
    }

    fn usable(&self) -> Option<&SharedCache> {
        self.cache.as_ref().filter(|_| !self.off)
    }

    fn fail(&mut self, e: evocomp_store::StoreError) {
        tracing::warn!("shared fitness cache: {e}; continuing with the study's own");
        self.off = true;
    }

    fn get_many(&mut self, keys: &[CacheKey]) -> Vec<Option<f64>> {
        match self.usable().map(|c| c.get_many(keys)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.fail(e);
                vec![None; keys.len()]
            }
            None => vec![None; keys.len()],
        }
    }

    fn put(&mut self, entries: &[(CacheKey, f64)]) {
        if let Some(Err(e)) = self.usable().map(|c| c.put(entries)) {
            self.fail(e);
        }
    }
}
