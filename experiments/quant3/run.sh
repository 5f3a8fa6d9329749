#!/usr/bin/env bash
# Mixed-precision GPTQ at an average of 3 bits on SmolLM2-135M: uniform 3-bit GPTQ and EvoPress over 2/3/4 bits.
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for s in rtn-uniform uniform evopress; do run experiments/quant3/$s.ron; done
"$EVOCOMP" report --out results/quant3 results/quant3-rtn-uniform results/quant3-uniform results/quant3-evopress
