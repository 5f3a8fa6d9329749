//! The framework every strategy plugs into: the [`Strategy`](strategy::Strategy)
//! trait and the types strategies share (`strategy`), the search space and
//! budgets (`space`), what a strategy is built from (`setup`), the registry
//! that lists every strategy once and dispatches to them (`registry`), and
//! the seeded randomness (`rng`).

pub mod registry;
pub mod rng;
pub mod setup;
pub mod space;
pub mod strategy;
