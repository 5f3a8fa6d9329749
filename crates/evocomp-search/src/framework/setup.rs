//! What a strategy is built from: its [`Settings`] (the config's value,
//! validated here) and a [`Setup`] (space, budget, seed, and the model
//! measurements a heuristic asked for through [`Needs`]).
//!
//! Adding a strategy touches this crate only: its file (a settings type
//! with [`Settings`] and [`Build`], a state with [`crate::Strategy`]) and one
//! line of the registry (`registry.rs`), from which the config's strategy
//! enum ([`crate::StrategySpec`]) and the checkpoint enum
//! ([`crate::AnyStrategy`]) follow; the engine builds any strategy through
//! [`crate::StrategySpec::build`].

use crate::SearchError;
use crate::framework::space::{Budget, Space};
use crate::framework::strategy::SampleDraw;
use serde::{Deserialize, Serialize};

/// What a space's levels mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Sparsity,
    Quantization,
    Depth,
    KvBudget,
    KvBits,
}

/// The budget as the config wrote it, for settings that read it (EvoPress's
/// depth preset needs the number of blocks dropped, OWL the base level).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetHint {
    UniformLevel(i64),
    Dropped(usize),
    Other,
}

/// Model measurements a strategy needs before it can be built.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Needs {
    /// OWL's layer outlier ratios at this threshold M.
    pub outlier_ratios: Option<f64>,
    /// ShortGPT's block influence per layer.
    pub block_influence: bool,
}

/// The measurements asked for, per layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurements {
    pub outlier_ratios: Option<Vec<f64>>,
    pub block_influence: Option<Vec<f64>>,
}

/// Everything a strategy may be built from.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    pub space: &'a Space,
    /// The budget as the strategy searches it ([`Settings::search_budget`]).
    pub budget: Budget,
    pub hint: BudgetHint,
    pub kind: Kind,
    pub seed: u64,
    /// The one sample strategies with a fixed sample score on.
    pub sample: SampleDraw,
    /// The model layer of every unit, in genome order.
    pub unit_layer: &'a [usize],
    /// Weights per unit (linear units), in genome order.
    pub unit_numel: Option<&'a [u64]>,
    /// Per unit, the normalised reconstruction error of each level.
    pub level_errors: Option<&'a [Vec<f64>]>,
    pub measured: Measurements,
    /// Configurations made outside the search, by name (llama.cpp's presets
    /// on a GGUF-types database), for warm starts to name.
    pub given: &'a [(String, crate::framework::space::Genome)],
}

/// A settings value that cannot be used: `field` is the setting's name
/// (empty for the strategy as a whole); the config adds file:line:column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `Err` at `field` unless `ok`.
pub(crate) fn ensure(ok: bool, field: &str, message: impl Into<String>) -> Result<(), SpecError> {
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(field, message))
    }
}

/// The most genomes a strategy's count may ask for at once (offspring,
/// candidates, a population, random genomes, surrogate screens) or flips a
/// child may make: far above any published setting, and low enough that a
/// mistyped count is an error at the config line rather than a step 0 that
/// never ends.
pub const MAX_GENOMES: usize = 10_000;
/// The most generations a strategy may run.
pub const MAX_GENERATIONS: usize = 1_000_000;
/// The most tokens one sample may ask for (about 1 GB of token ids); the
/// calibration text bounds it further when the study starts.
pub const MAX_SAMPLE_TOKENS: usize = 1 << 28;

/// `value` of `field` is at most `max`, said with what the bound is for.
pub(crate) fn at_most(value: usize, max: usize, field: &str, what: &str) -> Result<(), SpecError> {
    ensure(
        value <= max,
        field,
        format!("{value} {what}: at most {max}"),
    )
}

/// A strategy's settings, as an experiment config holds them.
pub trait Spec {
    /// A short name for tables and plots.
    fn label(&self) -> String;

    /// Check the values alone; `seq_len` is the tokens per sequence of every sample.
    fn validate(&self, _seq_len: usize) -> Result<(), SpecError> {
        Ok(())
    }

    /// The measurements [`Build::build`] needs in its [`Setup`], on a
    /// database of `kind`.
    fn needs(&self, _kind: Kind) -> Needs {
        Needs::default()
    }

    /// The budget the strategy searches under, given the resolved one
    /// (NSGA-II searches everything up to an exact budget's total).
    fn search_budget(&self, budget: Budget) -> Budget {
        budget
    }
}

/// How settings make their strategy's fresh state.
pub trait Build: Spec {
    /// The state it makes (one of the registry's strategies).
    type Strategy: crate::Strategy;

    /// A fresh strategy.
    fn build(&self, setup: &Setup) -> Result<Self::Strategy, SearchError>;
}
