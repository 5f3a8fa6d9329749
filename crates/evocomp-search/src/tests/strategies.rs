//! The strategies other than EvoPress, driven through the trait.

use super::*;

/// One result per request, by id.
fn score(asks: &[Request], f: impl Fn(&[i64]) -> f64) -> Vec<Scored> {
    asks.iter()
        .map(|r| Scored {
            id: r.id,
            fitness: f(&r.genome),
        })
        .collect()
}
fn space(n: usize) -> Space {
    Space::new(
        (0..n)
            .map(|i| UnitLevels {
                name: format!("u{i}"),
                levels: (-2..=2).collect(),
                costs: (-2..=2).map(|l: i64| (5000 - l * 100) as u64).collect(),
            })
            .collect(),
    )
    .unwrap()
}

/// Unit i hurts (i % 3 + 1) times as much per level.
fn fit(g: &[i64]) -> f64 {
    g.iter()
        .enumerate()
        .map(|(i, &l)| ((i % 3) as f64 + 1.0) * (0.7 * l as f64).exp())
        .sum()
}

fn drive(s: &mut AnyStrategy, sp: &Space, budget: Option<&Budget>) -> usize {
    let mut evals = 0;
    while !s.is_done() {
        let asks = s.ask(sp);
        for r in &asks {
            if let (false, Some(b)) = (r.probe, budget) {
                assert!(sp.feasible(&r.genome, b), "infeasible candidate asked");
            }
        }
        evals += asks.len();
        let scored = score(&asks, fit);
        s.tell(sp, &scored).unwrap();
        let json = serde_json::to_string(&*s).unwrap();
        *s = serde_json::from_str(&json).unwrap();
    }
    evals
}

/// Greedy from uniform level 0 on `space(n)`, driven to the end: the
/// space, budget, uniform genome and the strategy's best.
fn greedy_run(n: usize, max_steps: usize, tries: usize) -> (Space, Budget, Genome, (Genome, f64)) {
    let sp = space(n);
    let u = sp.uniform(0).unwrap();
    let budget = Budget::Exact(sp.cost(&u));
    let sample = SampleDraw::new(8, 1);
    let cfg = GreedyConfig {
        max_steps,
        tries,
        sample,
    };
    let mut s = AnyStrategy::Greedy(Greedy::new(cfg, &sp, budget, u.clone()).unwrap());
    drive(&mut s, &sp, Some(&budget));
    let b = s.best().unwrap();
    (sp, budget, u, (b.genome, b.fitness))
}

#[test]
fn greedy_improves_on_uniform_and_stays_on_budget() {
    let (sp, budget, u, (g, f)) = greedy_run(6, 50, 4);
    assert!(sp.feasible(&g, &budget));
    assert!(f < fit(&u) * 0.95, "{f} vs {}", fit(&u));
    // The most sensitive units (i % 3 == 2) end less compressed than the least.
    assert!(g[2] < g[0] && g[5] < g[3], "{g:?}");
}

#[test]
fn a_greedy_round_moves_many_units_at_once() {
    let (sp, budget, u, (g, f)) = greedy_run(12, 1, 8);
    assert!(sp.feasible(&g, &budget));
    assert!(f < fit(&u));
    // One round, several shifts: more than one pair of units moved.
    let moved = g.iter().filter(|&&l| l != 0).count();
    assert!(moved > 2, "{g:?}");
}

#[test]
fn leave_one_out_compresses_the_least_harmful_units() {
    // Depth-like: 6 blocks, kept (0) or dropped (1); drop 2.
    let sp = Space::new(
        (0..6)
            .map(|i| UnitLevels {
                name: format!("b{i}"),
                levels: vec![0, 1],
                costs: vec![10, 0],
            })
            .collect(),
    )
    .unwrap();
    let budget = Budget::Exact(40);
    let harm = [5.0, 1.0, 4.0, 0.5, 3.0, 2.0];
    let f = |g: &[i64]| -> f64 { g.iter().zip(harm).map(|(&l, h)| l as f64 * h).sum() };
    let sample = SampleDraw::new(8, 1);
    let mut s = AnyStrategy::LeaveOneOut(LeaveOneOut::new(&sp, budget, sample).unwrap());
    let mut probes = 0;
    while !s.is_done() {
        let asks = s.ask(&sp);
        probes += asks.iter().filter(|r| r.probe).count();
        for r in asks.iter().filter(|r| !r.probe) {
            assert!(sp.feasible(&r.genome, &budget));
        }
        let scored = score(&asks, f);
        s.tell(&sp, &scored).unwrap();
        s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    }
    assert_eq!(probes, 6);
    assert_eq!(
        s.best().unwrap(),
        Best {
            genome: vec![0, 1, 0, 1, 0, 0],
            fitness: 1.5
        }
    );
    assert!(LeaveOneOut::new(&sp, Budget::Exact(5), sample).is_err());
}

#[test]
fn fixed_keeps_the_best_of_its_genomes() {
    let sp = space(3);
    let sample = SampleDraw::new(8, 1);
    let gs = vec![vec![1, 0, -1], vec![-1, 0, 1], vec![0, 0, 0]];
    let mut s = AnyStrategy::Fixed(Fixed::new(gs, sample, Role::Heuristic).unwrap());
    assert_eq!(drive(&mut s, &sp, None), 3);
    assert_eq!(s.best().unwrap().genome, vec![1, 0, -1]);
}

/// KV-like: levels are budgets (costs) in steps of 16 tokens, level 0 keeps most.
fn kv_space(n: usize) -> Space {
    Space::new(
        (0..n)
            .map(|i| UnitLevels {
                name: format!("L{i}"),
                levels: (0..8).collect(),
                costs: (0..8).map(|l: u64| 128 - 16 * l).collect(),
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn evolkv_respects_the_budget_and_beats_uniform() {
    let n = 12;
    let sp = kv_space(n);
    let budget = Budget::AtMost(64 * n as u64);
    // Only the middle layers need cache: the others gain nothing from more,
    // so the cache score keeps them at or under the target.
    let kv_fit = |g: &[i64]| -> f64 {
        g.iter()
            .enumerate()
            .map(|(i, &l)| {
                let w = if (4..8).contains(&i) { 3.0 } else { 0.0 };
                w * 0.01 * (l as f64).powi(2)
            })
            .sum()
    };
    let cfg = EvolKvConfig {
        group_size: 4,
        generations: 15,
        sigma0: 0.3,
        population: None,
        lambda: 0.3,
        gamma: 0.2,
        sample: SampleDraw::new(8, 0),
        seed: 3,
    };
    let mut s = AnyStrategy::EvolKv(Box::new(EvolKv::new(cfg, &sp, budget).unwrap()));
    let mut n_evals = 0;
    let mut asks_all = Vec::new();
    while !s.is_done() {
        let asks = s.ask(&sp);
        n_evals += asks.len();
        let scored = score(&asks, kv_fit);
        s.tell(&sp, &scored).unwrap();
        asks_all.push(asks);
    }
    assert!(n_evals > 0);
    // As published: candidates are scored as proposed (probes, some off the
    // budget, so the cache score matters), and the budget is completed once,
    // after the search, in the last ask.
    let (last, before) = asks_all.split_last().unwrap();
    assert!(before.iter().flatten().all(|r| r.probe));
    assert!(
        before
            .iter()
            .flatten()
            .any(|r| !sp.feasible(&r.genome, &budget)),
        "some proposal is over the budget"
    );
    let means: std::collections::BTreeSet<u64> = before
        .iter()
        .flatten()
        .map(|r| sp.cost(&r.genome))
        .collect();
    assert!(means.len() > 3, "proposals of many totals: {means:?}");
    assert_eq!(last.len(), 1);
    assert!(!last[0].probe && sp.feasible(&last[0].genome, &budget));
    let AnyStrategy::EvolKv(e) = &s else {
        unreachable!()
    };
    assert_eq!(last[0].genome, EvolKv::complete(&sp, &e.x, &budget));
    assert_eq!(s.best().unwrap().genome, last[0].genome);
    let Best {
        genome: g,
        fitness: f,
    } = s.best().unwrap();
    let uniform = vec![4i64; n];
    assert!(sp.feasible(&uniform, &budget));
    assert!(f < kv_fit(&uniform), "{f} vs {} ({g:?})", kv_fit(&uniform));
    let mid: i64 = g[4..8].iter().sum();
    let edge: i64 = g[..4].iter().sum();
    assert!(mid < edge, "middle layers keep more cache: {g:?}");
}

/// Every strategy, run twice from the same seed (with a checkpoint round
/// trip after every tell), asks for the same genomes and ends the same;
/// another seed changes the randomised ones.
#[test]
fn every_strategy_is_deterministic_from_its_seed() {
    let sp = space(8);
    let u = sp.uniform(0).unwrap();
    let budget = Budget::Exact(sp.cost(&u));
    let sample = SampleDraw::new(8, 1);
    let make = |seed: u64| -> Vec<AnyStrategy> {
        vec![
            AnyStrategy::EvoPress(Box::new(
                EvoPress::new(
                    crate::EvoPressConfig {
                        generations: 10,
                        offspring: 4,
                        stages: vec![
                            crate::Stage {
                                survivors: 2,
                                tokens: 8,
                            },
                            crate::Stage {
                                survivors: 1,
                                tokens: 16,
                            },
                        ],
                        max_flips: 3,
                        start: crate::Start::BestOfRandom {
                            candidates: 5,
                            tokens: 8,
                        },
                        seed,
                        racing: None,
                        surrogate: None,
                        max_tokens: None,
                        final_choice: crate::FinalChoice::Off,
                    },
                    &sp,
                    budget,
                    u.clone(),
                )
                .unwrap(),
            )),
            AnyStrategy::Greedy(
                Greedy::new(
                    GreedyConfig {
                        max_steps: 5,
                        tries: 2,
                        sample,
                    },
                    &sp,
                    budget,
                    u.clone(),
                )
                .unwrap(),
            ),
            AnyStrategy::EvolKv(Box::new(
                EvolKv::new(
                    EvolKvConfig {
                        group_size: 4,
                        generations: 3,
                        sigma0: 0.3,
                        population: None,
                        lambda: 0.3,
                        gamma: 0.2,
                        sample,
                        seed,
                    },
                    &sp,
                    Budget::AtMost(budget.limit()),
                )
                .unwrap(),
            )),
            AnyStrategy::Nsga2(
                LevelNsga2::new(
                    Nsga2Config {
                        population: 8,
                        generations: 4,
                        seed,
                    },
                    &sp,
                    budget.limit(),
                    vec![u.clone()],
                    sample,
                )
                .unwrap(),
            ),
        ]
    };
    let trace = |mut s: AnyStrategy| -> (Vec<Vec<Request>>, Option<Best>) {
        let mut asks = Vec::new();
        while !s.is_done() {
            let a = s.ask(&sp);
            let scored = score(&a, fit);
            asks.push(a);
            s.tell(&sp, &scored).unwrap();
            s = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        }
        (asks, s.best())
    };
    for (a, b) in make(3).into_iter().zip(make(3)) {
        assert_eq!(trace(a), trace(b));
    }
    let seeded = [0, 2, 3]; // EvoPress, EvolKV and NSGA-II draw random numbers
    for (i, (a, b)) in make(3).into_iter().zip(make(4)).enumerate() {
        if seeded.contains(&i) {
            assert_ne!(trace(a).0, trace(b).0, "strategy {i} ignores its seed");
        }
    }
}

#[test]
fn evolkv_scores_the_cache_of_the_genome_it_evaluated() {
    // Proposals are completed to the budget before they are scored; the
    // cache score must come from the completed genome's mean, the thing
    // evaluated, not from the proposal's.
    let n = 6;
    let sp = kv_space(n);
    let budget = Budget::AtMost(64 * n as u64);
    let cfg = EvolKvConfig {
        group_size: 3,
        generations: 3,
        sigma0: 0.5,
        population: None,
        lambda: 0.3,
        gamma: 0.2,
        sample: SampleDraw::new(8, 0),
        seed: 1,
    };
    let mut s = EvolKv::new(cfg, &sp, budget).unwrap();
    let fit = |g: &[i64]| g.iter().map(|&l| 0.01 * (l * l) as f64).sum::<f64>();
    while !s.is_done() {
        let asks = s.ask(&sp);
        let scored = score(&asks, fit);
        s.tell(&sp, &scored).unwrap();
        let (obj, g, f) = s.best.clone().unwrap();
        assert_eq!(obj, s.genome_objective(&sp, &g, f));
    }
}

#[test]
fn cache_score_matches_the_paper() {
    assert_eq!(EvolKv::cache_score(100.0, 100.0, 0.2), 1.0);
    assert!((EvolKv::cache_score(50.0, 100.0, 0.2) - 0.9).abs() < 1e-12);
    assert!((EvolKv::cache_score(150.0, 100.0, 0.2) - 0.5).abs() < 1e-12);
    assert_eq!(EvolKv::cache_score(250.0, 100.0, 0.2), 0.0);
}

#[test]
fn nsga2_levels_give_a_front_under_the_ceiling() {
    let sp = space(6);
    let max = sp.cost(&sp.uniform(0).unwrap());
    let mut s = AnyStrategy::Nsga2(
        LevelNsga2::new(
            Nsga2Config {
                population: 12,
                generations: 10,
                seed: 5,
            },
            &sp,
            max,
            vec![sp.uniform(0).unwrap()],
            SampleDraw::new(8, 0),
        )
        .unwrap(),
    );
    drive(&mut s, &sp, Some(&Budget::AtMost(max)));
    let front = s.front(&sp);
    assert!(front.len() >= 2, "{front:?}");
    for w in front.windows(2) {
        assert!(
            w[0].cost <= w[1].cost && w[0].fitness >= w[1].fitness,
            "{front:?}"
        );
    }
}
