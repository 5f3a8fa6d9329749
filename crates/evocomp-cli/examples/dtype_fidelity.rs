//! How much half precision changes the search's fitness and its ranking of
//! candidates: the genomes finished studies evaluated (their journals), each
//! scored in f32 and with `--dtype` weights and `--matmul` products on one
//! fixed sample of the experiment's calibration text (each setting against
//! its own uncompressed teacher, as a study in that setting would score it).
//!
//! ```text
//! cargo run --release -p evocomp-cli --example dtype_fidelity -- \
//!     experiments/sparsity/60-evopress.ron --dtype bf16 [--matmul bf16] --genomes 200 --tokens 512 \
//!     results/sparsity-60-evopress results/sparsity-60-dp ...
//! ```
//!
//! A STUDY that is a `.json` file is an earlier run's `--json`: its genomes.
//!
//! Prints the mean and largest relative change of the fitness, Spearman's
//! and Kendall's rank correlations, how often two candidates keep their
//! order, and whether the best candidate stays the best; `--json` writes the
//! pairs.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use evocomp_config::{FitnessSpec, Matmul, WeightDtype, load_experiments};
use evocomp_engine::{Evaluator, prepare};
use evocomp_search::SampleDraw;
use evocomp_search::surrogate::{rank_correlation, ranks};
use evocomp_study::{StudyDir, View};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    config: PathBuf,
    studies: Vec<PathBuf>,
    dtype: WeightDtype,
    matmul: Matmul,
    genomes: usize,
    tokens: usize,
    seed: u64,
    json: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        config: PathBuf::new(),
        studies: Vec::new(),
        dtype: WeightDtype::Bf16,
        matmul: Matmul::F32,
        genomes: 200,
        tokens: 512,
        seed: 7,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(s) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match s.as_str() {
            "--dtype" => a.dtype = value("--dtype")?.parse().map_err(anyhow::Error::msg)?,
            "--matmul" => a.matmul = value("--matmul")?.parse().map_err(anyhow::Error::msg)?,
            "--genomes" => a.genomes = value("--genomes")?.parse()?,
            "--tokens" => a.tokens = value("--tokens")?.parse()?,
            "--seed" => a.seed = value("--seed")?.parse()?,
            "--json" => a.json = Some(value("--json")?.into()),
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            _ => positional.push(PathBuf::from(s)),
        }
    }
    let mut positional = positional.into_iter();
    a.config = positional
        .next()
        .context("usage: dtype_fidelity CONFIG.ron [--dtype bf16] [--matmul bf16] STUDY...")?;
    a.studies = positional.collect();
    if a.studies.is_empty() {
        bail!("name at least one study folder whose journal holds the genomes");
    }
    if a.dtype == WeightDtype::F32 && a.matmul == Matmul::F32 {
        bail!("--dtype or --matmul must be a half precision (bf16 or f16)");
    }
    Ok(a)
}

/// Kendall's tau-b and the share of pairs whose order agrees among pairs
/// whose f32 fitness differs by more than `gap` (relative).
fn kendall(x: &[f64], y: &[f64], gap: f64) -> (f64, f64, usize) {
    let (mut c, mut d, mut tx, mut ty) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut agree, mut pairs) = (0usize, 0usize);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (a, b) = ((x[i] - x[j]).signum(), (y[i] - y[j]).signum());
            if a == 0.0 && b == 0.0 {
                continue;
            }
            if a == 0.0 {
                tx += 1.0;
            } else if b == 0.0 {
                ty += 1.0;
            } else if a == b {
                c += 1.0;
            } else {
                d += 1.0;
            }
            if (x[i] - x[j]).abs() > gap * x[i].abs().max(x[j].abs()) {
                pairs += 1;
                agree += usize::from(a == b);
            }
        }
    }
    let tau = (c - d) / ((c + d + tx) * (c + d + ty)).sqrt();
    (tau, agree as f64 / pairs.max(1) as f64, pairs)
}

fn main() -> Result<()> {
    let a = args()?;
    let exp = load_experiments(&a.config)?
        .into_iter()
        .next()
        .context("the config holds no experiment")?;
    let device = Device::flex();
    eprintln!("loading {}", exp.model.display());
    let prep = prepare(&exp, &device, true)?;

    // Distinct genomes from the studies' journals, in journal order.
    let mut seen = BTreeSet::new();
    let mut genomes = Vec::new();
    for dir in &a.studies {
        // An earlier run's --json: its genomes.
        if dir.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(dir)
                .with_context(|| format!("reading {}", dir.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", dir.display()))?;
            let listed: Vec<Vec<i64>> = serde_json::from_value(v["genomes"].clone())
                .with_context(|| format!("{}: no \"genomes\" list", dir.display()))?;
            for g in listed {
                if genomes.len() < a.genomes && seen.insert(g.clone()) {
                    genomes.push(g);
                }
            }
            continue;
        }
        let trials = match StudyDir::new(dir).view()? {
            View::Store(s) => s.store().trials()?,
            View::Running { pid, .. } => bail!("{} is held by process {pid}", dir.display()),
        };
        for t in trials {
            if genomes.len() < a.genomes && seen.insert(t.genome.clone()) {
                genomes.push(t.genome);
            }
        }
    }
    if genomes.len() < 3 {
        bail!("the journals hold {} distinct genomes", genomes.len());
    }
    let spec = SampleDraw::new(a.tokens, a.seed);
    let mut scores = Vec::new();
    let half = match a.matmul {
        Matmul::F32 => a.dtype.to_string(),
        m => format!("{} weights, {m} matmul", a.dtype),
    };
    for (dtype, matmul) in [(WeightDtype::F32, Matmul::F32), (a.dtype, a.matmul)] {
        let fitness = FitnessSpec {
            dtype,
            matmul,
            ..exp.fitness
        };
        let label = if dtype == a.dtype && matmul == a.matmul {
            &half
        } else {
            "f32"
        };
        let mut ev = Evaluator::new(
            &prep.loaded,
            prep.db.clone(),
            prep.unit_layer.clone(),
            prep.calib.clone(),
            fitness,
            false,
            &device,
        )?;
        let bar = evocomp_eval::token_progress(genomes.len() as u64, label);
        let t0 = Instant::now();
        let mut v = Vec::new();
        for g in &genomes {
            v.push(ev.fitness(g, spec, None)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        eprintln!(
            "{label}: {} genomes in {:.0} s",
            genomes.len(),
            t0.elapsed().as_secs_f64()
        );
        scores.push(v);
    }
    let (x, y) = (&scores[0], &scores[1]);
    let rel: Vec<f64> = x
        .iter()
        .zip(y)
        .map(|(a, b)| (b - a).abs() / a.abs())
        .collect();
    let mean_rel = rel.iter().sum::<f64>() / rel.len() as f64;
    let max_rel = rel.iter().cloned().fold(0.0, f64::max);
    let spearman = rank_correlation(x, y);
    let (tau, agree_1pct, pairs_1pct) = kendall(x, y, 0.01);
    let (_, agree_all, pairs_all) = kendall(x, y, 0.0);
    let argmin = |v: &[f64]| (0..v.len()).min_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    let (bx, by) = (argmin(x), argmin(y));
    println!(
        "{} genomes from {} studies, {} tokens, fitness {:?} ({} vs f32)",
        genomes.len(),
        a.studies.len(),
        a.tokens,
        exp.fitness.metric,
        half
    );
    println!(
        "f32 fitness: {:.4} .. {:.4}",
        x.iter().cloned().fold(f64::INFINITY, f64::min),
        x.iter().cloned().fold(0.0, f64::max)
    );
    println!("relative change: mean {mean_rel:.4}, largest {max_rel:.4}");
    println!("Spearman rho {spearman:.4}, Kendall tau-b {tau:.4}");
    println!(
        "pairs in the same order: {:.4} of all {pairs_all}; {:.4} of the {pairs_1pct} more than 1% apart",
        agree_all, agree_1pct
    );
    println!(
        "best in f32: #{bx} ({:.4}); best in {}: #{by} ({:.4}, f32 {:.4}, rank {} in f32)",
        x[bx],
        half,
        y[by],
        x[by],
        ranks(x)[by]
    );
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "config": a.config, "studies": a.studies, "tokens": a.tokens, "seed": a.seed,
            "dtype": a.dtype.to_string(), "matmul": a.matmul.to_string(), "genomes": genomes, "f32": x, "half": y,
            "spearman": spearman, "kendall_tau_b": tau, "mean_relative_change": mean_rel,
            "max_relative_change": max_rel, "pairs_agree": agree_all,
            "pairs_agree_over_1pct": agree_1pct,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
