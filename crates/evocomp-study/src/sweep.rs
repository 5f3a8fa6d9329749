//! A sweep's folder: `sweep.json` (every member's resolved experiment) and
//! one study folder per budget.

use crate::files::{read_file, write_file};
use crate::names;
use anyhow::{Context as _, Result, bail};
use evocomp_config::Experiment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
struct SweepFile {
    name: String,
    members: Vec<Experiment>,
}

/// A sweep folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepDir {
    dir: PathBuf,
}

impl SweepDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The sweep's studies when `dir` holds one (their folders beside
    /// `sweep.json`, wherever the folder is now); None for a plain study.
    pub fn members(&self) -> Result<Option<Vec<Experiment>>> {
        let p = self.dir.join(names::SWEEP);
        if !p.is_file() {
            return Ok(None);
        }
        let f: SweepFile = read_file(&p)?;
        if f.members.is_empty() {
            bail!("{}: corrupt (a sweep with no studies)", p.display());
        }
        Ok(Some(
            f.members
                .into_iter()
                .map(|e| Experiment {
                    output: self.dir.join(e.output.file_name().unwrap_or_default()),
                    ..e
                })
                .collect(),
        ))
    }

    /// Create the sweep folder of `members` (one sweep's experiments) and
    /// its `sweep.json`, or check that the folder holds this same sweep.
    pub fn prepare(members: &[Experiment]) -> Result<SweepDir> {
        let first = members.first().context("a sweep with no studies")?;
        let name = first.sweep.clone().context("not a sweep's experiment")?;
        let dir = SweepDir::new(first.sweep_dir());
        std::fs::create_dir_all(&dir.dir)
            .with_context(|| format!("creating {}", dir.dir.display()))?;
        match dir.members()? {
            Some(old) => {
                let same = old.len() == members.len()
                    && old.iter().zip(members).all(|(a, b)| {
                        Experiment {
                            source: b.source.clone(),
                            output: b.output.clone(),
                            ..a.clone()
                        } == *b
                    });
                if !same {
                    bail!(
                        "{} holds a different sweep; change `name` or `output`, or delete the folder",
                        dir.dir.display()
                    );
                }
            }
            None => write_file(
                &dir.dir.join(names::SWEEP),
                &SweepFile {
                    name,
                    members: members.to_vec(),
                },
            )?,
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}
