#!/usr/bin/env bash
# Issue 12's measurements (2 CPU cores, SmolLM2-135M-Instruct, f32):
#   1. `evocomp bench` beside PyTorch on the same tokens (KL fitness and a
#      plain perplexity forward);
#   2. one generation of EvoPress's sparsity setting (64 offspring, stages
#      8/2048 -> 2/16384 -> 1/65536 tokens) in the PyTorch loop of
#      scripts/reference/evopress_loop.py, on the same database levels
#      (written by `evocomp db dump`), and as `evocomp run`, with and without
#      prefix reuse;
#   3. the same with bf16 matmuls (`fitness.matmul: Bf16`; bench `--matmuls
#      f32,bf16`), beside the PyTorch loop in bfloat16.
# Needs scripts/setup.sh's assets and Python venv; about 70 minutes.
#   bash experiments/throughput/run.sh [PYTHON]
# STEPS="bench unfused torch evocomp torch-bf16 evocomp-bf16" (the default) picks the parts to (re)run; the
# table at the end reads whatever results/throughput/ holds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py="${1:-$HOME/.cache/evocomp-pyref/bin/python}"
out=results/throughput
mkdir -p "$out"
cargo build --release -p evocomp-cli
EVOCOMP="${CARGO_TARGET_DIR:-target}/release/evocomp"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf

grep -m1 "model name" /proc/cpuinfo > "$out/cpu.txt"
grep -o -w 'avx2\|fma\|avx512f\|avx512bw\|avx512vl\|avx512_bf16\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ' >> "$out/cpu.txt"
echo >> "$out/cpu.txt"

steps="${STEPS:-bench unfused torch evocomp torch-bf16 evocomp-bf16}"
has() { [[ " $steps " == *" $1 "* ]]; }

if has bench; then
echo "== 1. bench"
"$EVOCOMP" bench --model "$model" --text assets/text/sotu/eval --backends cpu --python "$py" \
  --matmuls f32,bf16 --json "$out/bench.json" 2>&1 | grep -v XDG_RUNTIME | tee "$out/bench.txt" | tail -n 4

fi
if has unfused; then
echo "== 1b. bench with burn's own attention, SiLU and matmul outputs (--no-fused-kernels)"
"$EVOCOMP" bench --model "$model" --text assets/text/sotu/eval --backends cpu --no-fused-kernels \
  --json "$out/bench-unfused.json" 2>&1 | grep -v XDG_RUNTIME | tail -n 2
fi

echo "== 2. one EvoPress generation"
"$EVOCOMP" db build configs/db/sparsity-grid.ron 2>&1 | tail -n 1
levels=$(mktemp -d)
trap 'rm -rf "$levels"' EXIT
if has torch || has torch-bf16; then
# One generation from the uniform parent moves no unit more than 3 levels.
"$EVOCOMP" db dump results/db/sparsity-grid --out "$levels" --levels=-3,-2,-1,0,1,2,3
fi
torch_loop() { # DTYPE OUT
  "$py" scripts/reference/evopress_loop.py --model "$model" --levels "$levels" --text assets/text/sotu/calib \
    --dtype "$1" 2> >(grep -v -e Warning -e "de-quantizing" -e "Loading weights" >&2) | tee "$2"
}
if has torch; then torch_loop float32 "$out/torch-loop.json"; fi
if has torch-bf16; then torch_loop bfloat16 "$out/torch-loop-bf16.json"; fi
evocomp_run() { # NAME PREFIX_REUSE MATMUL
  cfg=$(mktemp --suffix=.ron)
  sed -e "s/name: \"evopress-generation\"/name: \"evopress-generation-$1\"/" \
      -e "s|    seed: 0,|    seed: 0,\n    prefix_reuse: $2,\n    output: \"$out/evocomp-$1\",|" \
      -e "s|batch_size: 4)|batch_size: 4, matmul: $3)|" \
      experiments/throughput/evopress-generation.ron > "$cfg"
  rm -rf "$out/evocomp-$1"
  /usr/bin/time -f "%e" -o "$out/evocomp-$1.wall" "$EVOCOMP" run "$cfg" --no-shared-cache 2>&1 \
    | grep -v XDG_RUNTIME | tail -n 6
  rm -f "$cfg"
}
if has evocomp; then
  evocomp_run reuse-true true F32
  evocomp_run reuse-false false F32
fi
if has evocomp-bf16; then evocomp_run bf16-matmul true Bf16; fi

"$py" - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
bench = json.loads((out / "bench.json").read_text())
f, t = bench["figures"][0], bench["torch"]
torch = json.loads((out / "torch-loop.json").read_text().strip().splitlines()[-1])
torch_bf16 = out / "torch-loop-bf16.json"
torch_bf16 = json.loads(torch_bf16.read_text().strip().splitlines()[-1]) if torch_bf16.exists() else None
rows = []
for name, label in [("reuse-true", "prefix reuse true"), ("reuse-false", "prefix reuse false"),
                    ("bf16-matmul", "bf16 matmuls, prefix reuse true")]:
    if not (out / f"evocomp-{name}" / "summary.json").exists():
        continue
    s = json.loads((out / f"evocomp-{name}" / "summary.json").read_text())
    wall = float((out / f"evocomp-{name}.wall").read_text().split()[-1])
    rows.append((label, s["evaluations"], s["seconds"], wall, s.get("layers_run_fraction")))
lines = [
    f"CPU: {(out / 'cpu.txt').read_text().strip()}",
    "",
    "| measure | evocomp | PyTorch | ratio |",
    "|---|---|---|---|",
    f"| KL fitness, {bench['sequences']} x {bench['seq_len']} tokens, batch {bench['batch_size']}, top-{bench['top_k']} (tokens/s) | {f['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | {f['tokens_per_s'] / t['tokens_per_s']:.2f}x |",
    f"| perplexity forward, same batches (tokens/s) | {f['ppl_tokens_per_s']:.1f} | {t['ppl_tokens_per_s']:.1f} | {f['ppl_tokens_per_s'] / t['ppl_tokens_per_s']:.2f}x |",
]
for g in bench["figures"][1:]:
    lines.append(
        f"| {g['name'].removeprefix('evocomp ')}: KL fitness / perplexity forward, KL to f32 {g['kl']:.2e} | {g['tokens_per_s']:.1f} / {g['ppl_tokens_per_s']:.1f} | | {g['tokens_per_s'] / t['tokens_per_s']:.2f}x / {g['ppl_tokens_per_s'] / t['ppl_tokens_per_s']:.2f}x |"
    )
unfused = out / "bench-unfused.json"
if unfused.exists():
    u = json.loads(unfused.read_text())["figures"][0]
    lines += [
        f"| KL fitness without the fused kernels (`--no-fused-kernels`, a separate run) | {u['tokens_per_s']:.1f} | | |",
        f"| perplexity forward without them | {u['ppl_tokens_per_s']:.1f} | | |",
    ]
lines += [
    "",
    "One EvoPress generation (64 offspring; 8/2048 -> 2/16384 -> 1/65536 tokens; 75 candidate evaluations):",
    "",
    "| run | candidates | search s | wall s (with loading) | candidates/s | vs PyTorch loop | layers run |",
    "|---|---|---|---|---|---|---|",
    f"| PyTorch loop (teacher {torch['teacher_s']:.1f} s + generation {torch['generation_s']:.1f} s) | {torch['candidates_evaluated']} | {torch['teacher_s'] + torch['generation_s']:.1f} | | {torch['candidates_per_s_with_teacher']:.4f} | 1.00x | 100% |",
]
if torch_bf16:
    tb = torch_bf16
    lines.append(
        f"| PyTorch loop in bfloat16 (teacher {tb['teacher_s']:.1f} s + generation {tb['generation_s']:.1f} s) | {tb['candidates_evaluated']} | {tb['teacher_s'] + tb['generation_s']:.1f} | | {tb['candidates_per_s_with_teacher']:.4f} | {tb['candidates_per_s_with_teacher'] / torch['candidates_per_s_with_teacher']:.2f}x | 100% |"
    )
for label, n, secs, wall, frac in rows:
    cps = n / secs
    lines.append(
        f"| evocomp run, {label} | {n} | {secs:.1f} | {wall:.1f} | {cps:.4f} | {cps / torch['candidates_per_s_with_teacher']:.2f}x | {100 * frac:.1f}% |"
    )
(out / "README.md").write_text("# Throughput (experiments/throughput/run.sh)\n\n" + "\n".join(lines) + "\n")
print("\n".join(lines))
PY
