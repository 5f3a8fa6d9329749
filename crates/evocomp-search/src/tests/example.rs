//! Adding a strategy: this one (best of N random walks from the uniform
//! genome, kept for the best) is written against the [`Strategy`],
//! [`Settings`] and [`Build`] traits alone, and registered with the same
//! [`registry!`](crate::registry) invocation shape as the crate's own list
//! (`framework/registry.rs`), here beside two of the real strategies. The
//! config crate and the engine only hold the registry's two enums and call
//! their methods (`settings`, `build`, the `Strategy` calls), so this is all
//! it takes: the test parses the strategy from an experiment's RON, builds
//! it and drives it as the engine does.

use super::*;
use crate::heuristics::uniform_genome;
use crate::rng::rng_for;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestOfWalks {
    genomes: Vec<Genome>,
    sample: SampleDraw,
    fitness: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestOfWalksSpec {
    n: usize,
}

impl Build for BestOfWalksSpec {
    type Strategy = BestOfWalks;

    fn build(&self, setup: &Setup) -> Result<BestOfWalks, SearchError> {
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

impl Spec for BestOfWalksSpec {
    fn label(&self) -> String {
        "best-of-walks".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        if self.n == 0 {
            return Err(SpecError::new("n", "must be at least 1"));
        }
        Ok(())
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

// The registration: the same macro and shape as `framework/registry.rs`, so
// adding `BestOfWalks` there is these two lines.
crate::registry! {
    /// A config's strategy, with the example registered.
    pub enum ExampleSpec {
        Uniform = UniformSpec,
        Dp(DpSpec),
        BestOfWalks(BestOfWalksSpec),
    }
    /// A checkpoint, with the example registered.
    pub enum ExampleStrategy {
        Fixed(Fixed),
        BestOfWalks(BestOfWalks),
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

/// What the engine would build a strategy from, on a 6-unit sparsity space.
fn example_setup(space: &Space, budget: Budget) -> Setup<'_> {
    Setup {
        space,
        budget,
        hint: BudgetHint::UniformLevel(0),
        kind: Kind::Sparsity,
        seed: 11,
        sample: SampleDraw::new(8, 1),
        unit_layer: &[0, 0, 1, 1, 2, 2],
        unit_numel: None,
        level_errors: None,
        measured: Measurements::default(),
        given: &[],
    }
}

#[test]
fn a_strategy_written_against_the_trait_runs_like_any_other() {
    let space = sparsity_space(6);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let setup = example_setup(&space, budget);
    assert!(BestOfWalksSpec { n: 0 }.build(&setup).is_err());
    let settings = BestOfWalksSpec { n: 12 };
    assert_eq!(settings.label(), "best-of-walks");
    let s = settings.build(&setup).unwrap();
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

/// The registered example, from a config's RON to a finished checkpoint
/// through the registry's enums only (what the config crate and the engine
/// do with `StrategySpec` and `AnyStrategy`).
#[test]
fn a_registered_strategy_runs_from_a_config() {
    #[derive(Deserialize)]
    struct Config {
        strategy: ExampleSpec,
    }
    // The extensions experiment configs are read with (evocomp-config's `parse_ron`).
    let options = ron::Options::default().with_default_extension(
        ron::extensions::Extensions::IMPLICIT_SOME
            | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES,
    );
    let parse = |text: &str| options.from_str::<Config>(text).map(|c| c.strategy);
    let settings = parse("(strategy: BestOfWalks(n: 5))").unwrap();
    assert_eq!(settings, ExampleSpec::BestOfWalks(BestOfWalksSpec { n: 5 }));
    assert_eq!(settings.label(), "best-of-walks");
    assert!(parse("(strategy: BestOfWalks(n: 5, m: 1))").is_err());
    assert_eq!(parse("(strategy: Uniform)").unwrap().label(), "uniform");
    // Validation goes through the same `settings()` the config crate calls.
    let zero = parse("(strategy: BestOfWalks(n: 0))").unwrap();
    assert_eq!(zero.spec().validate(8).unwrap_err().field, "n");

    let space = sparsity_space(6);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let setup = example_setup(&space, budget);
    let fresh = settings.build(&setup).unwrap();
    assert!(matches!(fresh, ExampleStrategy::BestOfWalks(_)));
    let (done, evals) = run_to_end(fresh, &space, fitness);
    assert_eq!(evals, 5);
    assert!(done.is_done());
    assert!(space.feasible(&done.best().unwrap().genome, &budget));
    // The other registered entries build their own states.
    let uniform = parse("(strategy: Uniform)").unwrap().build(&setup).unwrap();
    assert!(matches!(uniform, ExampleStrategy::Fixed(_)));
}
