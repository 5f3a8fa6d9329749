#!/usr/bin/env bash
# Unstructured sparsity at 50/60/70% on SmolLM2-135M: uniform, OWL, DP, greedy and EvoPress.
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for t in 50 60 70; do
  for s in uniform owl dp evopress greedy; do run experiments/sparsity/$t-$s.ron; done
done
dirs=()
# Greedy's studies are joined when they exist (they are the slowest to run).
for s in uniform owl dp greedy evopress; do for t in 50 60 70; do
  if [ -d "results/sparsity-$t-$s" ]; then dirs+=(results/sparsity-$t-$s); fi
done; done
"$EVOCOMP" report --by-strategy --out results/sparsity "${dirs[@]}"
