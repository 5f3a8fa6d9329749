//! `evocomp db build CONFIG.ron`: the raw database spec as written, and its
//! resolution into the database's own build description
//! ([`evocomp_db::Compression`]); the config's syntax is this crate's, the
//! stored format is the database's.

use crate::ron::{Checker, Result, parse_ron, read};
use evocomp_compress::{ObsConfig, QuantConfig, QuantMethod, SparsityMethod};
use evocomp_db::{Compression, DepthUnit, Eviction, KvGroup, Propagation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// More windows, disjoint from the calibration ones, on which each
    /// unit's error is measured as well (0: none).
    #[serde(default = "default_held_out")]
    pub held_out: usize,
    /// Sequential calibration: a block's inputs come from the earlier blocks
    /// compressed at `level`, and inside a block q/k/v, then o, then
    /// gate/up, then down are fitted in turn. False: every unit is fitted to
    /// the uncompressed model's inputs.
    #[serde(default = "default_sequential")]
    pub sequential: bool,
    /// With `sequential`: fit a block's input groups in turn (true, GPTQ's
    /// true-sequential), or all on the block's inputs through the block as
    /// it is uncompressed (false, LLM Compressor's pipeline).
    #[serde(default = "default_sequential")]
    pub true_sequential: bool,
    /// The level calibration inputs propagate through; by default the
    /// target for sparsity (level 0) and the middle bit-width for quantization.
    #[serde(default)]
    pub level: Option<i64>,
}

fn default_held_out() -> usize {
    8
}
fn default_sequential() -> bool {
    true
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
        /// At most this many levels either side of the target; each unit
        /// takes those that keep it between 0% and `max_sparsity` (with the
        /// defaults on SmolLM2: k/v projections from dense to 95%, the MLP
        /// matrices ±8% around the target).
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
        /// GPTQ: act-order with static groups; on by default for GPTQ.
        #[serde(default)]
        act_order: Option<bool>,
        #[serde(default = "default_block")]
        block_size: usize,
        #[serde(default = "default_damp")]
        damp: f64,
    },
    /// llama.cpp's tensor types (`[Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0]`):
    /// one unit per quantizable tensor (every linear layer, the token
    /// embedding, an untied output), quantized exactly as llama-quantize
    /// does; a type whose blocks do not divide a tensor's rows becomes
    /// llama.cpp's fallback for it (Q4_K becomes Q5_0 on rows of 576).
    GgufTypes {
        types: Vec<evocomp_gguf::GgmlType>,
        /// Weight the quantizers by each input's mean square on the
        /// calibration text (llama.cpp's importance matrix).
        #[serde(default = "default_imatrix")]
        imatrix: bool,
        /// Read the importance matrix from this file (llama-imatrix's GGUF
        /// or legacy `.dat`) instead of computing it; needs `imatrix: true`.
        #[serde(default)]
        imatrix_file: Option<PathBuf>,
    },
    /// Dropping attention / MLP sub-blocks (or whole blocks): kept or dropped.
    Depth {
        #[serde(default)]
        unit: DepthUnit,
    },
    /// Tokens each layer's KV cache keeps; one level per budget.
    KvBudget {
        budgets: Vec<usize>,
        /// Fine levels: with a step, `budgets: [lo, hi]` becomes every budget
        /// lo, lo + step, ... up to hi (hi included), so a search such as
        /// EvolKV's CMA-ES can move a layer by a few tokens.
        #[serde(default)]
        step: Option<usize>,
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
    /// SnapKV as published: compress once after the first `prompt` tokens of
    /// each sequence, keeping the `window` last prompt tokens and the prompt
    /// tokens they attend to most (scores average-pooled over `kernel`
    /// tokens); later tokens are appended.
    SnapKv {
        window: usize,
        #[serde(default = "default_kernel")]
        kernel: usize,
        prompt: usize,
    },
    /// Progressive SnapKV-style eviction after every prefill chunk: the
    /// most-attended tokens from the chunk's last `window` queries, plus
    /// `recent` tokens.
    ChunkedSnapKv { window: usize, recent: usize },
}

fn default_imatrix() -> bool {
    true
}

fn default_kernel() -> usize {
    7
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

impl From<KvGroupSpec> for KvGroup {
    fn from(g: KvGroupSpec) -> Self {
        match g {
            KvGroupSpec::PerToken => KvGroup::PerToken,
            KvGroupSpec::PerChannel => KvGroup::PerChannel,
        }
    }
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
    13
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

impl DatabaseSpec {
    /// Validate and resolve.
    pub fn resolve(self, path: &Path) -> Result<DatabaseConfig> {
        self.resolve_in(path, None)
    }

    fn resolve_in(self, path: &Path, text: Option<&str>) -> Result<DatabaseConfig> {
        let c = Checker { path, text };
        c.exists(&self.model, "model")?;
        c.ensure(
            !self.output.as_os_str().is_empty(),
            "output",
            "must name a folder",
        )?;
        self.calibration.check(&c)?;
        let compression = self.compression.resolve(&c, &self.calibration)?;
        Ok(DatabaseConfig {
            source: path.to_path_buf(),
            model: self.model,
            output: self.output,
            calibration: self.calibration,
            compression,
        })
    }
}

impl CalibrationSpec {
    fn check(&self, c: &Checker) -> Result<()> {
        c.exists(&self.text, "calibration.text")?;
        c.ensure(
            self.sequences > 0,
            "calibration.sequences",
            "must be at least 1",
        )?;
        c.ensure(
            self.seq_len >= 2,
            "calibration.seq_len",
            "must be at least 2",
        )?;
        c.ensure(
            self.batch_size > 0,
            "calibration.batch_size",
            "must be at least 1",
        )?;
        c.ensure(
            self.sequential || self.level.is_none(),
            "calibration.level",
            "a calibration level only applies with sequential: true",
        )?;
        c.ensure(
            self.sequential || self.true_sequential,
            "calibration.true_sequential",
            "true_sequential: false only applies with sequential: true",
        )
    }
}

/// What every compression kind's checks share: the config, and the
/// calibration level the build propagates through.
struct Calibrated<'a> {
    c: &'a Checker<'a>,
    sequential: bool,
    true_sequential: bool,
    level: Option<i64>,
}

impl Calibrated<'_> {
    fn obs(&self, block_size: usize, damp: f64) -> Result<ObsConfig> {
        self.c.ensure(
            block_size > 0,
            "compression.block_size",
            "must be at least 1",
        )?;
        self.c.ensure(
            damp.is_finite() && damp >= 0.0,
            "compression.damp",
            format!("must be a non-negative number, got {damp}"),
        )?;
        Ok(ObsConfig { block_size, damp })
    }

    fn level_in(&self, lo: i64, hi: i64) -> Result<()> {
        self.c.ensure(
            self.level.is_none_or(|l| (lo..=hi).contains(&l)),
            "calibration.level",
            format!("must be a level of the database, {lo}..={hi}"),
        )
    }

    fn propagation(&self, default: i64) -> Propagation {
        let level = self.level.unwrap_or(default);
        match (self.sequential, self.true_sequential) {
            (false, _) => Propagation::Uncompressed,
            (true, true) => Propagation::Sequential { level },
            (true, false) => Propagation::Blockwise { level },
        }
    }
}

impl CompressionSpec {
    /// The database's build description, each kind checked by its own function.
    fn resolve(self, c: &Checker, calibration: &CalibrationSpec) -> Result<Compression> {
        let cal = Calibrated {
            c,
            sequential: calibration.sequential,
            true_sequential: calibration.true_sequential,
            level: calibration.level,
        };
        match self {
            CompressionSpec::Sparsity {
                method,
                target,
                step_fraction,
                max_sparsity,
                max_levels,
                block_size,
                damp,
            } => sparsity(
                &cal,
                method,
                (target, step_fraction, max_sparsity, max_levels),
                cal.obs(block_size, damp)?,
            ),
            CompressionSpec::Quantization {
                method,
                bits,
                group_size,
                symmetric,
                act_order,
                block_size,
                damp,
            } => quantization(
                &cal,
                method,
                bits,
                (group_size, symmetric, act_order),
                cal.obs(block_size, damp)?,
            ),
            CompressionSpec::GgufTypes {
                types,
                imatrix,
                imatrix_file,
            } => gguf_types(&cal, types, imatrix, imatrix_file),
            CompressionSpec::Depth { unit } => Ok(Compression::Depth { unit }),
            CompressionSpec::KvBudget {
                budgets,
                step,
                eviction,
                chunk,
            } => kv_budget(c, budgets, step, eviction, chunk),
            CompressionSpec::KvBits {
                bits,
                keys,
                values,
                group_size,
                chunk,
            } => kv_bits(c, bits, (keys, values, group_size), chunk),
        }
    }
}

/// `Sparsity`: the target, step and cap (target, step_fraction,
/// max_sparsity, max_levels).
fn sparsity(
    cal: &Calibrated,
    method: SparsityMethod,
    (target, step_fraction, max_sparsity, max_levels): (f64, f64, f64, usize),
    obs: ObsConfig,
) -> Result<Compression> {
    let c = cal.c;
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
    cal.level_in(-(max_levels as i64), max_levels as i64)?;
    Ok(Compression::Sparsity {
        method,
        target,
        step_fraction,
        max_sparsity,
        max_levels,
        obs,
        propagation: cal.propagation(0),
    })
}

/// `Quantization`: the bit-widths and the grouping (group_size, symmetric,
/// act_order).
fn quantization(
    cal: &Calibrated,
    method: QuantMethod,
    mut bits: Vec<u8>,
    (group_size, symmetric, act_order): (usize, bool, Option<bool>),
    obs: ObsConfig,
) -> Result<Compression> {
    let c = cal.c;
    c.ensure(
        !bits.is_empty(),
        "compression.bits",
        "needs at least one bit-width",
    )?;
    no_repeats(c, &bits)?;
    c.ensure(
        group_size >= 8 && group_size.is_power_of_two(),
        "compression.group_size",
        format!(
            "{group_size}: a group size is a power of two, at least 8 (128 is usual; \
             a group longer than a row quantizes the row as one group)"
        ),
    )?;
    bits.sort_unstable();
    for &b in &bits {
        c.ensure(
            (2..=8).contains(&b),
            "compression.bits",
            format!("bit-widths must be in 2..=8, got {b}"),
        )?;
    }
    let act_order = act_order.unwrap_or(method == QuantMethod::Gptq);
    c.ensure(
        !(act_order && method == QuantMethod::Rtn),
        "compression.act_order",
        "act-order only applies to GPTQ",
    )?;
    cal.level_in(0, bits.len() as i64 - 1)?;
    Ok(Compression::Quantization {
        method,
        spec: QuantConfig {
            bits: bits[0],
            group_size,
            symmetric,
            act_order,
        },
        // Level i is the i-th most bits: the middle one by default.
        propagation: cal.propagation((bits.len() / 2) as i64),
        bits,
        obs,
    })
}

/// `GgufTypes`: types llama.cpp's quantizers (ours) can write, once each.
fn gguf_types(
    cal: &Calibrated,
    types: Vec<evocomp_gguf::GgmlType>,
    imatrix: bool,
    imatrix_file: Option<PathBuf>,
) -> Result<Compression> {
    let c = cal.c;
    let imatrix_file = match imatrix_file {
        None => None,
        Some(path) => {
            c.ensure(
                imatrix,
                "compression.imatrix_file",
                "an importance matrix file needs `imatrix: true`",
            )?;
            c.ensure(
                path.is_file(),
                "compression.imatrix_file",
                format!("{} does not exist", path.display()),
            )?;
            let sha256 = match evocomp_db::sha256_file(&path) {
                Ok(s) => s,
                Err(e) => return c.fail("compression.imatrix_file", e.to_string()),
            };
            Some(evocomp_db::ImatrixFile { path, sha256 })
        }
    };
    c.ensure(
        !types.is_empty(),
        "compression.types",
        "needs at least one GGUF type",
    )?;
    for (i, t) in types.iter().enumerate() {
        c.ensure(
            !types[..i].contains(t),
            "compression.types",
            format!("{t} is listed twice"),
        )?;
        c.ensure(
            evocomp_gguf::can_quantize(*t),
            "compression.types",
            format!(
                "evocomp cannot write {t} (it writes F32, F16, BF16, Q8_0, Q4_0, \
                 Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_NL)"
            ),
        )?;
    }
    c.ensure(
        cal.level.is_none(),
        "calibration.level",
        "GGUF types take no calibration level: llama.cpp quantizes every tensor on \
         the uncompressed model's inputs",
    )?;
    Ok(Compression::GgufTypes {
        types,
        imatrix,
        imatrix_file,
    })
}

/// `KvBudget`: the budgets (a range with a step, or a list), the eviction
/// policy against the smallest budget, the prefill chunk.
fn kv_budget(
    c: &Checker,
    mut budgets: Vec<usize>,
    step: Option<usize>,
    eviction: EvictionSpec,
    chunk: usize,
) -> Result<Compression> {
    c.ensure(
        !budgets.is_empty(),
        "compression.budgets",
        "needs at least one budget",
    )?;
    if let Some(step) = step {
        c.ensure(step > 0, "compression.step", "must be at least 1 token")?;
        c.ensure(
            budgets.len() == 2 && budgets[0] < budgets[1],
            "compression.budgets",
            "with a step, budgets are [lowest, highest]",
        )?;
        let (lo, hi) = (budgets[0], budgets[1]);
        budgets = (lo..hi).step_by(step).chain([hi]).collect();
    }
    c.ensure(chunk > 0, "compression.chunk", "must be at least 1")?;
    budgets.sort_unstable_by(|a, b| b.cmp(a));
    budgets.dedup();
    let smallest = *budgets.last().expect("non-empty");
    c.ensure(
        smallest > 0,
        "compression.budgets",
        "a budget must keep at least 1 token",
    )?;
    Ok(Compression::KvBudget {
        budgets,
        eviction: eviction.resolve(c, smallest)?,
        chunk,
    })
}

impl EvictionSpec {
    /// The policy, checked against the smallest budget it must fit.
    fn resolve(self, c: &Checker, smallest: usize) -> Result<Eviction> {
        Ok(match self {
            EvictionSpec::Streaming { sinks } => {
                c.ensure(
                    sinks < smallest,
                    "compression.eviction.sinks",
                    format!(
                        "{sinks} sink tokens leave no room for recent ones in a budget of {smallest}"
                    ),
                )?;
                Eviction::Streaming { sinks }
            }
            EvictionSpec::SnapKv {
                window,
                kernel,
                prompt,
            } => {
                c.ensure(
                    window > 0,
                    "compression.eviction.window",
                    "must be at least 1",
                )?;
                c.ensure(
                    window <= smallest,
                    "compression.eviction.window",
                    format!(
                        "the {window}-token window does not fit the smallest budget {smallest}"
                    ),
                )?;
                c.ensure(
                    kernel % 2 == 1,
                    "compression.eviction.kernel",
                    format!("the pooling width must be odd, got {kernel}"),
                )?;
                c.ensure(
                    prompt > window,
                    "compression.eviction.prompt",
                    format!(
                        "the prompt ({prompt} tokens) must be longer than the window ({window})"
                    ),
                )?;
                Eviction::SnapKv {
                    window,
                    kernel,
                    prompt,
                }
            }
            EvictionSpec::ChunkedSnapKv { window, recent } => {
                c.ensure(
                    window > 0,
                    "compression.eviction.window",
                    "must be at least 1",
                )?;
                c.ensure(
                    recent <= smallest,
                    "compression.eviction.recent",
                    format!("{recent} recent tokens exceed the smallest budget {smallest}"),
                )?;
                Eviction::ChunkedSnapKv { window, recent }
            }
        })
    }
}

/// `KvBits`: the bit-widths, grouping (keys, values, group_size) and chunk.
fn kv_bits(
    c: &Checker,
    mut bits: Vec<u8>,
    (keys, values, group_size): (KvGroupSpec, KvGroupSpec, usize),
    chunk: usize,
) -> Result<Compression> {
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
    no_repeats(c, &bits)?;
    bits.sort_unstable_by(|a, b| b.cmp(a));
    for &b in &bits {
        c.ensure(
            (1..=16).contains(&b),
            "compression.bits",
            format!("KV bit-widths must be in 1..=16, got {b}"),
        )?;
    }
    Ok(Compression::KvBits {
        bits,
        keys: keys.into(),
        values: values.into(),
        group_size,
        chunk,
    })
}

/// A bit-width listed twice is a mistake in the config, not a level.
fn no_repeats(c: &Checker, bits: &[u8]) -> Result<()> {
    for (i, b) in bits.iter().enumerate() {
        c.ensure(
            !bits[..i].contains(b),
            "compression.bits",
            format!("{b} is listed twice"),
        )?;
    }
    Ok(())
}

/// Read, parse and validate a database config.
pub fn load_database_config(path: &Path) -> Result<DatabaseConfig> {
    let text = read(path)?;
    let spec: DatabaseSpec = parse_ron(path, &text)?;
    spec.resolve_in(path, Some(&text))
}

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
    fn kv_budgets_with_a_step_are_fine_levels_and_gptq_uses_act_order() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |compression: &str| {
            good(dir.path()).replace("Sparsity(method: SparseGpt, target: 0.5)", compression)
        };
        let p = write(
            dir.path(),
            "kv.ron",
            &cfg("KvBudget(budgets: [16, 100], step: Some(16), eviction: Streaming(sinks: 4))"),
        );
        match load_database_config(&p).unwrap().compression {
            Compression::KvBudget { budgets, .. } => {
                assert_eq!(budgets, vec![100, 96, 80, 64, 48, 32, 16]);
            }
            other => panic!("{other:?}"),
        }
        let p = write(
            dir.path(),
            "kv.ron",
            &cfg("KvBudget(budgets: [16, 64, 128], step: Some(16), eviction: Streaming(sinks: 4))"),
        );
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(
            e.contains("compression.budgets") && e.contains("[lowest, highest]"),
            "{e}"
        );
        for (method, act_order) in [("Gptq", true), ("Rtn", false)] {
            let p = write(
                dir.path(),
                "q.ron",
                &cfg(&format!("Quantization(method: {method}, bits: [2, 3, 4])")),
            );
            match load_database_config(&p).unwrap().compression {
                Compression::Quantization {
                    spec, propagation, ..
                } => {
                    assert_eq!(spec.act_order, act_order, "{method}");
                    // The middle bit-width (3 bits is level 1) carries the calibration.
                    assert_eq!(propagation, Propagation::Sequential { level: 1 });
                }
                other => panic!("{other:?}"),
            }
        }
        // Block by block (LLM Compressor's pipeline), and only when sequential.
        let blockwise = cfg("Quantization(method: Gptq, bits: [2, 3, 4])")
            .replace("seed: 3)", "seed: 3, true_sequential: false)");
        let p = write(dir.path(), "q.ron", &blockwise);
        match load_database_config(&p).unwrap().compression {
            Compression::Quantization { propagation, .. } => {
                assert_eq!(propagation, Propagation::Blockwise { level: 1 });
            }
            other => panic!("{other:?}"),
        }
        let p = write(
            dir.path(),
            "q.ron",
            &blockwise.replace("seed: 3,", "seed: 3, sequential: false,"),
        );
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(e.contains("calibration.true_sequential"), "{e}");
    }

    #[test]
    fn gguf_types_parse_by_name_and_bad_lists_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |compression: &str| {
            good(dir.path()).replace("Sparsity(method: SparseGpt, target: 0.5)", compression)
        };
        let p = write(
            dir.path(),
            "g.ron",
            &cfg("GgufTypes(types: [Q4_K, Q8_0, IQ4_NL])"),
        );
        match load_database_config(&p).unwrap().compression {
            Compression::GgufTypes {
                types,
                imatrix,
                imatrix_file,
            } => {
                use evocomp_gguf::GgmlType as T;
                assert_eq!(types, vec![T::Q4_K, T::Q8_0, T::IQ4_NL]);
                assert!(imatrix, "an importance matrix by default");
                assert_eq!(imatrix_file, None);
            }
            other => panic!("{other:?}"),
        }
        for (compression, field, says) in [
            ("GgufTypes(types: [])", "compression.types", "at least one"),
            (
                "GgufTypes(types: [Q4_K, Q4_K])",
                "compression.types",
                "Q4_K is listed twice",
            ),
            (
                "GgufTypes(types: [IQ2_XXS])",
                "compression.types",
                "cannot write IQ2_XXS",
            ),
            ("GgufTypes(types: [Q9_K])", "", "Q9_K"),
            (
                "GgufTypes(types: [Q4_K], imatrix_file: Some(\"missing.dat\"))",
                "compression.imatrix_file",
                "does not exist",
            ),
            (
                "GgufTypes(types: [Q4_K], imatrix: false, imatrix_file: Some(\"g.ron\"))",
                "compression.imatrix_file",
                "needs `imatrix: true`",
            ),
        ] {
            let p = write(dir.path(), "g.ron", &cfg(compression));
            let e = load_database_config(&p).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(says), "{compression}: {e}");
        }
        let text = cfg("GgufTypes(types: [Q4_K])").replace("seed: 3)", "seed: 3, level: Some(1))");
        let p = write(dir.path(), "g.ron", &text);
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(
            e.contains("calibration.level") && e.contains("GGUF types"),
            "{e}"
        );
    }

    #[test]
    fn a_good_config_resolves_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "db.ron", &good(dir.path()));
        let c = load_database_config(&p).unwrap();
        assert_eq!(c.calibration.batch_size, 4);
        assert_eq!(c.calibration.held_out, 8);
        match c.compression {
            Compression::Sparsity {
                method,
                obs,
                max_levels,
                propagation,
                ..
            } => {
                assert_eq!(method, SparsityMethod::SparseGpt);
                assert_eq!(obs, ObsConfig::default());
                assert_eq!(max_levels, 13);
                assert_eq!(propagation, Propagation::Sequential { level: 0 });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_positions_stay_right() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("\u{feff}{}", good(dir.path()));
        let p = write(dir.path(), "bom.ron", &text);
        assert_eq!(load_database_config(&p).unwrap().calibration.seed, 3);
        let bad = text.replace("sequences: 8", "sequences: 0");
        let p = write(dir.path(), "bom-bad.ron", &bad);
        let e = load_database_config(&p).unwrap_err().to_string();
        assert!(e.contains(":4:"), "{e}");
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
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "Quantization(method: Gptq, bits: [3, 3])",
                "listed twice",
            ),
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "KvBits(bits: [8, 4, 8])",
                "listed twice",
            ),
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "Quantization(method: Rtn, bits: [3], group_size: 0)",
                "compression.group_size",
            ),
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "Quantization(method: Rtn, bits: [3], group_size: 7)",
                "compression.group_size",
            ),
            (
                "Sparsity(method: SparseGpt, target: 0.5)",
                "Quantization(method: Rtn, bits: [3], group_size: 1000000)",
                "compression.group_size",
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
