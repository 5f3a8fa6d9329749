//! The DP baseline (SPDY-style): assume per-unit errors add up and solve the
//! multiple-choice knapsack exactly, one level per unit, under the budget.

use crate::SearchError;
use crate::framework::space::{Budget, Genome, Space};

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The genome minimising `Σ errors[u][level index]` under `budget`, and its
/// summed error. Costs are reduced to a common grid (their gcd); if that
/// grid needs more than `max_states` cells, costs are rounded *up* to a
/// coarser grid, which keeps every answer feasible but may miss the optimum
/// (then `exact` is false). An `Exact` budget needs the exact grid.
pub fn knapsack(
    space: &Space,
    errors: &[Vec<f64>],
    budget: Budget,
    max_states: usize,
) -> Result<(Genome, f64, bool), SearchError> {
    if errors.len() != space.len()
        || errors
            .iter()
            .zip(&space.units)
            .any(|(e, u)| e.len() != u.levels.len())
    {
        return Err(SearchError::Config(
            "one error per level of every unit is needed".into(),
        ));
    }
    let base: u64 = space
        .units
        .iter()
        .map(|u| *u.costs.iter().min().expect("levels"))
        .sum();
    let limit = budget.limit();
    if limit < base {
        return Err(SearchError::Space(crate::SpaceError::Infeasible(budget)));
    }
    let deltas: Vec<Vec<u64>> = space
        .units
        .iter()
        .map(|u| {
            let m = *u.costs.iter().min().expect("levels");
            u.costs.iter().map(|c| c - m).collect()
        })
        .collect();
    let mut g = deltas.iter().flatten().fold(0, |a, &d| gcd(a, d));
    if matches!(budget, Budget::Exact(_)) {
        g = gcd(g, limit - base);
    }
    let g = g.max(1);
    let mut cap = (limit - base) / g;
    let mut unit = g;
    let mut exact = true;
    if cap as usize > max_states {
        if matches!(budget, Budget::Exact(_)) {
            return Err(SearchError::Config(format!(
                "an exact budget needs {cap} DP states, over the limit of {max_states}"
            )));
        }
        unit = (limit - base).div_ceil(max_states as u64).max(1);
        cap = (limit - base) / unit;
        exact = false;
    }
    let cap = cap as usize;
    let scaled: Vec<Vec<usize>> = deltas
        .iter()
        .map(|d| d.iter().map(|&x| x.div_ceil(unit) as usize).collect())
        .collect();
    // best[c]: least error with scaled cost exactly c.
    let mut best = vec![f64::INFINITY; cap + 1];
    best[0] = 0.0;
    let mut choice: Vec<Vec<u16>> = Vec::with_capacity(space.len());
    for (u, s) in scaled.iter().enumerate() {
        let mut next = vec![f64::INFINITY; cap + 1];
        let mut pick = vec![u16::MAX; cap + 1];
        for (c, &here) in best.iter().enumerate().take(cap + 1) {
            if !here.is_finite() {
                continue;
            }
            for (li, &d) in s.iter().enumerate() {
                let nc = c + d;
                if nc <= cap {
                    let e = here + errors[u][li];
                    if e < next[nc] {
                        next[nc] = e;
                        pick[nc] = li as u16;
                    }
                }
            }
        }
        best = next;
        choice.push(pick);
    }
    let end = match budget {
        Budget::Exact(_) => cap,
        Budget::AtMost(_) => (0..=cap)
            .min_by(|&a, &b| best[a].total_cmp(&best[b]).then(a.cmp(&b)))
            .expect("non-empty"),
    };
    if !best[end].is_finite() {
        return Err(SearchError::Space(crate::SpaceError::Infeasible(budget)));
    }
    let total = best[end];
    let mut genome = vec![0i64; space.len()];
    let mut c = end;
    for u in (0..space.len()).rev() {
        let li = choice[u][c] as usize;
        genome[u] = space.units[u].levels[li];
        c -= scaled[u][li];
    }
    Ok((genome, total, exact))
}

/// [`knapsack`] once per group of units of equal `sizes`, each group held
/// to its own cost in the uniform genome of `budget` (exactly for an exact
/// budget, at most otherwise). Returns the joined genome and whether every
/// group was solved exactly.
pub fn knapsack_per_group(
    space: &Space,
    errors: &[Vec<f64>],
    budget: Budget,
    sizes: &[u64],
    max_states: usize,
) -> Result<(Genome, bool), SearchError> {
    if sizes.len() != space.len() {
        return Err(SearchError::Config("one size per unit is needed".into()));
    }
    let uniform = crate::heuristics::uniform_genome(space, &budget).ok_or_else(|| {
        SearchError::Config(
            "per-group DP splits the budget as the uniform genome does, and no uniform genome \
             meets this budget"
                .into(),
        )
    })?;
    let mut groups: Vec<u64> = sizes.to_vec();
    groups.sort_unstable();
    groups.dedup();
    let mut out = uniform.clone();
    let mut all_exact = true;
    for size in groups {
        let members: Vec<usize> = (0..space.len()).filter(|&i| sizes[i] == size).collect();
        let sub = Space::new(members.iter().map(|&i| space.units[i].clone()).collect())?;
        let sub_errors: Vec<Vec<f64>> = members.iter().map(|&i| errors[i].clone()).collect();
        let share: Vec<i64> = members.iter().map(|&i| uniform[i]).collect();
        let limit = sub.cost(&share);
        let sub_budget = match budget {
            Budget::Exact(_) => Budget::Exact(limit),
            Budget::AtMost(_) => Budget::AtMost(limit),
        };
        let (g, _, exact) = knapsack(&sub, &sub_errors, sub_budget, max_states)?;
        all_exact &= exact;
        for (k, &i) in members.iter().enumerate() {
            out[i] = g[k];
        }
    }
    Ok((out, all_exact))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnitLevels;
    use rand::{RngExt, SeedableRng};

    fn instance(seed: u64) -> (Space, Vec<Vec<f64>>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let units: Vec<UnitLevels> = (0..5)
            .map(|i| UnitLevels {
                name: format!("u{i}"),
                levels: (0..4).collect(),
                costs: (0..4)
                    .map(|l| 7 * (40 - 9 * l as u64 + rng.random_range(0..3u64)) + 3 * i as u64)
                    .collect(),
            })
            .collect();
        let errors = (0..5)
            .map(|_| {
                (0..4)
                    .map(|l| l as f64 * rng.random::<f64>() + rng.random::<f64>() * 0.1)
                    .collect()
            })
            .collect();
        (Space::new(units).unwrap(), errors)
    }

    fn brute(space: &Space, errors: &[Vec<f64>], budget: Budget) -> Option<f64> {
        let mut best: Option<f64> = None;
        for code in 0..4usize.pow(5) {
            let g: Vec<i64> = (0..5)
                .map(|u| ((code / 4usize.pow(u as u32)) % 4) as i64)
                .collect();
            if budget.allows(space.cost(&g)) {
                let e: f64 = g
                    .iter()
                    .enumerate()
                    .map(|(u, &l)| errors[u][l as usize])
                    .sum();
                best = Some(best.map_or(e, |b: f64| b.min(e)));
            }
        }
        best
    }

    #[test]
    fn dp_matches_brute_force() {
        for seed in 0..20 {
            let (space, errors) = instance(seed);
            let mid = space.cost(&[1, 2, 1, 2, 1]);
            for budget in [
                Budget::AtMost(mid),
                Budget::AtMost(mid + 30),
                Budget::Exact(mid),
            ] {
                let want = brute(&space, &errors, budget).unwrap();
                let (g, e, exact) = knapsack(&space, &errors, budget, 1 << 20).unwrap();
                assert!(exact);
                assert!(budget.allows(space.cost(&g)), "seed {seed}");
                assert!(
                    (e - want).abs() < 1e-12,
                    "seed {seed} {budget:?}: dp {e}, brute {want}"
                );
            }
            // A coarse grid stays feasible.
            let (g, _, exact) = knapsack(&space, &errors, Budget::AtMost(mid), 8).unwrap();
            assert!(!exact && space.cost(&g) <= mid);
        }
        let (space, errors) = instance(0);
        assert!(knapsack(&space, &errors, Budget::AtMost(1), 100).is_err());
    }

    #[test]
    fn per_group_dp_is_brute_force_within_each_group_on_its_share() {
        // Two groups of equal-size units whose level steps cost the same
        // within a group: each group keeps the uniform genome's cost and
        // takes the brute-force best allocation of it.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let sizes = [100u64, 300, 100, 300, 100];
        let units: Vec<UnitLevels> = (0..5)
            .map(|i| UnitLevels {
                name: format!("u{i}"),
                levels: (0..4).collect(),
                costs: (0..4).map(|l| sizes[i] - 10 * l as u64).collect(),
            })
            .collect();
        let errors: Vec<Vec<f64>> = (0..5)
            .map(|_| {
                let s = rng.random::<f64>() * 3.0;
                (0..4)
                    .map(|l| s * (l * l) as f64 + 0.01 * rng.random::<f64>())
                    .collect()
            })
            .collect();
        let space = Space::new(units).unwrap();
        let budget = Budget::Exact(space.cost(&[1, 1, 1, 1, 1]));
        let (g, exact) = knapsack_per_group(&space, &errors, budget, &sizes, 1 << 20).unwrap();
        assert!(exact);
        for size in [100u64, 300] {
            let m: Vec<usize> = (0..5).filter(|&i| sizes[i] == size).collect();
            // Each group spends exactly what uniform level 1 spends in it.
            let spent: u64 = m.iter().map(|&i| space.units[i].costs[g[i] as usize]).sum();
            assert_eq!(
                spent,
                m.iter().map(|&i| space.units[i].costs[1]).sum::<u64>()
            );
            // And no other allocation of that share has a lower error.
            let mut best = f64::INFINITY;
            for code in 0..4usize.pow(m.len() as u32) {
                let lv: Vec<usize> = (0..m.len())
                    .map(|k| (code / 4usize.pow(k as u32)) % 4)
                    .collect();
                let c: u64 = m
                    .iter()
                    .zip(&lv)
                    .map(|(&i, &l)| space.units[i].costs[l])
                    .sum();
                if c == spent {
                    best = best.min(m.iter().zip(&lv).map(|(&i, &l)| errors[i][l]).sum());
                }
            }
            let got: f64 = m.iter().map(|&i| errors[i][g[i] as usize]).sum();
            assert!((got - best).abs() < 1e-12, "group {size}: {got} vs {best}");
        }
    }
}
