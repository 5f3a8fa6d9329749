#!/usr/bin/env bash
# Depth 20% on SmolLM2-135M: EvoPress with the new defaults (3 seeds each, search sequences of
# 128 and of 512 tokens) against the one-shot heuristics and the EvoPress of experiments/depth,
# compared on the same held-out windows of three genres with paired bootstrap intervals.
# Run from anywhere, after scripts/setup.sh and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
# The baselines: the depth experiment's sweeps (run them first if missing).
for s in shortgpt shortened-llama evopress; do
  [ -f results/depth-$s/sweep.json ] || "$EVOCOMP" run experiments/depth/$s.ron
done
for v in depth20 depth20-ctx512; do
  for seed in 0 1 2; do
    echo "== $v seed $seed"
    /usr/bin/time -f "%e s, %M KB" "$EVOCOMP" run experiments/error-bars/$v-s$seed.ron --no-shared-cache 2>&1 \
      | grep -v XDG_RUNTIME | tail -n 4
  done
done
mkdir -p results/error-bars
"$EVOCOMP" compare \
  results/depth-shortened-llama@dropped6 results/depth-shortgpt@dropped6 results/depth-evopress@dropped6 \
  results/errorbars-depth20-s0 results/errorbars-depth20-s1 results/errorbars-depth20-s2 \
  results/errorbars-depth20-ctx512-s0 results/errorbars-depth20-ctx512-s1 results/errorbars-depth20-ctx512-s2 \
  --text sotu=assets/text/sotu/eval --text moby-dick=assets/text/moby-dick --text shakespeare=assets/text/shakespeare \
  --tokens 6144 --context 512 --backend cpu \
  --json results/error-bars/depth20.json > results/error-bars/depth20.md
python3 experiments/error-bars/scale.py > results/error-bars/scale.md
