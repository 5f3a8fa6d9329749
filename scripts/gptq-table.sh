#!/usr/bin/env bash
# The 3-bit GPTQ table of issue 11: RTN, GPTQ as before (no act-order, uncompressed inputs),
# with act-order (static groups), and with sequential calibration (today's default), each
# built from configs/db/{rtn,gptq}-3bit.ron into OUT (default /tmp/evocomp-gptq-table) and
# scored on the first 1024 tokens of two held-out texts. About 10 minutes on 2 cores.
# Then: python scripts/reference/gptq_reference.py OUT/gptq-plain OUT/rtn (and OUT/gptq-seq),
#       python scripts/reference/gptq_sink.py OUT/gptq-plain OUT/rtn
set -euo pipefail
cd "$(dirname "$0")/.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
OUT=${1:-/tmp/evocomp-gptq-table}
mkdir -p "$OUT"
variant() { # name, source config, calibration extras, compression extras
  sed -e "s#output: \"[^\"]*\"#output: \"$OUT/$1\"#" \
      -e "s#seed: 0)#seed: 0$3)#" \
      -e "s#group_size: 128)#group_size: 128$4)#" "configs/db/$2.ron" > "$OUT/$1.ron"
  "$EVOCOMP" db build --backend cpu "$OUT/$1.ron" 2>&1 | tail -n 1
}
variant rtn rtn-3bit "" ""
variant gptq-plain gptq-3bit ", sequential: false, held_out: 0" ", act_order: false"
variant gptq-act-order gptq-3bit ", sequential: false, held_out: 0" ""
variant gptq-seq gptq-3bit "" ""
for db in rtn gptq-plain gptq-act-order gptq-seq; do
  for text in assets/text/sotu/eval assets/text/moby-dick; do
    p=$("$EVOCOMP" db eval --backend cpu --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --text "$text" --tokens 1024 "$OUT/$db" 2>&1 | grep perplexity)
    echo "$db  $text  $p"
  done
done
