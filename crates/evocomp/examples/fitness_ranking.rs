//! Do top-k KL and full-vocabulary KL rank candidates alike? Scores `n`
//! random depth genomes (k of the database's blocks dropped) on one sample of
//! the calibration text with both fitnesses, from the same logits, and prints
//! Spearman's rank correlation, the share of pairs in the same order, and
//! whether both pick the same best genome, as JSON.
//!
//! ```text
//! cargo run --release -p evocomp --example fitness_ranking -- \
//!     MODEL DEPTH_DB TEXT N_GENOMES DROPPED SEQ_LEN SEQUENCES TOP_K
//! ```

use anyhow::{Context, Result, bail};
use evocomp_db::{Applier, Database};
use evocomp_eval::{EvalOptions, TeacherMode, batches, compute_teacher, kl_to_teacher_with};
use evocomp_search::surrogate::rank_correlation;
use indicatif::ProgressBar;

/// A deterministic stream (SplitMix64): the genomes depend on nothing else.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 8 {
        bail!(
            "usage: fitness_ranking MODEL DEPTH_DB TEXT N_GENOMES DROPPED SEQ_LEN SEQUENCES TOP_K"
        );
    }
    let num = |i: usize| -> Result<usize> {
        a[i].parse()
            .with_context(|| format!("argument {}: {}", i + 1, a[i]))
    };
    let (n, dropped, seq_len, seqs, k) = (num(3)?, num(4)?, num(5)?, num(6)?, num(7)?);
    let loaded = evocomp::score::load(a[0].as_ref())?;
    let db = Database::open(a[1].as_ref())?;
    db.check_model(&loaded.info.fingerprint()?)?;
    let units = db.manifest.units.len();
    if dropped == 0 || dropped >= units {
        bail!("DROPPED must be between 1 and {}", units - 1);
    }
    let set = evocomp_engine::token_set(&loaded, a[2].as_ref())?;
    let sample = set.sample(seqs, seq_len, 7)?;
    let chosen = evocomp::device::choose(evocomp::BackendChoice::Cpu)?;
    let dtype = evocomp_model::WeightDtype::F32;
    let teacher_model = loaded.to_device(&chosen.device, dtype)?;
    let opts = EvalOptions {
        batch_size: 4,
        ..Default::default()
    };
    let bar = ProgressBar::hidden();
    let full = compute_teacher(&teacher_model, &sample, TeacherMode::Full, &opts, &bar)?;
    let top = compute_teacher(&teacher_model, &sample, TeacherMode::TopK(k), &opts, &bar)?;
    drop(teacher_model);
    let mut student = loaded.to_device(&chosen.device, dtype)?;
    let mut applier = Applier::new(&db);
    let mut state = 0x5eed_u64;
    let mut seen = std::collections::HashSet::new();
    let (mut f_full, mut f_top) = (Vec::new(), Vec::new());
    let progress = evocomp_eval::token_progress((n * sample.n_tokens()) as u64, "genomes");
    while f_full.len() < n {
        let mut g = vec![0i64; units];
        let mut left = dropped;
        while left > 0 {
            let i = (next(&mut state) % units as u64) as usize;
            if g[i] == 0 {
                g[i] = 1;
                left -= 1;
            }
        }
        if !seen.insert(g.clone()) {
            continue;
        }
        applier.apply(&db, &mut student, &g)?;
        let logits = batches(&sample.sequences, opts.batch_size)
            .into_iter()
            .map(|r| student.forward(&sample.sequences[r]))
            .collect::<Result<Vec<_>, _>>()?;
        let from = |bi: usize, _: &[Vec<u32>]| Ok(logits[bi].clone());
        f_full.push(kl_to_teacher_with(&sample, &full, &opts, &bar, &from)?.kl);
        f_top.push(kl_to_teacher_with(&sample, &top, &opts, &bar, &from)?.kl);
        progress.inc(sample.n_tokens() as u64);
    }
    progress.finish_and_clear();
    let spearman = rank_correlation(&f_full, &f_top);
    let (mut same, mut pairs) = (0usize, 0usize);
    for i in 0..n {
        for j in i + 1..n {
            pairs += 1;
            if (f_full[i] - f_full[j]).signum() == (f_top[i] - f_top[j]).signum() {
                same += 1;
            }
        }
    }
    let argmin = |v: &[f64]| (0..v.len()).min_by(|&x, &y| v[x].total_cmp(&v[y])).unwrap();
    // Where the full-KL best ranks under top-k, and the other way round.
    let rank_of = |v: &[f64], i: usize| 1 + v.iter().filter(|&&x| x < v[i]).count();
    println!(
        "{}",
        serde_json::json!({
            "genomes": n,
            "dropped": dropped,
            "tokens": sample.n_tokens(),
            "seq_len": seq_len,
            "top_k": k,
            "spearman": spearman,
            "pairs_in_order": same as f64 / pairs as f64,
            "same_best": argmin(&f_full) == argmin(&f_top),
            "rank_under_top_k_of_full_best": rank_of(&f_top, argmin(&f_full)),
            "rank_under_full_of_top_k_best": rank_of(&f_full, argmin(&f_top)),
            "full_kl": f_full,
            "top_k_kl": f_top,
        })
    );
    Ok(())
}
