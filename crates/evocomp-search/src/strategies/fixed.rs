//! A fixed list of genomes, scored once, the best kept: the one-shot
//! baselines (uniform, OWL, ShortGPT, PyramidKV, DP) and best-of-N random,
//! with their settings.

use crate::framework::setup::{
    BudgetHint, Build, Kind, MAX_GENOMES, Needs, Setup, Spec, SpecError, at_most, ensure,
};
use crate::framework::space::{Genome, Space};
use crate::framework::strategy::{
    Best, Progress, Request, Role, SampleDraw, Scored, Strategy, requests,
};
use crate::heuristics::{
    lowest_scores_first, owl_genome, pyramid_genome, random_feasible, start_genome, uniform_genome,
};
use crate::{SearchError, knapsack, knapsack_per_group, results_in_order};
use serde::{Deserialize, Serialize};

/// Score a fixed list of genomes once and keep the best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fixed {
    pub genomes: Vec<Genome>,
    pub sample: SampleDraw,
    pub fitness: Option<Vec<f64>>,
    #[serde(default)]
    pub role: Role,
}

impl Fixed {
    pub fn new(genomes: Vec<Genome>, sample: SampleDraw, role: Role) -> Result<Self, SearchError> {
        if genomes.is_empty() {
            return Err(SearchError::Config("no genome to score".into()));
        }
        Ok(Self {
            genomes,
            sample,
            fitness: None,
            role,
        })
    }
}

impl Strategy for Fixed {
    fn ask(&self, _space: &Space) -> Vec<Request> {
        if self.fitness.is_some() {
            Vec::new()
        } else {
            requests(&self.genomes, self.sample, false)
        }
    }

    fn tell(&mut self, _space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        if self.fitness.is_some() {
            return Err(SearchError::Protocol(
                "tell after the search finished".into(),
            ));
        }
        self.fitness = Some(results_in_order(self.genomes.len(), results)?);
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.fitness.is_some()
    }

    fn best(&self) -> Option<Best> {
        self.fitness.as_ref().and_then(|f| {
            (0..f.len())
                .min_by(|&a, &b| f[a].total_cmp(&f[b]).then(a.cmp(&b)))
                .map(|i| Best {
                    genome: self.genomes[i].clone(),
                    fitness: f[i],
                })
        })
    }

    fn progress(&self) -> Progress {
        Progress {
            step: usize::from(self.fitness.is_some()),
            total: 1,
            label: "step".into(),
        }
    }

    fn role(&self) -> Role {
        self.role
    }
}

fn fixed(g: Vec<Genome>, setup: &Setup, role: Role) -> Result<Fixed, SearchError> {
    Fixed::new(g, setup.sample, role)
}

/// A configuration made outside the search and offered by the study by
/// name, scored as a reference point: llama.cpp's presets on a GGUF-types
/// database, whose rules know tensor names (`strategy: LlamaCpp(Q4_K_M)`).
/// The name is written bare in RON and as a string in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaCppSpec(pub String);

impl Serialize for LlamaCppSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LlamaCppSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = LlamaCppSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a preset's name, such as Q4_K_M")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LlamaCppSpec(v.to_string()))
            }
        }
        d.deserialize_identifier(Name)
    }
}

impl Spec for LlamaCppSpec {
    fn label(&self) -> String {
        format!("llama.cpp {}", self.0)
    }
}

impl Build for LlamaCppSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let genome = given_genome(setup, &self.0, "")?;
        let cost = setup.space.cost(genome);
        if cost > setup.budget.limit() {
            return Err(SpecError::new(
                "",
                format!(
                    "{} costs {cost}, over the budget {:?}",
                    self.label(),
                    setup.budget
                ),
            )
            .into());
        }
        fixed(vec![genome.clone()], setup, Role::Heuristic)
    }
}

/// The configuration the study offers as `name` (see [`Setup::given`]),
/// checked against the space; an error at `field` lists what is offered.
pub(crate) fn given_genome<'a>(
    setup: &Setup<'a>,
    name: &str,
    field: &str,
) -> Result<&'a Genome, SearchError> {
    let Some((_, g)) = setup.given.iter().find(|(n, _)| n == name) else {
        let offered: Vec<&str> = setup.given.iter().map(|(n, _)| n.as_str()).collect();
        return Err(SpecError::new(
            field,
            format!(
                "no configuration named {name} here (this study offers: {}; llama.cpp's \
                 presets are offered by GGUF-types databases)",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        )
        .into());
    };
    setup.space.check(g)?;
    Ok(g)
}

/// Every unit at the budget's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UniformSpec;

impl Spec for UniformSpec {
    fn label(&self) -> String {
        "uniform".into()
    }
}

impl Build for UniformSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let g = uniform_genome(setup.space, &setup.budget).ok_or_else(|| {
            SpecError::new(
                "",
                format!(
                    "no level common to every unit meets the budget {:?}",
                    setup.budget
                ),
            )
        })?;
        fixed(vec![g], setup, Role::Uniform)
    }
}

/// The best of `n` random feasible configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    pub n: usize,
}

impl Spec for RandomSpec {
    fn label(&self) -> String {
        "random".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(self.n >= 1, "n", "must be at least 1")?;
        at_most(self.n, MAX_GENOMES, "n", "random genomes")
    }
}

impl Build for RandomSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let start = start_genome(setup.seed, setup.space, &setup.budget)?;
        let gs = random_feasible(setup.space, &start, &setup.budget, self.n, setup.seed);
        fixed(gs, setup, Role::Heuristic)
    }
}

/// OWL (Yin et al., 2024): less sparsity where activations have more outliers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwlSpec {
    #[serde(default = "default_owl_lambda")]
    pub lambda: f64,
    /// Outlier threshold M (a score above M × the layer's mean).
    #[serde(default = "default_owl_m")]
    pub m: f64,
}

impl Default for OwlSpec {
    fn default() -> Self {
        Self {
            lambda: default_owl_lambda(),
            m: default_owl_m(),
        }
    }
}

fn default_owl_lambda() -> f64 {
    0.08
}
fn default_owl_m() -> f64 {
    5.0
}

impl Spec for OwlSpec {
    fn label(&self) -> String {
        "OWL".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(
            (0.0..0.5).contains(&self.lambda),
            "lambda",
            format!("must be in [0, 0.5), got {}", self.lambda),
        )?;
        ensure(
            self.m > 1.0,
            "m",
            format!("must be above 1, got {}", self.m),
        )
    }

    fn needs(&self, _kind: Kind) -> Needs {
        Needs {
            outlier_ratios: Some(self.m),
            ..Needs::default()
        }
    }
}

impl Build for OwlSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        if setup.kind != Kind::Sparsity {
            return Err(
                SpecError::new("", "OWL allocates sparsity: it needs a Sparsity database").into(),
            );
        }
        let lor =
            setup.measured.outlier_ratios.as_ref().ok_or_else(|| {
                SearchError::Config("OWL needs the layers' outlier ratios".into())
            })?;
        let numel = setup
            .unit_numel
            .ok_or_else(|| SearchError::Config("OWL needs every unit's size".into()))?;
        // Level steps per unit of sparsity: numel / (weights zeroed per level).
        let per: Vec<f64> = setup
            .space
            .units
            .iter()
            .zip(numel)
            .map(|(u, &n)| {
                let step = u
                    .costs
                    .windows(2)
                    .map(|w| w[0].abs_diff(w[1]))
                    .max()
                    .unwrap_or(1)
                    .max(1) as f64;
                n as f64 / step
            })
            .collect();
        let base = match setup.hint {
            BudgetHint::UniformLevel(l) => l,
            _ => 0,
        };
        let g = owl_genome(
            setup.space,
            base,
            setup.unit_layer,
            lor,
            self.lambda,
            &per,
            &setup.budget,
        )?;
        fixed(vec![g], setup, Role::Heuristic)
    }
}

/// ShortGPT (Men et al., 2024): drop the blocks whose input and output are most alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ShortGptSpec;

impl Spec for ShortGptSpec {
    fn label(&self) -> String {
        "ShortGPT".into()
    }

    fn needs(&self, _kind: Kind) -> Needs {
        Needs {
            block_influence: true,
            ..Needs::default()
        }
    }
}

impl Build for ShortGptSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let bi =
            setup.measured.block_influence.as_ref().ok_or_else(|| {
                SearchError::Config("ShortGPT needs the blocks' influence".into())
            })?;
        let scores: Vec<f64> = setup.unit_layer.iter().map(|&l| bi[l]).collect();
        let g = lowest_scores_first(setup.space, &scores, &setup.budget)?;
        fixed(vec![g], setup, Role::Heuristic)
    }
}

/// PyramidKV: per-layer KV budgets falling linearly from bottom to top, the
/// top layer keeping total / (beta x layers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PyramidKvSpec {
    #[serde(default = "default_beta")]
    pub beta: f64,
}

impl Default for PyramidKvSpec {
    fn default() -> Self {
        Self {
            beta: default_beta(),
        }
    }
}

fn default_beta() -> f64 {
    20.0
}

impl Spec for PyramidKvSpec {
    fn label(&self) -> String {
        "PyramidKV".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(
            self.beta >= 1.0 && self.beta.is_finite(),
            "beta",
            format!("must be at least 1, got {}", self.beta),
        )
    }
}

impl Build for PyramidKvSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        if !matches!(setup.kind, Kind::KvBudget | Kind::KvBits) {
            return Err(SpecError::new(
                "",
                "PyramidKV allocates KV-cache budgets: it needs a KvBudget database",
            )
            .into());
        }
        let g = pyramid_genome(setup.space, &setup.budget, self.beta)?;
        fixed(vec![g], setup, Role::Heuristic)
    }
}

/// SPDY-style DP: the database's per-unit errors, exact knapsack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSpec {
    #[serde(default = "default_dp_states")]
    pub max_states: usize,
    /// Solve one knapsack per group of units of equal size, each group
    /// keeping its share of the uniform genome's cost (EvoPress's DP
    /// baseline's option), instead of one knapsack over all units.
    #[serde(default)]
    pub per_size_group: bool,
}

fn default_dp_states() -> usize {
    2_000_000
}

impl Spec for DpSpec {
    fn label(&self) -> String {
        "DP".into()
    }

    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        ensure(self.max_states >= 16, "max_states", "must be at least 16")
    }
}

impl Build for DpSpec {
    type Strategy = Fixed;

    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError> {
        let errors = setup.level_errors.ok_or_else(|| {
            SpecError::new(
                "",
                "DP needs per-level normalised reconstruction errors; this database records \
                 none (build it again with this version)",
            )
        })?;
        let (g, exact) = if self.per_size_group {
            let sizes = setup.unit_numel.ok_or_else(|| {
                SpecError::new("per_size_group", "needs units with a weight count")
            })?;
            knapsack_per_group(setup.space, errors, setup.budget, sizes, self.max_states)?
        } else {
            let (g, _, exact) = knapsack(setup.space, errors, setup.budget, self.max_states)?;
            (g, exact)
        };
        if !exact {
            tracing::warn!("DP rounded costs to a coarser grid (max_states); not exact");
        }
        fixed(vec![g], setup, Role::Heuristic)
    }
}
