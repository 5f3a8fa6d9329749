//! Setup: everything a study needs before its first evaluation. The model,
//! its fingerprint, the database (built first when missing), the search
//! space and budget from the database's levels, the token sets, and a fresh
//! strategy built from the config's settings (with the model measurements
//! they ask for).

use anyhow::{Context as _, Result};
use burn::tensor::Device;
use evocomp_config::{BudgetSpec, DatabaseConfig, Experiment, TeacherSpec};
use evocomp_data::{Sample, TokenSet};
use evocomp_db::{BuildOptions, BuildReport, Database, Propagation, build_database};
use evocomp_model::LoadedModel;
use evocomp_search::{
    AnyStrategy, Budget, BudgetHint, Kind, Measurements, SampleSpec, SearchError, Setup, Space,
    SpaceError, rng,
};
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
            .sample_with_held_out(c.sequences, c.held_out, c.seq_len, c.seed)
            .with_context(|| format!("{}: calibration", cfg.source.display()))?;
        let how = match cfg.compression.propagation() {
            Propagation::Uncompressed => "every block fitted to uncompressed inputs".to_string(),
            Propagation::Sequential { level } => {
                format!("sequential, propagated through level {level}")
            }
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

/// The budget a spec names in this space; impossible budgets point at the
/// config's `budget` line.
pub fn resolve_budget(exp: &Experiment, db: &Database, space: &Space) -> Result<Budget> {
    let b = written_budget(exp, db, space)?;
    Ok(exp.strategy.settings().search_budget(b))
}

fn written_budget(exp: &Experiment, db: &Database, space: &Space) -> Result<Budget> {
    let kind = db.kind();
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
            // Units of one type share a cost vector: whole blocks are one
            // type; attention and MLP sub-blocks two, and n of each is dropped.
            if space.units.iter().any(|u| u.levels.len() != 2) {
                return Err(fail(
                    "Dropped(n) needs kept/dropped units (a depth database); use AtMost(cost)"
                        .into(),
                ));
            }
            let mut total = 0u64;
            for members in space.types() {
                let count = members.len();
                if n > count {
                    return Err(fail(format!(
                        "{n} units of each type dropped, but one type has only {count} units"
                    )));
                }
                let costs = &space.units[members[0]].costs;
                let lo = *costs.iter().min().expect("levels");
                let hi = *costs.iter().max().expect("levels");
                total += n as u64 * lo + (count - n) as u64 * hi;
            }
            Budget::Exact(total)
        }
        BudgetSpec::AtMost(c) => Budget::AtMost(c),
        BudgetSpec::Exact(c) => Budget::Exact(c),
        BudgetSpec::Fraction(f) => Budget::AtMost((max_cost as f64 * f).floor() as u64),
        BudgetSpec::LlamaCpp(p) => {
            let g = evocomp_db::preset_genome(db, p).map_err(|e| fail(e.to_string()))?;
            Budget::AtMost(space.cost(&g))
        }
        BudgetSpec::Bpw(x) => {
            if db.cost_unit() != "bits" {
                return Err(fail(format!(
                    "bits per weight need a database whose costs are bits; this one counts {}",
                    db.cost_unit()
                )));
            }
            let weights: u64 = db.unit_numel().iter().sum();
            Budget::AtMost((weights as f64 * x).floor() as u64)
        }
    };
    if b.limit() < min_cost {
        return Err(fail(format!(
            "{b:?} is below the cheapest configuration ({min_cost})"
        )));
    }
    if kind == Kind::Depth {
        // Some block (or sub-block) must be left: the cheapest configuration
        // that keeps one unit.
        let keep_one = space
            .units
            .iter()
            .filter_map(|u| {
                let lo = *u.costs.iter().min().expect("levels");
                u.costs.iter().filter(|&&c| c > lo).map(|c| c - lo).min()
            })
            .min()
            .unwrap_or(0);
        if b.limit() < min_cost + keep_one {
            return Err(fail(format!(
                "{b:?} leaves no block of the model (keeping one costs at least {})",
                min_cost + keep_one
            )));
        }
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

/// Sequences per forward pass, at most `want`, such that the logits of a
/// batch of sequences of `tokens` tokens over `vocab` entries (f32) fit one
/// buffer of `max` bytes; None when not even one sequence fits.
pub fn batch_that_fits(
    want: usize,
    tokens: usize,
    vocab: usize,
    max: Option<u64>,
) -> Option<usize> {
    let want = want.max(1);
    let Some(max) = max else {
        return Some(want);
    };
    let per_sequence = (tokens as u64 * vocab as u64 * 4).max(1);
    match max / per_sequence {
        0 => None,
        n => Some(want.min(usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// Sequences per forward pass on a device whose buffers hold at most `max`
/// bytes: the logits of a batch (`[batch, tokens, vocab]` f32, and their
/// log-softmax) must each fit one buffer, so a GPU with a modest limit
/// evaluates in smaller batches (the config's `fitness.batch_size` where no
/// limit applies). One sequence that does not fit is an error at the config
/// line to change.
pub fn batch_for_device(exp: &Experiment, prep: &Prepared, max: Option<u64>) -> Result<usize> {
    // The weights first; the logits are fitted below by shrinking batches.
    if let Some(why) = max.and_then(|max| prep.loaded.config().buffer_limit_error(max, 0)) {
        return Err(exp.error_at("model", why).into());
    }
    let vocab = prep.loaded.config().vocab;
    let longest = exp.fitness.seq_len.max(exp.data.held_out_context);
    let want = exp.fitness.batch_size.max(1);
    match batch_that_fits(want, longest, vocab, max) {
        Some(batch) => {
            if batch < want {
                tracing::info!(
                    "batches of {batch} sequences (not {want}): the device allocates at most {max:?} bytes at once"
                );
            }
            Ok(batch)
        }
        None => {
            let field = if exp.data.held_out_context > exp.fitness.seq_len {
                "data.held_out_context"
            } else {
                "fitness.seq_len"
            };
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            Err(exp
                .error_at(
                    field,
                    format!(
                        "the logits of one sequence of {longest} tokens take {:.1} MiB, over the \
                         {:.1} MiB the device allocates at once; use shorter sequences, or the \
                         CPU (--backend cpu)",
                        mib(longest as u64 * vocab as u64 * 4),
                        mib(max.unwrap_or(0))
                    ),
                )
                .into())
        }
    }
}

/// The one sample strategies with a fixed sample score on.
fn fixed_sample(exp: &Experiment) -> SampleSpec {
    SampleSpec::new(exp.fitness.tokens, rng::mix(exp.seed, &[0xf17]))
}

/// A fresh strategy for the experiment: the model measurements its settings
/// ask for (on `device`, `batch_size` sequences at a time), then the settings
/// build it. Errors in the settings point at the config's `strategy` line.
pub fn new_strategy(prep: &Prepared, device: &Device, batch_size: usize) -> Result<AnyStrategy> {
    let exp = &prep.exp;
    let settings = exp.strategy.settings();
    let needs = settings.needs();
    let mut measured = Measurements::default();
    if needs.outlier_ratios.is_some() || needs.block_influence {
        let sample =
            crate::evaluator::sample_for(&prep.calib, fixed_sample(exp), exp.fitness.seq_len)?;
        let model = crate::evaluator::model_for(&prep.loaded, device, &exp.fitness)?;
        if let Some(m) = needs.outlier_ratios {
            let lor = evocomp_eval::owl_outlier_ratios(
                &model,
                prep.loaded.weights()?,
                &sample,
                batch_size,
                m,
            )?;
            tracing::info!("OWL outlier ratios: {lor:?}");
            measured.outlier_ratios = Some(lor);
        }
        if needs.block_influence {
            let bi = evocomp_eval::block_influence(&model, &sample, batch_size)?;
            tracing::info!("block influence: {bi:?}");
            measured.block_influence = Some(bi);
        }
    }
    let numel = prep.db.unit_numel();
    let errors = prep.db.level_errors();
    // llama.cpp's presets this database can express, for warm starts to name.
    let given = evocomp_db::preset_genomes(&prep.db);
    let setup = Setup {
        space: &prep.space,
        budget: prep.budget,
        hint: match exp.budget {
            BudgetSpec::UniformLevel(l) => BudgetHint::UniformLevel(l),
            // k of each unit type: the total dropped sizes EvoPress's depth preset.
            BudgetSpec::Dropped(k) => BudgetHint::Dropped(k * prep.space.types().len()),
            _ => BudgetHint::Other,
        },
        kind: prep.db.kind(),
        seed: exp.seed,
        sample: fixed_sample(exp),
        unit_layer: &prep.unit_layer,
        unit_numel: Some(&numel),
        level_errors: errors.as_deref(),
        measured,
        given: &given,
    };
    exp.strategy.build(&setup).map_err(|e| match e {
        SearchError::Space(SpaceError::Infeasible(b)) => exp
            .error_at(
                "budget",
                format!("no configuration of the database's levels meets {b:?}"),
            )
            .into(),
        SearchError::Settings(e) => {
            let field = if e.field.is_empty() {
                "strategy".to_string()
            } else {
                format!("strategy.{}", e.field)
            };
            exp.error_at(&field, e.message).into()
        }
        e => anyhow::Error::new(e),
    })
}

#[cfg(test)]
mod tests {
    use super::batch_that_fits;

    #[test]
    fn batches_shrink_to_fit_the_device_buffer() {
        // SmolLM2: 49152 entries; 256 tokens are 48 MiB of logits a sequence.
        let seq = 256 * 49152 * 4;
        assert_eq!(batch_that_fits(4, 256, 49152, None), Some(4));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(128 << 20)), Some(2));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(seq)), Some(1));
        assert_eq!(batch_that_fits(4, 256, 49152, Some(seq - 1)), None);
        assert_eq!(batch_that_fits(2, 8, 10, Some(1 << 30)), Some(2));
        assert_eq!(batch_that_fits(0, 8, 10, None), Some(1));
    }
}
