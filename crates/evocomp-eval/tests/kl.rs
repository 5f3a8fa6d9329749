//! KL(teacher ‖ student) and perplexity on a seeded random tiny model.

use burn::tensor::Device;
use evocomp_data::Sample;
use evocomp_eval::{
    EvalError, EvalOptions, TeacherMode, compute_teacher, kl_to_teacher, perplexity,
};
use evocomp_model::testing::{random_weights, tiny_config};
use evocomp_model::{LinearKind, LlamaModel};
use indicatif::ProgressBar;

fn sample() -> Sample {
    let sequences = (0..5u32)
        .map(|s| (0..24u32).map(|i| 4 + (i * 31 + s * 17) % 256).collect())
        .collect();
    Sample {
        id: "test-sample".into(),
        seq_len: 24,
        sequences,
    }
}

fn opts(batch_size: usize) -> EvalOptions {
    EvalOptions {
        batch_size,
        ..Default::default()
    }
}

#[test]
fn kl_of_a_model_to_itself_is_zero_and_grows_when_a_layer_is_perturbed() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 11);
    let d = Device::flex();
    let mut m = LlamaModel::new(&cfg, &w, &d);
    let s = sample();
    let bar = ProgressBar::hidden();
    for mode in [TeacherMode::Full, TeacherMode::TopK(16)] {
        let teacher = compute_teacher(&m, &s, mode, &opts(2), &bar).unwrap();
        let same = kl_to_teacher(&m, &s, &teacher, &opts(2), &bar).unwrap();
        assert!(same.kl.abs() < 1e-7, "{mode:?}: KL(p||p) = {}", same.kl);
        assert_eq!(same.tokens, s.n_tokens());

        // Perturb one layer: KL becomes clearly positive, and more so for a bigger change.
        let orig = w.layers[1].linear(LinearKind::Down).clone();
        let mut kls = Vec::new();
        for scale in [0.9f32, 0.5] {
            let mut p = orig.clone();
            p.data.iter_mut().for_each(|x| *x *= scale);
            m.set_linear(1, LinearKind::Down, &p).unwrap();
            kls.push(kl_to_teacher(&m, &s, &teacher, &opts(3), &bar).unwrap().kl);
        }
        m.set_linear(1, LinearKind::Down, &orig).unwrap();
        assert!(kls[0] > 1e-6, "{mode:?}: {kls:?}");
        assert!(kls[1] > kls[0], "{mode:?}: {kls:?}");
    }
}

#[test]
fn topk_kl_is_a_lower_bound_and_exact_at_full_vocab() {
    let cfg = tiny_config();
    let d = Device::flex();
    let teacher_model = LlamaModel::new(&cfg, &random_weights(&cfg, 12), &d);
    let mut student = teacher_model.clone();
    student.set_skip_mlp(0, true);
    let s = sample();
    let bar = ProgressBar::hidden();
    let full = compute_teacher(&teacher_model, &s, TeacherMode::Full, &opts(4), &bar).unwrap();
    let kl_full = kl_to_teacher(&student, &s, &full, &opts(4), &bar).unwrap();
    let top8 = compute_teacher(&teacher_model, &s, TeacherMode::TopK(8), &opts(4), &bar).unwrap();
    let kl_top8 = kl_to_teacher(&student, &s, &top8, &opts(4), &bar).unwrap();
    let all = compute_teacher(
        &teacher_model,
        &s,
        TeacherMode::TopK(cfg.vocab),
        &opts(4),
        &bar,
    )
    .unwrap();
    let kl_all = kl_to_teacher(&student, &s, &all, &opts(4), &bar).unwrap();
    assert!(kl_full.kl > 0.0);
    assert!(
        kl_top8.kl <= kl_full.kl + 1e-6,
        "{} > {}",
        kl_top8.kl,
        kl_full.kl
    );
    assert!(
        (kl_all.kl - kl_full.kl).abs() < 1e-4 * kl_full.kl.max(1.0),
        "{} vs {}",
        kl_all.kl,
        kl_full.kl
    );
    // The NLL does not depend on the teacher mode.
    assert!((kl_full.nll - kl_top8.nll).abs() < 1e-9);
    // Top-k teachers are far smaller than full ones.
    assert!(top8.host_bytes() * 10 < full.host_bytes());
}

#[test]
fn batch_size_does_not_change_the_result() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 13), &Device::flex());
    let mut student = m.clone();
    student.set_skip_attention(1, true);
    let s = sample();
    let bar = ProgressBar::hidden();
    let t = compute_teacher(&m, &s, TeacherMode::TopK(4), &opts(1), &bar).unwrap();
    let a = kl_to_teacher(&student, &s, &t, &opts(1), &bar).unwrap();
    let b = kl_to_teacher(&student, &s, &t, &opts(5), &bar).unwrap();
    assert!(
        (a.kl - b.kl).abs() < 1e-5 * a.kl.max(1e-3),
        "{} vs {}",
        a.kl,
        b.kl
    );
    assert!((a.nll - b.nll).abs() < 1e-5);
}

/// Batches in flight at once change nothing, bit for bit: teacher, KL, NLL
/// and perplexity (results are folded in batch order), also when a batch
/// fails.
#[test]
fn concurrent_batches_give_bit_identical_results() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 15), &Device::flex());
    let mut student = m.clone();
    student.set_skip_mlp(0, true);
    let s = sample();
    let bar = ProgressBar::hidden();
    let with = |n: usize| EvalOptions {
        concurrent_batches: n,
        ..opts(2)
    };
    for mode in [TeacherMode::Full, TeacherMode::TopK(8)] {
        let t1 = compute_teacher(&m, &s, mode, &with(1), &bar).unwrap();
        let one = kl_to_teacher(&student, &s, &t1, &with(1), &bar).unwrap();
        let ppl1 = perplexity(&student, &s.sequences, &with(1), &bar).unwrap();
        for n in [2, 3, 8] {
            let tn = compute_teacher(&m, &s, mode, &with(n), &bar).unwrap();
            assert!(tn == t1, "{mode:?}, {n}: the teachers differ");
            let r = kl_to_teacher(&student, &s, &tn, &with(n), &bar).unwrap();
            assert_eq!(r.kl.to_bits(), one.kl.to_bits(), "{mode:?}, {n}");
            assert_eq!(r.nll.to_bits(), one.nll.to_bits(), "{mode:?}, {n}");
            assert_eq!(r.tokens, one.tokens);
            let p = perplexity(&student, &s.sequences, &with(n), &bar).unwrap();
            assert_eq!(p.nll.to_bits(), ppl1.nll.to_bits(), "{n}");
        }
    }
    // A failing batch among concurrent ones is an error, not a panic.
    let mut bad = s.clone();
    bad.sequences[3] = vec![1];
    bad.sequences[4] = vec![1];
    assert!(perplexity(&student, &bad.sequences, &with(2), &bar).is_err());
}

#[test]
fn perplexity_matches_the_nll_of_the_kl_pass() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 14), &Device::flex());
    let s = sample();
    let bar = ProgressBar::hidden();
    let p = perplexity(&m, &s.sequences, &opts(2), &bar).unwrap();
    assert_eq!(p.predictions, 5 * 23);
    let t = compute_teacher(&m, &s, TeacherMode::TopK(4), &opts(2), &bar).unwrap();
    let k = kl_to_teacher(&m, &s, &t, &opts(2), &bar).unwrap();
    assert!((p.perplexity - k.perplexity()).abs() < 1e-6 * p.perplexity);
    // A random model is confidently wrong: a large but finite perplexity.
    assert!(
        p.perplexity.is_finite() && p.perplexity > 1.0,
        "{}",
        p.perplexity
    );
}

#[test]
fn bad_settings_are_errors() {
    let cfg = tiny_config();
    let m = LlamaModel::new(&cfg, &random_weights(&cfg, 15), &Device::flex());
    let s = sample();
    let bar = ProgressBar::hidden();
    let small = EvalOptions {
        batch_size: 2,
        max_teacher_bytes: 1000,
        concurrent_batches: 1,
        skip_positions: 0,
    };
    assert!(matches!(
        compute_teacher(&m, &s, TeacherMode::Full, &small, &bar),
        Err(EvalError::Memory { .. })
    ));
    assert!(compute_teacher(&m, &s, TeacherMode::TopK(0), &opts(2), &bar).is_err());
    assert!(compute_teacher(&m, &s, TeacherMode::TopK(4), &opts(0), &bar).is_err());
    let t = compute_teacher(&m, &s, TeacherMode::TopK(4), &opts(2), &bar).unwrap();
    let mut other = sample();
    other.id = "another".into();
    assert!(matches!(
        kl_to_teacher(&m, &other, &t, &opts(2), &bar),
        Err(EvalError::SampleMismatch { .. })
    ));
    assert!(perplexity(&m, &[], &opts(2), &bar).is_err());
}

#[test]
fn window_scores_agree_with_kl_to_teacher_and_perplexity() {
    let cfg = tiny_config();
    let w = random_weights(&cfg, 7);
    let d = Device::flex();
    let teacher = LlamaModel::new(&cfg, &w, &d);
    let mut student = LlamaModel::new(&cfg, &w, &d);
    let mut p = w.layers[1].linear(LinearKind::Down).clone();
    p.data.iter_mut().for_each(|x| *x *= -4.0);
    student.set_linear(1, LinearKind::Down, &p).unwrap();
    let s = sample();
    let bar = ProgressBar::hidden();
    let got = evocomp_eval::window_scores(
        &teacher,
        &[&teacher, &student],
        &s.sequences,
        &opts(2),
        &bar,
    )
    .unwrap();
    assert_eq!(got[0].len(), s.sequences.len());
    // The teacher against itself: KL 0, full agreement, its own NLL.
    for w in &got[0] {
        assert!(w.kl.abs() < 1e-6, "{w:?}");
        assert_eq!(w.top1_agree, 1.0);
        assert!((w.nll - w.teacher_nll).abs() < 1e-12);
    }
    // The student: the mean over windows is kl_to_teacher's with a full
    // teacher, and perplexity's NLL (windows of equal length).
    let full = compute_teacher(&teacher, &s, TeacherMode::Full, &opts(2), &bar).unwrap();
    let r = kl_to_teacher(&student, &s, &full, &opts(2), &bar).unwrap();
    let n = got[1].len() as f64;
    let kl = got[1].iter().map(|w| w.kl).sum::<f64>() / n;
    let nll = got[1].iter().map(|w| w.nll).sum::<f64>() / n;
    assert!(kl > 1e-4);
    assert!((kl - r.kl).abs() < 1e-5 * r.kl, "{kl} vs {}", r.kl);
    let ppl = perplexity(&student, &s.sequences, &opts(2), &bar).unwrap();
    assert!((nll - ppl.nll).abs() < 1e-9, "{nll} vs {}", ppl.nll);
    assert!(got[1].iter().any(|w| w.top1_agree < 1.0));
}

#[test]
fn skipped_positions_are_left_out_of_kl_and_nll() {
    // The first k positions' share of the sums is what the same sequences
    // cut to their first k tokens give (the model is causal), so the scores
    // with k skipped are the rest exactly.
    let cfg = tiny_config();
    let w = random_weights(&cfg, 21);
    let d = Device::flex();
    let teacher = LlamaModel::new(&cfg, &w, &d);
    let mut student = LlamaModel::new(&cfg, &w, &d);
    let mut p = w.layers[0].linear(LinearKind::Up).clone();
    p.data.iter_mut().for_each(|x| *x *= 0.7);
    student.set_linear(0, LinearKind::Up, &p).unwrap();
    let bar = ProgressBar::hidden();
    let s = sample();
    let (t, k, n) = (s.seq_len, 6usize, s.sequences.len());
    let cut = |len: usize| Sample {
        id: format!("cut-{len}"),
        seq_len: len,
        sequences: s.sequences.iter().map(|q| q[..len].to_vec()).collect(),
    };
    let score = |s: &Sample, skip: usize| {
        let o = EvalOptions {
            skip_positions: skip,
            ..opts(2)
        };
        let teacher = compute_teacher(&teacher, s, TeacherMode::Full, &o, &bar).unwrap();
        kl_to_teacher(&student, s, &teacher, &o, &bar).unwrap()
    };
    let all = score(&s, 0);
    let rest = score(&s, k);
    assert_eq!(rest.tokens, n * (t - k));
    let head_kl = score(&cut(k), 0);
    let head_nll = score(&cut(k + 1), 0);
    let kl_sum = rest.kl * (t - k) as f64 + head_kl.kl * k as f64;
    assert!((kl_sum - all.kl * t as f64).abs() < 1e-4 * all.kl * t as f64);
    let nll_sum = rest.nll * (t - 1 - k) as f64 + head_nll.nll * k as f64;
    assert!((nll_sum - all.nll * (t - 1) as f64).abs() < 1e-9 * all.nll * t as f64);
    assert!((rest.kl - all.kl).abs() > 1e-6, "skipping changes the mean");
    // Skipping every position is an error, not a NaN.
    assert!(matches!(
        kl_to_teacher(
            &student,
            &s,
            &compute_teacher(&teacher, &s, TeacherMode::Full, &opts(2), &bar).unwrap(),
            &EvalOptions {
                skip_positions: t - 1,
                ..opts(2)
            },
            &bar
        ),
        Err(EvalError::Invalid(_))
    ));
}
