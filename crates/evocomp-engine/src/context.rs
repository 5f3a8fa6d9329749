//! Everything a study needs before its first evaluation: the model, its
//! fingerprint, the database (built first when missing), the search space
//! and budget from the database's levels, and the token sets.

use anyhow::{Context as _, Result};
use burn::tensor::Device;
use evocomp_config::{BudgetSpec, DatabaseConfig, Experiment};
use evocomp_data::{Sample, TokenSet};
use evocomp_db::{BuildOptions, BuildReport, Database, Manifest, build_database};
use evocomp_model::LoadedModel;
use evocomp_search::{Budget, Space, UnitLevels};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// A prepared study.
pub struct Prepared {
    pub exp: Experiment,
    pub loaded: Arc<LoadedModel>,
    pub fingerprint: String,
    pub db: Arc<Database>,
    /// sha256 of the database manifest: part of every cache key.
    pub manifest_hash: String,
    pub space: Space,
    /// The layer of every unit, in genome order.
    pub unit_layer: Vec<usize>,
    pub budget: Budget,
    pub calib: Arc<TokenSet>,
    pub held_out: Sample,
    /// The database holds KV-cache units (no prefix reuse: the chunked
    /// prefill does not run layer by layer).
    pub kv: bool,
}

/// Tokens of a text file or folder with the model's tokenizer.
pub fn token_set(m: &LoadedModel, text: &Path) -> Result<TokenSet> {
    let fp = m
        .tokenizer
        .to_json()
        .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
    let encode = |s: &str| m.tokenizer.encode(s);
    evocomp_data::tokenize_path(text, &encode, &fp, &[])
        .with_context(|| format!("reading text {}", text.display()))
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
            .sample(c.sequences, c.seq_len, c.seed)
            .with_context(|| format!("{}: calibration", cfg.source.display()))?;
        eprintln!(
            "calibration: {} sequences x {} tokens from {} (seed {})",
            c.sequences,
            c.seq_len,
            c.text.display(),
            c.seed
        );
        Some(s)
    } else {
        None
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
    if Manifest::read(&exp.database)?.is_some_and(|m| m.complete) {
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

/// The search space of a database: its units, levels and costs.
pub fn space_of(db: &Database) -> Result<Space> {
    Ok(Space::new(
        db.manifest
            .units
            .iter()
            .map(|u| UnitLevels {
                name: u.name.clone(),
                levels: u.levels.iter().map(|l| l.level).collect(),
                costs: u.levels.iter().map(|l| l.cost).collect(),
            })
            .collect(),
    )?)
}

/// The budget a spec names in this space; impossible budgets point at the
/// config's `budget` line.
pub fn resolve_budget(exp: &Experiment, space: &Space) -> Result<Budget> {
    let min_cost: u64 = space
        .units
        .iter()
        .map(|u| *u.costs.iter().min().expect("levels"))
        .sum();
    let max_cost: u64 = space
        .units
        .iter()
        .map(|u| *u.costs.iter().max().expect("levels"))
        .sum();
    let fail = |m: String| -> anyhow::Error { exp.error_at("budget", m).into() };
    let b = match exp.budget {
        BudgetSpec::UniformLevel(l) => {
            let g = space.uniform(l).ok_or_else(|| {
                let lo = space.units.iter().map(|u| u.min()).max().unwrap_or(0);
                let hi = space.units.iter().map(|u| u.max()).min().unwrap_or(0);
                fail(format!(
                    "level {l} is not a level of every unit (every unit has {lo}..={hi})"
                ))
            })?;
            // Exact where a level switch keeps the total (EvoPress's grid),
            // otherwise a ceiling: children above it are never evaluated.
            if space.equal_steps() {
                Budget::Exact(space.cost(&g))
            } else {
                Budget::AtMost(space.cost(&g))
            }
        }
        BudgetSpec::Dropped(n) => {
            if n > space.len() {
                return Err(fail(format!(
                    "{n} units dropped, but the database has {} units",
                    space.len()
                )));
            }
            let first = &space.units[0].costs;
            if space.units.iter().any(|u| &u.costs != first) {
                return Err(fail(
                    "Dropped(n) needs units of equal cost (whole blocks); use AtMost(cost)".into(),
                ));
            }
            let lo = *first.iter().min().expect("levels");
            let hi = *first.iter().max().expect("levels");
            Budget::Exact(n as u64 * lo + (space.len() - n) as u64 * hi)
        }
        BudgetSpec::AtMost(c) => Budget::AtMost(c),
        BudgetSpec::Exact(c) => Budget::Exact(c),
        BudgetSpec::Fraction(f) => Budget::AtMost((max_cost as f64 * f).floor() as u64),
    };
    // NSGA-II searches everything up to the limit.
    let b = match (&exp.strategy, b) {
        (evocomp_config::StrategySpec::Nsga2 { .. }, Budget::Exact(c)) => Budget::AtMost(c),
        (_, b) => b,
    };
    if b.limit() < min_cost {
        return Err(fail(format!(
            "{b:?} is below the cheapest configuration ({min_cost})"
        )));
    }
    if let Budget::Exact(c) = b
        && c > max_cost
    {
        return Err(fail(format!(
            "{b:?} is above the most expensive configuration ({max_cost})"
        )));
    }
    Ok(b)
}

/// Load everything; `device` is used only to build a missing database.
pub fn prepare(exp: &Experiment, device: &Device, progress: bool) -> Result<Prepared> {
    let loaded = evocomp_model::load_model(&exp.model)?;
    let fingerprint = loaded.info.fingerprint()?;
    ensure_database(exp, &loaded, &fingerprint, device, progress)?;
    let db = Database::open(&exp.database)?;
    db.check_model(&fingerprint)?;
    let manifest_bytes = std::fs::read(Manifest::path(&exp.database))
        .with_context(|| format!("reading {}", Manifest::path(&exp.database).display()))?;
    let manifest_hash = hex::encode(Sha256::digest(&manifest_bytes));
    let space = space_of(&db)?;
    let unit_layer = db.manifest.units.iter().map(|u| u.unit.layer).collect();
    let budget = resolve_budget(exp, &space)?;
    let calib = token_set(&loaded, &exp.data.calibration)?;
    let eval = token_set(&loaded, &exp.data.evaluation)?;
    let held_out = eval
        .window_sample(exp.data.held_out_tokens, exp.data.held_out_context)
        .with_context(|| format!("{}: data.held_out_tokens", exp.source.display()))?;
    let kv = db.manifest.units.iter().any(|u| {
        matches!(
            u.unit.target,
            evocomp_db::UnitTarget::KvBudget
                | evocomp_db::UnitTarget::KvKeys
                | evocomp_db::UnitTarget::KvValues
        )
    });
    Ok(Prepared {
        exp: exp.clone(),
        loaded: Arc::new(loaded),
        fingerprint,
        db: Arc::new(db),
        manifest_hash,
        space,
        unit_layer,
        budget,
        calib: Arc::new(calib),
        held_out,
        kv,
    })
}
