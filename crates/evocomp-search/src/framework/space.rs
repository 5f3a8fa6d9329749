//! The search space as strategies see it: one level per unit, each level
//! with an exact cost, and a budget on the total.

use serde::{Deserialize, Serialize};

/// One level per unit, in the space's unit order.
pub type Genome = Vec<i64>;

/// One unit's levels (ascending) and their costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitLevels {
    pub name: String,
    pub levels: Vec<i64>,
    pub costs: Vec<u64>,
}

impl UnitLevels {
    pub fn index(&self, level: i64) -> Option<usize> {
        self.levels.iter().position(|&l| l == level)
    }

    pub fn min(&self) -> i64 {
        self.levels[0]
    }

    pub fn max(&self) -> i64 {
        *self.levels.last().expect("a unit has levels")
    }
}

/// The constraint on a genome's total cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Budget {
    /// The total must equal this.
    Exact(u64),
    /// The total must not exceed this.
    AtMost(u64),
}

impl Budget {
    pub fn allows(&self, cost: u64) -> bool {
        match *self {
            Budget::Exact(b) => cost == b,
            Budget::AtMost(b) => cost <= b,
        }
    }

    pub fn limit(&self) -> u64 {
        match *self {
            Budget::Exact(b) | Budget::AtMost(b) => b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    #[error("the space has no units")]
    Empty,
    #[error("unit {0} has no levels, or levels and costs of different lengths, or unsorted levels")]
    BadUnit(String),
    #[error("genome has {found} entries, the space has {units} units")]
    Length { found: usize, units: usize },
    #[error("unit {unit}: level {level} is not one of its levels")]
    Level { unit: String, level: i64 },
    #[error("no genome of this space meets the budget {0:?}")]
    Infeasible(Budget),
}

/// Every unit and its levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub units: Vec<UnitLevels>,
}

impl Space {
    pub fn new(units: Vec<UnitLevels>) -> Result<Self, SpaceError> {
        if units.is_empty() {
            return Err(SpaceError::Empty);
        }
        for u in &units {
            if u.levels.is_empty()
                || u.levels.len() != u.costs.len()
                || !u.levels.windows(2).all(|w| w[0] < w[1])
            {
                return Err(SpaceError::BadUnit(u.name.clone()));
            }
        }
        Ok(Self { units })
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// The units grouped by *type*: units of one type share their cost
    /// vector (whole blocks are one type; attention and MLP sub-blocks two;
    /// linear layers of one shape one). Groups in first-seen order, each
    /// with its units in order.
    pub fn types(&self) -> Vec<Vec<usize>> {
        let mut types: Vec<Vec<usize>> = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            match types.iter_mut().find(|t| self.units[t[0]].costs == u.costs) {
                Some(t) => t.push(i),
                None => types.push(vec![i]),
            }
        }
        types
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn check(&self, g: &[i64]) -> Result<(), SpaceError> {
        if g.len() != self.units.len() {
            return Err(SpaceError::Length {
                found: g.len(),
                units: self.units.len(),
            });
        }
        for (u, &l) in self.units.iter().zip(g) {
            if u.index(l).is_none() {
                return Err(SpaceError::Level {
                    unit: u.name.clone(),
                    level: l,
                });
            }
        }
        Ok(())
    }

    /// The exact total cost (the genome must be valid).
    pub fn cost(&self, g: &[i64]) -> u64 {
        self.units
            .iter()
            .zip(g)
            .map(|(u, &l)| u.costs[u.index(l).expect("a valid genome")])
            .sum()
    }

    pub fn feasible(&self, g: &[i64], budget: &Budget) -> bool {
        self.check(g).is_ok() && budget.allows(self.cost(g))
    }

    /// The same level everywhere, where every unit has it.
    pub fn uniform(&self, level: i64) -> Option<Genome> {
        self.units
            .iter()
            .all(|u| u.index(level).is_some())
            .then(|| vec![level; self.units.len()])
    }

    /// True when one level step changes every unit's cost by the same amount
    /// everywhere (EvoPress's sparsity grid): a +1/−1 switch then keeps the
    /// total exactly.
    pub fn equal_steps(&self) -> bool {
        let mut step: Option<(i64, i128)> = None;
        for u in &self.units {
            for w in 0..u.levels.len().saturating_sub(1) {
                let dl = u.levels[w + 1] - u.levels[w];
                let dc = u.costs[w + 1] as i128 - u.costs[w] as i128;
                if dl != 1 {
                    return false;
                }
                match step {
                    None => step = Some((dl, dc)),
                    Some((_, s)) if s != dc => return false,
                    _ => {}
                }
            }
        }
        true
    }

    /// The cost of every unit at its cheapest level.
    pub fn min_cost(&self) -> u64 {
        self.units.iter().filter_map(|u| u.costs.iter().min()).sum()
    }

    /// The cost of every unit at its most expensive level.
    pub fn max_cost(&self) -> u64 {
        self.units.iter().filter_map(|u| u.costs.iter().max()).sum()
    }

    /// The cost with `n` units of each type (units sharing a cost vector)
    /// at their cheapest level and the rest at their most expensive: a depth
    /// budget of `n` blocks (or `n` attention and `n` MLP sub-blocks)
    /// dropped. An error says why no such configuration exists.
    pub fn cost_with_dropped(&self, n: usize) -> Result<u64, String> {
        if n > self.len() {
            return Err(format!(
                "{n} units dropped, but the database has {} units",
                self.len()
            ));
        }
        if self.units.iter().any(|u| u.levels.len() != 2) {
            return Err(
                "Dropped(n) needs kept/dropped units (a depth database); use AtMost(cost)".into(),
            );
        }
        let mut total = 0u64;
        for members in self.types() {
            let count = members.len();
            if n > count {
                return Err(format!(
                    "{n} units of each type dropped, but one type has only {count} units"
                ));
            }
            let costs = &self.units[members[0]].costs;
            let lo = costs.iter().copied().min().unwrap_or(0);
            let hi = costs.iter().copied().max().unwrap_or(0);
            total += n as u64 * lo + (count - n) as u64 * hi;
        }
        Ok(total)
    }

    /// The cheapest configuration in which some unit is above its cheapest
    /// level (for depth: some block of the model is left).
    pub fn cheapest_keeping_one(&self) -> u64 {
        let keep_one = self
            .units
            .iter()
            .filter_map(|u| {
                let lo = u.costs.iter().copied().min()?;
                u.costs.iter().filter(|&&c| c > lo).map(|c| c - lo).min()
            })
            .min()
            .unwrap_or(0);
        self.min_cost() + keep_one
    }
}

/// `n` units that are kept (cost 100) or dropped (cost 0): a depth-like space for tests.
#[cfg(test)]
pub(crate) fn kept_or_dropped(n: usize) -> Space {
    Space::new(
        (0..n)
            .map(|i| UnitLevels {
                name: format!("b{i}"),
                levels: vec![0, 1],
                costs: vec![100, 0],
            })
            .collect(),
    )
    .expect("a valid space")
}
