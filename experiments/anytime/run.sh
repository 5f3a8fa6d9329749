#!/usr/bin/env bash
# Anytime search on SmolLM2-135M: EvoPress as published (stage sizes scaled down) against
# racing, warm starts, a surrogate and all three, at depth 20% and sparsity 60%, 3 seeds each.
# Run from anywhere, after scripts/setup.sh; databases are built on first use. Each study
# resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
# No shared fitness cache: variants with the same seed ask for some of the same
# (genome, sample) pairs, and a value another study computed would count as free.
run() { echo "== $1"; "$EVOCOMP" run --no-shared-cache "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 4; }
# warm-loo (Shortened LLaMA's leave-one-out as a warm start too) is a depth variant only.
variants="published racing warm surrogate all warm-loo"
for setting in depth20 sparsity60; do
  for seed in 0 1 2; do
    for v in $variants; do
      c=experiments/anytime/$setting-$v-s$seed.ron
      if [ -f "$c" ]; then run "$c"; fi
    done
  done
done
for setting in depth20 sparsity60; do
  dirs=()
  for v in $variants; do for seed in 0 1 2; do
    d=results/anytime-$setting-$v-s$seed
    if [ -f "$d/summary.json" ]; then dirs+=("$d"); fi
  done; done
  "$EVOCOMP" report --out results/anytime/$setting "${dirs[@]}"
done
