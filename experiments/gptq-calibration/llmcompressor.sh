#!/usr/bin/env bash
# evocomp's GPTQ (3 bits, groups of 64) and SparseGPT (50%) against LLM Compressor's on SmolLM2-135M:
# the same calibration sequences, the same held-out windows of three genres, full KL with paired
# bootstrap intervals (scripts/reference/llmcompressor_compare.py). Run from anywhere, after
# scripts/setup.sh and a release build; installs LLM Compressor beside the reference venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
PY=$(bash scripts/reference/venv.sh --llmcompressor)
for db in gptq-3bit gptq-3bit-g64 rtn-3bit-g64 sparsegpt-50 magnitude-50; do
  /usr/bin/time -f "$db: build %e s, %M KB" "$EVOCOMP" db build configs/db/$db.ron 2>&1 | tail -n 1
done
TEXTS=(--text sotu=assets/text/sotu/eval --text moby-dick=assets/text/moby-dick --text shakespeare=assets/text/shakespeare)
mkdir -p results/gptq-calibration
# LLM Compressor's weights are kept here and reused while recipe and calibration are the same.
CACHE=${LLMC_CACHE:-${TMPDIR:-/tmp}}
quiet() { grep -v "it/s\]\|METRIC\|INFO\|WARNING\|^\s*$\|is_fx_tracing"; }
"$PY" scripts/reference/llmcompressor_compare.py --method gptq --group 64 \
  --db evocomp-gptq=results/db/gptq-3bit-g64 --db evocomp-rtn=results/db/rtn-3bit-g64 "${TEXTS[@]}" --tokens 6144 \
  --llmc-weights "$CACHE/evocomp-llmc-gptq.pt" --json results/gptq-calibration/llmcompressor-gptq.json 2>&1 | quiet | tee results/gptq-calibration/llmcompressor-gptq.md
"$PY" scripts/reference/llmcompressor_compare.py --method sparsegpt --sparsity 0.5 \
  --db evocomp-sparsegpt=results/db/sparsegpt-50 --db evocomp-magnitude=results/db/magnitude-50 "${TEXTS[@]}" --tokens 6144 \
  --llmc-weights "$CACHE/evocomp-llmc-sparsegpt.pt" --json results/gptq-calibration/llmcompressor-sparsegpt.json 2>&1 | quiet | tee results/gptq-calibration/llmcompressor-sparsegpt.md
# db eval's protocol (the first 4,096 SOTU tokens), where 42.07 (evocomp, groups of 128) was measured.
"$PY" scripts/reference/llmcompressor_compare.py --method gptq --group 64 \
  --db evocomp-gptq-g64=results/db/gptq-3bit-g64 --db evocomp-gptq-g128=results/db/gptq-3bit \
  --text sotu=assets/text/sotu/eval --tokens 4096 \
  --llmc-weights "$CACHE/evocomp-llmc-gptq.pt" 2>&1 | quiet | tee results/gptq-calibration/llmcompressor-gptq-sotu4096.md
