#!/usr/bin/env bash
# Which search fitness ranks depth genomes as the held-out measure does? 200 random 20%-depth
# genomes of SmolLM2-135M (the same 200 in both runs), scored on 2048 calibration tokens with
# top-64 KL and full-vocabulary KL from the same logits, once in 4 sequences of 512 tokens (the
# held-out windows' length) and once in 16 of 128 (the error-bars experiment's search).
# Run from anywhere, after scripts/setup.sh; the depth database is built on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
EXAMPLES=${EXAMPLES:-./target/release/examples}
"$EVOCOMP" db build configs/db/depth-blocks.ron > /dev/null
mkdir -p results/fitness-ranking
for shape in "512 4" "128 16"; do
  set -- $shape
  "$EXAMPLES/fitness_ranking" assets/models/SmolLM2-135M-Instruct.Q4_1.gguf results/db/depth-blocks \
    assets/text/sotu/calib 200 6 "$1" "$2" 64 > "results/fitness-ranking/depth20-seq$1.json"
done
python3 experiments/fitness-ranking/summary.py > results/fitness-ranking/README.md
