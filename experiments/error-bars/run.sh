#!/usr/bin/env bash
# EvoPress with the new defaults (3 seeds per variant) against the one-shot heuristics at depth 20%
# and 30% and sparsity 60% (and 50%) on SmolLM2-135M, compared on the same held-out windows of
# three genres with paired bootstrap intervals. Run from anywhere, after scripts/setup.sh and a
# release build. Each study resumes if interrupted; a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
TEXTS=(--text sotu=assets/text/sotu/eval --text moby-dick=assets/text/moby-dick --text shakespeare=assets/text/shakespeare)
run() { echo "== $1"; "$EVOCOMP" run "experiments/error-bars/$1.ron" --no-shared-cache 2>&1 | grep -v XDG_RUNTIME | tail -n 4; }
# The baselines: the depth and sparsity experiments' studies (run them first if missing).
for s in shortgpt shortened-llama evopress; do
  [ -f results/depth-$s/sweep.json ] || "$EVOCOMP" run experiments/depth/$s.ron
done
for t in 50 60; do for s in uniform owl dp evopress; do
  [ -f results/sparsity-$t-$s/summary.json ] || "$EVOCOMP" run experiments/sparsity/$t-$s.ron
done; done
# depth20-s*: the default start scored on the first stage's tokens (before it moved to the last
# stage's); depth20-laststart-*: as the defaults are now; -ctx512: 512-token search sequences;
# -full: those with full-vocabulary KL as the fitness.
for v in depth20 depth20-laststart depth20-laststart-ctx512 depth20-full depth30 depth30-ctx512 depth30-full sparsity60 sparsity50; do
  for s in 0 1 2; do run $v-s$s; done
done
mkdir -p results/error-bars
compare() { out=$1; shift; "$EVOCOMP" compare "$@" "${TEXTS[@]}" --tokens 6144 --context 512 --backend cpu \
  --json results/error-bars/$out.json > results/error-bars/$out.md; }
compare depth20 results/depth-shortened-llama@dropped6 results/depth-shortgpt@dropped6 results/depth-evopress@dropped6 \
  results/errorbars-depth20-s{0,1,2} results/errorbars-depth20-laststart-s{0,1,2} results/errorbars-depth20-laststart-ctx512-s{0,1,2}
compare depth30 results/depth-shortened-llama@dropped9 results/depth-shortgpt@dropped9 results/depth-evopress@dropped9 \
  results/errorbars-depth30-s{0,1,2} results/errorbars-depth30-ctx512-s{0,1,2}
compare depth20-full results/depth-shortened-llama@dropped6 results/errorbars-depth20-full-s{0,1,2}
compare depth30-full results/depth-shortened-llama@dropped9 results/errorbars-depth30-full-s{0,1,2}
for t in 60 50; do
  compare sparsity$t results/sparsity-$t-{dp,uniform,owl,evopress} results/errorbars-sparsity$t-s{0,1,2}
done

# The searches' fitness on a calibration mix of the three genres (assets/text/mixed-calib; none of
# the held-out text), and the calibrated depth baselines on the same mix. DP's sparsity genome
# comes from the database's errors alone, so the sparsity baselines are compared as they are.
for s in shortened-llama shortgpt; do run $s-mixed; done
for v in depth20-mixed depth30-mixed sparsity50-mixed sparsity60-mixed; do
  for s in 0 1 2; do run $v-s$s; done
done
compare depth20-mixed results/depth-shortened-llama@dropped6 results/errorbars-shortened-llama-mixed@dropped6 \
  results/depth-shortgpt@dropped6 results/errorbars-shortgpt-mixed@dropped6 results/errorbars-depth20-mixed-s{0,1,2}
compare depth30-mixed results/depth-shortened-llama@dropped9 results/errorbars-shortened-llama-mixed@dropped9 \
  results/depth-shortgpt@dropped9 results/errorbars-shortgpt-mixed@dropped9 results/errorbars-depth30-mixed-s{0,1,2}
for t in 60 50; do
  compare sparsity$t-mixed results/sparsity-$t-{dp,uniform,owl} results/errorbars-sparsity$t-mixed-s{0,1,2}
done

# The same with the final choice as it is now: the start's best genome (the best heuristic) is the
# incumbent, replaced only by a candidate better by 2 standard errors of their paired gap.
for v in depth20-incumbent depth30-incumbent sparsity50-incumbent sparsity60-incumbent; do
  for s in 0 1 2; do run $v-s$s; done
done
compare depth20-incumbent results/depth-shortened-llama@dropped6 results/errorbars-shortened-llama-mixed@dropped6 \
  results/errorbars-depth20-incumbent-s{0,1,2}
compare depth30-incumbent results/depth-shortened-llama@dropped9 results/errorbars-shortened-llama-mixed@dropped9 \
  results/errorbars-depth30-incumbent-s{0,1,2}
for t in 60 50; do
  compare sparsity$t-incumbent results/sparsity-$t-{dp,uniform,owl} results/errorbars-sparsity$t-incumbent-s{0,1,2}
done

# Sub-blocks: attention and MLP dropped separately (configs/db/depth.ron), at most the parameters
# that 6 and 9 whole blocks leave; and the published random start (best of 64 random genomes on
# 2048 tokens) with the default's schedule otherwise, which asks more tokens than the default.
for v in depth20-subblock depth30-subblock depth20-random depth30-random; do
  for s in 0 1 2; do run $v-s$s; done
done
for p in 20:6 30:9; do
  b=${p%%:*}; n=${p##*:}
  compare depth$b-subblock-random results/depth-shortened-llama@dropped$n results/errorbars-depth$b-incumbent-s{0,1,2} \
    results/errorbars-depth$b-subblock-s{0,1,2} results/errorbars-depth$b-random-s{0,1,2}
done
# Diagnostic: the 30%-depth genomes on the search's own text (the calibration mix, 12,288 tokens
# of each genre at 512-token windows, 8,192 at the search's 128), not on the held-out genres.
"$EVOCOMP" compare results/depth-shortened-llama@dropped9 results/errorbars-depth30-incumbent-s{0,1,2} \
  --text mix-sotu=assets/text/mixed-calib/sotu --text mix-moby=assets/text/mixed-calib/moby-dick \
  --text mix-shake=assets/text/mixed-calib/shakespeare --tokens 12288 --context 512 --backend cpu \
  > results/error-bars/depth30-on-the-mix-ctx512.md
"$EVOCOMP" compare results/depth-shortened-llama@dropped9 results/errorbars-depth30-incumbent-s{1,2} \
  --text mix-sotu=assets/text/mixed-calib/sotu --text mix-moby=assets/text/mixed-calib/moby-dick \
  --text mix-shake=assets/text/mixed-calib/shakespeare --tokens 8192 --context 128 --batch-size 8 --backend cpu \
  > results/error-bars/depth30-on-the-mix-ctx128.md
# The start's probes and genomes scored on 4,096 tokens instead of the last stage's 1,024.
for s in 0 1 2; do run depth30-probes4k-s$s; done
compare depth30-probes4k results/depth-shortened-llama@dropped9 results/errorbars-depth30-incumbent-s{0,1,2} \
  results/errorbars-depth30-probes4k-s{0,1,2}
# The published random start at about the default's tokens (29 generations instead of 10).
for s in 0 1 2; do run depth30-random29-s$s; done
compare depth30-equal-tokens results/depth-shortened-llama@dropped9 results/errorbars-depth30-incumbent-s{0,1,2} \
  results/errorbars-depth30-random29-s{0,1,2}
python3 experiments/error-bars/table.py > results/error-bars/table.md
python3 scripts/study-scale.py results/depth-evopress/dropped6 results/errorbars-depth* results/errorbars-sparsity* > results/error-bars/scale.md
