#!/usr/bin/env bash
# Per-layer KV-cache budgets at a mean of 128 and 64 tokens on SmolLM2-135M: uniform, PyramidKV and EvolKV (each config is a sweep of both budgets).
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for s in uniform pyramidkv evolkv; do run experiments/kv/$s.ron; done
"$EVOCOMP" report --out results/kv results/kv-uniform results/kv-pyramidkv results/kv-evolkv
