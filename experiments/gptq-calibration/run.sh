#!/usr/bin/env bash
# Uniform 3-bit GPTQ on SmolLM2-135M calibrated three ways (true-sequential, block by block as
# LLM Compressor, uncompressed inputs) and RTN; held-out perplexity per genre.
# Run from anywhere, after scripts/setup.sh and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
MODEL=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
for db in gptq-3bit gptq-3bit-blockwise gptq-3bit-uncompressed rtn-3bit; do
  /usr/bin/time -f "$db: build %e s, %M KB" "$EVOCOMP" db build configs/db/$db.ron 2>&1 | tail -n 1
done
echo "| database | sotu (2000 on) | moby-dick | shakespeare |"
echo "|---|---|---|---|"
for db in gptq-3bit gptq-3bit-blockwise gptq-3bit-uncompressed rtn-3bit; do
  row="| $db"
  for text in sotu/eval moby-dick shakespeare; do
    p=$("$EVOCOMP" db eval results/db/$db --model $MODEL --text assets/text/$text --tokens 4096 --level 0 --backend cpu 2>/dev/null \
        | sed -n 's/^perplexity: //p')
    row="$row | $p"
  done
  echo "$row |"
done
# The same four configurations on the same held-out windows of each genre, with intervals.
for db in gptq-3bit gptq-3bit-blockwise gptq-3bit-uncompressed rtn-3bit; do
  "$EVOCOMP" run experiments/gptq-calibration/uniform-$db.ron > /dev/null 2>&1
done
mkdir -p results/gptq-calibration
"$EVOCOMP" compare results/gptq-calibration-gptq-3bit results/gptq-calibration-gptq-3bit-blockwise \
  results/gptq-calibration-gptq-3bit-uncompressed results/gptq-calibration-rtn-3bit \
  --text sotu=assets/text/sotu/eval --text moby-dick=assets/text/moby-dick --text shakespeare=assets/text/shakespeare \
  --tokens 6144 --context 512 --backend cpu --json results/gptq-calibration/compare.json > results/gptq-calibration/compare.md
