//! Shortened LLaMA's one-shot leave-one-out criterion (Kim et al., 2024).

use crate::framework::setup::{Build, Setup, Spec};
use crate::framework::space::{Budget, Genome, Space};
use crate::framework::strategy::{
    Best, Progress, Request, Role, SampleDraw, Scored, Strategy, requests,
};
use crate::heuristics::lowest_scores_first;
use crate::{SearchError, results_in_order};
use serde::{Deserialize, Serialize};

/// Shortened LLaMA (one-shot, PPL criterion): score each unit by the
/// fitness with only it compressed (use `metric: Nll` for the paper's
/// perplexity), compress the least harmful first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShortenedLlamaSpec;

impl Spec for ShortenedLlamaSpec {
    fn label(&self) -> String {
        "Shortened-LLaMA".into()
    }
}

impl Build for ShortenedLlamaSpec {
    type Strategy = LeaveOneOut;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        LeaveOneOut::new(setup.space, setup.budget, setup.sample)
    }
}

/// Score each unit by the fitness of the model with only that unit
/// compressed to its most compressed level (for blocks: the perplexity
/// without that block), then compress the units whose removal hurts least
/// until the budget holds, and score that genome. The single-unit genomes
/// are probes (off budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveOneOut {
    pub budget: Budget,
    pub sample: SampleDraw,
    /// Fitness with only unit i compressed, once measured.
    pub scores: Option<Vec<f64>>,
    /// The chosen genome, once the scores are in.
    pub chosen: Option<Genome>,
    pub fitness: Option<f64>,
}

impl LeaveOneOut {
    pub fn new(space: &Space, budget: Budget, sample: SampleDraw) -> Result<Self, SearchError> {
        // Fail now, not after the probes, when no genome meets the budget.
        lowest_scores_first(space, &vec![0.0; space.len()], &budget)?;
        Ok(Self {
            budget,
            sample,
            scores: None,
            chosen: None,
            fitness: None,
        })
    }

    /// Unit i alone at its most compressed level.
    pub fn probes(space: &Space) -> Vec<Genome> {
        (0..space.len())
            .map(|i| {
                let mut g: Genome = space.units.iter().map(|u| u.min()).collect();
                g[i] = space.units[i].max();
                g
            })
            .collect()
    }
}

impl Strategy for LeaveOneOut {
    fn ask(&self, space: &Space) -> Vec<Request> {
        match (&self.scores, &self.chosen, self.fitness) {
            (None, _, _) => requests(&Self::probes(space), self.sample, true),
            (Some(_), Some(g), None) => requests(std::slice::from_ref(g), self.sample, false),
            _ => Vec::new(),
        }
    }

    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        match (&self.scores, &self.chosen) {
            (None, _) => {
                let scores = results_in_order(space.len(), results)?;
                let g = lowest_scores_first(space, &scores, &self.budget)?;
                self.scores = Some(scores);
                self.chosen = Some(g);
                Ok(())
            }
            (Some(_), Some(_)) if self.fitness.is_none() => {
                self.fitness = Some(results_in_order(1, results)?[0]);
                Ok(())
            }
            _ => Err(SearchError::Protocol(
                "tell after the search finished".into(),
            )),
        }
    }

    fn is_done(&self) -> bool {
        self.fitness.is_some()
    }

    fn best(&self) -> Option<Best> {
        self.chosen
            .clone()
            .zip(self.fitness)
            .map(|(genome, fitness)| Best { genome, fitness })
    }

    fn progress(&self) -> Progress {
        Progress {
            step: usize::from(self.scores.is_some()) + usize::from(self.fitness.is_some()),
            total: 2,
            label: "phase".into(),
        }
    }

    fn role(&self) -> Role {
        Role::Heuristic
    }
}
