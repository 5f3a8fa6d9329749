//! Experiment configs in two stages: a raw RON spec exactly as written
//! (unknown fields rejected with file, line and column), then a validated,
//! resolved value the rest of evocomp uses.
//!
//! Relative paths in a config are relative to the current working directory
//! (run evocomp from the repository root).

use evocomp_compress::{ObsOptions, QuantMethod, QuantSpec, SparsityMethod};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A config that cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{path}:{line}:{col}: {field}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        col: usize,
        field: String,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Stage 1: the raw spec, as written.
// ---------------------------------------------------------------------------

/// `evocomp db build CONFIG.ron`: which variants to build, from what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// A .gguf file or an HF folder.
    pub model: PathBuf,
    /// The database folder.
    pub output: PathBuf,
    pub calibration: CalibrationSpec,
    pub compression: CompressionSpec,
}

/// Calibration tokens: `sequences` windows of `seq_len` tokens drawn from
/// `text` with `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// A text file or a folder of .txt files.
    pub text: PathBuf,
    pub sequences: usize,
    pub seq_len: usize,
    #[serde(default)]
    pub seed: u64,
    /// Sequences per forward pass while capturing inputs.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    4
}

/// One compression kind and its method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum CompressionSpec {
    /// Unstructured sparsity of every linear layer, on EvoPress's grid of
    /// equal absolute steps around `target`.
    Sparsity {
        method: SparsityMethod,
        target: f64,
        /// One level step, as a fraction of the smallest unit's weights.
        #[serde(default = "default_step")]
        step_fraction: f64,
        /// No level of any unit goes above this sparsity.
        #[serde(default = "default_max_sparsity")]
        max_sparsity: f64,
        /// At most this many levels either side of the target.
        #[serde(default = "default_max_levels")]
        max_levels: usize,
        #[serde(default = "default_block")]
        block_size: usize,
        #[serde(default = "default_damp")]
        damp: f64,
    },
    /// Weight quantization of every linear layer; one level per bit-width.
    Quantization {
        method: QuantMethod,
        bits: Vec<u8>,
        #[serde(default = "default_group")]
        group_size: usize,
        #[serde(default)]
        symmetric: bool,
        #[serde(default)]
        act_order: bool,
        #[serde(default = "default_block")]
        block_size: usize,
        #[serde(default = "default_damp")]
        damp: f64,
    },
    /// Dropping attention / MLP sub-blocks (or whole blocks): kept or dropped.
    Depth {
        #[serde(default)]
        unit: DepthUnit,
    },
    /// Tokens each layer's KV cache keeps; one level per budget.
    KvBudget {
        budgets: Vec<usize>,
        eviction: EvictionSpec,
        /// Tokens per prefill chunk during evaluation.
        #[serde(default = "default_chunk")]
        chunk: usize,
    },
    /// Bits of each layer's cached keys and values (two units per layer).
    KvBits {
        bits: Vec<u8>,
        #[serde(default = "default_key_group")]
        keys: KvGroupSpec,
        #[serde(default)]
        values: KvGroupSpec,
        /// Channels per group for per-token grouping.
        #[serde(default = "default_kv_group")]
        group_size: usize,
        #[serde(default = "default_chunk")]
        chunk: usize,
    },
}

/// KV-cache eviction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum EvictionSpec {
    /// StreamingLLM: `sinks` first tokens plus the most recent ones.
    Streaming { sinks: usize },
    /// SnapKV: the most-attended tokens from the last `window` queries, plus `recent` tokens.
    SnapKv { window: usize, recent: usize },
}

/// How cached keys or values are grouped for quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KvGroupSpec {
    /// Groups of channels within each token.
    #[default]
    PerToken,
    /// Each channel over a chunk's tokens.
    PerChannel,
}

fn default_chunk() -> usize {
    64
}
fn default_key_group() -> KvGroupSpec {
    KvGroupSpec::PerChannel
}
fn default_kv_group() -> usize {
    32
}

fn default_step() -> f64 {
    0.05
}
fn default_max_sparsity() -> f64 {
    0.95
}
fn default_max_levels() -> usize {
    4
}
fn default_block() -> usize {
    128
}
fn default_damp() -> f64 {
    0.01
}
fn default_group() -> usize {
    128
}

/// What one depth unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DepthUnit {
    /// Attention and MLP of each block are separate units.
    #[default]
    SubBlock,
    /// Each whole block is one unit.
    Block,
}

// ---------------------------------------------------------------------------
// Stage 2: validated and resolved.
// ---------------------------------------------------------------------------

/// A validated compression kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Compression {
    Sparsity {
        method: SparsityMethod,
        target: f64,
        step_fraction: f64,
        max_sparsity: f64,
        max_levels: usize,
        obs: ObsOptions,
    },
    Quantization {
        method: QuantMethod,
        /// Ascending, distinct; level i is `bits[i]`.
        bits: Vec<u8>,
        /// The grid, with `bits` left at the first level's.
        spec: QuantSpec,
        obs: ObsOptions,
    },
    Depth {
        unit: DepthUnit,
    },
    KvBudget {
        /// Descending: level 0 keeps the most tokens.
        budgets: Vec<usize>,
        eviction: EvictionSpec,
        chunk: usize,
    },
    KvBits {
        /// Descending: level 0 is the most bits.
        bits: Vec<u8>,
        keys: KvGroupSpec,
        values: KvGroupSpec,
        group_size: usize,
        chunk: usize,
    },
}

impl Compression {
    /// Whether building this kind uses calibration inputs: every weight
    /// method does, to record each level's reconstruction error ‖WX − ŴX‖²
    /// (magnitude and RTN use them for nothing else).
    pub fn needs_calibration(&self) -> bool {
        match self {
            Compression::Sparsity { .. } | Compression::Quantization { .. } => true,
            Compression::Depth { .. }
            | Compression::KvBudget { .. }
            | Compression::KvBits { .. } => false,
        }
    }
}

/// A validated database build.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// The config file it came from.
    pub source: PathBuf,
    pub model: PathBuf,
    pub output: PathBuf,
    pub calibration: CalibrationSpec,
    pub compression: Compression,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse RON text as `T`, with errors at file:line:col.
pub fn parse_ron<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    // implicit_some: an optional field is written as its value (`Some(..)` also works).
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(text)
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        })
}

/// Where `field` (a dotted path such as `strategy.generations`) is written
/// in RON `text`: each part is searched as `name:` after the previous one,
/// outside comments. 1-based line and column.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    // Blank out comments so that field names inside them are not found.
    let mut clean = String::with_capacity(text.len());
    for line in text.lines() {
        match line.find("//") {
            Some(i) => {
                clean.push_str(&line[..i]);
                clean.push_str(&" ".repeat(line.len() - i));
            }
            None => clean.push_str(line),
        }
        clean.push('\n');
    }
    let mut from = 0;
    let mut at = None;
    for part in field.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        let mut found = None;
        let mut search = from;
        while let Some(i) = clean[search..].find(part) {
            let start = search + i;
            let end = start + part.len();
            let before_ok = start == 0
                || !clean.as_bytes()[start - 1].is_ascii_alphanumeric()
                    && clean.as_bytes()[start - 1] != b'_';
            let rest = clean[end..].trim_start();
            if before_ok && (rest.starts_with(':') || rest.starts_with('(')) {
                found = Some(start);
                break;
            }
            search = end;
        }
        let start = found?;
        at = Some(start);
        from = start + part.len();
    }
    let at = at?;
    let line = clean[..at].matches('\n').count() + 1;
    let col = at - clean[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

struct Checker<'a> {
    path: &'a Path,
    text: Option<&'a str>,
}

impl Checker<'_> {
    fn fail<T>(&self, field: &str, message: impl Into<String>) -> Result<T> {
        if let Some((line, col)) = self.text.and_then(|t| locate(t, field)) {
            return Err(ConfigError::At {
                path: self.path.to_path_buf(),
                line,
                col,
                field: field.into(),
                message: message.into(),
            });
        }
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        })
    }

    fn ensure(&self, ok: bool, field: &str, message: impl Into<String>) -> Result<()> {
        if ok {
            Ok(())
        } else {
            self.fail(field, message)
        }
    }

    fn exists(&self, p: &Path, field: &str) -> Result<()> {
        self.ensure(p.exists(), field, format!("{} does not exist", p.display()))
    }
}

impl DatabaseSpec {
    /// Validate and resolve.
    pub fn resolve(self, path: &Path) -> Result<DatabaseConfig> {
        self.resolve_in(path, None)
    }

    fn resolve_in(self, path: &Path, text: Option<&str>) -> Result<DatabaseConfig> {
        let c = Checker { path, text };
        c.exists(&self.model, "model")?;
        c.exists(&self.calibration.text, "calibration.text")?;
        c.ensure(
            self.calibration.sequences > 0,
            "calibration.sequences",
            "must be at least 1",
        )?;
        c.ensure(
            self.calibration.seq_len >= 2,
            "calibration.seq_len",
            "must be at least 2",
        )?;
        c.ensure(
            self.calibration.batch_size > 0,
            "calibration.batch_size",
            "must be at least 1",
        )?;
        c.ensure(
            !self.output.as_os_str().is_empty(),
            "output",
            "must name a folder",
        )?;
        let obs = |block_size: usize, damp: f64| -> Result<ObsOptions> {
            c.ensure(
                block_size > 0,
                "compression.block_size",
                "must be at least 1",
            )?;
            c.ensure(
                damp.is_finite() && damp >= 0.0,
                "compression.damp",
                format!("must be a non-negative number, got {damp}"),
            )?;
            Ok(ObsOptions { block_size, damp })
        };
        let compression = match self.compression {
            CompressionSpec::Sparsity {
                method,
                target,
                step_fraction,
                max_sparsity,
                max_levels,
                block_size,
                damp,
            } => {
                c.ensure(
                    (0.0..1.0).contains(&target),
                    "compression.target",
                    format!("must be in [0, 1), got {target}"),
                )?;
                c.ensure(
                    step_fraction > 0.0 && step_fraction < 1.0,
                    "compression.step_fraction",
                    format!("must be in (0, 1), got {step_fraction}"),
                )?;
                c.ensure(
                    max_sparsity > target && max_sparsity <= 1.0,
                    "compression.max_sparsity",
                    format!("must be in (target, 1], got {max_sparsity}"),
                )?;
                Compression::Sparsity {
                    method,
                    target,
                    step_fraction,
                    max_sparsity,
                    max_levels,
                    obs: obs(block_size, damp)?,
                }
            }
            CompressionSpec::Quantization {
                method,
                mut bits,
                group_size,
                symmetric,
                act_order,
                block_size,
                damp,
            } => {
                c.ensure(
                    !bits.is_empty(),
                    "compression.bits",
                    "needs at least one bit-width",
                )?;
                bits.sort_unstable();
                bits.dedup();
                for &b in &bits {
                    c.ensure(
                        (2..=8).contains(&b),
                        "compression.bits",
                        format!("bit-widths must be in 2..=8, got {b}"),
                    )?;
                }
                c.ensure(
                    !(act_order && method == QuantMethod::Rtn),
                    "compression.act_order",
                    "act-order only applies to GPTQ",
                )?;
                Compression::Quantization {
                    method,
                    spec: QuantSpec {
                        bits: bits[0],
                        group_size,
                        symmetric,
                        act_order,
                    },
                    bits,
                    obs: obs(block_size, damp)?,
                }
            }
            CompressionSpec::Depth { unit } => Compression::Depth { unit },
            CompressionSpec::KvBudget {
                mut budgets,
                eviction,
                chunk,
            } => {
                c.ensure(
                    !budgets.is_empty(),
                    "compression.budgets",
                    "needs at least one budget",
                )?;
                c.ensure(chunk > 0, "compression.chunk", "must be at least 1")?;
                budgets.sort_unstable_by(|a, b| b.cmp(a));
                budgets.dedup();
                let smallest = *budgets.last().expect("non-empty");
                c.ensure(
                    smallest > 0,
                    "compression.budgets",
                    "a budget must keep at least 1 token",
                )?;
                match eviction {
                    EvictionSpec::Streaming { sinks } => c.ensure(
                        sinks < smallest,
                        "compression.eviction.sinks",
                        format!("{sinks} sink tokens leave no room for recent ones in a budget of {smallest}"),
                    )?,
                    EvictionSpec::SnapKv { window, recent } => {
                        c.ensure(window > 0, "compression.eviction.window", "must be at least 1")?;
                        c.ensure(
                            recent <= smallest,
                            "compression.eviction.recent",
                            format!("{recent} recent tokens exceed the smallest budget {smallest}"),
                        )?;
                    }
                }
                Compression::KvBudget {
                    budgets,
                    eviction,
                    chunk,
                }
            }
            CompressionSpec::KvBits {
                mut bits,
                keys,
                values,
                group_size,
                chunk,
            } => {
                c.ensure(
                    !bits.is_empty(),
                    "compression.bits",
                    "needs at least one bit-width",
                )?;
                c.ensure(chunk > 0, "compression.chunk", "must be at least 1")?;
                c.ensure(
                    group_size > 0,
                    "compression.group_size",
                    "must be at least 1",
                )?;
                bits.sort_unstable_by(|a, b| b.cmp(a));
                bits.dedup();
                for &b in &bits {
                    c.ensure(
                        (1..=16).contains(&b),
                        "compression.bits",
                        format!("KV bit-widths must be in 1..=16, got {b}"),
                    )?;
                }
                Compression::KvBits {
                    bits,
                    keys,
                    values,
                    group_size,
                    chunk,
                }
            }
        };
        Ok(DatabaseConfig {
            source: path.to_path_buf(),
            model: self.model,
            output: self.output,
            calibration: self.calibration,
            compression,
        })
    }
}

/// Read, parse and validate a database config.
pub fn load_database_config(path: &Path) -> Result<DatabaseConfig> {
    let text = read(path)?;
    let spec: DatabaseSpec = parse_ron(path, &text)?;
    spec.resolve_in(path, Some(&text))
}

mod experiment;
pub use experiment::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn good(dir: &Path) -> String {
        let model = write(dir, "m.gguf", "x");
        let text = write(dir, "t.txt", "hello");
        format!(
            r#"DatabaseSpec(
    model: "{}",
    output: "{}/db",
    calibration: (text: "{}", sequences: 8, seq_len: 128, seed: 3),
    compression: Sparsity(method: SparseGpt, target: 0.5),
)"#,
            model.display(),
            dir.display(),
            text.display()
        )
    }

    #[test]
    fn a_good_config_resolves_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "db.ron", &good(dir.path()));
        let c = load_database_config(&p).unwrap();
        assert_eq!(c.calibration.batch_size, 4);
        match c.compression {
            Compression::Sparsity {
                method,
                obs,
                max_levels,
                ..
            } => {
                assert_eq!(method, SparsityMethod::SparseGpt);
                assert_eq!(obs, ObsOptions::default());
                assert_eq!(max_levels, 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let text = good(dir.path()).replace("seed: 3)", "seed: 3, sede: 4)");
        let p = write(dir.path(), "typo.ron", &text);
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(e.contains("typo.ron:4:"), "{e}");
        assert!(e.contains("sede"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        for (from, to, field) in [
            ("target: 0.5", "target: 1.5", "compression.target"),
            ("sequences: 8", "sequences: 0", "calibration.sequences"),
            ("m.gguf", "missing.gguf", "model"),
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "Quantization(method: Gptq, bits: [3, 9])",
                "compression.bits",
            ),
        ] {
            let text = good(dir.path()).replace(from, to);
            let p = write(dir.path(), "bad.ron", &text);
            let e = load_database_config(&p).unwrap_err().to_string();
            assert!(e.contains("bad.ron") && e.contains(field), "{to}: {e}");
        }
        let p = write(dir.path(), "broken.ron", "DatabaseSpec(model: ");
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:1:", p.display())), "{e}");
    }
}
