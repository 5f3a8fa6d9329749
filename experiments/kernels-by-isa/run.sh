#!/usr/bin/env bash
# The CPU kernels' copies per instruction set (issue 29): every copy this
# machine can run, selected with EVOCOMP_ISA, timed on SmolLM2-135M shapes.
#   1. examples/kernels_by_isa (evocomp-model): log-sum-exp rows of 49,152,
#      one SmolLM2-shaped block's forward on 2 x 512 tokens, with f32 and
#      bf16 matmuls;
#   2. `evocomp bench` on the real model (CPU, 4 x 256 tokens, 2 timed
#      evaluations; f32 and bf16 matmuls; the baseline copy in f32 only and
#      1 evaluation: its emulated bf16 tiles take over ten minutes).
# EVOCOMP_ISA caps evocomp's own kernels; the f32 matmuls are the gemm
# crate's, which picks its own instruction set, so the f32 fitness moves less.
#   bash experiments/kernels-by-isa/run.sh     (about 5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=results/kernels-by-isa
mkdir -p "$out"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --bins --examples --locked
bin="$CARGO_TARGET_DIR/release"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
grep -m1 "model name" /proc/cpuinfo > "$out/cpu.txt"
grep -o -w 'avx2\|fma\|avx512f\|avx512bw\|avx512vl\|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ' >> "$out/cpu.txt"
echo >> "$out/cpu.txt"
"$bin/examples/kernels_by_isa" --json "$out/kernels.json" | tee "$out/kernels.txt"
for isa in avx512bf16 avx512 avx2 baseline; do
  if ! grep -q "\"isa\": \"$isa\"" "$out/kernels.json"; then
    echo "$isa: not on this CPU" | tee "$out/bench-$isa.txt"; rm -f "$out/bench-$isa.json"; continue
  fi
  args=(--repeats 2 --matmuls f32,bf16)
  [ "$isa" = baseline ] && args=(--repeats 1)
  EVOCOMP_ISA=$isa "$bin/evocomp" bench --model "$model" --text assets/text/sotu/eval --backends cpu \
    --sequences 4 --seq-len 256 "${args[@]}" --json "$out/bench-$isa.json" \
    > "$out/bench-$isa.txt" 2>/dev/null < /dev/null
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
k = {r["isa"]: r for r in json.load(open(f"{out}/kernels.json"))}
rows = ["| EVOCOMP_ISA | log-sum-exp rows/s | block forward tokens/s (f32 / bf16 matmuls) | `evocomp bench` KL fitness tokens/s (f32 / bf16 matmuls) |",
        "|---|---|---|---|"]
for isa in ["baseline", "avx2", "avx512", "avx512bf16"]:
    if isa not in k:
        rows.append(f"| {isa} | not on this CPU | | |"); continue
    b = {}
    p = f"{out}/bench-{isa}.json"
    if os.path.exists(p):
        for f in json.load(open(p))["figures"]:
            b["bf16" if "bf16 matmul" in f["name"] else "f32"] = f["tokens_per_s"]
    fit = f'{b.get("f32", float("nan")):.1f} / ' + (f'{b["bf16"]:.1f}' if "bf16" in b else "not run")
    r = k[isa]
    rows.append(f'| {isa} | {r["lse_rows_per_s"]:.0f} | {r["block_forward_tokens_per_s"]:.0f} / {r["bf16_matmul_forward_tokens_per_s"]:.0f} | {fit} |')
open(f"{out}/README.md", "w").write("# Kernel copies per instruction set\n\n" + open(f"{out}/cpu.txt").read() + "\n" + "\n".join(rows) + "\n")
print("\n".join(rows))
PY
