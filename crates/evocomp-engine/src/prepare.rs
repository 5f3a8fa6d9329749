//! Preparing a study: the model (checked against the experiment), its
//! fingerprint, the database (built first when missing), the search space
//! and budget from the database's levels, and the token sets.

use crate::budget::resolve_budget;
use anyhow::{Context as _, Result};
use burn::tensor::Device;
use evocomp_config::{DatabaseConfig, Experiment, TeacherSpec};
use evocomp_data::{Sample, TokenSet};
use evocomp_db::{BuildOptions, BuildReport, Database, Propagation, build_database};
use evocomp_model::LoadedModel;
use evocomp_search::{Budget, Space};
use std::path::Path;
use std::sync::Arc;

/// A prepared study.
pub struct Prepared {
    pub exp: Experiment,
    pub loaded: Arc<LoadedModel>,
    pub fingerprint: String,
    pub db: Arc<Database>,
    pub space: Space,
    /// The layer of every unit, in genome order.
    pub unit_layer: Vec<usize>,
    pub budget: Budget,
    pub calib: Arc<TokenSet>,
    pub held_out: Sample,
}

/// Tokens of a text file or folder with the model's tokenizer.
pub fn token_set(m: &LoadedModel, text: &Path) -> Result<TokenSet> {
    let fp = m
        .tokenizer
        .to_json()
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let encode = |s: &str| m.tokenizer.encode(s);
    let set = evocomp_data::tokenize_path(text, &encode, &fp, &[])
        .with_context(|| format!("reading text {}", text.display()))?;
    let f = &set.files;
    tracing::info!(
        "{}: {} text files read ({}), {} tokens",
        text.display(),
        f.files.len(),
        f.files
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
            + if f.files.len() > 3 { ", ..." } else { "" },
        set.tokens.len()
    );
    for (p, why) in &f.skipped {
        tracing::warn!("{}: left out {}: {why}", text.display(), p.display());
    }
    Ok(set)
}

/// Build (or continue building) the database a config describes; a finished
/// database is left as it is.
pub fn build_from_config(
    cfg: &DatabaseConfig,
    loaded: &LoadedModel,
    fingerprint: &str,
    device: &Device,
    progress: bool,
) -> Result<BuildReport> {
    let sample = if cfg.compression.needs_calibration() {
        let set = token_set(loaded, &cfg.calibration.text)?;
        let c = &cfg.calibration;
        let s = set
            .sample_with_held_out(c.sequences, c.held_out, c.seq_len, c.seed)
            .with_context(|| format!("{}: calibration", cfg.source.display()))?;
        let how = match cfg.compression.propagation() {
            Propagation::Uncompressed => "every block fitted to uncompressed inputs".to_string(),
            Propagation::Sequential { level } => {
                format!("sequential, propagated through level {level}")
            }
            Propagation::Blockwise { level } => format!(
                "block by block, propagated through level {level} (each block's units fitted together)"
            ),
        };
        eprintln!(
            "calibration: {} sequences x {} tokens from {} (seed {}), {} held out; {how}",
            c.sequences,
            c.seq_len,
            c.text.display(),
            c.seed,
            c.held_out,
        );
        Some(s)
    } else {
        None
    };
    let (sample, held_out) = match sample {
        Some((s, h)) => (Some(s), (!h.sequences.is_empty()).then_some(h)),
        None => (None, None),
    };
    Ok(build_database(
        loaded,
        fingerprint,
        sample.as_ref(),
        &cfg.compression,
        &cfg.output,
        device,
        &BuildOptions {
            stop_after_units: None,
            progress,
            held_out,
        },
    )?)
}

/// Build the experiment's database if it is not complete (a killed build continues).
pub fn ensure_database(
    exp: &Experiment,
    loaded: &LoadedModel,
    fingerprint: &str,
    device: &Device,
    progress: bool,
) -> Result<()> {
    if Database::is_built(&exp.database)? {
        return Ok(());
    }
    eprintln!(
        "database {} is not built yet: building it from {}",
        exp.database.display(),
        exp.database_config.display()
    );
    build_from_config(
        &exp.database_build()?,
        loaded,
        fingerprint,
        device,
        progress,
    )?;
    Ok(())
}

/// Settings the model makes impossible, found before anything is built or
/// evaluated, at their line in the config.
fn check_against_model(exp: &Experiment, loaded: &LoadedModel) -> Result<()> {
    let cfg = loaded.config();
    let fail = |field: &str, m: String| -> anyhow::Error { exp.error_at(field, m).into() };
    if let TeacherSpec::TopK(k) = exp.fitness.teacher
        && k > cfg.vocab
    {
        return Err(fail(
            "fitness.teacher",
            format!("top-{k} of a vocabulary of {} tokens", cfg.vocab),
        ));
    }
    for (field, n) in [
        ("fitness.seq_len", exp.fitness.seq_len),
        ("data.held_out_context", exp.data.held_out_context),
    ] {
        if n > cfg.max_context {
            return Err(fail(
                field,
                format!(
                    "{n} tokens is longer than the model's context ({} tokens)",
                    cfg.max_context
                ),
            ));
        }
    }
    Ok(())
}

/// Load everything; `device` is used only to build a missing database.
pub fn prepare(exp: &Experiment, device: &Device, progress: bool) -> Result<Prepared> {
    prepare_with(exp, Some((device, progress)))
}

/// Load everything for a study whose database must already be built (a
/// remote worker's case: it evaluates, it never builds); a missing or
/// unfinished database is an error naming its folder.
pub fn prepare_built(exp: &Experiment) -> Result<Prepared> {
    prepare_with(exp, None)
}

fn prepare_with(exp: &Experiment, build: Option<(&Device, bool)>) -> Result<Prepared> {
    let loaded = evocomp_model::load_model(&exp.model)?;
    check_against_model(exp, &loaded)?;
    let fingerprint = loaded.info.fingerprint()?;
    match build {
        Some((device, progress)) => ensure_database(exp, &loaded, &fingerprint, device, progress)?,
        None => {
            if !Database::is_built(&exp.database)? {
                anyhow::bail!(
                    "database {} is not built here (workers evaluate, they do not build; \
                     build it with `evocomp db build {}` or share the folder)",
                    exp.database.display(),
                    exp.database_config.display()
                );
            }
        }
    }
    let db = Database::open(&exp.database)?;
    db.check_model(&fingerprint)?;
    let space = db.space()?;
    let unit_layer = db.unit_layers();
    let budget = resolve_budget(exp, &db, &space)?;
    let calib = token_set(&loaded, &exp.data.calibration)?;
    let eval = token_set(&loaded, &exp.data.evaluation)?;
    let shared = shared_files(&calib, &eval);
    if !shared.is_empty() {
        tracing::warn!(
            "{}: the calibration and evaluation texts share {} file(s) ({}{}): the held-out \
             figures are measured on text the search was fitted to, so they are not held out",
            exp.source.display(),
            shared.len(),
            shared[0].display(),
            if shared.len() > 1 { ", ..." } else { "" }
        );
    }
    let held_out = eval
        .window_sample(exp.data.held_out_tokens, exp.data.held_out_context)
        .with_context(|| format!("{}: data.held_out_tokens", exp.source.display()))?;
    Ok(Prepared {
        exp: exp.clone(),
        loaded: Arc::new(loaded),
        fingerprint,
        db: Arc::new(db),
        space,
        unit_layer,
        budget,
        calib: Arc::new(calib),
        held_out,
    })
}

/// The files (followed through links) that two token sets both read.
pub fn shared_files(a: &TokenSet, b: &TokenSet) -> Vec<std::path::PathBuf> {
    let real = |t: &TokenSet| -> std::collections::BTreeSet<std::path::PathBuf> {
        t.files
            .files
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect()
    };
    real(a).intersection(&real(b)).cloned().collect()
}
