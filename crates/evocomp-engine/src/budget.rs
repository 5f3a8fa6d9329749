//! The budget an experiment's spec names in a database's space (the
//! arithmetic is the space's; this maps the config's spelling onto it and
//! points impossible budgets at the config's `budget` line).

use anyhow::Result;
use evocomp_config::{BudgetSpec, Experiment};
use evocomp_db::Database;
use evocomp_search::{Budget, Kind, Space};

/// The budget a spec names in this space; impossible budgets point at the
/// config's `budget` line.
pub fn resolve_budget(exp: &Experiment, db: &Database, space: &Space) -> Result<Budget> {
    let b = written_budget(exp, db, space)?;
    Ok(exp.strategy.spec().search_budget(b))
}

fn written_budget(exp: &Experiment, db: &Database, space: &Space) -> Result<Budget> {
    let (min_cost, max_cost) = (space.min_cost(), space.max_cost());
    let fail = |m: String| -> anyhow::Error { exp.error_at("budget", m).into() };
    let b = match exp.budget {
        BudgetSpec::UniformLevel(l) => {
            let g = space.uniform(l).ok_or_else(|| {
                let lo = space.units.iter().map(|u| u.min()).max().unwrap_or(0);
                let hi = space.units.iter().map(|u| u.max()).min().unwrap_or(0);
                fail(format!(
                    "level {l} is not a level of every unit (every unit has {lo}..={hi})"
                ))
            })?;
            // Exact where a level switch keeps the total (EvoPress's grid),
            // otherwise a ceiling: children above it are never evaluated.
            if space.equal_steps() {
                Budget::Exact(space.cost(&g))
            } else {
                Budget::AtMost(space.cost(&g))
            }
        }
        // Units of one type share a cost vector: whole blocks are one type;
        // attention and MLP sub-blocks two, and n of each is dropped.
        BudgetSpec::Dropped(n) => Budget::Exact(space.cost_with_dropped(n).map_err(fail)?),
        BudgetSpec::AtMost(c) => Budget::AtMost(c),
        BudgetSpec::Exact(c) => Budget::Exact(c),
        BudgetSpec::Fraction(f) => Budget::AtMost((max_cost as f64 * f).floor() as u64),
        BudgetSpec::LlamaCpp(p) => {
            let g = evocomp_db::preset_genome(db, p).map_err(|e| fail(e.to_string()))?;
            Budget::AtMost(space.cost(&g))
        }
        BudgetSpec::Bpw(x) => {
            if db.cost_unit() != "bits" {
                return Err(fail(format!(
                    "bits per weight need a database whose costs are bits; this one counts {}",
                    db.cost_unit()
                )));
            }
            let weights: u64 = db.unit_numel().iter().sum();
            Budget::AtMost((weights as f64 * x).floor() as u64)
        }
    };
    if b.limit() < min_cost {
        return Err(fail(format!(
            "{b:?} is below the cheapest configuration ({min_cost})"
        )));
    }
    if db.kind() == Kind::Depth && b.limit() < space.cheapest_keeping_one() {
        // Some block (or sub-block) must be left.
        return Err(fail(format!(
            "{b:?} leaves no block of the model (keeping one costs at least {})",
            space.cheapest_keeping_one()
        )));
    }
    if let Budget::Exact(c) = b
        && c > max_cost
    {
        return Err(fail(format!(
            "{b:?} is above the most expensive configuration ({max_cost})"
        )));
    }
    Ok(b)
}
