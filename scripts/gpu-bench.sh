#!/usr/bin/env bash
# Throughput on a real GPU in a few minutes (issue 12): `evocomp bench` on
# wgpu in f32, f16 and bf16 (a dtype the device cannot compute in is reported
# and skipped), flex on the CPU for scale, and PyTorch on CUDA on the same
# tokens where the given Python has torch with CUDA; the GPU's memory in use
# is sampled every 200 ms while each runs. Everything lands in OUT_DIR
# (bench-*.json, gpu-memory-*.csv, summary.txt).
#
#   bash scripts/gpu-bench.sh [OUT_DIR] [PYTHON]
#
# Needs a release build (built here when $EVOCOMP is unset and cargo is
# present) and the SmolLM2 asset (scripts/fetch-assets.sh). Time: the build,
# then about 1-3 minutes of benchmarks, then the 1.1B-parameter part (its
# GGUF written here, about a minute; its bench; a short depth study).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-/tmp/evocomp-gpu-bench}"
py="${2:-}"
mkdir -p "$out"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
text=assets/text/sotu/eval
bin="${EVOCOMP:-${CARGO_TARGET_DIR:-target}/release/evocomp}"
if [ ! -x "$bin" ]; then
  cargo build --release -p evocomp-cli
fi
summary="$out/summary.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
  grep -m1 "model name" /proc/cpuinfo || true
  echo "cores: $(nproc)"
} > "$summary"

# Samples the GPU memory in use (MiB) into $1 until killed.
sample_memory() {
  while true; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n1 >> "$1" || true
    sleep 0.2
  done
}
peak() { local p; p=$(sort -n "$1" 2>/dev/null | tail -n1); echo "${p:-unknown (nvidia-smi gave nothing)}"; }

# Larger batches than the CPU default: a GPU needs them to fill up. The sizes
# can be overridden (SEQUENCES, SEQ_LEN, BATCH, REPEATS), e.g. to try the
# script on lavapipe with tiny ones.
args=(--model "$model" --text "$text" --sequences "${SEQUENCES:-32}" --seq-len "${SEQ_LEN:-512}"
  --batch-size "${BATCH:-8}" --top-k 64 --repeats "${REPEATS:-3}")
for dtype in f32 f16 bf16; do
  sample_memory "$out/gpu-memory-wgpu-$dtype.csv" & sampler=$!
  "$bin" bench "${args[@]}" --backends wgpu --dtypes "$dtype" --json "$out/bench-wgpu-$dtype.json" \
    2>&1 | tee -a "$out/bench-wgpu-$dtype.log" | tail -n 3 >> "$summary" || echo "wgpu $dtype: failed (see $out/bench-wgpu-$dtype.log)" >> "$summary"
  kill "$sampler" 2>/dev/null || true
  echo "peak GPU memory in use, wgpu $dtype: $(peak "$out/gpu-memory-wgpu-$dtype.csv") (MiB)" >> "$summary"
done
"$bin" bench "${args[@]}" --backends cpu --json "$out/bench-cpu.json" 2>&1 | tail -n 3 >> "$summary"
if [ -n "$py" ] && "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  sample_memory "$out/gpu-memory-torch.csv" & sampler=$!
  "$bin" bench "${args[@]}" --backends cpu --python "$py" --torch-device cuda --json "$out/bench-torch-cuda.json" \
    2>&1 | tail -n 4 >> "$summary"
  kill "$sampler" 2>/dev/null || true
  echo "peak GPU memory in use, PyTorch CUDA: $(peak "$out/gpu-memory-torch.csv") (MiB)" >> "$summary"
else
  echo "PyTorch CUDA: not run (no Python given, or its torch sees no GPU)" >> "$summary"
fi
# Issue 31: the 1.1B-parameter shape (TinyLlama's, seeded random weights, made here by the
# random_model example: no Python needed) in f16 on wgpu, its GPU memory, and a short depth
# study on it. BIG_SHAPE=small BIG_DTYPE=f32 STUDY_TOKENS=64 STUDY_GENERATIONS=1 SEQ_LEN=32 try
# this part on lavapipe.
big="$out/${BIG_SHAPE:-tinyllama-1b}.gguf"
big_dtype="${BIG_DTYPE:-f16}"
if [ ! -f "$big" ]; then
  cargo run --release -p evocomp-model --example random_model -- "${BIG_SHAPE:-tinyllama-1b}" "$big" \
    >> "$summary" 2>> "$out/random-model.log"
fi
sample_memory "$out/gpu-memory-1b-wgpu-$big_dtype.csv" & sampler=$!
"$bin" bench --model "$big" --text "$text" --sequences "${SEQUENCES:-32}" --seq-len "${SEQ_LEN:-512}" \
  --batch-size "${BATCH:-8}" --top-k 64 --repeats "${REPEATS:-3}" --backends wgpu --dtypes "$big_dtype" \
  --json "$out/bench-1b-wgpu-$big_dtype.json" 2>&1 | tee -a "$out/bench-1b.log" | tail -n 3 >> "$summary" \
  || echo "1B wgpu $big_dtype: failed (see $out/bench-1b.log)" >> "$summary"
kill "$sampler" 2>/dev/null || true
echo "peak GPU memory in use, 1B wgpu $big_dtype: $(peak "$out/gpu-memory-1b-wgpu-$big_dtype.csv") (MiB)" >> "$summary"
abs_text="$(cd "$text" && pwd)"
study_tokens="${STUDY_TOKENS:-2048}"
study_seq="${SEQ_LEN:-512}"
study_generations="${STUDY_GENERATIONS:-5}"
cat > "$out/db-1b-depth.ron" <<RON
DatabaseSpec(
    model: "$big",
    output: "$out/db-1b-depth",
    calibration: (text: "$abs_text", sequences: 8, seq_len: 512, seed: 0),
    compression: Depth(unit: Block),
)
RON
cat > "$out/study-1b-depth.ron" <<RON
Experiment(
    name: "study-1b-depth",
    model: "$big",
    database: "$out/db-1b-depth.ron",
    output: "$out/study-1b-depth",
    data: (calibration: "$abs_text", evaluation: "$abs_text", held_out_tokens: $study_tokens, held_out_context: $study_seq),
    budget: Dropped(4),
    strategy: EvoPress(preset: Depth, generations: $study_generations, offspring: 8, stages: [(1, $study_tokens)], start: Some(BestOfRandom(candidates: 8, tokens: $study_tokens))),
    fitness: (metric: Kl, teacher: TopK(64), seq_len: $study_seq, tokens: $study_tokens, batch_size: ${BATCH:-8}, dtype: ${big_dtype^}),
    backend: Wgpu,
    seed: 0,
)
RON
rm -rf "$out/study-1b-depth"
sample_memory "$out/gpu-memory-1b-study.csv" & sampler=$!
start_s=$(date +%s)
if "$bin" run "$out/study-1b-depth.ron" > "$out/study-1b.log" 2>&1; then
  echo "1B depth study (wgpu $big_dtype, $study_generations generations x 8 on $study_tokens tokens): $(( $(date +%s) - start_s )) s; $(tail -n 2 "$out/study-1b.log" | tr '\n' ' ')" >> "$summary"
else
  echo "1B depth study: failed (see $out/study-1b.log)" >> "$summary"
fi
kill "$sampler" 2>/dev/null || true
echo "peak GPU memory in use, 1B study: $(peak "$out/gpu-memory-1b-study.csv") (MiB)" >> "$summary"
cat "$summary"
