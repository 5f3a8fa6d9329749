//! Adding a strategy: this one (best of N random walks from the uniform
//! genome, kept for the best) is written against the [`Strategy`] and
//! [`Settings`] traits alone, in this crate. Making it usable from configs
//! takes one arm of `AnyStrategy` and one variant of the config's strategy
//! enum; the engine drives it through the same trait calls as below.

use super::*;
use crate::heuristics::uniform_genome;
use crate::rng::rng_for;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BestOfWalks {
    genomes: Vec<Genome>,
    sample: SampleSpec,
    fitness: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Copy)]
struct BestOfWalksSettings {
    n: usize,
}

impl BestOfWalksSettings {
    fn make(&self, setup: &Setup) -> Result<BestOfWalks, SearchError> {
        self.validate(0)?;
        let start = uniform_genome(setup.space, &setup.budget)
            .ok_or(SpaceError::Infeasible(setup.budget))?;
        let genomes = (0..self.n as u64)
            .map(|k| {
                let mut rng = rng_for(setup.seed, &[0xe4a, k]);
                let mut g = start.clone();
                for _ in 0..3 {
                    level_switch(setup.space, &mut g, &mut rng);
                }
                g
            })
            .collect();
        Ok(BestOfWalks {
            genomes,
            sample: setup.sample,
            fitness: None,
        })
    }
}

impl Settings for BestOfWalksSettings {
    fn label(&self) -> &'static str {
        "best-of-walks"
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SettingsError> {
        if self.n == 0 {
            return Err(SettingsError::new("n", "must be at least 1"));
        }
        Ok(())
    }

    fn build(&self, _setup: &Setup) -> Result<AnyStrategy, SearchError> {
        // Registering it would be one `AnyStrategy` arm; the test drives it directly.
        Err(SearchError::Config("not registered in AnyStrategy".into()))
    }
}

impl Strategy for BestOfWalks {
    fn ask(&self, _space: &Space) -> Vec<Request> {
        if self.fitness.is_some() {
            return Vec::new();
        }
        requests(&self.genomes, self.sample, false)
    }

    fn tell(&mut self, _space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        self.fitness = Some(results_in_order(self.genomes.len(), results)?);
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.fitness.is_some()
    }

    fn best(&self) -> Option<Best> {
        let f = self.fitness.as_ref()?;
        let i = (0..f.len()).min_by(|&a, &b| f[a].total_cmp(&f[b]))?;
        Some(Best {
            genome: self.genomes[i].clone(),
            fitness: f[i],
        })
    }

    fn progress(&self) -> Progress {
        Progress {
            step: usize::from(self.fitness.is_some()),
            total: 1,
            label: "step".into(),
        }
    }
}

/// What the engine's executor does with any strategy: ask, score every
/// request (by id), tell, checkpoint (a serde round trip), until done.
fn run_to_end<S>(mut s: S, space: &Space, f: impl Fn(&[i64]) -> f64) -> (S, usize)
where
    S: Strategy + Serialize + serde::de::DeserializeOwned,
{
    let mut evals = 0;
    while !s.is_done() {
        let asks = s.ask(space);
        evals += asks.len();
        // Answer in reverse order: results match requests by id, not position.
        let results: Vec<Scored> = asks
            .iter()
            .rev()
            .map(|r| Scored {
                id: r.id,
                fitness: f(&r.genome),
            })
            .collect();
        s.tell(space, &results).unwrap();
        s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    }
    (s, evals)
}

#[test]
fn a_strategy_written_against_the_trait_runs_like_any_other() {
    let space = sparsity_space(6);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let setup = Setup {
        space: &space,
        budget,
        hint: BudgetHint::UniformLevel(0),
        kind: Kind::Sparsity,
        seed: 11,
        sample: SampleSpec::new(8, 1),
        unit_layer: &[0, 0, 1, 1, 2, 2],
        unit_numel: None,
        level_errors: None,
        measured: Measurements::default(),
        given: &[],
    };
    assert!(BestOfWalksSettings { n: 0 }.make(&setup).is_err());
    let settings = BestOfWalksSettings { n: 12 };
    assert_eq!(settings.label(), "best-of-walks");
    let s = settings.make(&setup).unwrap();
    let (done, evals) = run_to_end(s.clone(), &space, fitness);
    assert_eq!(evals, 12);
    let best = done.best().unwrap();
    assert!(space.feasible(&best.genome, &budget));
    // The best of what it asked, and not worse than the mean of them.
    let all: Vec<f64> = done.genomes.iter().map(|g| fitness(g)).collect();
    assert_eq!(
        best.fitness,
        all.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    assert_eq!(done.front(&space).len(), 1);
    assert_eq!(done.role(), Role::Search);
    // Deterministic from its seed.
    assert_eq!(run_to_end(s, &space, fitness).0, done);
}
