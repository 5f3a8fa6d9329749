#!/usr/bin/env bash
# Does top-64 KL rank depth genomes as full-vocabulary KL does? 200 random 20%-depth genomes of
# SmolLM2-135M scored on 2048 calibration tokens (4 sequences of 512, the held-out windows'
# length) with both fitnesses, from the same logits.
# Run from anywhere, after scripts/setup.sh; the depth database is built on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
EXAMPLES=${EXAMPLES:-./target/release/examples}
"$EVOCOMP" db build configs/db/depth-blocks.ron > /dev/null
mkdir -p results/fitness-ranking
"$EXAMPLES/fitness_ranking" assets/models/SmolLM2-135M-Instruct.Q4_1.gguf results/db/depth-blocks \
  assets/text/sotu/calib 200 6 512 4 64 > results/fitness-ranking/depth20-seq512.json
python3 experiments/fitness-ranking/summary.py > results/fitness-ranking/README.md
