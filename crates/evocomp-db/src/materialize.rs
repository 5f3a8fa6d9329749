//! A genome written into plain weights: what `evocomp export` saves.
//!
//! Linear units take their stored variant; a dropped block is removed (the
//! model gets fewer layers); a skipped attention or MLP sub-block gets a zero
//! output projection (`o_proj` / `down_proj`), which is the same function as
//! skipping it. KV-cache units change no weight: they are a runtime policy,
//! reported in the notes and kept in the level list.

use crate::Result;
use crate::apply::Database;
use crate::units::UnitTarget;
use evocomp_model::{LinearKind, LlamaConfig, LlamaWeights};

/// The compressed model and what could not be put into its weights.
#[derive(Debug, Clone)]
pub struct Materialized {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    /// Layers of the original model that were removed.
    pub removed_layers: Vec<usize>,
    /// Per-unit settings that are not weights (KV-cache policies), as text.
    pub runtime_only: Vec<String>,
}

/// Apply `genome` to `weights`: a copy of borrowed ones, or owned ones in
/// place (an export that reads the weights for this alone holds one copy,
/// not two).
pub fn materialize(
    db: &Database,
    config: &LlamaConfig,
    weights: std::borrow::Cow<'_, LlamaWeights>,
    genome: &[i64],
) -> Result<Materialized> {
    db.manifest.check_genome(genome)?;
    let mut w = weights.into_owned();
    let mut drop = vec![false; config.n_layers];
    let mut runtime_only = Vec::new();
    for (ui, &g) in genome.iter().enumerate() {
        let u = &db.manifest.units[ui];
        let layer = u.unit.layer;
        match u.unit.target {
            UnitTarget::Linear(kind) => {
                *w.layers[layer].linear_mut(kind) = db.variant(ui, g)?;
            }
            UnitTarget::Embedding => w.embed = db.variant(ui, g)?,
            UnitTarget::Head => w.lm_head = Some(db.variant(ui, g)?),
            UnitTarget::Block => drop[layer] |= g == 1,
            UnitTarget::Attention if g == 1 => zero(&mut w, layer, LinearKind::O),
            UnitTarget::Mlp if g == 1 => zero(&mut w, layer, LinearKind::Down),
            UnitTarget::Attention | UnitTarget::Mlp => {}
            UnitTarget::KvBudget | UnitTarget::KvKeys | UnitTarget::KvValues => {
                let lv = &u.levels[u.level_index(g).expect("checked")];
                runtime_only.push(format!(
                    "{} = {} {}",
                    u.name, lv.param, db.manifest.cost_unit
                ));
            }
        }
    }
    let removed_layers: Vec<usize> = (0..drop.len()).filter(|&l| drop[l]).collect();
    let cfg = config.without_layers(&drop);
    if !removed_layers.is_empty() {
        w.layers = w
            .layers
            .into_iter()
            .enumerate()
            .filter(|(l, _)| !drop[*l])
            .map(|(_, x)| x)
            .collect();
    }
    Ok(Materialized {
        config: cfg,
        weights: w,
        removed_layers,
        runtime_only,
    })
}

fn zero(w: &mut LlamaWeights, layer: usize, kind: LinearKind) {
    w.layers[layer]
        .linear_mut(kind)
        .data
        .iter_mut()
        .for_each(|x| *x = 0.0);
}
