//! A fresh strategy for a study: the model measurements its settings ask
//! for, then the registry's `StrategySpec::build`.

use crate::prepare::Prepared;
use anyhow::Result;
use burn::tensor::Device;
use evocomp_config::{BudgetSpec, Experiment};
use evocomp_search::{
    AnyStrategy, BudgetHint, Measurements, SampleDraw, SearchError, Setup, SpaceError, rng,
};

/// The one sample strategies with a fixed sample score on.
fn fixed_sample(exp: &Experiment) -> SampleDraw {
    SampleDraw::new(exp.fitness.tokens, rng::mix(exp.seed, &[0xf17]))
}

/// A fresh strategy for the experiment: the model measurements its settings
/// ask for (on `device`, `batch_size` sequences at a time), then the settings
/// build it. Errors in the settings point at the config's `strategy` line.
pub fn new_strategy(prep: &Prepared, device: &Device, batch_size: usize) -> Result<AnyStrategy> {
    let exp = &prep.exp;
    let spec = exp.strategy.spec();
    let needs = spec.needs(prep.db.kind());
    let mut measured = Measurements::default();
    if needs.outlier_ratios.is_some() || needs.block_influence {
        let sample =
            crate::evaluator::sample_for(&prep.calib, fixed_sample(exp), exp.fitness.seq_len)?;
        let model = crate::evaluator::model_for(&prep.loaded, device, &exp.fitness)?;
        if let Some(m) = needs.outlier_ratios {
            let lor = evocomp_eval::owl_outlier_ratios(
                &model,
                &|l| prep.loaded.layer(l),
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
        SearchError::Spec(e) => {
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
