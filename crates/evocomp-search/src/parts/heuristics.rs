//! Genomes from scores: the one-shot baselines (uniform, OWL, ShortGPT,
//! random feasible configurations) and the budget repair they share.
//!
//! The scores themselves (outlier ratios, block cosines) are measured on
//! the model by the engine; here they are plain numbers.

use crate::framework::space::{Budget, Genome, Space, SpaceError};
use crate::rng::rng_for;
use crate::strategies::evopress::level_switch;
use rand::RngExt;

/// The genome nearest to real-valued per-unit level `targets` that meets
/// `budget`: each unit is rounded to its nearest level, then units are moved
/// one level at a time, where the rounding was furthest from the target,
/// until the budget holds (higher levels are cheaper). For an `Exact` budget
/// on an equal-step grid the result is exact; otherwise it is the cheapest
/// genome reached not above the limit.
pub fn round_to_budget(
    space: &Space,
    targets: &[f64],
    budget: &Budget,
) -> Result<Genome, SpaceError> {
    if targets.len() != space.len() {
        return Err(SpaceError::Length {
            found: targets.len(),
            units: space.len(),
        });
    }
    let mut g: Genome = space
        .units
        .iter()
        .zip(targets)
        .map(|(u, &t)| {
            *u.levels
                .iter()
                .min_by(|a, b| {
                    ((**a as f64) - t)
                        .abs()
                        .total_cmp(&((**b as f64) - t).abs())
                })
                .expect("levels")
        })
        .collect();
    let step = |g: &mut Genome, i: usize, dir: i64| {
        let u = &space.units[i];
        let k = u.index(g[i]).expect("valid") as i64 + dir;
        g[i] = u.levels[k as usize];
    };
    // Too expensive: compress the unit furthest below its target.
    while space.cost(&g) > budget.limit() {
        let best = (0..g.len())
            .filter(|&i| g[i] < space.units[i].max())
            .max_by(|&a, &b| {
                (targets[a] - g[a] as f64)
                    .total_cmp(&(targets[b] - g[b] as f64))
                    .then(b.cmp(&a))
            });
        match best {
            Some(i) => step(&mut g, i, 1),
            None => return Err(SpaceError::Infeasible(*budget)),
        }
    }
    // Spend what is left: decompress the unit furthest above its target, as
    // long as the total stays within the limit.
    loop {
        let cost = space.cost(&g);
        if cost == budget.limit() {
            break;
        }
        let mut order: Vec<usize> = (0..g.len())
            .filter(|&i| g[i] > space.units[i].min())
            .collect();
        order.sort_by(|&a, &b| {
            (g[b] as f64 - targets[b])
                .total_cmp(&(g[a] as f64 - targets[a]))
                .then(a.cmp(&b))
        });
        let mut moved = false;
        for i in order {
            let mut h = g.clone();
            step(&mut h, i, -1);
            if space.cost(&h) <= budget.limit() {
                g = h;
                moved = true;
                break;
            }
        }
        if !moved {
            break;
        }
    }
    if !budget.allows(space.cost(&g)) {
        return Err(SpaceError::Infeasible(*budget));
    }
    Ok(g)
}

/// OWL (Yin et al., 2024): a layer with more outliers gets less sparsity.
/// `lor[l]` is the outlier ratio of layer `l`; `unit_layer[u]` the layer
/// of unit `u`; `levels_per_sparsity[u]` how many level steps of unit `u`
/// one unit of sparsity (1.0 = 100%) is. As OWL's code: the ratios are
/// scaled to `[0, 2λ]`, `n_l = 2λ·(LOR_l − min)/(max − min)`, and layer `l`
/// aims at sparsity `s − (n_l − mean(n))` (the mean offset is exactly zero),
/// then the result is rounded onto the budget.
pub fn owl_genome(
    space: &Space,
    base_level: i64,
    unit_layer: &[usize],
    lor: &[f64],
    lambda: f64,
    levels_per_sparsity: &[f64],
    budget: &Budget,
) -> Result<Genome, SpaceError> {
    let offsets = owl_offsets(lor, lambda);
    let targets: Vec<f64> = unit_layer
        .iter()
        .zip(levels_per_sparsity)
        .map(|(&l, &k)| base_level as f64 + offsets[l] * k)
        .collect();
    round_to_budget(space, &targets, budget)
}

/// OWL's per-layer sparsity offsets from the target: `mean(n) − n_l` with
/// `n_l = 2λ·(LOR_l − min)/(max − min)`; they sum to zero.
pub fn owl_offsets(lor: &[f64], lambda: f64) -> Vec<f64> {
    let (lo, hi) = lor
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let scaled: Vec<f64> = lor
        .iter()
        .map(|&x| 2.0 * lambda * (x - lo) / span)
        .collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len().max(1) as f64;
    scaled.iter().map(|n| mean - n).collect()
}

/// ShortGPT (Men et al., 2024): compress the units with the lowest score
/// (block influence, 1 − cos(input, output)) first, one level at a time,
/// until the budget holds; every other unit stays at its lowest level.
pub fn lowest_scores_first(
    space: &Space,
    scores: &[f64],
    budget: &Budget,
) -> Result<Genome, SpaceError> {
    if scores.len() != space.len() {
        return Err(SpaceError::Length {
            found: scores.len(),
            units: space.len(),
        });
    }
    let mut g: Genome = space.units.iter().map(|u| u.min()).collect();
    let mut order: Vec<usize> = (0..g.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    for &i in &order {
        while space.cost(&g) > budget.limit() && g[i] < space.units[i].max() {
            let u = &space.units[i];
            g[i] = u.levels[u.index(g[i]).expect("valid") + 1];
        }
    }
    if !budget.allows(space.cost(&g)) {
        return lowest_scores_per_type(space, scores, budget)
            .ok_or(SpaceError::Infeasible(*budget));
    }
    Ok(g)
}

/// Units of one *type* share their cost vector (whole blocks; or attention
/// and MLP sub-blocks, two types). For an exact budget over kept/dropped
/// units of several types (drop k of each), the number dropped per type
/// that meets it exactly, each type dropping its lowest-scored units; of
/// several such splits, the one whose dropped units score least in total.
fn lowest_scores_per_type(space: &Space, scores: &[f64], budget: &Budget) -> Option<Genome> {
    if !matches!(budget, Budget::Exact(_)) || space.units.iter().any(|u| u.levels.len() != 2) {
        return None;
    }
    let mut types = space.types();
    for members in &mut types {
        members.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    }
    let combos: usize = types.iter().map(|m| m.len() + 1).product();
    if combos > 1_000_000 {
        return None;
    }
    let mut best: Option<(f64, Genome)> = None;
    for code in 0..combos {
        let mut rest = code;
        let mut g: Genome = space.units.iter().map(|u| u.min()).collect();
        let mut score = 0.0;
        for members in &types {
            let d = rest % (members.len() + 1);
            rest /= members.len() + 1;
            for &i in &members[..d] {
                g[i] = space.units[i].max();
                score += scores[i];
            }
        }
        if budget.allows(space.cost(&g)) && best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, g));
        }
    }
    best.map(|(_, g)| g)
}

/// PyramidKV (Cai et al., 2024): lower layers keep more, the top layer keeps
/// `total / (beta · L)`, the first `2·total/L −` that, in an arithmetic
/// sequence over the units in order; each unit's target cost is mapped onto
/// its levels (linearly between neighbouring levels' costs) and the result
/// is rounded onto the budget. `beta` is the paper's β (20 by default).
pub fn pyramid_genome(space: &Space, budget: &Budget, beta: f64) -> Result<Genome, SpaceError> {
    let n = space.len();
    let total = budget.limit() as f64;
    let last = total / (beta * n as f64);
    let first = 2.0 * total / n as f64 - last;
    let targets: Vec<f64> = space
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let c = if n == 1 {
                total
            } else {
                first + (last - first) * i as f64 / (n - 1) as f64
            };
            level_for_cost(&u.levels, &u.costs, c)
        })
        .collect();
    round_to_budget(space, &targets, budget)
}

/// The real-valued level whose interpolated cost is `c` (levels sorted,
/// costs falling with the level; clamped at both ends).
fn level_for_cost(levels: &[i64], costs: &[u64], c: f64) -> f64 {
    if c >= costs[0] as f64 {
        return levels[0] as f64;
    }
    for k in 0..levels.len().saturating_sub(1) {
        let (hi, lo) = (costs[k] as f64, costs[k + 1] as f64);
        if c <= hi && c >= lo {
            let t = if hi > lo { (hi - c) / (hi - lo) } else { 0.0 };
            return levels[k] as f64 + t * (levels[k + 1] - levels[k]) as f64;
        }
    }
    *levels.last().expect("levels") as f64
}

/// `n` distinct random feasible genomes: random walks of level switches
/// from `start` (which must be feasible) when the grid has equal steps,
/// otherwise random levels rounded onto the budget.
pub fn random_feasible(
    space: &Space,
    start: &[i64],
    budget: &Budget,
    n: usize,
    seed: u64,
) -> Vec<Genome> {
    let mut out: Vec<Genome> = Vec::new();
    // Random walks of level switches keep an exact total where every switch
    // pairs units whose steps cost the same (the grid's equal steps, or
    // units of one type under an exact budget); each walk is checked below.
    let equal = budget.allows(space.cost(start))
        && (space.equal_steps() || matches!(budget, Budget::Exact(_)));
    let mut attempt = 0u64;
    while out.len() < n && attempt < (n as u64).saturating_mul(100).saturating_add(100) {
        let mut rng = rng_for(seed, &[0xbe57, attempt]);
        attempt += 1;
        let g = if equal {
            let mut g = start.to_vec();
            for _ in 0..4 * space.len() {
                level_switch(space, &mut g, &mut rng);
            }
            g
        } else {
            let targets: Vec<f64> = space
                .units
                .iter()
                .map(|u| u.levels[rng.random_range(0..u.levels.len())] as f64)
                .collect();
            match round_to_budget(space, &targets, budget) {
                Ok(g) => g,
                Err(_) => continue,
            }
        };
        if budget.allows(space.cost(&g)) && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// The least compressed level every unit has whose uniform genome meets the budget.
pub fn uniform_genome(space: &Space, budget: &Budget) -> Option<Genome> {
    let mut levels: Vec<i64> = space.units[0].levels.clone();
    levels.retain(|l| space.units.iter().all(|u| u.index(*l).is_some()));
    levels
        .into_iter()
        .filter_map(|l| space.uniform(l))
        .find(|g| budget.allows(space.cost(g)))
}

/// `g` with units moved one level less compressed at a time, each move
/// drawn at random (from `seed`) among those the budget still allows, until
/// none is left. `g` must meet the budget; the result does too.
pub fn fill_budget(space: &Space, g: &[i64], budget: &Budget, seed: u64) -> Genome {
    let mut g = g.to_vec();
    let mut cost = space.cost(&g);
    let mut rng = rng_for(seed, &[0xf111]);
    loop {
        let moves: Vec<(usize, i64, u64)> = (0..g.len())
            .filter_map(|i| {
                let u = &space.units[i];
                let k = u.index(g[i])?;
                let up = k.checked_sub(1)?;
                let c = cost - u.costs[k] + u.costs[up];
                budget.allows(c).then_some((i, u.levels[up], c))
            })
            .collect();
        if moves.is_empty() {
            return g;
        }
        let (i, level, c) = moves[rng.random_range(0..moves.len())];
        g[i] = level;
        cost = c;
    }
}

/// A feasible starting genome: uniform where possible, else units compressed
/// in a random order drawn from `seed` until the budget holds.
pub fn start_genome(seed: u64, space: &Space, budget: &Budget) -> Result<Genome, SpaceError> {
    if let Some(g) = uniform_genome(space, budget) {
        return Ok(g);
    }
    let mut r = rng_for(seed, &[0x57a7]);
    let scores: Vec<f64> = (0..space.len()).map(|_| r.random::<f64>()).collect();
    lowest_scores_first(space, &scores, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::space::UnitLevels;

    fn grid(n: usize) -> Space {
        Space::new(
            (0..n)
                .map(|i| {
                    let numel = 10_000 + 3_000 * i as u64;
                    let levels: Vec<i64> = (-2..=2).collect();
                    UnitLevels {
                        name: format!("u{i}"),
                        costs: levels
                            .iter()
                            .map(|&l| (numel as i64 / 2 - l * 500) as u64)
                            .collect(),
                        levels,
                    }
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn rounding_meets_an_exact_budget_and_follows_the_targets() {
        let s = grid(6);
        let budget = Budget::Exact(s.cost(&s.uniform(0).unwrap()));
        let g = round_to_budget(&s, &[1.4, 1.4, -0.6, -0.6, 0.2, -1.9], &budget).unwrap();
        assert_eq!(s.cost(&g), budget.limit());
        assert_eq!(g.iter().sum::<i64>(), 0);
        assert!(g[0] >= 1 && g[5] <= -1, "{g:?}");
    }

    #[test]
    fn owl_gives_outlier_layers_less_sparsity() {
        let s = grid(4);
        let budget = Budget::Exact(s.cost(&s.uniform(0).unwrap()));
        let g = owl_genome(
            &s,
            0,
            &[0, 1, 2, 3],
            &[0.10, 0.01, 0.02, 0.03],
            0.08,
            &[20.0; 4],
            &budget,
        )
        .unwrap();
        assert_eq!(s.cost(&g), budget.limit());
        // Layer 0 has the most outliers: least compressed.
        assert_eq!(*g.iter().min().unwrap(), g[0]);
        assert!(g[0] < 0 && g[1] > 0, "{g:?}");
    }

    #[test]
    fn owl_offsets_are_mean_centred_as_in_owls_code() {
        // One outlier layer among three alike: centring by λ would give
        // offsets [-0.08, 0.08, 0.08, 0.08] (mean 0.04, over the target);
        // OWL subtracts the mean.
        let o = owl_offsets(&[0.10, 0.01, 0.01, 0.01], 0.08);
        let want = [-0.12, 0.04, 0.04, 0.04];
        for (a, b) in o.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{o:?}");
        }
        assert!(o.iter().sum::<f64>().abs() < 1e-12);
    }

    #[test]
    fn an_exact_budget_over_two_sub_block_types_drops_k_of_each() {
        // Attention (cost 30) and MLP (cost 89) sub-blocks of 5 layers; drop 2 of each
        // (no other split of the exact budget exists).
        let s = Space::new(
            (0..10)
                .map(|i| UnitLevels {
                    name: format!("u{i}"),
                    levels: vec![0, 1],
                    costs: vec![if i % 2 == 0 { 30 } else { 89 }, 0],
                })
                .collect(),
        )
        .unwrap();
        let budget = Budget::Exact(3 * 30 + 3 * 89);
        // The lowest scores are all attention units: plain greedy would drop those first.
        let scores = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5, 0.65];
        let g = lowest_scores_first(&s, &scores, &budget).unwrap();
        assert_eq!(s.cost(&g), budget.limit());
        let dropped = |parity: usize| {
            (0..10)
                .filter(|&i| i % 2 == parity && g[i] == 1)
                .collect::<Vec<_>>()
        };
        assert_eq!(dropped(0), vec![0, 2], "the two lowest attention units");
        assert_eq!(dropped(1), vec![7, 9], "the two lowest MLP units");
        // Random feasible genomes keep two of each type dropped.
        for r in random_feasible(&s, &g, &budget, 20, 3) {
            assert_eq!(s.cost(&r), budget.limit());
            assert_eq!((0..10).filter(|&i| i % 2 == 0 && r[i] == 1).count(), 2);
        }
    }

    #[test]
    fn shortgpt_drops_the_least_influential_units() {
        let s = crate::framework::space::kept_or_dropped(5);
        let g = lowest_scores_first(&s, &[0.5, 0.1, 0.9, 0.05, 0.3], &Budget::Exact(300)).unwrap();
        assert_eq!(g, vec![0, 1, 0, 1, 0]);
    }

    #[test]
    fn pyramid_keeps_more_below_and_meets_the_mean() {
        // KV budgets 512..32 tokens per layer, 12 layers, a mean of at most 128.
        let budgets = [512u64, 256, 128, 64, 32];
        let s = Space::new(
            (0..12)
                .map(|i| UnitLevels {
                    name: format!("L{i}"),
                    levels: (0..5).collect(),
                    costs: budgets.to_vec(),
                })
                .collect(),
        )
        .unwrap();
        let budget = Budget::AtMost(128 * 12);
        let g = pyramid_genome(&s, &budget, 20.0).unwrap();
        assert!(s.cost(&g) <= budget.limit());
        // Non-increasing cache from bottom to top, and not uniform.
        assert!(g.windows(2).all(|w| w[0] <= w[1]), "{g:?}");
        assert!(g[0] < g[11], "{g:?}");
        // Most of the budget is used (the grid is coarse at the top).
        assert!(s.cost(&g) as f64 >= 0.8 * budget.limit() as f64, "{g:?}");
        assert_eq!(level_for_cost(&[0, 1, 2], &[400, 200, 100], 300.0), 0.5);
        assert_eq!(level_for_cost(&[0, 1, 2], &[400, 200, 100], 50.0), 2.0);
    }

    #[test]
    fn filling_spends_an_at_most_budget_until_no_move_fits() {
        let s = grid(8);
        let start = s.uniform(2).unwrap();
        let limit = s.cost(&s.uniform(0).unwrap()) - 700;
        let budget = Budget::AtMost(limit);
        let g = fill_budget(&s, &start, &budget, 3);
        assert!(budget.allows(s.cost(&g)));
        assert!(s.cost(&g) > s.cost(&start));
        // No unit can move one more level less compressed within the budget.
        for i in 0..g.len() {
            let u = &s.units[i];
            let k = u.index(g[i]).unwrap();
            if k > 0 {
                assert!(s.cost(&g) - u.costs[k] + u.costs[k - 1] > limit, "unit {i}");
            }
        }
        assert_eq!(g, fill_budget(&s, &start, &budget, 3), "seeded");
        assert_ne!(
            g,
            fill_budget(&s, &start, &budget, 4),
            "another seed, another order"
        );
        // An exact budget leaves nothing to fill.
        let exact = Budget::Exact(s.cost(&start));
        assert_eq!(fill_budget(&s, &start, &exact, 3), start);
    }

    #[test]
    fn random_feasible_genomes_are_distinct_feasible_and_seeded() {
        let s = grid(8);
        let start = s.uniform(0).unwrap();
        let budget = Budget::Exact(s.cost(&start));
        let a = random_feasible(&s, &start, &budget, 10, 7);
        assert_eq!(a.len(), 10);
        for g in &a {
            assert!(s.feasible(g, &budget));
        }
        assert_eq!(a, random_feasible(&s, &start, &budget, 10, 7));
        assert_ne!(a, random_feasible(&s, &start, &budget, 10, 8));
    }
}
