//! evocomp as a library: everything the `evocomp` binary does, for another
//! Rust program. The binary only parses its arguments, calls these functions
//! and prints what they return.
//!
//! | entry point | what it does |
//! |---|---|
//! | [`study::run`], [`study::resume`] | run the studies a RON config describes (building the database first), or continue stopped ones |
//! | [`StudyDir::summary`] | a finished study's result: best configuration, held-out KL and perplexity, the front |
//! | [`export::export`] | the compressed model at a study's configuration (HF folder or GGUF) |
//! | [`score::perplexity`], [`score::perplexity_with`] | a model's perplexity on a text, with or without a database's configuration applied |
//! | [`database::build`] and the rest of [`database`] | build, check and dump variant databases |
//! | [`study::report`] | report.md, report.html and plots over finished studies |
//! | [`kld::kld`] | a model against its base as llama-perplexity's KL-divergence mode reports it |
//! | [`compare::compare`] | studies' configurations on the same held-out windows of several texts, with paired bootstrap intervals |
//! | [`bench::bench`] | fitness throughput, beside PyTorch |
//! | [`queue::serve`] | evaluate a queue's jobs for studies on other machines |
//!
//! Functions that take `notes: &dyn Fn(&str)` report progress lines through
//! it (the binary prints them on stderr); long work also draws a progress
//! bar on stderr where a function says so.
//!
//! # Run a study, read its result, export it, score the export
//!
//! ```
//! use std::sync::{Arc, atomic::AtomicBool};
//! # fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! // A 4-block random model, a text and a study config (EvoPress drops 1 block).
//! let project = evocomp::demo::tiny_project(dir.path())?;
//!
//! let stop = Arc::new(AtomicBool::new(false));
//! let opts = evocomp::study::StudyOptions::default();
//! let ends = evocomp::study::run(&project.study, &opts, &stop, &|_| {}, &mut |_| Ok(()))?;
//! let evocomp::study::StudyEnd::Finished { summary, .. } = &ends[0] else {
//!     unreachable!("nothing set the stop flag")
//! };
//! assert!(summary.best.cost < summary.full_cost); // one block fewer
//!
//! // The same result, read back from the study's folder.
//! let folder = evocomp::StudyDir::new(dir.path().join("results/tiny"));
//! assert_eq!(folder.summary()?.best, summary.best);
//!
//! // The model without the dropped block, as an HF folder...
//! let out = dir.path().join("export");
//! let exported = evocomp::export::export(&evocomp::export::ExportRequest::new(
//!     folder.path(),
//!     &out,
//! ))?;
//! assert!(matches!(
//!     exported.detail,
//!     evocomp::export::ExportDetail::Hf { layers: 3, .. }
//! ));
//!
//! // ...which loads and scores like any model.
//! let mut windows = evocomp::score::Windows::new(&project.text);
//! windows.tokens = 256;
//! windows.context = 64;
//! let run = evocomp::score::ScoreOptions {
//!     backend: evocomp::BackendChoice::Cpu,
//!     ..Default::default()
//! };
//! let scored = evocomp::score::perplexity(&out, &windows, &run)?;
//! assert!(scored.perplexity.is_finite() && scored.perplexity > 1.0);
//! # Ok(())
//! # }
//! ```

pub mod bench;
pub mod compare;
pub mod database;
pub mod demo;
pub mod device;
pub mod export;
pub mod kld;
pub mod queue;
pub mod score;
pub mod study;

pub use device::BackendChoice;
pub use evocomp_config::{Experiment, load_experiments};
pub use evocomp_study::{Measured, StudyDir, Summary, SweepDir};
