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
# The configs, written where the results go (not under experiments/: the model they name is made
# by this script, so the shipped-config tests, which need every named file, cannot check them).
CONF="$OUT/configs"
mkdir -p "$CONF"
cat > "$CONF/db-sparsegpt.ron" <<RON
// evocomp db build $CONF/db-sparsegpt.ron
// Issue 31: a SparseGPT sparsity grid on the random 1.1B Llama (scripts/reference/make_1b.py):
// three levels a layer around 50% (one step each way: 20% of the smallest layer's weights),
// sequential calibration on 8 x 512 tokens. What it costs, not what it is worth.
DatabaseSpec(
    model: "$M",
    output: "$OUT/db/sparsegpt",
    calibration: (text: "assets/text/sotu/calib", sequences: 8, seq_len: 512, seed: 0),
    compression: Sparsity(method: SparseGpt, target: 0.5, step_fraction: 0.2, max_sparsity: 0.95, max_levels: 1),
)
RON
cat > "$CONF/db-gptq.ron" <<RON
// evocomp db build $CONF/db-gptq.ron
// Issue 31: GPTQ at 3 and 4 bits, groups of 128, on the random 1.1B Llama, 8 x 512 calibration tokens.
DatabaseSpec(
    model: "$M",
    output: "$OUT/db/gptq",
    calibration: (text: "assets/text/sotu/calib", sequences: 8, seq_len: 512, seed: 0),
    compression: Quantization(method: Gptq, bits: [3, 4], group_size: 128),
)
RON
cat > "$CONF/db-depth.ron" <<RON
// evocomp db build $CONF/db-depth.ron
// Issue 31: whole blocks of the random 1.1B Llama (nothing stored: a block is kept or dropped).
DatabaseSpec(
    model: "$M",
    output: "$OUT/db/depth",
    calibration: (text: "assets/text/sotu/calib", sequences: 8, seq_len: 512, seed: 0),
    compression: Depth(unit: Block),
)
RON
cat > "$CONF/depth.ron" <<RON
// evocomp run $CONF/depth.ron
// Issue 31: EvoPress dropping 4 of 22 blocks of the random 1.1B Llama, a small schedule
// (3 generations of 4 offspring, one 512-token stage; the best of 4 random genomes as the start,
// so no leave-one-out probes),
// weights held in bf16. Measures memory and time; its result means nothing.
Experiment(
    name: "depth",
    model: "$M",
    database: "$CONF/db-depth.ron",
    output: "$OUT/depth",
    data: (calibration: "assets/text/sotu/calib", evaluation: "assets/text/sotu/eval", held_out_tokens: 1024, held_out_context: 512),
    budget: Dropped(4),
    strategy: EvoPress(preset: Depth, generations: 3, offspring: 4, stages: [(1, 512)], start: Some(BestOfRandom(candidates: 4, tokens: 512))),
    fitness: (metric: Kl, teacher: TopK(64), seq_len: 256, tokens: 512, batch_size: 2, dtype: Bf16),
    seed: 0,
)
RON
cat > "$CONF/sparsity.ron" <<RON
// evocomp run $CONF/sparsity.ron
// Issue 31: EvoPress at 50% average sparsity on the random 1.1B Llama's SparseGPT grid, a small
// schedule (3 generations of 4 offspring, one 512-token stage; uniform start), weights in bf16.
Experiment(
    name: "sparsity",
    model: "$M",
    database: "$CONF/db-sparsegpt.ron",
    output: "$OUT/sparsity",
    data: (calibration: "assets/text/sotu/calib", evaluation: "assets/text/sotu/eval", held_out_tokens: 1024, held_out_context: 512),
    budget: UniformLevel(0),
    strategy: EvoPress(preset: Sparsity, generations: 3, offspring: 4, stages: [(1, 512)], start: Some(Uniform)),
    fitness: (metric: Kl, teacher: TopK(64), seq_len: 256, tokens: 512, batch_size: 2, dtype: Bf16),
    seed: 0,
)
RON
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
    db-sparsegpt) step db-sparsegpt "$BIN" db build "$CONF/db-sparsegpt.ron" ;;
    db-gptq) step db-gptq "$BIN" db build "$CONF/db-gptq.ron" ;;
    # Each run computes every evaluation (no values from the shared cache of an earlier run).
    depth) rm -rf "$OUT/depth"; step depth "$BIN" run "$CONF/depth.ron" --no-shared-cache ;;
    sparsity) rm -rf "$OUT/sparsity"; step sparsity "$BIN" run "$CONF/sparsity.ron" --no-shared-cache ;;
    export)
      rm -rf "$OUT/export-sparsity"
      step export "$BIN" export "$OUT/sparsity" --out "$OUT/export-sparsity" --dtype bf16 ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
"$PY" experiments/one-billion/table.py "$OUT" > "$OUT/table.md"
# The 8B projection in ARCHITECTURE.md ("Planned"), from the measured throughput.
[ -f "$OUT/bench.json" ] && "$PY" experiments/one-billion/project.py "$OUT" > "$OUT/projection.md"
cat "$OUT/table.md"
