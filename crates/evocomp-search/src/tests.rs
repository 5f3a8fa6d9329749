use super::*;
use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

mod anytime;
mod example;
mod strategies;

/// A sparsity-like space: units of different sizes, levels -2..=2, every
/// level step zeroing the same 1000 weights.
fn sparsity_space(n: usize) -> Space {
    Space::new(
        (0..n)
            .map(|i| {
                let numel = 20_000 + 7_000 * (i as u64 % 4);
                let levels: Vec<i64> = (-2..=2).collect();
                let costs = levels
                    .iter()
                    .map(|&l| (numel as i64 - (numel as i64 / 2 + l * 1000)) as u64)
                    .collect();
                UnitLevels {
                    name: format!("u{i}"),
                    levels,
                    costs,
                }
            })
            .collect(),
    )
    .unwrap()
}

/// Units differ in how much compression hurts them.
fn fitness(g: &[i64]) -> f64 {
    g.iter()
        .enumerate()
        .map(|(i, &l)| (1.0 + (i % 5) as f64) * (0.9 * l as f64).exp())
        .sum()
}

/// Every request scored by [`fitness`].
fn score_all(asks: &[Request]) -> Vec<Scored> {
    asks.iter()
        .map(|r| Scored {
            id: r.id,
            fitness: fitness(&r.genome),
        })
        .collect()
}

fn run(strategy: &mut EvoPress, space: &Space, stop_after: Option<usize>) -> usize {
    let mut tells = 0;
    while !strategy.is_done() {
        if stop_after == Some(tells) {
            break;
        }
        let scored: Vec<Scored> = strategy
            .ask(space)
            .into_iter()
            .map(|r| Scored {
                id: r.id,
                fitness: fitness(&r.genome),
            })
            .collect();
        strategy.tell(space, &scored).unwrap();
        tells += 1;
    }
    tells
}

fn small_cfg(seed: u64) -> EvoPressConfig {
    EvoPressConfig {
        generations: 60,
        offspring: 8,
        stages: vec![
            Stage {
                survivors: 2,
                tokens: 64,
            },
            Stage {
                survivors: 1,
                tokens: 256,
            },
        ],
        max_flips: 3,
        seed,
        start: Start::Uniform,
        final_choice: crate::FinalChoice::Off,
        racing: None,
        surrogate: None,
        max_tokens: None,
    }
}

/// The best genome of `space` with the same total as `g0`, by brute force.
fn brute_force_best(space: &Space, total: u64) -> f64 {
    let n = space.len();
    let mut best = f64::INFINITY;
    let mut g = vec![-2i64; n];
    loop {
        if space.cost(&g) == total {
            best = best.min(fitness(&g));
        }
        let mut i = 0;
        while i < n && g[i] == 2 {
            g[i] = -2;
            i += 1;
        }
        if i == n {
            return best;
        }
        g[i] += 1;
    }
}

#[test]
fn evopress_beats_uniform_and_nears_the_optimum_under_an_exact_budget() {
    let space = sparsity_space(8);
    assert!(space.equal_steps());
    let uniform = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&uniform));
    let mut s = EvoPress::new(small_cfg(1), &space, budget, uniform.clone()).unwrap();
    run(&mut s, &space, None);
    assert_eq!(s.generation, 60);
    assert_eq!(space.cost(&s.parent), budget.limit());
    let (u, best) = (fitness(&uniform), fitness(&s.parent));
    let optimum = brute_force_best(&space, budget.limit());
    assert!(best < u, "uniform {u}, evopress {best}");
    assert!(
        best <= optimum * 1.02,
        "evopress {best}, optimum {optimum}, uniform {u}"
    );
    // The most sensitive units (i % 5 == 4) end less compressed than the robust ones.
    assert!(
        s.parent[4] < s.parent[0] && s.parent[4] < s.parent[5],
        "{:?}",
        s.parent
    );
    // Monotone: a parent is only replaced by a better child (noise-free fitness).
    assert!(s.history.windows(2).all(|w| w[1].1 <= w[0].1));
}

#[test]
fn same_seed_same_search_and_checkpoints_resume_exactly() {
    let space = sparsity_space(8);
    let g0 = space.uniform(0).unwrap();
    let budget = Budget::Exact(space.cost(&g0));
    let mut a = EvoPress::new(small_cfg(7), &space, budget, g0.clone()).unwrap();
    run(&mut a, &space, None);
    let mut b = EvoPress::new(small_cfg(7), &space, budget, g0.clone()).unwrap();
    run(&mut b, &space, None);
    assert_eq!(a, b);
    // Stop mid-stage, checkpoint through JSON, continue.
    let mut c = EvoPress::new(small_cfg(7), &space, budget, g0.clone()).unwrap();
    run(&mut c, &space, Some(37));
    let text = serde_json::to_string(&c).unwrap();
    let mut c: EvoPress = serde_json::from_str(&text).unwrap();
    run(&mut c, &space, None);
    assert_eq!(a, c);
    // Another seed searches differently.
    let mut d = EvoPress::new(small_cfg(8), &space, budget, g0).unwrap();
    run(&mut d, &space, None);
    assert_ne!(a.history, d.history);
}

#[test]
fn stages_sample_fresh_tokens_and_the_parent_joins_last() {
    let space = sparsity_space(6);
    let g0 = space.uniform(0).unwrap();
    let mut s = EvoPress::new(
        small_cfg(3),
        &space,
        Budget::Exact(space.cost(&g0)),
        g0.clone(),
    )
    .unwrap();
    let first = s.ask(&space);
    assert_eq!(first.len(), 8);
    assert!(
        first
            .iter()
            .all(|r| r.genome != g0 && r.sample.tokens == 64)
    );
    s.tell(&space, &score_all(&first)).unwrap();
    let second = s.ask(&space);
    assert_eq!(second.len(), 3, "2 survivors plus the parent");
    assert!(second.iter().any(|r| r.genome == g0));
    assert!(
        second
            .iter()
            .all(|r| r.sample.tokens == 256 && r.sample.seed != first[0].sample.seed)
    );
    // A result for a request that was not asked, a missing or a repeated
    // one, or a non-finite fitness is an error.
    let ok: Vec<Scored> = second
        .iter()
        .map(|r| Scored {
            id: r.id,
            fitness: 1.0,
        })
        .collect();
    let mut wrong = ok.clone();
    wrong[0].id = 99;
    assert!(s.clone().tell(&space, &wrong).is_err());
    assert!(s.clone().tell(&space, &ok[1..]).is_err());
    let mut twice = ok.clone();
    twice[1].id = twice[0].id;
    assert!(s.clone().tell(&space, &twice).is_err());
    let mut nan = ok.clone();
    nan[0].fitness = f64::NAN;
    assert!(s.clone().tell(&space, &nan).is_err());
    s.tell(&space, &ok).unwrap();
}

#[test]
fn presets_follow_the_paper() {
    let s = EvoPressConfig::sparsity(0);
    assert_eq!((s.generations, s.offspring), (400, 64));
    assert_eq!(
        s.stages
            .iter()
            .map(|x| (x.survivors, x.tokens))
            .collect::<Vec<_>>(),
        vec![(8, 2048), (2, 16384), (1, 65536)]
    );
    assert_eq!(EvoPressConfig::quantization(0).offspring, 128);
    assert_eq!(EvoPressConfig::depth(32, 8, 0).generations, 128);
    for c in [
        EvoPressConfig::sparsity(0),
        EvoPressConfig::quantization(0),
        EvoPressConfig::depth(30, 6, 0),
        EvoPressConfig::super_fast(0),
    ] {
        c.validate().unwrap();
    }
    let mut bad = small_cfg(0);
    bad.stages.last_mut().unwrap().survivors = 2;
    assert!(bad.validate().is_err());
}

proptest! {
    /// Every child keeps the parent's exact total, stays in range and is new.
    #[test]
    fn mutation_keeps_the_budget_exactly(levels in proptest::collection::vec(-2i64..=2, 9), seed in 0u64..1000, generation in 0usize..50) {
        let space = sparsity_space(9);
        let budget = Budget::Exact(space.cost(&levels));
        let cfg = EvoPressConfig { seed, ..small_cfg(seed) };
        let kids = offspring(&space, &levels, &budget, &cfg, generation);
        prop_assert!(!kids.is_empty());
        let mut seen = std::collections::HashSet::new();
        for k in &kids {
            prop_assert!(space.check(k).is_ok());
            prop_assert_eq!(space.cost(k), budget.limit());
            prop_assert!(k != &levels);
            let changed = k.iter().zip(&levels).filter(|(a, b)| a != b).count();
            prop_assert!((1..=6).contains(&changed));
            prop_assert!(seen.insert(k.clone()));
        }
    }
}

/// A quantization-like space: units of three sizes, levels 0..=3 = 8, 6, 4,
/// 2 bits, each level's cost in bits (so steps differ between sizes).
fn quant_space() -> (Space, Vec<u64>) {
    let sizes: Vec<u64> = (0..12).map(|i| [1000u64, 3000, 8000][i % 3]).collect();
    let units = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| UnitLevels {
            name: format!("u{i}"),
            levels: (0..4).collect(),
            costs: [8u64, 6, 4, 2]
                .iter()
                .map(|b| n * b + 16 * (n / 100))
                .collect(),
        })
        .collect();
    (Space::new(units).unwrap(), sizes)
}

#[test]
fn quantization_switches_pair_units_of_one_size_and_keep_the_bit_budget_exact() {
    let (space, sizes) = quant_space();
    let parent: Vec<i64> = vec![1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2];
    let budget = Budget::Exact(space.cost(&parent));
    for seed in 0..20 {
        let cfg = EvoPressConfig {
            offspring: 16,
            ..small_cfg(seed)
        };
        let kids = offspring(&space, &parent, &budget, &cfg, 3);
        // Every draw is a cost-neutral switch, so none is rejected for the budget.
        assert_eq!(kids.len(), 16, "seed {seed}");
        for k in &kids {
            assert_eq!(space.cost(k), budget.limit());
            // Per size, the levels' sum is unchanged: raised and lowered units share a size.
            for s in [1000u64, 3000, 8000] {
                let sum = |g: &[i64]| -> i64 {
                    g.iter()
                        .zip(&sizes)
                        .filter(|(_, n)| **n == s)
                        .map(|(l, _)| *l)
                        .sum()
                };
                assert_eq!(sum(k), sum(&parent), "seed {seed}: {k:?}");
            }
        }
    }
}

#[test]
fn the_depth_start_is_the_best_of_random_feasible_genomes() {
    // Drop 3 of 10 equal blocks.
    let space = crate::framework::space::kept_or_dropped(10);
    let budget = Budget::Exact(700);
    let start = crate::heuristics::start_genome(0, &space, &budget).unwrap();
    let cfg = EvoPressConfig::depth(10, 3, 4);
    assert_eq!(
        cfg.start,
        Start::BestOfRandom {
            candidates: 64,
            tokens: 2048
        }
    );
    let mut s = EvoPress::new(cfg, &space, budget, start).unwrap();
    let asked = s.ask(&space);
    // C(10, 3) = 120 feasible genomes: 64 distinct ones are drawn, all on the budget.
    assert_eq!(asked.len(), 64);
    assert!(asked.iter().all(|r| space.cost(&r.genome) == 700));
    assert!(asked.iter().all(|r| r.sample.tokens == 2048));
    // The fitness counts dropped blocks among the first three: the best has none there.
    let fit = |g: &[i64]| g[..3].iter().sum::<i64>() as f64 + 0.01 * g[9] as f64;
    let scored: Vec<Scored> = asked
        .iter()
        .map(|r| Scored {
            id: r.id,
            fitness: fit(&r.genome),
        })
        .collect();
    let want = asked
        .iter()
        .map(|r| fit(&r.genome))
        .fold(f64::INFINITY, f64::min);
    s.tell(&space, &scored).unwrap();
    assert_eq!(fit(&s.parent), want);
    assert_eq!(s.generation, 0);
    // Then the generations run as usual, from that parent.
    assert!(
        s.ask(&space)
            .iter()
            .all(|r| r.sample.tokens == 2048 && r.genome != s.parent)
    );
}

/// A sub-block depth space: 3 attention units (cost 10 kept, 0 dropped)
/// and 3 MLP units (cost 30 kept, 0 dropped), levels 0 kept, 1 dropped.
fn sub_block_space() -> Space {
    Space::new(
        (0..6)
            .map(|i| UnitLevels {
                name: format!("{}{}", if i % 2 == 0 { "attn" } else { "mlp" }, i / 2),
                levels: vec![0, 1],
                costs: vec![if i % 2 == 0 { 10 } else { 30 }, 0],
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn the_space_does_the_budget_arithmetic() {
    let sp = sub_block_space();
    assert_eq!((sp.min_cost(), sp.max_cost()), (0, 120));
    // n of each type dropped: n attention and n MLP units.
    assert_eq!(sp.cost_with_dropped(0), Ok(120));
    assert_eq!(sp.cost_with_dropped(1), Ok(80));
    assert_eq!(sp.cost_with_dropped(3), Ok(0));
    assert!(
        sp.cost_with_dropped(4)
            .unwrap_err()
            .contains("only 3 units")
    );
    assert!(sp.cost_with_dropped(7).unwrap_err().contains("has 6 units"));
    // Keeping one unit costs at least the cheapest one kept.
    assert_eq!(sp.cheapest_keeping_one(), 10);
    // Not a kept/dropped space.
    let grid = sparsity_space(3);
    assert!(
        grid.cost_with_dropped(1)
            .unwrap_err()
            .contains("depth database")
    );
    assert_eq!(grid.min_cost() + 1000, grid.cheapest_keeping_one());
}
