//! The study store: the only crate that uses sled.
//!
//! It knows no file names: the study folder's owner (`evocomp-study`)
//! passes the database and pid-file paths. A study's sled database holds
//! - `meta`: the store format version and the resolved experiment;
//! - `trials`: the journal of every evaluation (genome, cost, fitness per
//!   stage, time, worker), keyed by trial number;
//! - `fitness`: fitness by [`CacheKey`] (model, database manifest, fitness
//!   spec, token sample, genome), so nothing is evaluated twice;
//! - `state`: the strategy checkpoint.
//!
//! [`Study::commit`] writes trials, their fitness and the checkpoint that
//! covers them in one sled transaction and flushes it: after a crash the
//! store holds all of a commit or none of it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::{Path, PathBuf};

/// The store layout version; a study of another version is refused.
pub const STORE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: study is in use by pid {pid}")]
    InUse { path: PathBuf, pid: String },
    #[error("{path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{path}: the study store has format version {found}, this evocomp uses {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: no study here")]
    Missing { path: PathBuf },
    #[error("{path}: the store failed: {message} (is the disk full?)")]
    Io { path: PathBuf, message: String },
    #[error("{path}: corrupt record {key}: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The identity of one fitness value: sha256 over everything it depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub String);

impl CacheKey {
    pub fn new(
        model: &str,
        manifest: &str,
        fitness_spec: &str,
        sample: &str,
        genome: &[i64],
    ) -> Self {
        let mut h = Sha256::new();
        for part in [model, manifest, fitness_spec, sample] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update((genome.len() as u64).to_le_bytes());
        for g in genome {
            h.update(g.to_le_bytes());
        }
        Self(hex::encode(h.finalize()))
    }
}

/// One evaluation in the journal. The journal is append-only: `number`
/// counts every entry ever written, so an evaluation done twice would show
/// as two entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub number: u64,
    /// The strategy step (ask/tell round) it was asked in.
    pub step: u64,
    pub genome: Vec<i64>,
    pub cost: u64,
    /// A measurement (greedy's probes), not a candidate.
    #[serde(default)]
    pub probe: bool,
    /// Token sample id it was scored on.
    pub sample: String,
    /// Tokens of that sample.
    #[serde(default)]
    pub tokens: usize,
    pub fitness: f64,
    /// Seconds the evaluation took (0 for a cache hit).
    pub seconds: f64,
    pub worker: String,
    /// Served from the fitness cache.
    pub cached: bool,
}

/// Everything one step of a study writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub trials: Vec<Trial>,
    pub fitness: Vec<(CacheKey, f64)>,
    /// The strategy checkpoint after these trials.
    pub checkpoint: Option<Vec<u8>>,
}

/// An open study; the process holds it exclusively.
pub struct Study {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    trials: sled::Tree,
    fitness: sled::Tree,
    state: sled::Tree,
    pid_file: PathBuf,
}

impl std::fmt::Debug for Study {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Study").field("path", &self.path).finish()
    }
}

fn io(path: &Path) -> impl Fn(sled::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Study {
    /// Open the sled database at `db_path` (created when `create` is set),
    /// held exclusively by this process, whose id goes in `pid_file`.
    pub fn open(db_path: &Path, pid_file: &Path, create: bool) -> Result<Self> {
        let dir = db_path.parent().unwrap_or(Path::new("."));
        if !create && !db_path.exists() {
            return Err(StoreError::Missing {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let pid_file = pid_file.to_path_buf();
        let locked = |e: &sled::Error| {
            matches!(e, sled::Error::Io(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock"))
        };
        let open = || {
            sled::Config::new()
                .path(db_path)
                .mode(sled::Mode::HighThroughput)
                .open()
        };
        // A store this process has just closed can stay locked for a moment,
        // until sled's flusher thread has let go of it: then wait up to a
        // second before calling it in use (another process is refused at once).
        let ours = || {
            std::fs::read_to_string(&pid_file)
                .is_ok_and(|p| p.trim() == std::process::id().to_string())
        };
        let mut opened = open();
        for _ in 0..20 {
            match &opened {
                Err(e) if locked(e) && ours() => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    opened = open();
                }
                _ => break,
            }
        }
        let db = match opened {
            Ok(db) => db,
            Err(e) if locked(&e) => {
                let pid = std::fs::read_to_string(&pid_file).unwrap_or_else(|_| "unknown".into());
                return Err(StoreError::InUse {
                    path: dir.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
            Err(e) => {
                let message = match e {
                    sled::Error::Corruption { .. } => format!(
                        "the study store is damaged ({e}); move it away and `evocomp resume` \
                         the study: it recomputes from the shared fitness cache"
                    ),
                    e => e.to_string(),
                };
                return Err(StoreError::Open {
                    path: db_path.to_path_buf(),
                    message,
                });
            }
        };
        let _ = std::fs::write(&pid_file, std::process::id().to_string());
        let t = |name: &str| db.open_tree(name).map_err(io(dir));
        let s = Study {
            meta: t("meta")?,
            trials: t("trials")?,
            fitness: t("fitness")?,
            state: t("state")?,
            db,
            path: dir.to_path_buf(),
            pid_file,
        };
        match s.meta.get("version").map_err(io(dir))? {
            None => {
                s.meta
                    .insert("version", &STORE_VERSION.to_le_bytes())
                    .map_err(io(dir))?;
                s.db.flush().map_err(io(dir))?;
            }
            Some(v) => {
                let found = u32::from_le_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
                if found != STORE_VERSION {
                    return Err(StoreError::Version {
                        path: dir.to_path_buf(),
                        found,
                        expected: STORE_VERSION,
                    });
                }
            }
        }
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cached fitness.
    pub fn cached(&self, key: &CacheKey) -> Result<Option<f64>> {
        Ok(self
            .fitness
            .get(key.0.as_bytes())
            .map_err(io(&self.path))?
            .map(|v| f64::from_le_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
    }

    /// Write trials, fitness values and the checkpoint in one transaction, durably.
    pub fn commit(&self, c: &Commit) -> Result<()> {
        let trials: Vec<(Vec<u8>, Vec<u8>)> = c
            .trials
            .iter()
            .map(|t| {
                (
                    t.number.to_be_bytes().to_vec(),
                    serde_json::to_vec(t).expect("trial serialises"),
                )
            })
            .collect();
        let r: Result<(), TransactionError<()>> = (&self.trials, &self.fitness, &self.state)
            .transaction(|(tt, ft, st)| {
                for (k, v) in &trials {
                    tt.insert(k.as_slice(), v.as_slice())?;
                }
                for (k, f) in &c.fitness {
                    ft.insert(k.0.as_bytes(), &f.to_le_bytes())?;
                }
                if let Some(cp) = &c.checkpoint {
                    st.insert("checkpoint", cp.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        r.map_err(|e| StoreError::Io {
            path: self.path.clone(),
            message: format!("{e:?}"),
        })?;
        self.db.flush().map_err(io(&self.path))?;
        Ok(())
    }

    /// The latest strategy checkpoint.
    pub fn checkpoint(&self) -> Result<Option<Vec<u8>>> {
        Ok(self
            .state
            .get("checkpoint")
            .map_err(io(&self.path))?
            .map(|v| v.to_vec()))
    }

    /// Every trial, in order.
    pub fn trials(&self) -> Result<Vec<Trial>> {
        self.trials
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(io(&self.path))?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    key: format!("trial {k:?}"),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub fn n_trials(&self) -> usize {
        self.trials.len()
    }

    /// The number the next journal entry gets.
    pub fn next_trial_number(&self) -> Result<u64> {
        Ok(self
            .trials
            .last()
            .map_err(io(&self.path))?
            .map_or(0, |(k, _)| {
                u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1
            }))
    }

    /// The journal entries of `step`, newest last (scanning back from the end).
    pub fn trials_of_step(&self, step: u64) -> Result<Vec<Trial>> {
        let mut out = Vec::new();
        for r in self.trials.iter().rev() {
            let (k, v) = r.map_err(io(&self.path))?;
            let t: Trial = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                key: format!("trial {k:?}"),
                message: e.to_string(),
            })?;
            if t.step < step {
                break;
            }
            if t.step == step {
                out.push(t);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Store a named document (the resolved experiment, for example).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value).map_err(io(&self.path))?;
        self.db.flush().map_err(io(&self.path))?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .meta
            .get(key)
            .map_err(io(&self.path))?
            .map(|v| v.to_vec()))
    }
}

/// Write `bytes` to `path` atomically: a temporary file with a random name
/// in the same folder (`.name.XXXXXX.tmp`, so two writers never share one),
/// fsync, rename over `path`, then fsync the folder so the rename itself
/// survives a power cut. A kill leaves the old file or the new one, never
/// half; a failure removes the temporary file. The error names the file that
/// failed.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    use std::io::Write;
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| (p, e)
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(at(dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(at(tmp.path()))?;
    // On failure the temporary file is dropped, which removes it.
    tmp.persist(path)
        .map_err(|e| (path.to_path_buf(), e.error))?;
    sync_dir(dir).map_err(at(dir))
}

/// fsync a folder (its entries: a rename or a new file in it). Unix only;
/// elsewhere a no-op.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A fitness cache shared by every study under one results folder: a
/// candidate scored by an earlier (or a concurrent) study on the same sample
/// is never scored again. Same keys as a study's own cache.
///
/// sled lets one process at a time open a database, so the cache is opened
/// for each batch of reads or writes and closed right after; a process that
/// finds it held by another waits for it (up to [`SharedCache::WAIT`]).
pub struct SharedCache {
    path: PathBuf,
}

impl SharedCache {
    /// The longest wait for another process to close the cache.
    pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let c = Self {
            path: dir.to_path_buf(),
        };
        // Fail now, not mid-study, if it cannot be opened at all.
        c.with_db(|_| Ok(()))?;
        Ok(c)
    }

    /// Run `f` on the opened cache, waiting while another process holds it.
    fn with_db<T>(&self, f: impl FnOnce(&sled::Tree) -> Result<T>) -> Result<T> {
        let t0 = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        let db = loop {
            match sled::Config::new()
                .path(self.path.join("cache.sled"))
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    if t0.elapsed() > Self::WAIT {
                        return Err(StoreError::InUse {
                            path: self.path.clone(),
                            pid: "another evocomp (for over a minute)".into(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: self.path.clone(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let tree = db.open_tree("fitness").map_err(io(&self.path))?;
        let out = f(&tree)?;
        db.flush().map_err(io(&self.path))?;
        Ok(out)
    }

    pub fn get(&self, key: &CacheKey) -> Result<Option<f64>> {
        Ok(self.get_many(std::slice::from_ref(key))?.remove(0))
    }

    /// Look up many keys with one opening of the cache.
    pub fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<f64>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_db(|t| {
            keys.iter()
                .map(|k| {
                    Ok(t.get(k.0.as_bytes())
                        .map_err(io(&self.path))?
                        .map(|v| f64::from_le_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
                })
                .collect()
        })
    }

    pub fn put(&self, entries: &[(CacheKey, f64)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.with_db(|t| {
            for (k, f) in entries {
                t.insert(k.0.as_bytes(), &f.to_le_bytes())
                    .map_err(io(&self.path))?;
            }
            Ok(())
        })
    }
}

impl Drop for Study {
    fn drop(&mut self) {
        let _ = self.db.flush();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(n: u64) -> Trial {
        Trial {
            number: n,
            step: n / 2,
            genome: vec![n as i64, 0, -1],
            cost: 100 + n,
            probe: false,
            sample: "s".into(),
            tokens: 8,
            fitness: 0.1 * n as f64 + 1.0 / 3.0,
            seconds: 0.5,
            worker: "cpu-0".into(),
            cached: false,
        }
    }

    #[test]
    fn commits_survive_reopening_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("m", "db", "kl", "sample", &[1, 2, 3]);
        {
            let s =
                Study::open(&dir.path().join("s.sled"), &dir.path().join("s.pid"), true).unwrap();
            assert!(s.checkpoint().unwrap().is_none());
            s.commit(&Commit {
                trials: vec![trial(0), trial(1)],
                fitness: vec![(key.clone(), 1.0 / 3.0)],
                checkpoint: Some(b"state-1".to_vec()),
            })
            .unwrap();
            s.put_meta("experiment", b"{}").unwrap();
        }
        let s = Study::open(&dir.path().join("s.sled"), &dir.path().join("s.pid"), false).unwrap();
        assert_eq!(s.trials().unwrap(), vec![trial(0), trial(1)]);
        assert_eq!(s.next_trial_number().unwrap(), 2);
        assert_eq!(s.trials_of_step(0).unwrap(), vec![trial(0), trial(1)]);
        assert!(s.trials_of_step(1).unwrap().is_empty());
        assert_eq!(s.cached(&key).unwrap(), Some(1.0 / 3.0));
        assert_eq!(s.checkpoint().unwrap().unwrap(), b"state-1");
        assert_eq!(s.meta("experiment").unwrap().unwrap(), b"{}");
        assert!(
            s.cached(&CacheKey::new("m", "db", "kl", "sample", &[1, 2, 4]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn cache_keys_cover_every_input() {
        let base = CacheKey::new("m", "d", "f", "s", &[1, 2]);
        for other in [
            CacheKey::new("m2", "d", "f", "s", &[1, 2]),
            CacheKey::new("m", "d2", "f", "s", &[1, 2]),
            CacheKey::new("m", "d", "f2", "s", &[1, 2]),
            CacheKey::new("m", "d", "f", "s2", &[1, 2]),
            CacheKey::new("m", "d", "f", "s", &[1, 3]),
            CacheKey::new("md", "", "f", "s", &[1, 2]),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base, CacheKey::new("m", "d", "f", "s", &[1, 2]));
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // The rename fails: a non-empty folder stands where the file goes.
        let blocked = dir.path().join("blocked.json");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let (at, _) = write_atomic(&blocked, b"x").unwrap_err();
        assert_eq!(at, blocked);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_shared_cache_serves_concurrent_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = SharedCache::open(dir.path()).unwrap();
        let b = SharedCache::open(dir.path()).unwrap();
        let keys: Vec<CacheKey> = (0..4)
            .map(|i| CacheKey::new("m", "d", "f", "s", &[i]))
            .collect();
        // Writers in parallel threads (each opening and closing the cache)
        // all land, and both handles read everything.
        std::thread::scope(|sc| {
            for (i, k) in keys.iter().enumerate() {
                let c = if i % 2 == 0 { &a } else { &b };
                sc.spawn(move || c.put(&[(k.clone(), i as f64 + 0.5)]).unwrap());
            }
        });
        let want: Vec<Option<f64>> = (0..4).map(|i| Some(i as f64 + 0.5)).collect();
        assert_eq!(a.get_many(&keys).unwrap(), want);
        assert_eq!(b.get(&keys[3]).unwrap(), Some(3.5));
        assert_eq!(
            a.get(&CacheKey::new("m", "d", "f", "s", &[9])).unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_study_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Study::open(
            &dir.path().join("nope/s.sled"),
            &dir.path().join("nope/s.pid"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no study"), "{e}");
    }
}
