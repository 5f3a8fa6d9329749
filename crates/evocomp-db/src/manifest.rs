//! `manifest.json`: what a database holds, for which model and data, and
//! every level's cost. Written atomically after each finished unit.

use crate::spec::Compression;
use crate::units::{Level, UnitId};
use crate::{DbError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

/// One unit's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitEntry {
    pub unit: UnitId,
    pub name: String,
    /// `[out, in]` of a linear unit.
    pub shape: Option<[usize; 2]>,
    pub levels: Vec<Level>,
    /// The variants file (relative to the database folder), once built.
    pub file: Option<String>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    /// ‖WX − ŴX‖² on the calibration inputs, per level (same order as `levels`).
    pub errors: Option<Vec<f64>>,
    /// ‖WX‖² on the calibration inputs (the uncompressed weight on the inputs
    /// this unit was fitted to): `errors / output_energy` is the normalised error.
    #[serde(default)]
    pub output_energy: Option<f64>,
    /// ‖WX − ŴX‖² / ‖WX‖² on held-out inputs (windows disjoint from the
    /// calibration sample, propagated the same way), per level.
    #[serde(default)]
    pub held_out_errors: Option<Vec<f64>>,
}

impl UnitEntry {
    pub fn is_built(&self) -> bool {
        self.file.is_some() || !self.needs_file()
    }

    /// Depth units need no stored data.
    pub fn needs_file(&self) -> bool {
        self.shape.is_some()
    }

    pub fn level_index(&self, level: i64) -> Option<usize> {
        self.levels.iter().position(|l| l.level == level)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// sha256 of the model's files.
    pub model_fingerprint: String,
    /// Id of the calibration sample (tokenizer, text and exact tokens), when used.
    pub calibration_id: Option<String>,
    /// Id of the held-out sample the units' held-out errors were measured on.
    #[serde(default)]
    pub held_out_id: Option<String>,
    pub compression: Compression,
    pub cost_unit: String,
    pub units: Vec<UnitEntry>,
    /// Every unit is built.
    pub complete: bool,
}

impl Manifest {
    /// The levels' figures against what each unit's shape and setting give:
    /// costs fall as levels rise; a sparse level's cost is its weights less
    /// the zeroed ones, a quantized one's the grid's exact bits, a dropped
    /// block's 0. A hand-edited cost is the first line that disagrees.
    pub fn check_figures(&self) -> std::result::Result<(), String> {
        for u in &self.units {
            let numel = u.shape.map(|[o, i]| (o * i) as u64);
            for w in u.levels.windows(2) {
                if !(w[0].level < w[1].level && w[0].cost >= w[1].cost) {
                    return Err(format!(
                        "{}: level {} costs {} and level {} costs {}: a more compressed level \
                         cannot cost more",
                        u.name, w[0].level, w[0].cost, w[1].level, w[1].cost
                    ));
                }
            }
            for l in &u.levels {
                let want = match (&self.compression, u.shape, numel) {
                    (Compression::Sparsity { .. }, _, Some(n)) => Some(n.checked_sub(l.param)),
                    (Compression::Quantization { spec, .. }, Some([o, i]), _) => {
                        let s = evocomp_compress::QuantConfig {
                            bits: u8::try_from(l.param).unwrap_or(0),
                            ..*spec
                        };
                        Some((s.bits > 0).then(|| evocomp_compress::quant_cost_bits(o, i, &s)))
                    }
                    (Compression::Depth { .. }, _, _) if l.param == 1 => Some(Some(0)),
                    _ => None,
                };
                if let Some(want) = want
                    && want != Some(l.cost)
                {
                    return Err(format!(
                        "{} level {} ({}): the manifest says it costs {} {}, its shape and \
                         setting give {}",
                        u.name,
                        l.level,
                        l.label,
                        l.cost,
                        self.cost_unit,
                        want.map_or("no valid cost".to_string(), |w| w.to_string())
                    ));
                }
            }
        }
        Ok(())
    }

    /// Weights per unit (1 for units that are not a matrix).
    pub fn unit_numel(&self) -> Vec<u64> {
        self.units
            .iter()
            .map(|u| u.shape.map_or(1, |s| (s[0] * s[1]) as u64))
            .collect()
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST)
    }

    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let p = Self::path(dir);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(DbError::io(&p))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DbError::Corrupt {
            path: p.clone(),
            message: format!("unreadable manifest: {e}"),
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(DbError::Corrupt {
                path: p,
                message: format!(
                    "manifest format {} is not supported (this evocomp reads {FORMAT_VERSION})",
                    m.format_version
                ),
            });
        }
        Ok(Some(m))
    }

    /// Write atomically: a temporary file, fsync, rename.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        write_atomic(&Self::path(dir), text.as_bytes())
    }

    /// Total cost of `genome` (one level per unit, in unit order).
    pub fn cost(&self, genome: &[i64]) -> Result<u64> {
        self.check_genome(genome)?;
        Ok(self
            .units
            .iter()
            .zip(genome)
            .map(|(u, &g)| u.levels[u.level_index(g).expect("checked")].cost)
            .sum())
    }

    pub fn check_genome(&self, genome: &[i64]) -> Result<()> {
        if genome.len() != self.units.len() {
            return Err(DbError::BadGenome(format!(
                "genome has {} entries, the database has {} units",
                genome.len(),
                self.units.len()
            )));
        }
        for (u, &g) in self.units.iter().zip(genome) {
            if u.level_index(g).is_none() {
                let lv: Vec<i64> = u.levels.iter().map(|l| l.level).collect();
                return Err(DbError::BadGenome(format!(
                    "{}: level {g} is not one of {lv:?}",
                    u.name
                )));
            }
        }
        Ok(())
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    evocomp_store::write_atomic(path, bytes).map_err(|(p, e)| DbError::io(p)(e))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(DbError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(DbError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
