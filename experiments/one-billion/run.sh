#!/usr/bin/env bash
# Issue 31: a 1.1B-parameter Llama (TinyLlama's shape, random weights) end to end on this
# machine: each step's peak RSS and wall time (/usr/bin/time -v), and the fitness throughput
# against PyTorch on the same model and tokens. Writes results/one-billion/table.md.
#
#   bash experiments/one-billion/run.sh            # every step (about an hour on 2 cores)
#   STEPS="load bench" bash experiments/one-billion/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evocomp-target}"
PY="$(bash scripts/reference/venv.sh)"
BIN="${EVOCOMP:-$CARGO_TARGET_DIR/release/evocomp}"
[ -x "$BIN" ] || cargo build --release --locked -p evocomp-cli
M=assets/models/tinyllama-shape-1b.bf16.gguf
OUT="${OUT:-results/one-billion}"
mkdir -p "$OUT/logs"
if [ ! -f "$M" ]; then
  /usr/bin/time -v "$PY" scripts/reference/make_1b.py --out assets/models/tinyllama-shape-1b \
    > "$OUT/make.json" 2> "$OUT/logs/make.log"
fi
STEPS="${STEPS:-load bench db-sparsegpt db-gptq depth sparsity export}"
TEXT=assets/text/sotu/eval

# step NAME CMD...: run CMD under /usr/bin/time -v, its output in logs/NAME.log, and a line of
# steps.tsv: name, peak RSS (MiB), wall seconds, exit status.
step() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  local rc=0
  /usr/bin/time -v -o "$OUT/logs/$name.time" "$@" > "$OUT/logs/$name.log" 2>&1 || rc=$?
  local rss wall
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$OUT/logs/$name.time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s}' "$OUT/logs/$name.time")
  printf '%s\t%s\t%s\t%s\n' "$name" "$rss" "$wall" "$rc" >> "$OUT/steps.tsv"
  echo "   peak RSS $rss MiB, $wall s, exit $rc" >&2
}

for s in $STEPS; do
  case $s in
    load)
      for d in f32 bf16; do
        step "perplexity-$d" "$BIN" perplexity --model "$M" --text "$TEXT" --tokens 2048 \
          --context 512 --dtype "$d" --backend cpu
      done ;;
    bench)
      step bench "$BIN" bench --model "$M" --text "$TEXT" --sequences 4 --seq-len 512 \
        --batch-size 2 --top-k 64 --repeats 1 --backends cpu --dtypes f32,bf16 \
        --python "$PY" --json "$OUT/bench.json" ;;
    db-sparsegpt) step db-sparsegpt "$BIN" db build experiments/one-billion/db-sparsegpt.ron ;;
    db-gptq) step db-gptq "$BIN" db build experiments/one-billion/db-gptq.ron ;;
    # Each run computes every evaluation (no values from the shared cache of an earlier run).
    depth) step depth "$BIN" run experiments/one-billion/depth.ron --no-shared-cache ;;
    sparsity) step sparsity "$BIN" run experiments/one-billion/sparsity.ron --no-shared-cache ;;
    export)
      rm -rf "$OUT/export-sparsity"
      step export "$BIN" export "$OUT/sparsity" --out "$OUT/export-sparsity" --dtype bf16 ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
"$PY" experiments/one-billion/table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
