#!/usr/bin/env bash
# Top-64 KL against full-vocabulary KL as EvoPress's fitness: 200 random 20%-depth genomes of
# SmolLM2-135M scored both ways on the same 4 x 512 calibration tokens, from the same logits.
# Run from anywhere, after scripts/setup.sh; the depth database is built on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
EXAMPLES=${EXAMPLES:-./target/release/examples}
"$EVOCOMP" db build configs/db/depth-blocks.ron > /dev/null
mkdir -p results/fitness-ranking
"$EXAMPLES/fitness_ranking" assets/models/SmolLM2-135M-Instruct.Q4_1.gguf results/db/depth-blocks \
  assets/text/sotu/calib 200 6 512 4 64 > results/fitness-ranking/depth20.json
python3 -c "
import json; d = json.load(open('results/fitness-ranking/depth20.json'))
print({k: v for k, v in d.items() if not isinstance(v, list)})"
