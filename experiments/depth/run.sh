#!/usr/bin/env bash
# Depth pruning at 10/20/30% of blocks on SmolLM2-135M: ShortGPT, Shortened LLaMA and EvoPress (each config is a sweep of three budgets).
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for s in shortgpt shortened-llama evopress; do run experiments/depth/$s.ron; done
"$EVOCOMP" report --out results/depth results/depth-shortgpt results/depth-shortened-llama results/depth-evopress
