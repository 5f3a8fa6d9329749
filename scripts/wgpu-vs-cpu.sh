#!/usr/bin/env bash
# The same small ShortGPT study (SmolLM2, 6 of 30 blocks dropped, 1024 search
# tokens in sequences of 256, batch 4, held-out 512 tokens) on burn's flex CPU
# backend and on wgpu. Without a GPU, wgpu runs on Mesa's lavapipe (128 MiB
# buffers: batches of 2; about 5 minutes). Prints each backend's genome,
# search fitness, held-out KL and NLL, to compare.
#
#   bash scripts/wgpu-vs-cpu.sh [OUT_DIR]     (default /tmp/evocomp-wgpu-vs-cpu)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-/tmp/evocomp-wgpu-vs-cpu}"
mkdir -p "$out"
cargo build --release -p evocomp-cli
bin="${CARGO_TARGET_DIR:-target}/release/evocomp"
for backend in Cpu Wgpu; do
  cat > "$out/$backend.ron" <<RON
Experiment(
    name: "wgpu-vs-cpu-$backend",
    model: "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    database: "configs/db/depth-blocks.ron",
    data: (calibration: "assets/text/sotu/calib", evaluation: "assets/text/sotu/eval", held_out_tokens: 512, held_out_context: 256),
    budget: Dropped(6),
    strategy: ShortGpt,
    fitness: (metric: Kl, teacher: TopK(64), seq_len: 256, tokens: 1024, batch_size: 4),
    backend: $backend,
    seed: 0,
    output: "$out/$backend",
)
RON
  rm -rf "$out/$backend"
  RUST_LOG=evocomp_engine=info "$bin" run "$out/$backend.ron" --no-shared-cache
done
python3 - "$out" <<'PY'
import json, sys
for b in ["Cpu", "Wgpu"]:
    s = json.load(open(f"{sys.argv[1]}/{b}/summary.json"))["best"]
    print(f"{b:5} genome {s['genome']} search fitness {s['search_fitness']:.6f} "
          f"held-out KL {s['held_out_kl']:.6f} NLL {s['held_out_nll']:.6f}")
PY
