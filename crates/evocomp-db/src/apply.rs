//! Opening a database and putting a genome into a live model, reloading only
//! the units whose level changed.

use crate::build::level_tensor;
use crate::manifest::Manifest;
use crate::spec::Compression;
use crate::units::{Level, UnitTarget};
use crate::{DbError, Result};
use evocomp_gguf::Mapped;
use evocomp_model::{HostTensor, KvPolicy, KvQuant, LlamaModel};
use evocomp_search::{Kind, Space, SpaceError, UnitLevels};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A finished database on disk.
#[derive(Debug)]
pub struct Database {
    dir: PathBuf,
    /// What the database holds; presented by `evocomp db info`. Callers
    /// that compute with it use the accessors below.
    pub manifest: Manifest,
    /// sha256 of `manifest.json` as read.
    fingerprint: String,
    /// Each unit's variants file, mapped (a read that finds it cut short
    /// is an error).
    maps: Vec<Option<Mapped>>,
    /// Per unit, once its file was first read in this process: None when its
    /// sha256 matched the manifest, else what is wrong.
    checked: Vec<OnceLock<Option<String>>>,
}

impl Database {
    /// Open a complete database; every variant file must exist with the size
    /// the manifest records (a partial file is an error naming it). Files are
    /// memory-mapped.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?.ok_or_else(|| DbError::Corrupt {
            path: Manifest::path(dir),
            message: "no manifest: not an evocomp database (run `evocomp db build`)".into(),
        })?;
        if !manifest.complete {
            return Err(DbError::Corrupt {
                path: Manifest::path(dir),
                message: "the build is not finished; run `evocomp db build` again to continue it"
                    .into(),
            });
        }
        // Figures a study would count with: checked before it does.
        manifest
            .check_figures()
            .map_err(|message| DbError::Corrupt {
                path: Manifest::path(dir),
                message: format!("{message} (edited by hand? rebuild it with `evocomp db build`)"),
            })?;
        let mp = Manifest::path(dir);
        let fingerprint = hex::encode(Sha256::digest(
            std::fs::read(&mp).map_err(DbError::io(&mp))?,
        ));
        let mut maps = Vec::with_capacity(manifest.units.len());
        for u in &manifest.units {
            let Some(rel) = &u.file else {
                maps.push(None);
                continue;
            };
            let p = dir.join(rel);
            let f = std::fs::File::open(&p).map_err(DbError::io(&p))?;
            let len = f.metadata().map_err(DbError::io(&p))?.len();
            if Some(len) != u.bytes {
                return Err(DbError::Corrupt {
                    path: p,
                    message: format!(
                        "{len} bytes, but the manifest records {:?} (partial or replaced file)",
                        u.bytes
                    ),
                });
            }
            // SAFETY: read-only map; a file cut short under it is an error at
            // the next read (`Mapped`).
            let map = unsafe { Mapped::map(f) }.map_err(DbError::io(&p))?;
            maps.push(Some(map));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            checked: (0..manifest.units.len()).map(|_| OnceLock::new()).collect(),
            manifest,
            fingerprint,
            maps,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `dir` holds a finished build (`open` would not refuse it as partial).
    pub fn is_built(dir: &Path) -> Result<bool> {
        Ok(Manifest::read(dir)?.is_some_and(|m| m.complete))
    }

    /// sha256 of the manifest: names this exact database (part of every
    /// fitness cache key).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The compression kind, as strategies see it.
    pub fn kind(&self) -> Kind {
        self.manifest.compression.kind()
    }

    /// Whether the units are KV-cache policies (evaluated by chunked
    /// prefill, not layer by layer).
    pub fn is_kv(&self) -> bool {
        matches!(self.kind(), Kind::KvBudget | Kind::KvBits)
    }

    /// What a cost counts (`non-zero weights`, `bits`, ...).
    pub fn cost_unit(&self) -> &str {
        &self.manifest.cost_unit
    }

    /// The search space: every unit's levels and their exact costs.
    pub fn space(&self) -> std::result::Result<Space, SpaceError> {
        Space::new(
            self.manifest
                .units
                .iter()
                .map(|u| UnitLevels {
                    name: u.name.clone(),
                    levels: u.levels.iter().map(|l| l.level).collect(),
                    costs: u.levels.iter().map(|l| l.cost).collect(),
                })
                .collect(),
        )
    }

    /// The model layer of every unit, in genome order.
    pub fn unit_layers(&self) -> Vec<usize> {
        self.manifest.units.iter().map(|u| u.unit.layer).collect()
    }

    /// Weights per unit (1 for units that are not a matrix).
    pub fn unit_numel(&self) -> Vec<u64> {
        self.manifest.unit_numel()
    }

    /// Unit `unit`'s level `level` (its cost, setting and label), if it has one.
    pub fn level(&self, unit: usize, level: i64) -> Option<&Level> {
        let u = self.manifest.units.get(unit)?;
        u.levels.get(u.level_index(level)?)
    }

    /// Per unit, every level's normalised reconstruction error
    /// ‖WX − ŴX‖² / ‖WX‖² on the calibration inputs (EvoPress's DP baseline:
    /// raw errors would let the units with large outputs dominate), if the
    /// build recorded them (databases built before the output energy was
    /// recorded have none).
    pub fn level_errors(&self) -> Option<Vec<Vec<f64>>> {
        self.manifest
            .units
            .iter()
            .map(|u| {
                let energy = u.output_energy.filter(|&e| e > 0.0)?;
                Some(u.errors.as_ref()?.iter().map(|e| e / energy).collect())
            })
            .collect()
    }

    /// Refuse a database built for another model.
    pub fn check_model(&self, fingerprint: &str) -> Result<()> {
        if self.manifest.model_fingerprint != fingerprint {
            return Err(DbError::Mismatch {
                path: Manifest::path(&self.dir),
                what: "model",
                in_db: self.manifest.model_fingerprint.clone(),
                given: fingerprint.to_string(),
            });
        }
        Ok(())
    }

    /// Check the manifest's figures against each unit's shape and setting,
    /// and every file's sha256 against the manifest.
    pub fn verify(&self) -> Result<()> {
        self.manifest
            .check_figures()
            .map_err(|message| DbError::Corrupt {
                path: self.dir.join("manifest.json"),
                message,
            })?;
        (0..self.manifest.units.len()).try_for_each(|ui| self.check_file(ui))
    }

    /// Unit `ui`'s map, if it has a file.
    fn map(&self, ui: usize) -> Option<&Mapped> {
        self.maps[ui].as_ref()
    }

    /// `read` over unit `ui`'s file, an error naming it if the file was cut
    /// short before or during the read (None: the unit has no file).
    fn read_unit<T>(&self, ui: usize, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let Some(m) = self.map(ui) else {
            return Ok(None);
        };
        let out = m
            .read(read)
            .map(Some)
            .map_err(|message| self.damaged(ui, message));
        // Decoded: the file's pages need not stay in this process's memory
        // (a study touching every variant would otherwise hold the whole
        // database; a page read again comes from the file).
        m.release(m.bytes());
        out
    }

    fn damaged(&self, ui: usize, message: String) -> DbError {
        DbError::Corrupt {
            path: self
                .dir
                .join(self.manifest.units[ui].file.as_deref().unwrap_or("?")),
            message,
        }
    }

    /// Whether every byte read from the database's files so far was the
    /// files' own (one was cut short under its map: an error naming it).
    pub fn intact(&self) -> Result<()> {
        for (ui, m) in self.maps.iter().enumerate() {
            if let Some(message) = m.as_ref().and_then(Mapped::check) {
                return Err(self.damaged(ui, message));
            }
        }
        Ok(())
    }

    /// Unit `ui`'s file against the sha256 the manifest records, hashed the
    /// first time this process asks (a study never scores variants it has
    /// not verified) and remembered.
    fn check_file(&self, ui: usize) -> Result<()> {
        let u = &self.manifest.units[ui];
        let (Some(map), Some(want)) = (self.map(ui), &u.sha256) else {
            return Ok(());
        };
        let damaged = self.checked[ui].get_or_init(|| {
            let got = match map.read(|bytes| hex::encode(Sha256::digest(bytes))) {
                Ok(got) => got,
                Err(message) => return Some(message),
            };
            map.release(map.bytes());
            (*want != got).then(|| {
                format!(
                    "sha256 {got}, but the manifest records {want}: the file was damaged or \
                     replaced; rebuild it with `evocomp db build` (it rebuilds what does not match)"
                )
            })
        });
        match damaged {
            Some(message) => Err(DbError::Corrupt {
                path: self.dir.join(u.file.as_deref().unwrap_or("?")),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The stored weight of unit `ui` at `level`.
    pub fn variant(&self, ui: usize, level: i64) -> Result<HostTensor> {
        let u = &self.manifest.units[ui];
        let path = self.dir.join(u.file.as_deref().unwrap_or("?"));
        let bad = |message: String| DbError::Corrupt {
            path: path.clone(),
            message,
        };
        self.check_file(ui)?;
        let shape = u
            .shape
            .ok_or_else(|| bad(format!("{} has no weight shape", u.name)))?;
        let data = self
            .read_unit(ui, |map| {
                let st = SafeTensors::deserialize(map).map_err(|e| e.to_string())?;
                crate::codec::decode(&st, &level_tensor(level), shape)
                    .map_err(|e| format!("level {level}: {e}"))
            })?
            .ok_or_else(|| DbError::BadGenome(format!("{} has no stored variants", u.name)))?
            .map_err(bad)?;
        Ok(HostTensor::new(shape.to_vec(), data))
    }
}

impl Database {
    /// Unit `ui`'s variant at `level` as the ggml blocks a GGUF file stores
    /// (GGUF-types databases), checked against the manifest's hash. The
    /// bytes come from the map: a caller that keeps them asks
    /// [`Self::intact`] once done.
    pub fn ggml_variant(
        &self,
        ui: usize,
        level: i64,
    ) -> Result<Option<(evocomp_gguf::GgmlType, &[u8])>> {
        let u = &self.manifest.units[ui];
        let Some(map) = self.map(ui) else {
            return Ok(None);
        };
        let path = self.dir.join(u.file.as_deref().unwrap_or("?"));
        self.check_file(ui)?;
        let st = SafeTensors::deserialize(map.bytes()).map_err(|e| DbError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let name = level_tensor(level);
        crate::codec::ggml_blocks(&st, &name).map_err(|message| DbError::Corrupt { path, message })
    }
}

/// Tracks which level each unit of a live model is at.
#[derive(Debug, Clone)]
pub struct Applier {
    /// None: the model's original weights.
    current: Vec<Option<i64>>,
}

/// What one [`Applier::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub changed: usize,
}

impl Applier {
    /// For a model that holds its original weights.
    pub fn new(db: &Database) -> Self {
        Self {
            current: vec![None; db.manifest.units.len()],
        }
    }

    pub fn current(&self) -> &[Option<i64>] {
        &self.current
    }

    /// Forget what the model holds, so the next [`Self::apply`] writes every
    /// unit (after an apply that was interrupted, when the model's state is
    /// not known).
    pub fn forget(&mut self) {
        self.current.iter_mut().for_each(|c| *c = None);
    }

    /// Put `genome` into `model`: only units whose level differs from the
    /// model's current one are touched.
    pub fn apply(
        &mut self,
        db: &Database,
        model: &mut LlamaModel,
        genome: &[i64],
    ) -> Result<ApplyStats> {
        db.manifest.check_genome(genome)?;
        let mut changed = 0;
        for (ui, &g) in genome.iter().enumerate() {
            if self.current[ui] == Some(g) {
                continue;
            }
            let u = &db.manifest.units[ui];
            let layer = u.unit.layer;
            match u.unit.target {
                UnitTarget::Linear(kind) => {
                    let w = db.variant(ui, g)?;
                    model.set_linear(layer, kind, &w)?;
                }
                UnitTarget::Embedding => model.set_embedding(db.variant(ui, g)?)?,
                UnitTarget::Head => model.set_head(&db.variant(ui, g)?)?,
                UnitTarget::Attention => model.set_skip_attention(layer, g == 1),
                UnitTarget::Mlp => model.set_skip_mlp(layer, g == 1),
                UnitTarget::Block => {
                    model.set_skip_attention(layer, g == 1);
                    model.set_skip_mlp(layer, g == 1);
                }
                UnitTarget::KvBudget | UnitTarget::KvKeys | UnitTarget::KvValues => {
                    let param = u.levels[u.level_index(g).expect("checked")].param;
                    let mut p = model.kv_policy(layer).unwrap_or(KvPolicy::FULL);
                    match (&db.manifest.compression, u.unit.target) {
                        (
                            Compression::KvBudget {
                                eviction, chunk, ..
                            },
                            _,
                        ) => {
                            p.budget = Some(param as usize);
                            p.eviction = *eviction;
                            model.set_kv_chunk(*chunk);
                        }
                        (
                            Compression::KvBits {
                                keys,
                                values,
                                group_size,
                                chunk,
                                ..
                            },
                            t,
                        ) => {
                            let group = if t == UnitTarget::KvKeys {
                                *keys
                            } else {
                                *values
                            };
                            let q = (param < 16).then_some(KvQuant {
                                bits: param as u8,
                                group,
                                group_size: *group_size,
                            });
                            if t == UnitTarget::KvKeys {
                                p.keys = q;
                            } else {
                                p.values = q;
                            }
                            model.set_kv_chunk(*chunk);
                        }
                        _ => unreachable!("KV units come only from KV kinds"),
                    }
                    model.set_kv_policy(layer, Some(p));
                }
            }
            self.current[ui] = Some(g);
            changed += 1;
        }
        Ok(ApplyStats { changed })
    }
}
