//! The strategies, one file per family, each with its settings type (what a
//! config holds, validated there) and its state (the checkpoint).

pub(crate) mod evolkv;
pub(crate) mod evopress;
pub(crate) mod fixed;
pub(crate) mod greedy;
pub(crate) mod leave_one_out;
pub(crate) mod nsga2;

pub use evolkv::{EvolKv, EvolKvConfig, EvolKvSettings};
pub use evopress::{
    EvoPress, EvoPressConfig, EvoPressSettings, Preset, Stage, Start, SurrogateSettings,
    level_switch, offspring,
};
pub use fixed::{
    DpSettings, Fixed, LlamaCppSettings, OwlSettings, PyramidKvSettings, RandomSettings,
    ShortGptSettings, UniformSettings,
};
pub use greedy::{Greedy, GreedyConfig, GreedySettings};
pub use leave_one_out::{LeaveOneOut, ShortenedLlamaSettings};
pub use nsga2::{
    LevelGenomes, LevelNsga2, Member, Nsga2, Nsga2Config, Nsga2Settings, RealVector, Representation,
};
