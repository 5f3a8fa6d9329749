//! A database in EvoPress's on-disk layout, for PyTorch scripts: one file
//! per (linear layer, level), `OUT/<HF module>/<level>.safetensors`, holding
//! one f32 tensor `weight` `[out, in]` (EvoPress's `load_layers` reads
//! `<path>/<module>/<level>.pth`), and `OUT/index.json`: per unit in the
//! manifest's order, its name, HF module, shape and every level with its cost
//! and label (the levels dumped are marked).

use crate::apply::Database;
use crate::build::bar;
use crate::codec::f32_bytes;
use crate::manifest::write_atomic;
use crate::units::UnitTarget;
use crate::{DbError, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Write the levels `levels` (every level when `None`) of every unit under
/// `out`, with a progress bar if `progress`; returns the number of weight
/// files written. Only databases of linear units (sparsity, quantization)
/// have weights to dump.
pub fn dump_levels(
    db: &Database,
    out: &Path,
    levels: Option<&[i64]>,
    progress: bool,
) -> Result<u64> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DbError::Io { path, source }
    };
    let units = &db.manifest.units;
    if let Some(u) = units
        .iter()
        .find(|u| !matches!(u.unit.target, UnitTarget::Linear(_)))
    {
        return Err(DbError::Unsupported(format!(
            "{}: unit {} has no weight of its own (only sparsity and quantization databases can be dumped)",
            db.dir().display(),
            u.name
        )));
    }
    if let Some(wanted) = levels
        && let Some(l) = wanted
            .iter()
            .find(|&&l| !units.iter().any(|u| u.levels.iter().any(|x| x.level == l)))
    {
        return Err(DbError::Unsupported(format!(
            "{}: no unit has level {l}",
            db.dir().display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let wanted = |l: i64| levels.is_none_or(|w| w.contains(&l));
    let bar = bar(units.len() as u64, progress, "db dump");
    let mut files = 0;
    let mut index = Vec::with_capacity(units.len());
    for (ui, u) in units.iter().enumerate() {
        let UnitTarget::Linear(kind) = u.unit.target else {
            unreachable!("checked above")
        };
        let full = kind.hf_name(u.unit.layer);
        let module = full.trim_end_matches(".weight").to_string();
        let dir = out.join(&module);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for lv in u.levels.iter().filter(|lv| wanted(lv.level)) {
            let w = db.variant(ui, lv.level)?;
            let bytes = f32_bytes(&w.data);
            let view = TensorView::new(Dtype::F32, w.shape.clone(), &bytes)
                .map_err(|e| DbError::Compress(format!("{module} level {}: {e}", lv.level)))?;
            let file = safetensors::serialize([("weight", view)], None)
                .map_err(|e| DbError::Compress(format!("{module} level {}: {e}", lv.level)))?;
            let path = dir.join(format!("{}.safetensors", lv.level));
            write_atomic(&path, &file)?;
            files += 1;
        }
        index.push(serde_json::json!({
            "name": u.name,
            "module": module,
            "shape": u.shape,
            "levels": u.levels.iter().map(|lv| serde_json::json!({
                "level": lv.level,
                "cost": lv.cost,
                "label": lv.label,
                "dumped": wanted(lv.level),
            })).collect::<Vec<_>>(),
        }));
        bar.inc(1);
    }
    let doc = serde_json::json!({
        "database": db.dir().display().to_string(),
        "fingerprint": db.fingerprint(),
        "units": index,
    });
    let text = serde_json::to_string_pretty(&doc).expect("plain JSON");
    write_atomic(&out.join("index.json"), text.as_bytes())?;
    bar.finish_and_clear();
    Ok(files)
}
