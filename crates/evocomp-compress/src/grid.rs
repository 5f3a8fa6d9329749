//! EvoPress's sparsity grid: every level step zeros the same *absolute*
//! number of weights in every unit, so that raising one unit by a level and
//! lowering another keeps the total number of zeros exactly constant, even
//! between units of different shapes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridError {
    #[error("target sparsity must be in [0, 1), got {0}")]
    Target(f64),
    #[error("the level step must be at least 1 weight")]
    Step,
    #[error("no unit sizes given")]
    NoUnits,
}

/// Levels `-below..=above` around a target sparsity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SparsityGrid {
    /// Level 0 zeros `round(target · numel)` weights of each unit.
    pub target: f64,
    /// Zeros added per level, the same in every unit.
    pub step: usize,
    /// Levels below the target (less sparse).
    pub below: usize,
    /// Levels above the target (more sparse).
    pub above: usize,
    /// No level of any unit zeros more than this fraction of its weights.
    #[serde(default = "one")]
    pub max: f64,
}

fn one() -> f64 {
    1.0
}

impl SparsityGrid {
    pub fn validate(&self) -> Result<(), GridError> {
        if !(0.0..1.0).contains(&self.target) {
            return Err(GridError::Target(self.target));
        }
        if self.step == 0 {
            return Err(GridError::Step);
        }
        Ok(())
    }

    /// EvoPress's grid: one step of `step_fraction` of the smallest unit's
    /// weights, the same absolute step in every unit, and up to `max_levels`
    /// levels either side of the target. Each unit takes every level that
    /// stays between 0% and `max` sparsity *in that unit*, so a small unit
    /// (k/v projections) spans from dense to `max` while a large one (the
    /// MLP matrices) spans `±max_levels` steps around the target; the grid
    /// keeps only levels some unit can take.
    pub fn fit(
        numels: &[usize],
        target: f64,
        step_fraction: f64,
        max: f64,
        max_levels: usize,
    ) -> Result<Self, GridError> {
        let smallest = *numels.iter().min().ok_or(GridError::NoUnits)?;
        let step = ((smallest as f64 * step_fraction).round() as usize).max(1);
        let mut g = SparsityGrid {
            target,
            step,
            below: 0,
            above: 0,
            max,
        };
        g.validate()?;
        let fits =
            |g: &SparsityGrid, level: i64| numels.iter().any(|&n| g.zeros(n, level).is_some());
        while g.below < max_levels
            && fits(
                &SparsityGrid {
                    below: g.below + 1,
                    ..g
                },
                -(g.below as i64 + 1),
            )
        {
            g.below += 1;
        }
        while g.above < max_levels
            && fits(
                &SparsityGrid {
                    above: g.above + 1,
                    ..g
                },
                g.above as i64 + 1,
            )
        {
            g.above += 1;
        }
        Ok(g)
    }

    /// Zeros at `level` in a unit of `numel` weights, or None when the level
    /// is outside the grid or would need fewer than 0 or more than `numel` zeros.
    pub fn zeros(&self, numel: usize, level: i64) -> Option<usize> {
        if level < -(self.below as i64) || level > self.above as i64 {
            return None;
        }
        let base = (self.target * numel as f64).round() as i64;
        let z = base + level * self.step as i64;
        let most = ((self.max.min(1.0) * numel as f64).floor() as i64).max(base);
        (0..=most).contains(&z).then_some(z as usize)
    }

    /// Every level of the grid, lowest first.
    pub fn levels(&self) -> impl Iterator<Item = i64> {
        -(self.below as i64)..=self.above as i64
    }

    /// The levels a unit of `numel` weights can take.
    pub fn unit_levels(&self, numel: usize) -> Vec<i64> {
        self.levels()
            .filter(|&l| self.zeros(numel, l).is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_unit_spans_its_own_useful_range() {
        // SmolLM2-135M's shapes at 60%: the step is 5% of a k/v projection.
        let (kv, q, mlp) = (192 * 576, 576 * 576, 1536 * 576);
        let g = SparsityGrid::fit(&[q, kv, kv, q, mlp, mlp, mlp], 0.6, 0.05, 0.95, 13).unwrap();
        let span = |n: usize| {
            let l = g.unit_levels(n);
            let z = |lv: i64| g.zeros(n, lv).unwrap() as f64 / n as f64;
            (z(l[0]), z(*l.last().unwrap()))
        };
        // k/v: from dense (within one step) to about 95%.
        let (lo, hi) = span(kv);
        assert!(lo < 0.05 && hi > 0.90 && hi <= 0.95, "k/v {lo}..{hi}");
        // MLP: at least ±8% around the target.
        let (lo, hi) = span(mlp);
        assert!(lo <= 0.52 && hi >= 0.68, "mlp {lo}..{hi}");
        // Every level of every unit is within [0, 95%], and level 0 is the target.
        for n in [kv, q, mlp] {
            for l in g.unit_levels(n) {
                let z = g.zeros(n, l).unwrap();
                assert!(z as f64 <= 0.95 * n as f64);
            }
            assert_eq!(g.zeros(n, 0), Some((0.6 * n as f64).round() as usize));
        }
    }

    #[test]
    fn fit_keeps_every_level_valid_in_every_unit() {
        let numels = [576 * 576, 192 * 576, 1536 * 576];
        let g = SparsityGrid::fit(&numels, 0.5, 0.05, 0.9, 4).unwrap();
        assert!(g.below > 0 && g.above > 0);
        for &n in &numels {
            assert_eq!(g.unit_levels(n).len(), g.below + g.above + 1);
        }
        assert!(SparsityGrid::fit(&[], 0.5, 0.1, 0.9, 3).is_err());
        assert!(SparsityGrid::fit(&[10], 1.5, 0.1, 0.9, 3).is_err());
    }

    proptest! {
        /// +1 on one unit and -1 on another keeps the total exactly, whatever the shapes.
        #[test]
        fn a_level_switch_keeps_the_total(
            numels in proptest::collection::vec(10_000usize..500_000, 2..12),
            levels in proptest::collection::vec(-3i64..=3, 12),
            a in 0usize..12, b in 0usize..12, target in 0.3f64..0.7,
        ) {
            let g = SparsityGrid { target, step: 500, below: 4, above: 4, max: 1.0 };
            let n = numels.len();
            let (a, b) = (a % n, b % n);
            prop_assume!(a != b);
            let total = |lv: &[i64]| -> usize { (0..n).map(|i| g.zeros(numels[i], lv[i]).unwrap()).sum() };
            let lv: Vec<i64> = levels[..n].to_vec();
            let before = total(&lv);
            let mut child = lv.clone();
            child[a] += 1;
            child[b] -= 1;
            prop_assert_eq!(total(&child), before);
        }
    }
}
