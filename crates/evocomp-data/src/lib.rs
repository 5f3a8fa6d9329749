//! Calibration and evaluation token sets.
//!
//! Text comes from a file or a folder of `.txt` files (read in sorted order),
//! is tokenised without special tokens, and is cut into sequences. Samples
//! are drawn deterministically from a seed, and every token set and sample
//! has an id (a sha256) that names exactly which tokens it holds, so that
//! fitness results can be cached against it.
//!
//! This crate does not know the tokenizer type: the caller passes an encode
//! function and the tokenizer's fingerprint.

use chacha20::ChaCha12Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Problems with text data. Every variant names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: no text (an empty file, or a folder without .txt files)")]
    Empty { path: PathBuf },
    #[error("{path}: tokenizer failed: {message}")]
    Tokenize { path: PathBuf, message: String },
    #[error("{path}: has {have} tokens, but {need} are needed ({what})")]
    TooFew {
        path: PathBuf,
        have: usize,
        need: usize,
        what: String,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// The text files behind a path, and what the walk left out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TextFiles {
    /// Read, in this order.
    pub files: Vec<PathBuf>,
    /// Left out, each with why: links to folders, links that lead out of
    /// the tree or to something already read, `.txt` entries that are not
    /// regular files (a FIFO would block, a device never end).
    pub skipped: Vec<(PathBuf, String)>,
}

/// The text files behind `path`: the file itself, or every `.txt` file below
/// the folder, recursively, in sorted order. The walk never follows a link to
/// a folder (so `ln -s . x` is read once, not forever) and follows a link to
/// a file only where the file lies inside the tree and is not read already;
/// only regular files are read.
pub fn text_files(path: &Path) -> Result<TextFiles> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(TextFiles {
            files: vec![path.to_path_buf()],
            skipped: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err(DataError::Invalid(format!(
            "{}: neither a regular file nor a folder (a FIFO, socket or device is never read as text)",
            path.display()
        )));
    }
    let root = std::fs::canonicalize(path).map_err(io(path))?;
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let p = entry.path();
            let ty = entry.file_type().map_err(io(&p))?;
            if ty.is_dir() {
                stack.push(p);
                continue;
            }
            let is_txt = p.extension().is_some_and(|e| e == "txt");
            if ty.is_symlink() {
                let Ok(target) = std::fs::canonicalize(&p) else {
                    if is_txt {
                        skipped.push((p, "a broken or looping link".into()));
                    }
                    continue;
                };
                let target_meta = std::fs::metadata(&target).map_err(io(&p))?;
                if target_meta.is_dir() {
                    skipped.push((p, "a link to a folder (not followed)".into()));
                    continue;
                }
                if !is_txt {
                    continue;
                }
                if !target.starts_with(&root) {
                    skipped.push((
                        p,
                        format!("a link out of the tree, to {}", target.display()),
                    ));
                } else if !target_meta.is_file() {
                    skipped.push((p, "a link to something that is not a regular file".into()));
                } else {
                    found.push((p, target));
                }
            } else if !is_txt {
                continue;
            } else if ty.is_file() {
                let target = std::fs::canonicalize(&p).map_err(io(&p))?;
                found.push((p, target));
            } else {
                skipped.push((p, "not a regular file (a FIFO, socket or device)".into()));
            }
        }
    }
    found.sort();
    // A file reached twice (itself and through a link) is read once.
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for (p, target) in found {
        if seen.insert(target.clone()) {
            files.push(p);
        } else {
            skipped.push((p, format!("{} is read already", target.display())));
        }
    }
    skipped.sort();
    if files.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(TextFiles { files, skipped })
}

/// All tokens of a text source, documents concatenated in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSet {
    pub source: PathBuf,
    /// The files read, and those the walk left out (see [`text_files`]).
    #[serde(default)]
    pub files: TextFiles,
    pub tokens: Vec<u32>,
    /// sha256 of the tokenizer fingerprint and the token ids.
    pub id: String,
}

/// Tokenise the text at `path` (a file or folder). Each document is encoded on
/// its own, without special tokens; documents are joined by `separator`
/// tokens, if any.
pub fn tokenize_path(
    path: &Path,
    encode: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    tokenizer_fingerprint: &str,
    separator: &[u32],
) -> Result<TokenSet> {
    let mut tokens = Vec::new();
    let files = text_files(path)?;
    for (i, f) in files.files.iter().enumerate() {
        let bytes = std::fs::read(f).map_err(|source| DataError::Io {
            path: f.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| DataError::NotUtf8 { path: f.clone() })?;
        let ids = encode(&text).map_err(|message| DataError::Tokenize {
            path: f.clone(),
            message,
        })?;
        if i > 0 {
            tokens.extend_from_slice(separator);
        }
        tokens.extend(ids);
    }
    if tokens.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut h = Sha256::new();
    h.update(tokenizer_fingerprint.as_bytes());
    for t in &tokens {
        h.update(t.to_le_bytes());
    }
    Ok(TokenSet {
        source: path.to_path_buf(),
        files,
        tokens,
        id: hex::encode(h.finalize()),
    })
}

/// A set of equal-length token sequences with an id naming exactly them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: String,
    pub seq_len: usize,
    pub sequences: Vec<Vec<u32>>,
}

impl Sample {
    pub fn n_tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    fn from_sequences(label: &str, parent: &str, sequences: Vec<Vec<u32>>) -> Sample {
        let mut h = Sha256::new();
        h.update(label.as_bytes());
        h.update(parent.as_bytes());
        for s in &sequences {
            h.update((s.len() as u64).to_le_bytes());
            for t in s {
                h.update(t.to_le_bytes());
            }
        }
        Sample {
            id: hex::encode(h.finalize()),
            seq_len: sequences.first().map_or(0, Vec::len),
            sequences,
        }
    }
}

impl TokenSet {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The first `n_tokens` tokens cut into consecutive, non-overlapping
    /// windows of `context` tokens (the last one shorter if `context` does not
    /// divide `n_tokens`).
    pub fn windows(&self, n_tokens: usize, context: usize) -> Result<Vec<Vec<u32>>> {
        if context < 2 {
            return Err(DataError::Invalid(format!(
                "context must be at least 2 tokens, got {context}"
            )));
        }
        if n_tokens < 2 {
            return Err(DataError::Invalid(format!(
                "need at least 2 tokens, got {n_tokens}"
            )));
        }
        if self.tokens.len() < n_tokens {
            return Err(DataError::TooFew {
                path: self.source.clone(),
                have: self.tokens.len(),
                need: n_tokens,
                what: "the requested token count".into(),
            });
        }
        Ok(self.tokens[..n_tokens]
            .chunks(context)
            .filter(|w| w.len() >= 2)
            .map(<[u32]>::to_vec)
            .collect())
    }

    /// [`Self::windows`] as a [`Sample`] with an id.
    pub fn window_sample(&self, n_tokens: usize, context: usize) -> Result<Sample> {
        let w = self.windows(n_tokens, context)?;
        Ok(Sample::from_sequences(
            &format!("windows:{n_tokens}:{context}"),
            &self.id,
            w,
        ))
    }

    /// `n_seqs` distinct, non-overlapping windows of `seq_len` tokens, chosen
    /// at random from all aligned windows; the same seed gives the same sample.
    pub fn sample(&self, n_seqs: usize, seq_len: usize, seed: u64) -> Result<Sample> {
        Ok(self.sample_with_held_out(n_seqs, 0, seq_len, seed)?.0)
    }

    /// [`Self::sample`] (the same windows, the same id) and `held_out` more
    /// windows drawn after them, disjoint from them: inputs to check what was
    /// fitted on the first sample.
    pub fn sample_with_held_out(
        &self,
        n_seqs: usize,
        held_out: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<(Sample, Sample)> {
        if seq_len < 2 || n_seqs == 0 {
            return Err(DataError::Invalid(format!(
                "a sample needs sequences of at least 2 tokens and at least one sequence (got {n_seqs} x {seq_len})"
            )));
        }
        let available = self.tokens.len() / seq_len;
        let total = n_seqs.saturating_add(held_out);
        if available < total {
            let what = if held_out == 0 {
                format!("{n_seqs} sequences of {seq_len} tokens")
            } else {
                format!("{n_seqs} + {held_out} held-out sequences of {seq_len} tokens")
            };
            return Err(DataError::TooFew {
                path: self.source.clone(),
                have: self.tokens.len(),
                need: total.saturating_mul(seq_len),
                what,
            });
        }
        // ChaCha12 named (not `StdRng`): the sample is a contract of config + seed.
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let mut idx: Vec<usize> = (0..available).collect();
        // Partial Fisher-Yates: the first entries are a uniform sample, and
        // the first n_seqs do not depend on how many more are drawn.
        for i in 0..total {
            let j = rng.random_range(i..available);
            idx.swap(i, j);
        }
        let windows = |ix: &[usize]| -> Vec<Vec<u32>> {
            ix.iter()
                .map(|&w| self.tokens[w * seq_len..(w + 1) * seq_len].to_vec())
                .collect()
        };
        Ok((
            Sample::from_sequences(
                &format!("sample:{n_seqs}:{seq_len}:{seed}"),
                &self.id,
                windows(&idx[..n_seqs]),
            ),
            Sample::from_sequences(
                &format!("held-out:{held_out}:after:{n_seqs}:{seq_len}:{seed}"),
                &self.id,
                windows(&idx[n_seqs..total]),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_encode(s: &str) -> Result<Vec<u32>, String> {
        Ok(s.bytes().map(u32::from).collect())
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_walk_reads_each_file_once_and_never_follows_links_around() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("a.txt"), "a").unwrap();
        std::fs::write(d.join("sub/b.txt"), "b").unwrap();
        // Two loops (each once read 41 times, and two together hung).
        symlink(".", d.join("x")).unwrap();
        symlink("..", d.join("sub/up")).unwrap();
        // A link to a file in the tree (already read), one out of it, a
        // dangling one, and a FIFO named .txt.
        symlink(d.join("a.txt"), d.join("again.txt")).unwrap();
        symlink(outside.path().join("secret.txt"), d.join("out.txt")).unwrap();
        symlink(d.join("gone"), d.join("gone.txt")).unwrap();
        let fifo = d.join("pipe.txt");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let t = text_files(d).unwrap();
        assert_eq!(t.files, vec![d.join("a.txt"), d.join("sub/b.txt")]);
        let why: Vec<(&Path, &str)> = t
            .skipped
            .iter()
            .map(|(p, w)| (p.strip_prefix(d).unwrap(), w.as_str()))
            .collect();
        let find = |name: &str| {
            why.iter()
                .find(|(p, _)| *p == Path::new(name))
                .unwrap_or_else(|| panic!("{name} not in {why:?}"))
                .1
        };
        assert!(find("x").contains("folder"));
        assert!(find("sub/up").contains("folder"));
        assert!(find("again.txt").contains("read already"));
        assert!(find("out.txt").contains("out of the tree"));
        assert!(find("gone.txt").contains("broken"));
        assert!(find("pipe.txt").contains("not a regular file"));
        let set = tokenize_path(d, &bytes_encode, "bytes", &[]).unwrap();
        assert_eq!(set.tokens, vec![b'a' as u32, b'b' as u32]);
        // A FIFO named directly is refused without opening it (which would block).
        let e = text_files(&fifo).unwrap_err().to_string();
        assert!(e.contains("pipe.txt") && e.contains("FIFO"), "{e}");
    }

    fn set(n: usize) -> TokenSet {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "x".repeat(n)).unwrap();
        tokenize_path(&p, &bytes_encode, "bytes", &[]).unwrap()
    }

    #[test]
    fn held_out_windows_extend_the_sample_and_are_disjoint_from_it() {
        // Distinct windows, so that each can be located in the text.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        let mut x = 1u64;
        let text: String = (0..4000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + (x >> 59) as u8 % 26) as char
            })
            .collect();
        std::fs::write(&p, text).unwrap();
        let t = tokenize_path(&p, &bytes_encode, "bytes", &[]).unwrap();
        let plain = t.sample(5, 20, 3).unwrap();
        let (cal, held) = t.sample_with_held_out(5, 7, 20, 3).unwrap();
        assert_eq!(
            cal, plain,
            "the calibration sample (and its id) is unchanged"
        );
        assert_eq!(held.sequences.len(), 7);
        assert_ne!(held.id, cal.id);
        // Disjoint windows: compare positions through the set's tokens.
        let start = |s: &Vec<u32>| {
            (0..t.tokens.len() / 20)
                .find(|w| t.tokens[w * 20..(w + 1) * 20] == s[..])
                .unwrap()
        };
        let a: std::collections::HashSet<usize> = cal.sequences.iter().map(start).collect();
        assert!(held.sequences.iter().all(|s| !a.contains(&start(s))));
        assert!(t.sample_with_held_out(150, 51, 20, 3).is_err());
    }

    #[test]
    fn folder_is_read_in_sorted_order_with_separators() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "B").unwrap();
        std::fs::write(dir.path().join("a.txt"), "A").unwrap();
        std::fs::write(dir.path().join("sub/c.txt"), "C").unwrap();
        std::fs::write(dir.path().join("ignored.json"), "J").unwrap();
        let t = tokenize_path(dir.path(), &bytes_encode, "bytes", &[0]).unwrap();
        assert_eq!(t.tokens, [65, 0, 66, 0, 67]);
    }

    #[test]
    fn windows_are_consecutive_and_checked() {
        let t = set(10);
        let w = t.windows(10, 4).unwrap();
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let e = t.windows(11, 4).unwrap_err().to_string();
        assert!(
            e.contains("a.txt") && e.contains("10 tokens") && e.contains("11"),
            "{e}"
        );
    }

    #[test]
    fn samples_are_deterministic_distinct_and_identified() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        let text: String = (0..4000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        std::fs::write(&p, &text).unwrap();
        let enc = |s: &str| -> Result<Vec<u32>, String> {
            Ok(s.bytes()
                .enumerate()
                .map(|(i, b)| b as u32 + 1000 * i as u32)
                .collect())
        };
        let t = tokenize_path(&p, &enc, "pos", &[]).unwrap();
        let a = t.sample(8, 64, 7).unwrap();
        let b = t.sample(8, 64, 7).unwrap();
        let c = t.sample(8, 64, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.id, c.id);
        assert_ne!(a.sequences, c.sequences);
        let mut starts: Vec<u32> = a.sequences.iter().map(|s| s[0]).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 8, "windows are distinct");
        assert!(t.sample(100, 64, 0).is_err());
    }

    #[test]
    fn bad_input_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.txt");
        std::fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
        let e = tokenize_path(&p, &bytes_encode, "b", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bin.txt") && e.contains("UTF-8"), "{e}");
        let e = tokenize_path(&dir.path().join("missing.txt"), &bytes_encode, "b", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.txt"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = text_files(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no text"), "{e}");
    }
}
