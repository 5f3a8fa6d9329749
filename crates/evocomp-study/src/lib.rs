//! The study and sweep folders: the one owner of their layout.
//!
//! ```text
//! results/<name>/                a study
//!   study.sled/, study.pid       the store (evocomp-store): journal, fitness cache, checkpoint
//!   experiment.json              the resolved experiment            (versioned JSON)
//!   config.ron                   the config as written
//!   status.json                  progress, rewritten after every step (versioned JSON)
//!   summary.json                 the result, once finished          (versioned JSON)
//! results/<sweep>/               a sweep: one study per budget
//!   sweep.json                   its members' resolved experiments  (versioned JSON)
//!   <budget label>/              each member, a study folder as above
//! results/.fitness-cache/        the fitness cache shared by every study under results/
//! ```
//!
//! Every JSON file carries `format_version`; an older or unknown version is
//! an error naming the file. The CLI reads and writes studies only through
//! this crate; only this crate (through evocomp-store) opens sled.

mod files;
mod folder;
mod records;
mod sweep;

/// One evaluated configuration in a study's journal.
pub use evocomp_store::Trial;
pub use files::{FORMAT_VERSION, read_versioned, to_versioned_json};
pub use folder::{OpenStudy, StudyDir, View, shared_cache_dir};
pub use records::{AnytimePoint, Measured, State, StatusFile, StepRecord, Summary, best_genome_at};
pub use sweep::SweepDir;

/// File and folder names inside a study or sweep folder.
pub mod names {
    pub const STORE: &str = "study.sled";
    pub const PID: &str = "study.pid";
    pub const EXPERIMENT: &str = "experiment.json";
    pub const CONFIG: &str = "config.ron";
    pub const STATUS: &str = "status.json";
    pub const SUMMARY: &str = "summary.json";
    pub const SWEEP: &str = "sweep.json";
    pub const SHARED_CACHE: &str = ".fitness-cache";
}
