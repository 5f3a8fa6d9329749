#!/usr/bin/env bash
# NSGA-II's whole front against EvoPress (and uniform) at three budgets of the 60% sparsity grid.
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for s in uniform evopress nsga2; do run experiments/nsga2/$s.ron; done
"$EVOCOMP" report --out results/nsga2 results/nsga2-front results/nsga2-evopress results/nsga2-uniform
