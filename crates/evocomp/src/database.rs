//! Variant databases: build one from its config, check it, dump it for
//! PyTorch scripts, and recompute a GGUF-types database's importance matrix.

use crate::device::{self, BackendChoice};
use anyhow::{Context, Result, bail};
/// What a database holds (its manifest's `compression`).
pub use evocomp_db::Compression;
use evocomp_db::{BuildReport, Database, Manifest};
use std::path::{Path, PathBuf};

/// What [`build`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The database folder.
    pub output: PathBuf,
    pub report: BuildReport,
}

/// Build every (unit, level) variant the database config at `config`
/// describes, with a progress bar on stderr; a killed build continues where
/// it stopped, a finished one does nothing. `notes` receives progress lines.
///
/// ```
/// # fn main() -> anyhow::Result<()> {
/// use evocomp::BackendChoice;
/// let dir = tempfile::tempdir()?;
/// let project = evocomp::demo::tiny_project(dir.path())?;
/// let config = &project.sparsity_database;
/// let built = evocomp::database::build(config, BackendChoice::Cpu, &|_| {})?;
/// assert_eq!(built.report.built, 4 * 7); // every linear layer of 4 blocks
/// // A second build finds every unit built.
/// let again = evocomp::database::build(config, BackendChoice::Cpu, &|_| {})?;
/// assert_eq!((again.report.built, again.report.skipped), (0, 28));
/// assert_eq!(evocomp::database::verify(&built.output)?, 28);
/// let manifest = evocomp::database::manifest(&built.output)?;
/// assert!(manifest.units.iter().all(|u| u.levels.len() == 5)); // -2..=2
/// # Ok(())
/// # }
/// ```
pub fn build(config: &Path, backend: BackendChoice, notes: &dyn Fn(&str)) -> Result<Built> {
    let cfg = evocomp_config::load_database_config(config)?;
    let loaded = crate::score::load(&cfg.model)?;
    notes(&format!("hashing {}", cfg.model.display()));
    let fingerprint = loaded.info.fingerprint()?;
    let chosen = device::choose(backend)?;
    notes(&format!("backend: {}", chosen.description));
    let report =
        evocomp_engine::build_from_config(&cfg, &loaded, &fingerprint, &chosen.device, true)?;
    Ok(Built {
        output: cfg.output,
        report,
    })
}

/// The manifest of the database in `dir` (units, levels, costs, errors).
pub fn manifest(dir: &Path) -> Result<Manifest> {
    Manifest::read(dir)?.with_context(|| {
        format!(
            "{}: no manifest.json: not an evocomp database",
            dir.display()
        )
    })
}

/// Check every variant file against the manifest's sha256; the number of
/// units checked.
pub fn verify(dir: &Path) -> Result<usize> {
    let db = Database::open(dir)?;
    db.verify()?;
    Ok(db.manifest.units.len())
}

/// ```
/// # fn main() -> anyhow::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let project = evocomp::demo::tiny_project(dir.path())?;
/// let db = evocomp::database::build(&project.sparsity_database, evocomp::BackendChoice::Cpu, &|_| {})?;
/// let out = dir.path().join("dump");
/// let files = evocomp::database::dump(&db.output, &out, Some(&[0]), false)?;
/// assert_eq!(files, 28); // level 0 of each of the 28 linear layers
/// assert!(out.join("index.json").is_file());
/// # Ok(())
/// # }
/// ```
///
/// Write the variants in EvoPress's layout for PyTorch scripts:
/// `out/<HF module>/<level>.safetensors` and `out/index.json`; the number of
/// weight files written.
pub fn dump(dir: &Path, out: &Path, levels: Option<&[i64]>, progress: bool) -> Result<u64> {
    let db = Database::open(dir)?;
    evocomp_db::dump_levels(&db, out, levels, progress)
        .with_context(|| format!("dumping {} to {}", dir.display(), out.display()))
}

/// What [`imatrix`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixWritten {
    pub tensors: usize,
    pub calibration_tokens: usize,
}

/// A GGUF-types database's importance matrix, recomputed on `model` exactly
/// as the build computed it, written as the GGUF file llama-quantize reads.
pub fn imatrix(
    dir: &Path,
    model: &Path,
    out: &Path,
    backend: BackendChoice,
    notes: &dyn Fn(&str),
) -> Result<ImatrixWritten> {
    let db = Database::open(dir)?;
    if !matches!(
        db.manifest.compression,
        evocomp_db::Compression::GgufTypes { imatrix: true, .. }
    ) {
        bail!(
            "{}: not a GGUF-types database built with an importance matrix (imatrix: true)",
            dir.display()
        );
    }
    if let evocomp_db::Compression::GgufTypes {
        imatrix_file: Some(f),
        ..
    } = &db.manifest.compression
    {
        bail!(
            "{}: built with the importance matrix {}: that file is the one to pass llama-quantize",
            dir.display(),
            f.path.display()
        );
    }
    let loaded = crate::score::load(model)?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let chosen = device::choose(backend)?;
    notes(&format!("backend: {}", chosen.description));
    let im = evocomp_db::importance_matrix(dir, &loaded, &chosen.device)?;
    evocomp_db::write_imatrix(&im, out)?;
    Ok(ImatrixWritten {
        tensors: im.entries.len(),
        calibration_tokens: im.chunks * im.chunk_size,
    })
}
