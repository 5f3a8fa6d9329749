//! One study's folder: the store, the experiment it holds, its status and
//! summary files, and the read-only view `status` and `best` use.

use crate::files::{
    read_file, read_versioned, to_versioned_compact, to_versioned_json, write_file,
};
use crate::names;
use crate::records::{State, StatusFile, Summary};
use anyhow::{Context as _, Result, bail};
use evocomp_config::Experiment;
use evocomp_store::{Commit, StoreError, Study};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

const EXPERIMENT_KEY: &str = "experiment";
const SUMMARY_KEY: &str = "summary";

/// The fitness cache shared by every study beside this one (or beside its sweep).
pub fn shared_cache_dir(exp: &Experiment) -> PathBuf {
    exp.sweep_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(names::SHARED_CACHE)
}

/// Write `value` to `path` unless the file there already reads as a valid
/// document (files derived from the store are restored from it).
fn restore_if_unreadable<T: Serialize + DeserializeOwned>(path: &Path, value: &T) -> Result<()> {
    if read_file::<T>(path).is_err() {
        write_file(path, value)?;
    }
    Ok(())
}

/// A study folder (which may not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyDir {
    dir: PathBuf,
}

/// The experiment as stored, for comparison: where its config file was does not matter.
fn comparable(exp: &Experiment) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(exp)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("source");
    }
    Ok(v)
}

impl StudyDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn open_store(&self, create: bool) -> Result<Study, StoreError> {
        Study::open(&self.file(names::STORE), &self.file(names::PID), create)
    }

    /// Whether a study was started here.
    pub fn is_started(&self) -> bool {
        self.file(names::EXPERIMENT).is_file()
    }

    /// The experiment saved here, its `output` set to this folder (wherever
    /// it is now). A damaged `experiment.json` is read from the store's copy
    /// instead (and rewritten by the next run).
    pub fn experiment(&self) -> Result<Experiment> {
        let p = self.file(names::EXPERIMENT);
        if !p.is_file() {
            bail!(
                "{}: not a study folder (no {}); start one with `evocomp run CONFIG.ron`",
                self.dir.display(),
                names::EXPERIMENT
            );
        }
        let exp: Experiment = match read_file(&p) {
            Ok(e) => e,
            Err(e) => match self.view() {
                Ok(View::Store(s)) => match s.experiment()? {
                    Some(saved) => saved,
                    None => return Err(e),
                },
                _ => return Err(e),
            },
        };
        Ok(Experiment {
            output: self.dir.clone(),
            ..exp
        })
    }

    /// Open the study of `exp` to run it (created on first use), checking
    /// that the folder holds this experiment and no other.
    pub fn open_for(exp: &Experiment) -> Result<OpenStudy> {
        let dir = StudyDir::new(&exp.output);
        let study = OpenStudy {
            store: dir.open_store(true)?,
            dir,
        };
        let file = study.dir.file(names::EXPERIMENT);
        match study.experiment()? {
            Some(saved) => {
                restore_if_unreadable(&file, &saved)?;
                if comparable(&saved)? != comparable(exp)? {
                    bail!(
                        "{} holds a different experiment (from {}); change `name` or `output`, or delete the folder",
                        exp.output.display(),
                        saved.source.display()
                    );
                }
            }
            None => {
                write_file(&file, exp)?;
                if let Ok(raw) = std::fs::read(&exp.source) {
                    let p = study.dir.file(names::CONFIG);
                    evocomp_store::write_atomic(&p, &raw).map_err(|(p, e)| {
                        anyhow::Error::new(e).context(format!("writing {}", p.display()))
                    })?;
                }
                study
                    .store
                    .put_meta(EXPERIMENT_KEY, &to_versioned_json(exp)?)?;
            }
        }
        Ok(study)
    }

    /// The study's store or, while another process runs it, its last status.
    pub fn view(&self) -> Result<View> {
        match self.open_store(false) {
            Ok(store) => Ok(View::Store(OpenStudy {
                dir: self.clone(),
                store,
            })),
            Err(StoreError::InUse { pid, .. }) => Ok(View::Running {
                pid,
                status: read_file(&self.file(names::STATUS))?,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A finished study's result: `summary.json`, or, when that file is
    /// missing or damaged, the copy in the store (the record `resume` writes
    /// the file from). Reads only.
    pub fn summary(&self) -> Result<Summary> {
        let p = self.file(names::SUMMARY);
        let damaged = match p.is_file() {
            true => match read_file(&p) {
                Ok(s) => return Ok(s),
                Err(e) => Some(e),
            },
            false => None,
        };
        if let Ok(View::Store(s)) = self.view()
            && let Some(summary) = s.summary()?
        {
            return Ok(summary);
        }
        match damaged {
            Some(e) => Err(e),
            None => bail!(
                "{}: no {}: the study is not finished (evocomp status {})",
                self.dir.display(),
                names::SUMMARY,
                self.dir.display()
            ),
        }
    }

    /// The last status the running (or last) process wrote.
    pub fn status(&self) -> Result<StatusFile> {
        read_file(&self.file(names::STATUS))
    }

    pub fn write_status(&self, s: &StatusFile) -> Result<()> {
        write_file(&self.file(names::STATUS), s)
    }
}

/// A study held by this process: its store and folder.
#[derive(Debug)]
pub struct OpenStudy {
    dir: StudyDir,
    store: Study,
}

/// What `status` and `best` can see of a study.
#[derive(Debug)]
pub enum View {
    Store(OpenStudy),
    /// Held by process `pid`: its last status file.
    Running {
        pid: String,
        status: StatusFile,
    },
}

impl OpenStudy {
    pub fn dir(&self) -> &StudyDir {
        &self.dir
    }

    /// The journal and fitness cache.
    pub fn store(&self) -> &Study {
        &self.store
    }

    /// Every trial in the journal, in the order evaluated.
    pub fn trials(&self) -> Result<Vec<evocomp_store::Trial>> {
        Ok(self.store.trials()?)
    }

    /// Trials in the journal: (evaluated, served from a cache).
    pub fn trial_counts(&self) -> Result<(usize, usize)> {
        let trials = self.store.trials()?;
        let fresh = trials.iter().filter(|t| !t.cached).count();
        Ok((fresh, trials.len() - fresh))
    }

    fn record_name(&self, key: &str) -> String {
        format!("{} (record {key})", self.dir.file(names::STORE).display())
    }

    /// The experiment the store holds.
    pub fn experiment(&self) -> Result<Option<Experiment>> {
        match self.store.meta(EXPERIMENT_KEY)? {
            Some(b) => Ok(Some(read_versioned(&b, &self.record_name(EXPERIMENT_KEY))?)),
            None => Ok(None),
        }
    }

    /// The latest checkpoint.
    pub fn state(&self) -> Result<Option<State>> {
        match self.store.checkpoint()? {
            Some(b) => Ok(Some(read_versioned(&b, &self.record_name("checkpoint"))?)),
            None => Ok(None),
        }
    }

    /// Commit `state` with the journal entries and fitness values it covers, atomically.
    pub fn commit_state(
        &self,
        trials: Vec<evocomp_store::Trial>,
        fitness: Vec<(evocomp_store::CacheKey, f64)>,
        state: &State,
    ) -> Result<()> {
        self.store.commit(&Commit {
            trials,
            fitness,
            checkpoint: Some(to_versioned_compact(state)?),
        })?;
        Ok(())
    }

    /// The result the store holds, once finished.
    pub fn summary(&self) -> Result<Option<Summary>> {
        match self.store.meta(SUMMARY_KEY)? {
            Some(b) => Ok(Some(read_versioned(&b, &self.record_name(SUMMARY_KEY))?)),
            None => Ok(None),
        }
    }

    /// Whether the study of `exp` is finished, with its result, the store's
    /// record and `summary.json` made whole from each other: the file
    /// rewritten from the record when missing or damaged, or the record put
    /// back from this study's checksummed file when the store lost it.
    pub fn finished(&self, exp: &Experiment) -> Result<Option<Summary>> {
        let file = self.dir.file(names::SUMMARY);
        if let Some(s) = self.summary()? {
            restore_if_unreadable(&file, &s)?;
            return Ok(Some(s));
        }
        match read_file::<Summary>(&file) {
            Ok(s) if s.name == exp.name && s.strategy == exp.strategy.label() => {
                tracing::warn!(
                    "{}: the study store had lost its result; restored it from {}",
                    self.dir.path().display(),
                    names::SUMMARY
                );
                self.put_summary(&s)?;
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    fn put_summary(&self, summary: &Summary) -> Result<()> {
        self.store
            .put_meta(SUMMARY_KEY, &to_versioned_json(summary)?)
            .context("recording the summary")?;
        Ok(())
    }

    /// Record the result: in the store, then as `summary.json`.
    pub fn finish(&self, summary: &Summary) -> Result<()> {
        self.put_summary(summary)?;
        write_file(&self.dir.file(names::SUMMARY), summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_from_another_format_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = StudyDir::new(dir.path());
        let e = d.experiment().unwrap_err().to_string();
        assert!(e.contains("not a study folder"), "{e}");
        assert!(!d.is_started());
        // A study folder written before format versions.
        std::fs::write(dir.path().join(names::EXPERIMENT), br#"{"name": "x"}"#).unwrap();
        assert!(d.is_started());
        let e = format!("{:#}", d.experiment().unwrap_err());
        assert!(
            e.contains(names::EXPERIMENT) && e.contains("no format_version"),
            "{e}"
        );
        std::fs::write(
            dir.path().join(names::SUMMARY),
            br#"{"format_version": 7, "name": "x"}"#,
        )
        .unwrap();
        let e = format!("{:#}", d.summary().unwrap_err());
        assert!(
            e.contains(names::SUMMARY) && e.contains("newer evocomp"),
            "{e}"
        );
        std::fs::write(dir.path().join(names::STATUS), b"{\"format_").unwrap();
        let e = format!("{:#}", d.status().unwrap_err());
        assert!(e.contains(names::STATUS) && e.contains("corrupt"), "{e}");
    }

    #[test]
    fn an_unfinished_study_has_no_summary() {
        let dir = tempfile::tempdir().unwrap();
        let e = StudyDir::new(dir.path()).summary().unwrap_err().to_string();
        assert!(e.contains("not finished"), "{e}");
    }
}
