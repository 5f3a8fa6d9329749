//! The registry: every strategy listed once. From the one list below follow
//! [`StrategySpec`] (what an experiment config's `strategy:` holds, and
//! what builds a fresh strategy) and [`AnyStrategy`] (the serde value a
//! study checkpoints, dispatching ask/tell).
//!
//! Adding a strategy is its own file under `strategies/` and one line in each
//! half of [`registry!`]'s invocation here: nothing outside this crate names a
//! strategy (the config crate and the engine hold these two enums and call
//! their methods). `tests/example.rs` registers a strategy through the same
//! macro and runs it from a RON config.

/// Declares the settings enum and the state enum from one list.
///
/// - `settings`: one entry per config spelling. `Name(Type)` is a variant
///   holding its settings (`EvoPress(preset: Sparsity)` in RON); `Name =
///   VALUE` a unit variant whose settings are the constant `VALUE`
///   (`Uniform`). Each settings type implements [`crate::Settings`] and
///   [`crate::Build`].
/// - `states`: one entry per strategy state, `Name(Type)` or `Name(Box<Type>)`
///   for large ones; every `Build::Strategy` of the settings must be one of
///   them (a `From` impl per entry converts).
#[macro_export]
macro_rules! registry {
    (
        $(#[$smeta:meta])*
        pub enum $settings:ident {
            $( $(#[$vmeta:meta])* $sv:ident $( ( $st:ty ) )? $( = $sconst:expr )? ),* $(,)?
        }
        $(#[$ameta:meta])*
        pub enum $any:ident {
            $( $(#[$avmeta:meta])* $av:ident ( $($at:tt)+ ) ),* $(,)?
        }
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub enum $settings {
            $( $(#[$vmeta])* $sv $( ( $st ) )? ),*
        }

        $(#[$ameta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum $any {
            $( $(#[$avmeta])* $av ( $($at)+ ) ),*
        }

        impl $settings {
            /// The settings, which validate and label the strategy.
            pub fn spec(&self) -> &dyn $crate::Spec {
                match self {
                    $( $crate::registry!(@pattern $settings $sv $( ( $st ) )? , s) =>
                        $crate::registry!(@settings s $( ( $st ) )? $( = $sconst )?), )*
                }
            }

            /// A short name for tables and plots.
            pub fn label(&self) -> String {
                self.spec().label()
            }

            /// A fresh strategy under `setup`.
            pub fn build(
                &self,
                setup: &$crate::Setup,
            ) -> ::std::result::Result<$any, $crate::SearchError> {
                match self {
                    $( $crate::registry!(@pattern $settings $sv $( ( $st ) )? , s) => {
                        let settings = $crate::registry!(@settings s $( ( $st ) )? $( = $sconst )?);
                        $crate::Build::build(settings, setup).map($any::from)
                    } )*
                }
            }
        }

        impl $any {
            fn inner(&self) -> &dyn $crate::Strategy {
                match self {
                    $( $any::$av(s) => $crate::registry!(@deref s $($at)+), )*
                }
            }

            fn inner_mut(&mut self) -> &mut dyn $crate::Strategy {
                match self {
                    $( $any::$av(s) => $crate::registry!(@deref_mut s $($at)+), )*
                }
            }
        }

        $( $crate::registry!(@from $any $av $($at)+); )*

        impl $crate::Strategy for $any {
            fn ask(&self, space: &$crate::Space) -> Vec<$crate::Request> {
                self.inner().ask(space)
            }
            fn tell(
                &mut self,
                space: &$crate::Space,
                results: &[$crate::Scored],
            ) -> ::std::result::Result<(), $crate::SearchError> {
                self.inner_mut().tell(space, results)
            }
            fn is_done(&self) -> bool {
                self.inner().is_done()
            }
            fn best(&self) -> Option<$crate::Best> {
                self.inner().best()
            }
            fn front(&self, space: &$crate::Space) -> Vec<$crate::FrontMember> {
                self.inner().front(space)
            }
            fn anchor(&self) -> Option<$crate::Genome> {
                self.inner().anchor()
            }
            fn progress(&self) -> $crate::Progress {
                self.inner().progress()
            }
            fn metrics(&self) -> Vec<(String, f64)> {
                self.inner().metrics()
            }
            fn role(&self) -> $crate::Role {
                self.inner().role()
            }
        }
    };
    (@pattern $settings:ident $sv:ident ( $st:ty ) , $s:ident) => { $settings::$sv($s) };
    (@pattern $settings:ident $sv:ident , $s:ident) => { $settings::$sv };
    (@settings $s:ident ( $st:ty )) => { $s };
    (@settings $s:ident = $sconst:expr) => { &$sconst };
    (@deref $s:ident Box<$t:ty>) => { $s.as_ref() };
    (@deref $s:ident $t:ty) => { $s };
    (@deref_mut $s:ident Box<$t:ty>) => { $s.as_mut() };
    (@deref_mut $s:ident $t:ty) => { $s };
    (@from $any:ident $av:ident Box<$t:ty>) => {
        impl From<$t> for $any {
            fn from(s: $t) -> Self {
                $any::$av(Box::new(s))
            }
        }
    };
    (@from $any:ident $av:ident $t:ty) => {
        impl From<$t> for $any {
            fn from(s: $t) -> Self {
                $any::$av(s)
            }
        }
    };
}

use crate::strategies::*;

registry! {
    /// The search strategy and its settings, as an experiment config writes
    /// it (`strategy: EvoPress(preset: Sparsity, ...)`, `strategy: Uniform`).
    pub enum StrategySpec {
        /// EvoPress: a preset, any field of which may be overridden.
        EvoPress(EvoPressSpec),
        /// Every unit at the budget's level.
        Uniform = UniformSpec,
        /// The best of `n` random feasible configurations.
        Random(RandomSpec),
        /// OWL: less sparsity where activations have more outliers.
        Owl(OwlSpec),
        /// ShortGPT: drop the blocks whose input and output are most alike.
        ShortGpt = ShortGptSpec,
        /// Shortened LLaMA (one-shot, PPL criterion): score each unit by the
        /// fitness with only it compressed (use `metric: Nll` for the paper's
        /// perplexity), compress the least harmful first.
        ShortenedLlama = ShortenedLlamaSpec,
        /// PyramidKV: per-layer KV budgets falling linearly from bottom to top.
        PyramidKv(PyramidKvSpec),
        /// Shift a level from the unit where it hurts most to where it hurts least, while it helps.
        Greedy(GreedySpec),
        /// SPDY-style DP: per-unit errors from the database, exact knapsack.
        Dp(DpSpec),
        /// EvolKV: grouped CMA-ES, bottom-up, with the cache-score objective.
        EvolKv(EvolKvSpec),
        /// NSGA-II over (fitness, cost): a whole front, every member within the budget's limit.
        Nsga2(Nsga2Spec),
        /// llama.cpp's preset (GGUF-types databases): every tensor at the type
        /// `llama-quantize` gives it, scored as a reference point.
        LlamaCpp(LlamaCppSpec),
    }

    /// Any strategy's state, as one serde value: the checkpoint a study stores.
    pub enum AnyStrategy {
        EvoPress(Box<EvoPress>),
        Greedy(Greedy),
        Fixed(Fixed),
        EvolKv(Box<EvolKv>),
        Nsga2(LevelNsga2),
        LeaveOneOut(LeaveOneOut),
    }
}
