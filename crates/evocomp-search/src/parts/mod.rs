//! The building blocks strategies are made of: the one-shot heuristics'
//! genomes (`heuristics`), the exact knapsack (`dp`), CMA-ES (`cmaes`),
//! Pareto ranking (`pareto`), racing selection (`racing`), the surrogate
//! that screens offspring (`surrogate`) and warm starts (`warm`).

pub mod cmaes;
pub mod dp;
pub mod heuristics;
pub mod pareto;
pub mod racing;
pub mod surrogate;
pub mod warm;
