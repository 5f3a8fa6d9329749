//! What a study records: its checkpoint ([`State`]), its progress after
//! every step, its live status and its result.

use evocomp_search::{AnyStrategy, Best, Budget, Genome, Progress, Role, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The study's resumable state: the strategy checkpoint and where it is.
/// Committed to the store with the journal entries of its step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Ask/tell rounds completed.
    pub step: u64,
    pub strategy: AnyStrategy,
    /// Wall seconds spent in completed steps, over every run.
    pub seconds: f64,
    /// After every step: where the search stood (for convergence plots).
    pub history: Vec<StepRecord>,
}

impl State {
    /// The strategy's best genome so far.
    pub fn best(&self) -> Option<Best> {
        self.strategy.best()
    }

    /// How far the strategy is.
    pub fn progress(&self) -> Progress {
        self.strategy.progress()
    }
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
    /// Front strategies (NSGA-II): the current front as (fitness, cost), for
    /// hypervolume over time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub front: Vec<(f64, u64)>,
    /// Tokens scored so far (cache hits excluded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u64,
    /// The best genome, where it changed since the record before (so the
    /// best at any step is the last one given up to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_genome: Option<Genome>,
    /// The strategy's own figures ([`Strategy::metrics`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// The best genome after some tokens of search, measured on the held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnytimePoint {
    /// Tokens scored by then (cache hits excluded).
    pub tokens: u64,
    pub evaluations: usize,
    pub cost: u64,
    /// Its fitness on the sample it was last scored on.
    pub search_fitness: f64,
    pub held_out_kl: f64,
    pub held_out_nll: f64,
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
    /// Each held-out window's KL, in window order: what gives the KL its
    /// standard error and a comparison with another study on the same
    /// windows its interval (none in summaries from before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_kl_windows: Vec<f64>,
}

impl Measured {
    /// The standard error of the held-out KL over its windows (NaN for
    /// summaries from before windows were kept).
    pub fn held_out_kl_standard_error(&self) -> f64 {
        evocomp_search::racing::mean_and_standard_error(&self.held_out_kl_windows).1
    }
}

/// What a finished study found (`summary.json`, and in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    /// The strategy's label (`EvoPress`, `uniform`, ...).
    pub strategy: String,
    /// What the result is: the uniform baseline, a one-shot heuristic, a search, a front.
    pub role: Role,
    pub budget: Budget,
    pub cost_unit: String,
    /// Cost of every unit at its least compressed level.
    pub full_cost: u64,
    pub units: Vec<String>,
    /// The best configuration.
    pub best: Measured,
    /// The held-out sample's id (the same id: the same windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_id: Option<String>,
    /// The front (the best alone for strategies without one), cheapest first.
    pub front: Vec<Measured>,
    pub steps: u64,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub seconds: f64,
    /// Layers run / layers a full forward would run (prefix reuse), last process.
    pub layers_run_fraction: Option<f64>,
    /// The search after every step.
    pub history: Vec<StepRecord>,
    /// With `anytime: Some(n)`: the best genome after each n-th of the
    /// search's tokens, measured on the held-out data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anytime: Vec<AnytimePoint>,
}

/// The best genome as of the last record with at most `tokens` tokens (the
/// last one a record gives up to there).
pub fn best_genome_at(history: &[StepRecord], tokens: u64) -> Option<&Genome> {
    history
        .iter()
        .take_while(|r| r.tokens <= tokens)
        .filter_map(|r| r.best_genome.as_ref())
        .last()
}

impl Summary {
    /// The best genome's held-out KL against tokens, at the exact token
    /// counts where the best genome changed (from the history), ending at
    /// the search's last token count: (tokens, KL), the KL None where that
    /// genome was never measured (it was the best only between two anytime
    /// points). Empty without anytime points.
    pub fn anytime_steps(&self) -> Vec<(u64, Option<f64>)> {
        if self.anytime.is_empty() {
            return Vec::new();
        }
        let changes: Vec<(u64, &Genome)> = self
            .history
            .iter()
            .filter_map(|h| h.best_genome.as_ref().map(|g| (h.tokens, g)))
            .collect();
        let measured: Vec<(&Genome, f64)> = self
            .anytime
            .iter()
            .filter_map(|a| best_genome_at(&self.history, a.tokens).map(|g| (g, a.held_out_kl)))
            .collect();
        let kl = |g: &Genome| measured.iter().find(|m| m.0 == g).map(|m| m.1);
        let mut out: Vec<(u64, Option<f64>)> = changes.iter().map(|&(t, g)| (t, kl(g))).collect();
        let end = self.history.last().map_or(0, |h| h.tokens);
        if let Some(&(t, k)) = out.last()
            && end > t
        {
            out.push((end, k));
        }
        out
    }
}

/// Live progress (`status.json`), rewritten after every step, readable
/// while the store is held by the running process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    pub name: String,
    pub strategy: String,
    pub pid: u32,
    /// Ask/tell rounds done.
    pub step: u64,
    /// Where the strategy stands, in `step_label`s (EvoPress: generations),
    /// out of `total_steps`.
    #[serde(default)]
    pub progress: usize,
    pub total_steps: usize,
    pub step_label: String,
    pub evaluations: usize,
    pub cache_hits: usize,
    pub best: Option<Best>,
    pub finished: bool,
}

#[cfg(test)]
mod anytime_tests {
    use super::*;

    fn record(tokens: u64, genome: Option<Vec<i64>>) -> StepRecord {
        StepRecord {
            step: tokens,
            evaluations: 0,
            cache_hits: 0,
            seconds: 0.0,
            best: Some(1.0),
            best_cost: Some(1),
            front: Vec::new(),
            tokens,
            best_genome: genome,
            metrics: BTreeMap::new(),
        }
    }

    #[test]
    fn anytime_steps_put_measured_genomes_at_the_tokens_they_became_best() {
        let m = Measured {
            genome: vec![2],
            cost: 1,
            search_fitness: 1.0,
            held_out_kl: 0.5,
            held_out_nll: 1.0,
            held_out_perplexity: 2.7,
            held_out_tokens: 8,
            held_out_kl_windows: vec![],
        };
        let point = |tokens, kl| AnytimePoint {
            tokens,
            evaluations: 0,
            cost: 1,
            search_fitness: 1.0,
            held_out_kl: kl,
            held_out_nll: 1.0,
        };
        let mut s = Summary {
            name: "t".into(),
            strategy: "EvoPress".into(),
            role: Role::Search,
            budget: Budget::AtMost(1),
            cost_unit: "w".into(),
            full_cost: 1,
            units: vec!["u".into()],
            best: m.clone(),
            held_out_id: None,
            front: vec![m],
            steps: 5,
            evaluations: 5,
            cache_hits: 0,
            seconds: 1.0,
            layers_run_fraction: None,
            // Genome 0 from 10 tokens, 1 from 30 (replaced before a point), 2 from 45, end at 100.
            history: vec![
                record(10, Some(vec![0])),
                record(20, None),
                record(30, Some(vec![1])),
                record(45, Some(vec![2])),
                record(100, None),
            ],
            anytime: Vec::new(),
        };
        assert!(s.anytime_steps().is_empty());
        // Genome 2 is the best at 50 and at 100: measured (the same value) twice.
        s.anytime = vec![point(25, 0.9), point(50, 0.6), point(100, 0.6)];
        assert_eq!(
            s.anytime_steps(),
            vec![
                (10, Some(0.9)),
                (30, None),
                (45, Some(0.6)),
                (100, Some(0.6))
            ]
        );
    }
}
