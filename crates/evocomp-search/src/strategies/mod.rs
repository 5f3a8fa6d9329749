//! The strategies, one file per family, each with its settings type (what a
//! config holds, validated there) and its state (the checkpoint).

pub(crate) mod evolkv;
pub(crate) mod evopress;
pub(crate) mod fixed;
pub(crate) mod greedy;
pub(crate) mod leave_one_out;
pub(crate) mod nsga2;

pub use evolkv::{EvolKv, EvolKvConfig, EvolKvSpec};
pub use evopress::{
    EvoPress, EvoPressConfig, EvoPressSpec, FinalChoice, FinalReport, Preset, Stage, Start,
    SurrogateSpec, level_switch, offspring,
};
pub use fixed::{
    DpSpec, Fixed, LlamaCppSpec, OwlSpec, PyramidKvSpec, RandomSpec, ShortGptSpec, UniformSpec,
};
pub use greedy::{Greedy, GreedyConfig, GreedySpec};
pub use leave_one_out::{LeaveOneOut, ShortenedLlamaSpec};
pub use nsga2::{
    LevelGenomes, LevelNsga2, Member, Nsga2, Nsga2Config, Nsga2Spec, RealVector, Representation,
};
