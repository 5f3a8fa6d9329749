//! Anytime search's parts inside EvoPress and NSGA-II: racing, the
//! surrogate, warm starts and the token limit.

use super::{fitness, score_all, small_cfg, sparsity_space};
use crate::rng::mix;
use crate::{
    Budget, BudgetHint, Build, DpSpec, EvoPress, EvoPressSpec, Genome, Kind, Measurements,
    Nsga2Spec, Preset, Racing, SampleDraw, Scored, Setup, Space, Spec, Start, Strategy,
    SurrogateSpec, WarmStart,
};
use proptest::prelude::{prop_assert, proptest};

/// Rounded to a multiple of 2⁻¹⁰, so that sums and means over powers of two
/// are exact.
fn q(x: f64) -> f64 {
    (x * 1024.0).round() / 1024.0
}

/// A genome's value on one sequence (8 tokens) of a seed's draw: its true
/// fitness, plus noise every genome shares on that sequence (how hard the
/// text is), plus a little of its own.
fn seq_value(g: &[i64], seed: u64, k: usize) -> f64 {
    let h = g.iter().fold(0u64, |a, &l| mix(a, &[l as u64]));
    let shared = (mix(seed, &[k as u64]) % 2048) as f64 / 1024.0;
    let own = (mix(seed, &[k as u64, h]) % 256) as f64 / 1024.0;
    q(fitness(g)) + shared + own
}

/// The mean over the sample's sequences, as the engine's KL is a mean over tokens.
fn noisy(g: &[i64], s: SampleDraw) -> f64 {
    assert!(s.tokens.is_multiple_of(8) && s.skip.is_multiple_of(8));
    let (n, first) = (s.tokens / 8, s.skip / 8);
    (first..first + n)
        .map(|k| seq_value(g, s.seed, k))
        .sum::<f64>()
        / n as f64
}

/// Ask, score, tell (with a checkpoint round trip) until done; the asks.
fn drive(s: &mut EvoPress, space: &Space) -> Vec<Vec<crate::Request>> {
    let mut all = Vec::new();
    while !s.is_done() {
        let asks = s.ask(space);
        let results: Vec<Scored> = asks
            .iter()
            .rev()
            .map(|r| Scored {
                id: r.id,
                fitness: noisy(&r.genome, r.sample),
            })
            .collect();
        s.tell(space, &results).unwrap();
        *s = serde_json::from_str(&serde_json::to_string(&*s).unwrap()).unwrap();
        all.push(asks);
    }
    all
}

fn racing(confidence: f64) -> Racing {
    Racing {
        chunk: 16,
        confidence,
        min_chunks: 2,
    }
}

#[test]
fn racing_that_never_drops_is_plain_selection() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let mut plain = EvoPress::new(small_cfg(3), &space, budget, u.clone()).unwrap();
    let mut cfg = small_cfg(3);
    cfg.racing = Some(racing(1.0));
    let mut raced = EvoPress::new(cfg, &space, budget, u.clone()).unwrap();
    let plain_asks = drive(&mut plain, &space);
    let raced_asks = drive(&mut raced, &space);
    assert_eq!(plain.history, raced.history);
    assert_eq!(plain.parent, raced.parent);
    assert_eq!(plain.tokens_asked, raced.tokens_asked);
    // The same tokens, asked in chunks of 16.
    assert!(plain_asks.iter().flatten().all(|r| r.sample.tokens >= 64));
    assert!(raced_asks.iter().flatten().all(|r| r.sample.tokens == 16));
    assert!(raced_asks.len() > plain_asks.len());
    // Over 60 generations the search improves on the start.
    assert!(fitness(&plain.parent) < fitness(&u));

    // Racing that drops asks fewer tokens for the same generations.
    let mut cfg = small_cfg(3);
    cfg.racing = Some(racing(0.9));
    let mut fast = EvoPress::new(cfg, &space, budget, u.clone()).unwrap();
    drive(&mut fast, &space);
    assert_eq!(fast.history.len(), plain.history.len());
    assert!(
        (fast.tokens_asked as f64) < 0.9 * plain.tokens_asked as f64,
        "{} vs {}",
        fast.tokens_asked,
        plain.tokens_asked
    );
    assert!(fitness(&fast.parent) < fitness(&u));
}

/// Racing a stage of per-chunk scores the way EvoPress does: every live
/// candidate gets the next chunk, then the confidently beaten are dropped,
/// until all chunks are scored or only `keep` are left. The survivors, best
/// first, and the chunks scored.
fn race(r: &Racing, full: &[Vec<f64>], keep: usize) -> (Vec<usize>, usize) {
    let m = full[0].len();
    let mut alive: Vec<usize> = (0..full.len()).collect();
    let mut scored = 0;
    for j in 1..=m {
        let scores: Vec<Vec<f64>> = full.iter().map(|s| s[..j].to_vec()).collect();
        scored += alive.len();
        let out = r.dropped(&scores, &alive, keep);
        alive.retain(|i| !out.contains(i));
        if alive.len() <= keep || j == m {
            let mean = |i: usize| scores[i].iter().sum::<f64>() / j as f64;
            alive.sort_by(|&a, &b| mean(a).total_cmp(&mean(b)));
            alive.truncate(keep);
            return (alive, scored);
        }
    }
    unreachable!()
}

#[test]
fn racing_keeps_a_slow_starter_that_full_scoring_keeps() {
    // Candidate 0 is the best on the whole sample but the worst on the first
    // chunk; 3 is clearly the worst.
    let full = vec![
        vec![0.9, 0.1, 0.1, 0.1, 0.1, 0.1],
        vec![0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        vec![0.52, 0.48, 0.51, 0.49, 0.5, 0.5],
        vec![2.0, 2.1, 1.9, 2.0, 2.0, 2.0],
    ];
    let r = racing(0.95);
    let (kept, scored) = race(&r, &full, 1);
    assert_eq!(kept, vec![0]);
    assert!(scored < 4 * 6, "{scored}");
    // Survivors of two: full scoring keeps 0 and 1 or 2 (equal means); so does racing.
    let (kept, _) = race(&r, &full, 2);
    assert_eq!(kept[0], 0);
    assert_ne!(kept[1], 3);
}

proptest! {
    /// The `keep` candidates with the lowest means are never dropped, so a
    /// stage always keeps enough.
    #[test]
    fn racing_never_drops_the_leaders(
        raw in proptest::collection::vec(proptest::collection::vec(0.0f64..1.0, 5), 3..9),
        keep in 1usize..3,
        j in 2usize..6,
    ) {
        let scores: Vec<Vec<f64>> = raw.iter().enumerate()
            .map(|(i, s)| s[..j].iter().map(|x| x + 0.05 * i as f64).collect())
            .collect();
        let alive: Vec<usize> = (0..scores.len()).collect();
        let out = racing(0.6).dropped(&scores, &alive, keep);
        let mean = |i: usize| scores[i].iter().sum::<f64>() / j as f64;
        let mut order = alive.clone();
        order.sort_by(|&a, &b| mean(a).total_cmp(&mean(b)));
        for leader in &order[..keep.min(order.len())] {
            prop_assert!(!out.contains(leader), "dropped leader {leader}: {out:?}");
        }
        prop_assert!(scores.len() - out.len() >= keep);
    }
}

#[test]
fn the_surrogate_screens_offspring_and_reports_its_error() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let mut cfg = small_cfg(5);
    cfg.generations = 30;
    cfg.surrogate = Some(SurrogateSpec::default());
    let mut s = EvoPress::new(cfg, &space, budget, u.clone()).unwrap();
    let asks = drive(&mut s, &space);
    assert!(
        asks.iter()
            .flatten()
            .all(|r| space.feasible(&r.genome, &budget))
    );
    // It screened from the generation its training set reached 24 genomes.
    assert!(
        s.surrogate_errors.len() >= 20,
        "{}",
        s.surrogate_errors.len()
    );
    assert!(s.scored.len() <= 256);
    // The fitness is additive plus noise: once trained, its ranking of the
    // offspring agrees with their scores.
    let late = &s.surrogate_errors[s.surrogate_errors.len() / 2..];
    let mean_rho = late.iter().map(|e| e.rank_correlation).sum::<f64>() / late.len() as f64;
    assert!(mean_rho > 0.5, "{mean_rho}");
    let m = s.metrics();
    assert!(m.iter().any(|(k, _)| k == "surrogate_rank_correlation"));
    assert!(fitness(&s.parent) < fitness(&u));
}

#[test]
fn a_token_limit_stops_the_search() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&u));
    let mut cfg = small_cfg(5);
    // One generation asks 8 × 64 + 3 × 256 = 1280 tokens.
    cfg.max_tokens = Some(3000);
    let mut s = EvoPress::new(cfg, &space, budget, u).unwrap();
    drive(&mut s, &space);
    assert_eq!(s.history.len(), 3);
    assert_eq!(s.tokens_asked, 3 * 1280);
}

fn setup<'a>(space: &'a Space, budget: Budget, errors: &'a [Vec<f64>]) -> Setup<'a> {
    Setup {
        space,
        budget,
        hint: BudgetHint::UniformLevel(0),
        kind: Kind::Sparsity,
        seed: 4,
        sample: SampleDraw::new(64, 1),
        unit_layer: &[0, 0, 1, 1, 2, 2, 3, 3],
        unit_numel: None,
        level_errors: Some(errors),
        measured: Measurements::default(),
        given: &[],
    }
}

/// Per unit and level, the fitness it adds: DP over these is the optimum
/// of the additive fitness.
fn level_errors(space: &Space) -> Vec<Vec<f64>> {
    space
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            u.levels
                .iter()
                .map(|&l| {
                    let mut g = vec![0i64; space.len()];
                    g[i] = l;
                    fitness(&g)
                })
                .collect()
        })
        .collect()
}

fn dp() -> WarmStart {
    WarmStart::Dp(DpSpec {
        max_states: 100_000,
        per_size_group: false,
    })
}

/// EvoPress from the best of `of` on 64 tokens, stages 2 on 64 → 1 on 256.
fn warm_settings(of: Vec<WarmStart>, generations: usize, offspring: usize) -> EvoPressSpec {
    EvoPressSpec {
        preset: Preset::Sparsity,
        generations: Some(generations),
        offspring: Some(offspring),
        stages: Some(vec![(2, 64), (1, 256)]),
        max_flips: None,
        start: Some(Start::Best { of, tokens: 64 }),
        final_choice: Some(crate::FinalChoice::Off),
        racing: None,
        surrogate: None,
        max_tokens: None,
    }
}

#[test]
fn warm_starts_are_on_the_budget_and_the_best_one_leads() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    for budget in [
        Budget::Exact(space.cost(&u)),
        Budget::AtMost(space.cost(&u)),
    ] {
        let settings = warm_settings(vec![WarmStart::Uniform, dp(), WarmStart::Filled], 5, 8);
        settings.validate(8).unwrap();
        let st = setup(&space, budget, &errors);
        let mut s = settings.build(&st).unwrap();
        let first = s.ask(&space);
        let genomes: Vec<Genome> = first.iter().map(|r| r.genome.clone()).collect();
        assert!(genomes.contains(&u));
        assert!(genomes.iter().all(|g| space.feasible(g, &budget)));
        let dp_genome = dp().genome(&st).unwrap();
        assert!(genomes.contains(&dp_genome));
        // DP is the additive fitness's optimum: it beats uniform, and leads.
        assert!(fitness(&dp_genome) < fitness(&u));
        let asks = drive(&mut s, &space);
        assert!(
            asks.iter()
                .flatten()
                .all(|r| space.feasible(&r.genome, &budget))
        );
        assert!(fitness(&s.parent) <= fitness(&dp_genome) + 1e-9);
    }
}

#[test]
fn nsga2_warm_starts_join_the_first_population() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let settings = Nsga2Spec {
        population: 8,
        generations: 2,
        warm: vec![dp(), WarmStart::Uniform],
        dp_points: None,
    };
    settings.validate(8).unwrap();
    let budget = settings.search_budget(Budget::Exact(space.cost(&u)));
    let st = setup(&space, budget, &errors);
    let s = settings.build(&st).unwrap();
    let first: Vec<Genome> = s.ask(&space).into_iter().map(|r| r.genome).collect();
    assert!(first.contains(&dp().genome(&st).unwrap()));
    assert!(first.contains(&u));
    assert!(first.iter().all(|g| space.cost(g) <= budget.limit()));
    assert!(
        Nsga2Spec {
            population: 4,
            generations: 1,
            warm: vec![dp(); 4],
            dp_points: None,
        }
        .validate(8)
        .is_err()
    );
}

#[test]
fn a_given_configuration_is_a_warm_start_by_name() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::AtMost(space.cost(&u));
    let mut preset = u.clone();
    preset[0] = -1;
    preset[1] = 1;
    let given = vec![("P".to_string(), preset.clone())];
    let mut st = setup(&space, budget, &errors);
    st.given = &given;
    assert_eq!(
        WarmStart::Given("P".into()).genome(&st).unwrap(),
        preset.clone()
    );
    let e = WarmStart::Given("Q".into())
        .genome(&st)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no configuration named Q") && e.contains("offers: P"),
        "{e}"
    );
    // Over the budget: refused, named.
    let mut dear = u.clone();
    dear[0] = -2;
    let given = vec![("D".to_string(), dear)];
    st.given = &given;
    let e = WarmStart::Given("D".into())
        .genome(&st)
        .unwrap_err()
        .to_string();
    assert!(e.contains("D costs"), "{e}");
}

#[test]
fn shortened_llama_warm_start_probes_first_then_its_genome_joins_the_start() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    let settings = warm_settings(vec![WarmStart::ShortenedLlama, WarmStart::Uniform], 3, 4);
    let st = setup(&space, budget, &errors);
    let mut s = settings.build(&st).unwrap();
    // One probe per unit: that unit alone at its most compressed level.
    let probes = s.ask(&space);
    assert_eq!(probes.len(), space.len());
    assert!(probes.iter().all(|r| r.probe && r.sample.tokens == 64));
    s.tell(&space, &score_all(&probes)).unwrap();
    assert_eq!(s.tokens_asked, 8 * 64);
    // Then the start: uniform and the leave-one-out genome, both on the budget.
    let start = s.ask(&space);
    assert_eq!(start.len(), 2);
    assert!(
        start
            .iter()
            .all(|r| !r.probe && space.feasible(&r.genome, &budget))
    );
    let scores: Vec<f64> = probes.iter().map(|r| fitness(&r.genome)).collect();
    let loo = crate::heuristics::lowest_scores_first(&space, &scores, &budget).unwrap();
    assert!(start.iter().any(|r| r.genome == loo));
    drive(&mut s, &space);
    assert_eq!(s.history.len(), 3);
    // Not a warm start NSGA-II can take.
    let n = Nsga2Spec {
        population: 8,
        generations: 1,
        warm: vec![WarmStart::ShortenedLlama],
        dp_points: None,
    };
    assert!(n.validate(8).is_err());
}

/// EvoPress with the defaults: no `start`, no `final_choice`.
fn default_settings(generations: usize) -> EvoPressSpec {
    EvoPressSpec {
        preset: Preset::Sparsity,
        generations: Some(generations),
        offspring: Some(8),
        stages: Some(vec![(2, 64), (1, 256)]),
        max_flips: None,
        start: None,
        final_choice: None,
        racing: None,
        surrogate: None,
        max_tokens: None,
    }
}

#[test]
fn the_default_start_is_every_known_heuristic_and_the_best_leads() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    let settings = default_settings(3);
    settings.validate(8).unwrap();
    let st = setup(&space, budget, &errors);
    // OWL needs outlier ratios: the default asks for them on a sparsity database only.
    assert!(settings.needs(Kind::Sparsity).outlier_ratios.is_some());
    assert!(settings.needs(Kind::Depth).block_influence);
    assert_eq!(settings.needs(Kind::Quantization), crate::Needs::default());
    let mut s = settings.build(&st).unwrap();
    // OWL has no ratios in this setup: it is left out, the others are in.
    let crate::Start::Best { of, tokens } = &s.cfg.start else {
        panic!("the default start is a warm start: {:?}", s.cfg.start)
    };
    assert_eq!(*tokens, 256, "scored on the last stage's tokens");
    assert!(of.contains(&WarmStart::Uniform));
    assert!(of.iter().any(|w| matches!(w, WarmStart::Dp(_))));
    assert!(!of.iter().any(|w| matches!(w, WarmStart::Owl(_))));
    let first: Vec<Genome> = s.ask(&space).into_iter().map(|r| r.genome).collect();
    let dp_genome = dp().genome(&st).unwrap();
    assert!(
        first.contains(&dp_genome),
        "the default start holds DP's genome"
    );
    assert!(first.contains(&u), "and the uniform one");
    drive(&mut s, &space);
    // DP is the additive optimum and the final choice re-scores the start's
    // best, so the search ends no worse than it.
    assert!(fitness(&s.parent) <= fitness(&dp_genome) + 1e-9);
}

#[test]
fn start_random_is_the_published_start_without_a_final_choice() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let settings = EvoPressSpec {
        start: Some(Start::Random),
        ..default_settings(2)
    };
    let st = setup(&space, Budget::Exact(space.cost(&u)), &errors);
    let s = settings.build(&st).unwrap();
    assert_eq!(s.cfg.start, Start::Uniform);
    assert_eq!(s.cfg.final_choice, crate::FinalChoice::Off);
    assert_eq!(s.ask(&space).len(), 8, "the first generation, from uniform");
}

#[test]
fn the_final_choice_rescores_the_finalists_and_keeps_the_lowest_mean() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    let settings = EvoPressSpec {
        start: Some(Start::Best {
            of: vec![WarmStart::Uniform, dp(), WarmStart::Random(4)],
            tokens: 64,
        }),
        ..default_settings(4)
    };
    let st = setup(&space, budget, &errors);
    let mut s = settings.build(&st).unwrap();
    // 4 candidates on 512 tokens (twice the last stage) in chunks of 64.
    assert_eq!(
        s.cfg.final_choice,
        crate::FinalChoice::Best {
            candidates: 4,
            tokens: 512,
            chunk: 64,
            extend: 3,
            margin: 2.0,
        }
    );
    let asks = drive(&mut s, &space);
    let r = s.final_report.clone().expect("the final choice ran");
    assert!(r.candidates.len() >= 2 && r.candidates.len() <= 4);
    // The final choice's asks: every request on one fresh sample, in
    // chunks of 64; the first round every candidate on 8 chunks, each
    // extension the two leaders on 8 more.
    let seed = asks.last().unwrap()[0].sample.seed;
    let finals: Vec<&Vec<crate::Request>> =
        asks.iter().filter(|a| a[0].sample.seed == seed).collect();
    assert_eq!(finals.len(), 1 + r.extended);
    assert_eq!(finals[0].len(), r.candidates.len() * 8);
    // Chunk by chunk: every candidate of a chunk in a row (one teacher per chunk).
    assert!(
        finals[0]
            .chunks(r.candidates.len())
            .all(|c| c.iter().all(|q| q.sample.skip == c[0].sample.skip))
    );
    assert!(finals[1..].iter().all(|a| a.len() == 16));
    let all: Vec<&crate::Request> = finals.iter().flat_map(|a| a.iter()).collect();
    assert!(
        all.iter()
            .all(|q| q.sample.seed == seed && q.sample.tokens == 64)
    );
    // No chunk is scored twice for a genome.
    let mut seen = std::collections::HashSet::new();
    assert!(
        all.iter()
            .all(|q| seen.insert((q.genome.clone(), q.sample.skip)))
    );
    // The chosen one has the lowest mean, recomputed from the asks.
    let mean = |g: &Genome| {
        let v: Vec<f64> = all
            .iter()
            .filter(|q| &q.genome == g)
            .map(|q| noisy(&q.genome, q.sample))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let chosen = &r.candidates[r.chosen].0;
    assert_eq!(&s.parent, chosen);
    assert_eq!(r.chunks, 8 * (1 + r.extended));
    let lowest = r
        .candidates
        .iter()
        .map(|c| c.1)
        .fold(f64::INFINITY, f64::min);
    for (g, m, se) in &r.candidates {
        assert!((mean(g) - m).abs() < 1e-12);
        assert!(se.is_finite() && *se >= 0.0);
    }
    // The start's best genome was a candidate: the incumbent.
    let start_best = &s.finalists[0].0;
    assert!(r.candidates.iter().any(|(g, _, _)| g == start_best));
    // It stopped because the gap exceeds 2 standard errors, or after 3 rounds;
    // the lowest mean won, unless it was not shown better than the incumbent.
    let (gap, gap_se) = r.gap.unwrap();
    assert!(gap >= 0.0 && gap_se.is_finite());
    assert!(gap > 2.0 * gap_se || r.extended == 3, "{r:?}");
    if r.kept_incumbent {
        assert_eq!(chosen, start_best);
        assert!(gap <= 2.0 * gap_se, "{r:?}");
    } else {
        assert_eq!(r.candidates[r.chosen].1, lowest);
    }
    let m: std::collections::HashMap<String, f64> = s.metrics().into_iter().collect();
    assert_eq!(m["final_fitness"], r.candidates[r.chosen].1);
    assert!(m.contains_key("final_standard_error"));
}

#[test]
fn a_final_choice_extends_the_two_leaders_while_it_cannot_tell_them_apart() {
    // Two candidates whose scores differ only by noise: every round leaves
    // the gap within its standard error, so all 2 extensions run; with
    // extend 0 the first round decides.
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    for extend in [0usize, 2] {
        let settings = EvoPressSpec {
            start: Some(Start::Best {
                of: vec![WarmStart::Uniform, WarmStart::Random(2)],
                tokens: 64,
            }),
            final_choice: Some(crate::FinalChoice::Best {
                candidates: 2,
                tokens: 256,
                chunk: 64,
                extend,
                margin: crate::strategies::evopress::DEFAULT_MARGIN,
            }),
            ..default_settings(1)
        };
        let st = setup(&space, budget, &errors);
        let mut s = settings.build(&st).unwrap();
        // Every genome scores the same mean; chunks differ by alternating noise.
        while !s.is_done() {
            let asks = s.ask(&space);
            let results: Vec<Scored> = asks
                .iter()
                .map(|r| Scored {
                    id: r.id,
                    fitness: 1.0
                        + if (r.sample.skip / 64 + r.id as usize).is_multiple_of(2) {
                            0.01
                        } else {
                            -0.01
                        },
                })
                .collect();
            s.tell(&space, &results).unwrap();
        }
        let r = s.final_report.clone().unwrap();
        assert_eq!(r.extended, extend, "{r:?}");
        assert_eq!(r.chunks, 4 * (1 + extend));
    }
}

#[test]
fn a_final_choice_that_does_not_cut_into_sequences_is_refused() {
    let bad = EvoPressSpec {
        final_choice: Some(crate::FinalChoice::Best {
            candidates: 4,
            tokens: 500,
            chunk: 100,
            extend: 3,
            margin: 2.0,
        }),
        ..default_settings(2)
    };
    assert!(bad.validate(8).is_err());
    let too_many = EvoPressSpec {
        final_choice: Some(crate::FinalChoice::Best {
            candidates: 0,
            tokens: 512,
            chunk: 64,
            extend: 3,
            margin: 2.0,
        }),
        ..default_settings(2)
    };
    assert!(too_many.validate(8).is_err());
    // The default is checked too: stages of 60 tokens do not cut into 8-token sequences.
    let odd = EvoPressSpec {
        stages: Some(vec![(1, 60)]),
        ..default_settings(2)
    };
    let e = odd.validate(8).unwrap_err();
    assert!(e.to_string().contains("set final_choice"), "{e}");
}

#[test]
fn nsga2_starts_with_dp_across_the_budget_range_and_the_given_presets() {
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let settings = Nsga2Spec {
        population: 16,
        generations: 2,
        warm: vec![],
        dp_points: None,
    };
    settings.validate(8).unwrap();
    let budget = settings.search_budget(Budget::Exact(space.cost(&u)));
    let preset = space.uniform(space.units[0].levels[1]).unwrap();
    let given = [("preset".to_string(), preset.clone())];
    let mut st = setup(&space, budget, &errors);
    st.given = &given;
    let s = settings.build(&st).unwrap();
    let first: Vec<Genome> = s.ask(&space).into_iter().map(|r| r.genome).collect();
    // A quarter of the population: 4 knapsacks, evenly up to the budget.
    let (lo, hi) = (space.min_cost(), budget.limit());
    for k in 1..=4u64 {
        let c = lo + (hi - lo) * k / 4;
        let (g, _, _) = crate::knapsack(&space, &errors, Budget::AtMost(c), 200_000).unwrap();
        assert!(
            first.contains(&g),
            "DP at cost {c} is in the first population"
        );
    }
    if space.cost(&preset) <= hi {
        assert!(first.contains(&preset));
    }
    assert!(first.iter().all(|g| space.cost(g) <= hi));
    assert!(
        Nsga2Spec {
            dp_points: Some(16),
            ..settings
        }
        .validate(8)
        .is_err()
    );
}

#[test]
fn a_wrong_answer_leaves_every_phase_as_it_was() {
    // Start, generations and the final choice (with its extensions): an
    // answer of the wrong size is a Protocol error and changes nothing.
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    let st = setup(&space, budget, &errors);
    let mut s = default_settings(2).build(&st).unwrap();
    let mut steps = 0;
    while !s.is_done() {
        let asks = s.ask(&space);
        let before = s.clone();
        let short: Vec<Scored> = asks
            .iter()
            .skip(1)
            .map(|r| Scored {
                id: r.id,
                fitness: noisy(&r.genome, r.sample),
            })
            .collect();
        assert!(matches!(
            s.tell(&space, &short),
            Err(crate::SearchError::Protocol(_))
        ));
        assert_eq!(s, before, "step {steps}");
        let all: Vec<Scored> = asks
            .iter()
            .map(|r| Scored {
                id: r.id,
                fitness: noisy(&r.genome, r.sample),
            })
            .collect();
        s.tell(&space, &all).unwrap();
        steps += 1;
    }
    assert!(s.final_report.is_some());
}

/// EvoPress starting from the best of `of` on 64 tokens, at the uniform genome's cost.
fn started_from(space: &Space, errors: &[Vec<f64>], of: Vec<WarmStart>) -> EvoPress {
    let budget = Budget::Exact(space.cost(&space.uniform(0).unwrap()));
    let settings = EvoPressSpec {
        start: Some(Start::Best { of, tokens: 64 }),
        ..default_settings(1)
    };
    settings.build(&setup(space, budget, errors)).unwrap()
}

/// Every ask answered with `f` of its genome.
fn answer(asks: &[crate::Request], f: impl Fn(&crate::Request) -> f64) -> Vec<Scored> {
    asks.iter()
        .map(|r| Scored {
            id: r.id,
            fitness: f(r),
        })
        .collect()
}

#[test]
fn the_incumbent_is_the_best_heuristic_genome_even_where_a_random_one_scores_better() {
    // The start: the uniform genome (a heuristic's) and 4 random genomes.
    // Every random genome scores better than the uniform one at the start,
    // so the search starts from a random one, but the final choice's
    // incumbent is the uniform genome: a random genome must beat it there.
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let of = vec![WarmStart::Uniform, WarmStart::Random(4)];
    let mut s = started_from(&space, &errors, of.clone());
    assert_eq!(s.heuristics, vec![u.clone()]);
    let start = s.ask(&space);
    assert!(start.len() >= 2 && start.iter().any(|r| r.genome == u));
    let worse_u = |r: &crate::Request| if r.genome == u { 1.0 } else { 0.5 };
    s.tell(&space, &answer(&start, worse_u)).unwrap();
    assert_ne!(s.parent, u, "the search starts from the best start genome");
    assert_eq!(
        s.finalists[0].0, u,
        "the incumbent is the heuristic's genome"
    );
    // The rest follow best first, and survive a checkpoint round trip.
    assert!(s.finalists[1..].iter().all(|(_, f)| *f == 0.5));
    let back: EvoPress = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back.heuristics, s.heuristics);
    // Without that knowledge (an older checkpoint), the best start genome is.
    let mut old = started_from(&space, &errors, of).with_heuristics(Vec::new());
    let asks = old.ask(&space);
    old.tell(&space, &answer(&asks, worse_u)).unwrap();
    assert_ne!(old.finalists[0].0, u);
}

#[test]
fn shortened_llamas_genome_from_the_probes_is_a_heuristic_genome() {
    let space = sparsity_space(8);
    let errors = level_errors(&space);
    let of = vec![WarmStart::ShortenedLlama, WarmStart::Random(3)];
    let mut s = started_from(&space, &errors, of);
    assert!(s.heuristics.is_empty());
    // The probes: one per unit.
    let probes = s.ask(&space);
    assert_eq!(probes.len(), space.len());
    s.tell(&space, &answer(&probes, |r| r.id as f64)).unwrap();
    assert_eq!(s.heuristics.len(), 1);
    let sl = s.heuristics[0].clone();
    let start = s.ask(&space);
    assert!(start.iter().any(|r| r.genome == sl));
    s.tell(
        &space,
        &answer(&start, |r| if r.genome == sl { 1.0 } else { 0.25 }),
    )
    .unwrap();
    assert_eq!(s.finalists[0].0, sl);
}

#[test]
fn the_default_depth_start_makes_its_probes_on_four_times_the_last_stage() {
    // A depth database: Shortened LLaMA's probes are in the default start,
    // and they and the start's genomes are scored on 4 x 256 tokens; without
    // probes (sparsity) the start is scored on the last stage's 256.
    let space = sparsity_space(8);
    let u = space.uniform(0).unwrap();
    let errors = level_errors(&space);
    let budget = Budget::Exact(space.cost(&u));
    let settings = default_settings(1);
    let mut st = setup(&space, budget, &errors);
    st.kind = Kind::Depth;
    let s = settings.build(&st).unwrap();
    let crate::Start::Best { of, tokens } = &s.cfg.start else {
        panic!("the default start is a warm start: {:?}", s.cfg.start)
    };
    assert!(of.contains(&WarmStart::ShortenedLlama));
    assert_eq!(*tokens, 4 * 256);
    let probes = s.ask(&space);
    assert_eq!(probes.len(), space.len());
    assert!(probes.iter().all(|r| r.probe && r.sample.tokens == 1024));
    st.kind = Kind::Sparsity;
    let s = settings.build(&st).unwrap();
    let crate::Start::Best { tokens, .. } = &s.cfg.start else {
        panic!("the default start is a warm start: {:?}", s.cfg.start)
    };
    assert_eq!(*tokens, 256);
}
