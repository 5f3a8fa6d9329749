//! The [`Strategy`] trait every search strategy implements, and the values
//! that cross it: requests (with ids), results (answering an id), the best
//! genome, front members and progress.

use crate::SearchError;
use crate::framework::space::{Genome, Space};
use serde::{Deserialize, Serialize};

/// Which token sample a genome is scored on: `tokens` tokens drawn with
/// `seed`, after the first `skip` tokens of that draw. The sequences of a
/// seed's draw do not depend on how many are drawn, so the parts
/// `(c, seed, 0)`, `(c, seed, c)`, `(c, seed, 2c)`, ... are the sample
/// `(n·c, seed, 0)` in pieces (racing scores a stage's sample in chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SampleDraw {
    pub tokens: usize,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: usize,
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

impl SampleDraw {
    /// The first `tokens` tokens of `seed`'s draw.
    pub fn new(tokens: usize, seed: u64) -> Self {
        Self {
            tokens,
            seed,
            skip: 0,
        }
    }

    /// Part `index` of this sample cut into parts of `tokens` tokens.
    pub fn part(self, tokens: usize, index: usize) -> Self {
        Self {
            tokens,
            seed: self.seed,
            skip: self.skip + index * tokens,
        }
    }
}

/// One evaluation a strategy asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Unique within one ask; the result answering it carries the same id.
    pub id: u64,
    pub genome: Genome,
    pub sample: SampleDraw,
    /// A measurement (greedy's single-unit sensitivity probes, leave-one-out
    /// scores), not a candidate: it may be off budget and never becomes a result.
    #[serde(default)]
    pub probe: bool,
}

/// The fitness (lower is better) of the request with id `id`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub id: u64,
    pub fitness: f64,
}

/// A genome and its fitness on the sample it was last scored on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub genome: Genome,
    pub fitness: f64,
}

/// One member of a quality-versus-cost front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontMember {
    pub genome: Genome,
    pub fitness: f64,
    pub cost: u64,
}

/// Where a strategy is: `step` of about `total` steps of kind `label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub label: String,
}

/// What a strategy's result is, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    /// The uniform configuration every other result is compared with.
    Uniform,
    /// A one-shot heuristic (OWL, ShortGPT, DP, ...): a reference point.
    Heuristic,
    /// A search that improves over steps.
    #[default]
    Search,
    /// A search for a whole front of (fitness, cost).
    Front,
}

/// A search strategy as an ask/tell state machine.
///
/// A strategy is a plain value: cloning or serialising it is a checkpoint,
/// and the same fitness values told give the same asks. Every non-probe
/// genome it asks for meets its budget.
pub trait Strategy {
    /// The evaluations wanted now (empty when done). Ids are unique within
    /// the ask; `ask` does not change the strategy.
    fn ask(&self, space: &Space) -> Vec<Request>;

    /// One result for every request of the last ask, in any order.
    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError>;

    fn is_done(&self) -> bool;

    /// The best genome so far and its fitness.
    fn best(&self) -> Option<Best>;

    /// The non-dominated (fitness, cost) members, cheapest first; by
    /// default the best alone.
    fn front(&self, space: &Space) -> Vec<FrontMember> {
        self.best()
            .map(|b| {
                vec![FrontMember {
                    cost: space.cost(&b.genome),
                    genome: b.genome,
                    fitness: b.fitness,
                }]
            })
            .unwrap_or_default()
    }

    /// A genome most of the next asks share long prefixes with (EvoPress's
    /// parent): its hidden states are worth keeping. None by default.
    fn anchor(&self) -> Option<Genome> {
        None
    }

    fn progress(&self) -> Progress;

    /// Named figures about the search itself (tokens asked, a surrogate's
    /// prediction error), recorded with every step; none by default.
    fn metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// What the result is, for reports.
    fn role(&self) -> Role {
        Role::Search
    }
}

/// Requests for `genomes` in order, with ids 0, 1, 2, ...
pub fn requests(genomes: &[Genome], sample: SampleDraw, probe: bool) -> Vec<Request> {
    genomes
        .iter()
        .enumerate()
        .map(|(i, g)| Request {
            id: i as u64,
            genome: g.clone(),
            sample,
            probe,
        })
        .collect()
}

/// The fitness of requests 0..n (asked with ids 0..n) from `results`:
/// every id answered exactly once, every fitness finite.
pub fn results_in_order(n: usize, results: &[Scored]) -> Result<Vec<f64>, SearchError> {
    if results.len() != n {
        return Err(SearchError::Protocol(format!(
            "{} results for {n} requests",
            results.len()
        )));
    }
    let mut out: Vec<Option<f64>> = vec![None; n];
    for r in results {
        let slot = usize::try_from(r.id)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| {
                SearchError::Protocol(format!("a result for request {} that was not asked", r.id))
            })?;
        if slot.is_some() {
            return Err(SearchError::Protocol(format!(
                "request {} answered twice",
                r.id
            )));
        }
        if !r.fitness.is_finite() {
            return Err(SearchError::Protocol(format!(
                "fitness {} of request {} is not finite",
                r.fitness, r.id
            )));
        }
        *slot = Some(r.fitness);
    }
    Ok(out
        .into_iter()
        .map(|f| f.expect("every slot filled"))
        .collect())
}
