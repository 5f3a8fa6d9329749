//! `evocomp run CONFIG.ron`: one search study.
//!
//! Stage 1 is [`ExperimentSpec`], the RON as written (unknown fields are
//! refused at file:line:column). Stage 2 is [`Experiment`]: every default
//! filled in, every value checked, the database config loaded, and saved as
//! JSON beside the study. Checks that need the database's levels (an
//! impossible budget) happen when the study opens the database, and point
//! at the config's `budget` line through [`ExperimentSpec::error_at`].

use crate::database::{DatabaseConfig, load_database_config};
#[cfg(test)]
use crate::ron::locate;
use crate::ron::{Checker, ConfigError, Result, parse_ron, read};
pub use evocomp_model::{Matmul, WeightDtype};
pub use evocomp_search::StrategySpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The raw experiment, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Experiment")]
pub struct ExperimentSpec {
    /// The study's name; its folder is `results/<name>` unless `output` says otherwise.
    pub name: String,
    /// A .gguf file or an HF folder.
    pub model: PathBuf,
    /// The variant database's build config (`configs/db/*.ron`); built first if needed.
    pub database: PathBuf,
    pub data: DataSpec,
    /// The constraint; give either `budget` or `sweep`.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Several budgets, one study each under `results/<name>/<budget>`,
    /// sharing the fitness cache; the report joins them into one front.
    #[serde(default)]
    pub sweep: Vec<BudgetSpec>,
    pub strategy: StrategySpec,
    #[serde(default)]
    pub fitness: FitnessSpec,
    #[serde(default)]
    pub backend: BackendSpec,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Offspring resume from their parent's hidden states at the first layer they change.
    #[serde(default = "yes")]
    pub prefix_reuse: bool,
    /// Measure the best genome on the held-out data after every n-th of the
    /// search's tokens too (anytime curves); off by default.
    #[serde(default)]
    pub anytime: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Search data and held-out data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Text the search scores candidates on (fresh random windows per stage).
    pub calibration: PathBuf,
    /// Held-out text the final configuration is measured on.
    pub evaluation: PathBuf,
    /// Held-out tokens (the first ones of `evaluation`, in windows of `held_out_context`).
    #[serde(default = "default_held_out")]
    pub held_out_tokens: usize,
    #[serde(default = "default_context")]
    pub held_out_context: usize,
}

fn default_held_out() -> usize {
    4096
}
fn default_context() -> usize {
    512
}

/// The constraint on the total cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BudgetSpec {
    /// Exactly the cost of every unit at this level (EvoPress: level 0 is the target).
    UniformLevel(i64),
    /// This many units at their most compressed level, the rest at their least
    /// (depth: blocks dropped).
    Dropped(usize),
    /// At most this total cost, in the database's cost unit.
    AtMost(u64),
    /// Exactly this total cost.
    Exact(u64),
    /// At most this fraction of the cost of every unit at its least compressed level.
    Fraction(f64),
    /// At most what llama.cpp's preset costs (GGUF-types databases):
    /// `LlamaCpp(Q4_K_M)` is the size of `llama-quantize ... Q4_K_M`.
    LlamaCpp(evocomp_gguf::Preset),
    /// At most this many bits per weight over the database's units (GGUF
    /// types: the quantized tensors, their scales and minimums included).
    Bpw(f64),
}

/// What a candidate is scored by (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Mean KL(teacher ‖ candidate) per token, teacher = the uncompressed model.
    Kl,
    /// Mean next-token negative log-likelihood (log perplexity).
    Nll,
}

/// What is kept of the teacher's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeacherSpec {
    Full,
    TopK(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitnessSpec {
    #[serde(default = "default_metric")]
    pub metric: Metric,
    #[serde(default = "default_teacher")]
    pub teacher: TeacherSpec,
    /// Tokens per sequence of every sample.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Tokens per sample for strategies with one fixed sample.
    #[serde(default = "default_tokens")]
    pub tokens: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The dtype weight matrices are held in on the device for every
    /// forward pass of the study (teacher, candidates, held-out, heuristics'
    /// measurements): `F32` (default), `Bf16` or `F16`, with f32 activations
    /// and accumulation. The variant database is built in f32 either way.
    /// (Not written when f32, so files from before it existed keep their
    /// checksums.)
    #[serde(default, skip_serializing_if = "is_f32")]
    pub dtype: WeightDtype,
    /// The precision of every linear layer's products: `F32` (default), or
    /// `Bf16`: activations and weights rounded to bf16 at each matmul, the
    /// products summed in f32, as a GPU's bf16 matmul (twice as fast on CPUs
    /// with AVX512_BF16, the same bits elsewhere; CPU only). Not written
    /// when f32.
    #[serde(default, skip_serializing_if = "is_f32_matmul")]
    pub matmul: Matmul,
}

fn is_f32_matmul(m: &Matmul) -> bool {
    *m == Matmul::F32
}

fn is_f32(d: &WeightDtype) -> bool {
    *d == WeightDtype::F32
}

fn default_metric() -> Metric {
    Metric::Kl
}
fn default_teacher() -> TeacherSpec {
    TeacherSpec::TopK(64)
}
fn default_seq_len() -> usize {
    256
}
fn default_tokens() -> usize {
    2048
}
fn default_batch() -> usize {
    4
}

impl Default for FitnessSpec {
    fn default() -> Self {
        Self {
            metric: default_metric(),
            teacher: default_teacher(),
            seq_len: default_seq_len(),
            tokens: default_tokens(),
            batch_size: default_batch(),
            dtype: WeightDtype::F32,
            matmul: Matmul::F32,
        }
    }
}

impl FitnessSpec {
    /// A stable text naming everything a fitness value depends on (besides
    /// model, database, sample and genome): part of every cache key.
    pub fn key(&self) -> String {
        let t = match self.teacher {
            TeacherSpec::Full => "full".to_string(),
            TeacherSpec::TopK(k) => format!("top{k}"),
        };
        // f32 adds nothing, so keys written before `dtype` existed stay valid.
        let dtype = match self.dtype {
            WeightDtype::F32 => String::new(),
            other => format!("/{other}"),
        };
        let matmul = match self.matmul {
            Matmul::F32 => String::new(),
            other => format!("/matmul-{other}"),
        };
        format!("{:?}/{t}/seq{}{dtype}{matmul}", self.metric, self.seq_len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackendSpec {
    /// wgpu on a GPU, else the CPU.
    #[default]
    Auto,
    Wgpu,
    Cpu,
}

/// A validated experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The config file it came from.
    pub source: PathBuf,
    pub name: String,
    pub model: PathBuf,
    /// The database config file and its build settings' output folder.
    pub database_config: PathBuf,
    pub database: PathBuf,
    pub data: DataSpec,
    pub budget: BudgetSpec,
    pub strategy: StrategySpec,
    pub fitness: FitnessSpec,
    pub backend: BackendSpec,
    pub seed: u64,
    pub output: PathBuf,
    pub prefix_reuse: bool,
    /// The sweep this study belongs to (its name), if any: the study's
    /// folder is then `<sweep folder>/<budget label>`.
    #[serde(default)]
    pub sweep: Option<String>,
    /// Held-out measurements at every n-th of the search's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anytime: Option<usize>,
}

/// A folder-safe name for a budget: `level-2`, `dropped6`, `fraction0.5`, ...
pub fn budget_label(b: &BudgetSpec) -> String {
    match b {
        BudgetSpec::UniformLevel(l) => format!("level{l}"),
        BudgetSpec::Dropped(n) => format!("dropped{n}"),
        BudgetSpec::AtMost(c) => format!("atmost{c}"),
        BudgetSpec::Exact(c) => format!("exact{c}"),
        BudgetSpec::Fraction(x) => format!("fraction{x}"),
        BudgetSpec::LlamaCpp(p) => format!("llamacpp-{p}"),
        BudgetSpec::Bpw(x) => format!("bpw{x}"),
    }
}

impl Experiment {
    /// The folder holding every study of this study's sweep (the results
    /// root's child), or the study's own folder.
    pub fn sweep_dir(&self) -> &Path {
        match &self.sweep {
            Some(_) => self.output.parent().unwrap_or(&self.output),
            None => &self.output,
        }
    }

    /// The database build this experiment uses.
    pub fn database_build(&self) -> Result<DatabaseConfig> {
        load_database_config(&self.database_config)
    }

    /// The checks a config's values get, made again on an experiment that
    /// did not come from a config file here (a queue job's): the data and
    /// fitness settings, the budget, the strategy's settings.
    pub fn check_values(&self) -> Result<()> {
        let c = Checker {
            path: &self.source,
            text: None,
        };
        self.data.check(&c)?;
        self.fitness.check(&c, self.backend)?;
        self.budget.check(&c, "budget")?;
        check_run(&c, self.anytime, &self.strategy, self.fitness.seq_len)
    }

    /// An error about `field`, pointing into the config file when it still
    /// exists and the field can be found in it.
    pub fn error_at(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let text = std::fs::read_to_string(&self.source).ok();
        let c = Checker {
            path: &self.source,
            text: text.as_deref(),
        };
        // A sweep's budgets are in its `sweep` list.
        match (&self.sweep, field) {
            (Some(_), "budget") => c
                .fail::<()>("sweep", format!("{:?}: {}", self.budget, message.into()))
                .unwrap_err(),
            _ => c.fail::<()>(field, message).unwrap_err(),
        }
    }
}

/// `anytime` and the strategy's own settings, as a config file or a queue
/// job gives them.
fn check_run(
    c: &Checker,
    anytime: Option<usize>,
    strategy: &StrategySpec,
    seq_len: usize,
) -> Result<()> {
    if let Some(n) = anytime {
        c.ensure(
            (1..=64).contains(&n),
            "anytime",
            format!("the number of held-out points must be in 1..=64, got {n}"),
        )?;
    }
    if let Err(e) = strategy.spec().validate(seq_len) {
        let field = if e.field.is_empty() {
            "strategy".to_string()
        } else {
            format!("strategy.{}", e.field)
        };
        return c.fail(&field, e.message);
    }
    Ok(())
}

impl ExperimentSpec {
    fn resolve_in(self, path: &Path, text: Option<&str>) -> Result<Vec<Experiment>> {
        let c = Checker { path, text };
        self.check_name(&c)?;
        if let Some(out) = &self.output {
            // "" or "." would put the study's store and caches among the
            // user's own files (the current folder).
            c.ensure(
                !out.as_os_str().is_empty()
                    && out
                        .components()
                        .any(|p| matches!(p, std::path::Component::Normal(_))),
                "output",
                format!(
                    "{:?} names no folder of its own: give one (the default is results/{})",
                    out, self.name
                ),
            )?;
        }
        c.exists(&self.model, "model")?;
        c.exists(&self.database, "database")?;
        self.data.check(&c)?;
        let db = self.database_config(&c)?;
        self.fitness.check(&c, self.backend)?;
        let budgets = self.budgets(&c)?;
        check_run(&c, self.anytime, &self.strategy, self.fitness.seq_len)?;
        Ok(self.experiments(path, &db, budgets))
    }

    fn check_name(&self, c: &Checker) -> Result<()> {
        c.ensure(
            !self.name.is_empty()
                && self
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                && !self.name.starts_with('.'),
            "name",
            format!(
                "{:?}: use letters, digits, '-', '_' and '.' (it names a folder)",
                self.name
            ),
        )
    }

    /// The database config, which must be built from this experiment's model.
    fn database_config(&self, c: &Checker) -> Result<DatabaseConfig> {
        let db = load_database_config(&self.database).map_err(|e| ConfigError::Invalid {
            path: c.path.to_path_buf(),
            field: "database".into(),
            message: e.to_string(),
        })?;
        if db.model != self.model {
            return c.fail(
                "database",
                format!(
                    "the database is built from {}, the experiment's model is {}",
                    db.model.display(),
                    self.model.display()
                ),
            );
        }
        Ok(db)
    }

    /// `budget` or `sweep` (one of them), each budget checked, none twice.
    fn budgets(&self, c: &Checker) -> Result<Vec<BudgetSpec>> {
        let budgets: Vec<BudgetSpec> = match (&self.budget, self.sweep.is_empty()) {
            (Some(b), true) => vec![*b],
            (None, false) => self.sweep.clone(),
            (Some(_), false) => {
                return c.fail("sweep", "give either `budget` or `sweep`, not both");
            }
            (None, true) => {
                return c.fail(
                    "budget",
                    "missing: give `budget`, or `sweep` (a list of budgets)",
                );
            }
        };
        let field = if self.sweep.is_empty() {
            "budget"
        } else {
            "sweep"
        };
        for (i, b) in budgets.iter().enumerate() {
            b.check(c, field)?;
            if budgets[..i]
                .iter()
                .any(|o| budget_label(o) == budget_label(b))
            {
                return c.fail(field, format!("{b:?} is listed twice"));
            }
        }
        Ok(budgets)
    }

    /// One experiment per budget (a sweep's named `<name>-<budget>`, in
    /// `<output>/<budget>`).
    fn experiments(
        &self,
        path: &Path,
        db: &DatabaseConfig,
        budgets: Vec<BudgetSpec>,
    ) -> Vec<Experiment> {
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(&self.name));
        let sweep = (!self.sweep.is_empty()).then(|| self.name.clone());
        budgets
            .into_iter()
            .map(|budget| {
                let (name, output) = match &sweep {
                    Some(n) => {
                        let label = budget_label(&budget);
                        (format!("{n}-{label}"), output.join(label))
                    }
                    None => (self.name.clone(), output.clone()),
                };
                Experiment {
                    source: path.to_path_buf(),
                    name,
                    model: self.model.clone(),
                    database_config: self.database.clone(),
                    database: db.output.clone(),
                    data: self.data.clone(),
                    budget,
                    strategy: self.strategy.clone(),
                    fitness: self.fitness,
                    backend: self.backend,
                    seed: self.seed,
                    output,
                    prefix_reuse: self.prefix_reuse,
                    sweep: sweep.clone(),
                    anytime: self.anytime,
                }
            })
            .collect()
    }
}

impl DataSpec {
    fn check(&self, c: &Checker) -> Result<()> {
        c.exists(&self.calibration, "data.calibration")?;
        c.exists(&self.evaluation, "data.evaluation")?;
        c.ensure(
            self.held_out_context >= 2,
            "data.held_out_context",
            "must be at least 2",
        )?;
        c.ensure(
            self.held_out_tokens >= self.held_out_context,
            "data.held_out_tokens",
            "must be at least one context window",
        )
    }
}

impl FitnessSpec {
    fn check(&self, c: &Checker, backend: BackendSpec) -> Result<()> {
        c.ensure(self.seq_len >= 2, "fitness.seq_len", "must be at least 2")?;
        c.ensure(
            self.tokens >= self.seq_len,
            "fitness.tokens",
            "must be at least one sequence (seq_len tokens)",
        )?;
        c.ensure(
            self.batch_size >= 1,
            "fitness.batch_size",
            "must be at least 1",
        )?;
        if let TeacherSpec::TopK(k) = self.teacher {
            c.ensure(k >= 1, "fitness.teacher", "top-k needs k >= 1")?;
        }
        c.ensure(
            !(self.matmul == Matmul::Bf16 && backend == BackendSpec::Wgpu),
            "fitness.matmul",
            "bf16 matmuls run on the CPU (backend: Cpu); on a GPU use dtype: Bf16 or F16",
        )
    }
}

impl BudgetSpec {
    /// A budget that cannot mean anything, reported at `field`.
    fn check(&self, c: &Checker, field: &str) -> Result<()> {
        match self {
            BudgetSpec::Fraction(x) => c.ensure(
                *x > 0.0 && *x <= 1.0,
                field,
                format!("a fraction must be in (0, 1], got {x}"),
            ),
            BudgetSpec::Bpw(x) => c.ensure(
                x.is_finite() && *x > 0.0,
                field,
                format!("bits per weight must be a positive number, got {x}"),
            ),
            BudgetSpec::AtMost(0) | BudgetSpec::Exact(0) => {
                c.fail(field, "a budget of 0 leaves nothing of the model")
            }
            _ => Ok(()),
        }
    }
}

/// Read, parse and validate an experiment config: one experiment, or one
/// per budget of a sweep.
pub fn load_experiments(path: &Path) -> Result<Vec<Experiment>> {
    let text = read(path)?;
    let spec: ExperimentSpec = parse_ron(path, &text)?;
    spec.resolve_in(path, Some(&text))
}

/// Read, parse and validate a config of one experiment (not a sweep).
pub fn load_experiment(path: &Path) -> Result<Experiment> {
    let mut v = load_experiments(path)?;
    if v.len() != 1 {
        let text = read(path)?;
        let c = Checker {
            path,
            text: Some(&text),
        };
        return c.fail("sweep", "this is a sweep of several studies; expected one");
    }
    Ok(v.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn setup(dir: &Path) -> String {
        let model = write(dir, "m.gguf", "x");
        let text = write(dir, "t.txt", "hello");
        write(
            dir,
            "db.ron",
            &format!(
                r#"DatabaseSpec(
    model: "{}",
    output: "{}/db",
    calibration: (text: "{}", sequences: 8, seq_len: 128),
    compression: Sparsity(method: SparseGpt, target: 0.5),
)"#,
                model.display(),
                dir.display(),
                text.display()
            ),
        );
        format!(
            r#"// a test experiment
Experiment(
    name: "t1",
    model: "{d}/m.gguf",
    database: "{d}/db.ron",
    data: (calibration: "{d}/t.txt", evaluation: "{d}/t.txt"),
    budget: UniformLevel(0),
    strategy: EvoPress(preset: Sparsity, generations: Some(5)),
    seed: 3,
)"#,
            d = dir.display()
        )
    }

    #[test]
    fn an_output_that_names_no_folder_of_its_own_is_refused_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = setup(dir.path());
        for out in ["\"\"", "\".\"", "\"./\""] {
            let text = good.replace(
                "    seed: 3,",
                &format!("    seed: 3,\n    output: Some({out}),"),
            );
            let e = load_experiment(&write(dir.path(), "o.ron", &text))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("o.ron:10:") && e.contains("no folder of its own"),
                "{e}"
            );
        }
        let text = good.replace("    seed: 3,", "    seed: 3,\n    output: Some(\"mine\"),");
        let e = load_experiment(&write(dir.path(), "o.ron", &text)).unwrap();
        assert_eq!(e.output, PathBuf::from("mine"));
    }

    #[test]
    fn a_good_experiment_resolves_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "e.ron", &setup(dir.path()));
        let e = load_experiment(&p).unwrap();
        assert_eq!(e.output, PathBuf::from("results/t1"));
        assert_eq!(e.database, dir.path().join("db"));
        assert_eq!(e.fitness, FitnessSpec::default());
        assert_eq!(e.backend, BackendSpec::Auto);
        assert!(e.prefix_reuse);
        assert_eq!(e.data.held_out_tokens, 4096);
        // The resolved experiment serialises (it is saved beside the study).
        assert!(ron::to_string(&e).unwrap().contains("t1"));
    }

    #[test]
    fn the_weight_dtype_and_matmul_are_part_of_the_fitness_key_and_f32_keys_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let good = setup(dir.path());
        let f32 = load_experiment(&write(dir.path(), "a.ron", &good)).unwrap();
        // The key studies written before `dtype` existed used.
        assert_eq!(f32.fitness.key(), "Kl/top64/seq256");
        let json = serde_json::to_string(&f32.fitness).unwrap();
        assert!(!json.contains("dtype"), "{json}");
        let half = good.replace("seed: 3,", "seed: 3, fitness: (dtype: Bf16),");
        let half = load_experiment(&write(dir.path(), "b.ron", &half)).unwrap();
        assert_eq!(half.fitness.dtype, WeightDtype::Bf16);
        assert_eq!(half.fitness.key(), "Kl/top64/seq256/bf16");
        let mm = good.replace("seed: 3,", "seed: 3, fitness: (matmul: Bf16),");
        let mm = load_experiment(&write(dir.path(), "d.ron", &mm)).unwrap();
        assert_eq!(mm.fitness.matmul, Matmul::Bf16);
        assert_eq!(mm.fitness.key(), "Kl/top64/seq256/matmul-bf16");
        assert!(!json.contains("matmul"), "{json}");
        let gpu = good.replace(
            "seed: 3,",
            "seed: 3, backend: Wgpu, fitness: (matmul: Bf16),",
        );
        let e = load_experiment(&write(dir.path(), "e.ron", &gpu))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("e.ron:") && e.contains("bf16 matmuls run on the CPU"),
            "{e}"
        );
        let back: FitnessSpec =
            serde_json::from_str(&serde_json::to_string(&half.fitness).unwrap()).unwrap();
        assert_eq!(back, half.fitness);
        let bad = good.replace("seed: 3,", "seed: 3, fitness: (dtype: F8),");
        let e = load_experiment(&write(dir.path(), "c.ron", &bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.ron:") && e.contains("F8"), "{e}");
    }

    #[test]
    fn unknown_fields_and_wrong_types_point_at_the_spot() {
        let dir = tempfile::tempdir().unwrap();
        let good = setup(dir.path());
        for (from, to, line) in [
            ("seed: 3,", "sed: 3,", 9),
            ("generations: Some(5)", "generations: Some(\"five\")", 8),
            ("generations: Some(5)", "generatoins: Some(5)", 8),
            ("UniformLevel(0)", "Percent(60)", 7),
        ] {
            let p = write(dir.path(), "bad.ron", &good.replace(from, to));
            let e = load_experiment(&p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{}:{line}:", p.display())),
                "{to}: {e}"
            );
        }
    }

    #[test]
    fn invalid_values_point_at_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = setup(dir.path());
        for (from, to, line, field) in [
            (
                "generations: Some(5)",
                "generations: Some(0)",
                8,
                "strategy.generations",
            ),
            ("UniformLevel(0)", "Fraction(1.5)", 7, "budget"),
            ("name: \"t1\"", "name: \"../x\"", 3, "name"),
            (
                "preset: Sparsity, generations: Some(5)",
                "preset: Sparsity, stages: Some([(2, 512)])",
                8,
                "strategy.stages",
            ),
            (
                "generations: Some(5)",
                "generations: Some(5), racing: (chunk: 100)",
                8,
                "strategy.racing",
            ),
            (
                "generations: Some(5)",
                "generations: Some(5), surrogate: (explore: 1.5)",
                8,
                "strategy.surrogate",
            ),
            ("seed: 3,", "seed: 3, anytime: Some(0),", 9, "anytime"),
        ] {
            let p = write(dir.path(), "bad.ron", &good.replace(from, to));
            let e = load_experiment(&p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{}:{line}:", p.display())) && e.contains(field),
                "{to}: {e}"
            );
        }
        let p = write(
            dir.path(),
            "bad.ron",
            &good.replace("t.txt\")", "missing.txt\")"),
        );
        let e = load_experiment(&p).unwrap_err().to_string();
        assert!(
            e.contains("data.evaluation") && e.contains("missing.txt"),
            "{e}"
        );
    }

    #[test]
    fn a_sweep_resolves_to_one_study_per_budget() {
        let dir = tempfile::tempdir().unwrap();
        let good = setup(dir.path());
        let p = write(
            dir.path(),
            "s.ron",
            &good.replace(
                "budget: UniformLevel(0),",
                "sweep: [UniformLevel(-1), UniformLevel(0), Dropped(2)],",
            ),
        );
        let v = load_experiments(&p).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].output, PathBuf::from("results/t1/level-1"));
        assert_eq!(v[2].output, PathBuf::from("results/t1/dropped2"));
        assert_eq!(v[1].name, "t1-level0");
        assert_eq!(v[1].budget, BudgetSpec::UniformLevel(0));
        assert!(v.iter().all(|e| e.sweep.as_deref() == Some("t1")));
        assert_eq!(v[0].sweep_dir(), Path::new("results/t1"));
        assert!(load_experiment(&p).is_err());
        // An impossible member points at the sweep line.
        let msg = v[2].error_at("budget", "too many").to_string();
        assert!(
            msg.starts_with(&format!("{}:7:5: sweep", p.display())),
            "{msg}"
        );
        // Both, neither, or a budget twice: errors.
        for (from, to) in [
            (
                "budget: UniformLevel(0),",
                "budget: UniformLevel(0), sweep: [Dropped(1)],",
            ),
            ("budget: UniformLevel(0),", ""),
            (
                "budget: UniformLevel(0),",
                "sweep: [Dropped(1), Dropped(1)],",
            ),
        ] {
            let p = write(dir.path(), "bad.ron", &good.replace(from, to));
            let e = load_experiments(&p).unwrap_err().to_string();
            assert!(e.contains("budget") || e.contains("sweep"), "{e}");
        }
        // A single budget is written without Some(..).
        let p = write(dir.path(), "one.ron", &good);
        assert_eq!(load_experiments(&p).unwrap().len(), 1);
    }

    #[test]
    fn locate_skips_comments_and_follows_paths() {
        let text = "// budget: no\nE(\n  budget: X,\n  strategy: S(generations: 1),\n)";
        assert_eq!(locate(text, "budget"), Some((3, 3)));
        assert_eq!(locate(text, "strategy.generations"), Some((4, 15)));
        assert_eq!(locate(text, "nope"), None);
    }

    #[test]
    fn error_at_points_into_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "e.ron", &setup(dir.path()));
        let e = load_experiment(&p).unwrap();
        let msg = e.error_at("budget", "level 9 is not a level").to_string();
        assert!(
            msg.starts_with(&format!("{}:7:5: budget", p.display())),
            "{msg}"
        );
    }
}
