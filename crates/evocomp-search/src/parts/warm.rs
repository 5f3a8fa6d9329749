//! Warm starts: the one-shot heuristics' genomes (uniform, OWL, ShortGPT,
//! DP), computed from the study's measurements, as the first candidates of
//! a search (EvoPress's first parent is the best of them; NSGA-II's first
//! population holds them all).

use crate::SearchError;
use crate::framework::setup::Kind;
use crate::framework::setup::{Build, Needs, Setup, Spec, SpecError};
use crate::framework::space::Genome;
use crate::heuristics::random_feasible;
use crate::heuristics::{fill_budget, start_genome};
use crate::strategies::fixed::{
    DpSpec, Fixed, OwlSpec, PyramidKvSpec, ShortGptSpec, UniformSpec, given_genome,
};
use serde::{Deserialize, Serialize};

/// A heuristic a search may start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WarmStart {
    /// Every unit at the budget's level.
    Uniform,
    /// The uniform genome with the rest of an `AtMost` budget spent.
    Filled,
    Owl(OwlSpec),
    ShortGpt,
    Dp(DpSpec),
    /// A configuration the study offers by name, made outside the search
    /// (`Given("Q4_K_M")`: llama.cpp's preset on a GGUF-types database).
    Given(String),
    /// Shortened LLaMA's leave-one-out genome: every unit probed alone at
    /// its most compressed level on the start's tokens, then the least
    /// harmful compressed first. It needs evaluations, so EvoPress's start
    /// runs the probes first (one per unit; their tokens count).
    ShortenedLlama,
    PyramidKv(PyramidKvSpec),
    /// `n` random feasible genomes (EvoPress's published depth start draws 64).
    Random(usize),
}

impl WarmStart {
    fn spec(&self) -> Option<Box<dyn Spec>> {
        match self {
            WarmStart::Uniform => Some(Box::new(UniformSpec)),
            WarmStart::Filled => None,
            WarmStart::Owl(s) => Some(Box::new(*s)),
            WarmStart::ShortGpt => Some(Box::new(ShortGptSpec)),
            WarmStart::Dp(s) => Some(Box::new(*s)),
            WarmStart::PyramidKv(s) => Some(Box::new(*s)),
            WarmStart::Given(_) | WarmStart::ShortenedLlama | WarmStart::Random(_) => None,
        }
    }

    pub fn label(&self) -> String {
        match self {
            WarmStart::Given(name) => name.clone(),
            WarmStart::Filled => "filled".into(),
            WarmStart::ShortenedLlama => "Shortened-LLaMA".into(),
            WarmStart::Dp(DpSpec {
                per_size_group: true,
                ..
            }) => "DP-per-size".into(),
            WarmStart::Random(n) => format!("random-{n}"),
            _ => self.spec().map_or_else(String::new, |s| s.label()),
        }
    }

    pub fn validate(&self, seq_len: usize) -> Result<(), SpecError> {
        if let WarmStart::Random(n) = self {
            crate::framework::setup::ensure(
                (1..=4096).contains(n),
                "start",
                format!("Random({n}): between 1 and 4096 genomes"),
            )?;
        }
        self.spec().map_or(Ok(()), |s| s.validate(seq_len))
    }

    /// This heuristic's genomes under the setup's budget (one, or `n` for `Random(n)`).
    pub fn genomes(&self, setup: &Setup) -> Result<Vec<Genome>, SearchError> {
        if let WarmStart::Random(n) = self {
            let start = start_genome(setup.seed, setup.space, &setup.budget)?;
            let mut gs = random_feasible(
                setup.space,
                &start,
                &setup.budget,
                *n,
                crate::rng::mix(setup.seed, &[0x4a4d]),
            );
            if gs.is_empty() {
                gs.push(start);
            }
            return Ok(gs);
        }
        Ok(vec![self.genome(setup)?])
    }

    /// This heuristic's genome under the setup's budget.
    pub fn genome(&self, setup: &Setup) -> Result<Genome, SearchError> {
        let named =
            |e: SearchError| SearchError::Config(format!("warm start {}: {e}", self.label()));
        let fixed: Fixed = match self {
            WarmStart::Random(_) => {
                return Ok(self.genomes(setup)?.swap_remove(0));
            }
            WarmStart::ShortenedLlama => {
                return Err(SpecError::new(
                    "start",
                    "Shortened LLaMA's genome needs its probes scored first: it is a warm start of EvoPress only",
                )
                .into());
            }
            WarmStart::Given(name) => {
                let g = given_genome(setup, name, "start")?;
                if !setup.budget.allows(setup.space.cost(g)) {
                    return Err(SpecError::new(
                        "start",
                        format!(
                            "{name} costs {}, which does not meet the budget {:?}",
                            setup.space.cost(g),
                            setup.budget
                        ),
                    )
                    .into());
                }
                return Ok(g.clone());
            }
            WarmStart::Filled => {
                let g = start_genome(setup.seed, setup.space, &setup.budget)
                    .map_err(|e| named(e.into()))?;
                return Ok(fill_budget(
                    setup.space,
                    &g,
                    &setup.budget,
                    crate::rng::mix(setup.seed, &[0xf111]),
                ));
            }
            WarmStart::Uniform => UniformSpec.build(setup),
            WarmStart::Owl(s) => s.build(setup),
            WarmStart::ShortGpt => ShortGptSpec.build(setup),
            WarmStart::Dp(s) => s.build(setup),
            WarmStart::PyramidKv(s) => s.build(setup),
        }
        .map_err(named)?;
        fixed
            .genomes
            .into_iter()
            .next()
            .ok_or_else(|| named(SearchError::Config("no genome".into())))
    }
}

/// The measurements the heuristics need together.
pub fn needs(of: &[WarmStart], kind: Kind) -> Needs {
    of.iter()
        .filter_map(WarmStart::spec)
        .map(|s| s.needs(kind))
        .fold(Needs::default(), |a, b| Needs {
            outlier_ratios: a.outlier_ratios.or(b.outlier_ratios),
            block_influence: a.block_influence || b.block_influence,
        })
}

/// Every heuristic's genome that needs no evaluation, in order, without
/// repeats (Shortened LLaMA's comes from probes: see [`WarmStart::ShortenedLlama`]).
pub fn genomes(of: &[WarmStart], setup: &Setup) -> Result<Vec<Genome>, SearchError> {
    let mut out: Vec<Genome> = Vec::new();
    for w in of.iter().filter(|w| **w != WarmStart::ShortenedLlama) {
        for g in w.genomes(setup)? {
            if !out.contains(&g) {
                out.push(g);
            }
        }
    }
    Ok(out)
}

/// The genomes the `Random(n)` entries of `of` draw (the same as
/// [`genomes`] gives for them): the start's challengers, not heuristics.
pub fn random_genomes(of: &[WarmStart], setup: &Setup) -> Result<Vec<Genome>, SearchError> {
    let mut out = Vec::new();
    for w in of.iter().filter(|w| matches!(w, WarmStart::Random(_))) {
        out.extend(w.genomes(setup)?);
    }
    Ok(out)
}

/// Every heuristic known for a database of `kind` (EvoPress's default
/// start), with the configurations the study offers by name (`given`):
/// depth: ShortGPT, Shortened LLaMA, 16 random genomes; sparsity: uniform,
/// the uniform genome filled to the budget, OWL, DP on normalised errors,
/// per-size DP; quantization: the same without OWL, and the given presets;
/// KV: uniform, PyramidKV. [`applicable`] drops those that cannot meet the
/// study's budget.
pub fn known(kind: Kind, given: &[String]) -> Vec<WarmStart> {
    let dp = DpSpec {
        max_states: 2_000_000,
        per_size_group: false,
    };
    let per_size = DpSpec {
        per_size_group: true,
        ..dp
    };
    let mut of = match kind {
        Kind::Depth => vec![
            WarmStart::ShortGpt,
            WarmStart::ShortenedLlama,
            WarmStart::Random(16),
        ],
        Kind::Sparsity => vec![
            WarmStart::Uniform,
            WarmStart::Filled,
            WarmStart::Owl(OwlSpec::default()),
            WarmStart::Dp(dp),
            WarmStart::Dp(per_size),
        ],
        Kind::Quantization => vec![
            WarmStart::Uniform,
            WarmStart::Filled,
            WarmStart::Dp(dp),
            WarmStart::Dp(per_size),
        ],
        Kind::KvBudget | Kind::KvBits => vec![
            WarmStart::Uniform,
            WarmStart::Filled,
            WarmStart::PyramidKv(PyramidKvSpec::default()),
        ],
    };
    of.extend(given.iter().map(|n| WarmStart::Given(n.clone())));
    of
}

/// The heuristics of `of` that make a genome under this setup (a preset
/// over the budget, a uniform level the budget does not allow, DP without
/// recorded errors are left out, each with the reason), and their genomes.
pub fn applicable(
    of: &[WarmStart],
    setup: &Setup,
) -> (Vec<WarmStart>, Vec<Genome>, Vec<(String, String)>) {
    let (mut kept, mut pool, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
    for w in of {
        if *w == WarmStart::ShortenedLlama {
            kept.push(w.clone());
            continue;
        }
        match w.genomes(setup) {
            Ok(gs) => {
                kept.push(w.clone());
                for g in gs {
                    if !pool.contains(&g) {
                        pool.push(g);
                    }
                }
            }
            Err(e) => left_out.push((w.label(), e.to_string())),
        }
    }
    (kept, pool, left_out)
}
