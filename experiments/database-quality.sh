#!/usr/bin/env bash
# Issue 3's measurements on the real model: SparseGPT vs magnitude (and Wanda)
# at 50% and 70%, GPTQ vs RTN at 3 bits. Builds the databases of configs/db,
# scores each uniformly on a held-out SOTU address, and compares the per-unit
# reconstruction errors ‖WX − ŴX‖² stored in the manifests.
#   bash experiments/database-quality.sh > experiments/database-quality.md
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${CARGO_TARGET_DIR:-target}/release/evocomp"
model=assets/models/SmolLM2-135M-Instruct.Q4_1.gguf
text=assets/text/sotu/eval/2021_joseph_r_biden_d.txt
echo "# Variant databases on SmolLM2-135M: reconstruction error and perplexity"
echo
echo "Calibration: 32 x 512 tokens of SOTU addresses before 2000 (seed 0). Perplexity: first 1024 tokens of"
echo "\`$text\`, windows of 512, CPU backend. Uncompressed (dequantised Q4_1) perplexity: $("$bin" perplexity --model $model --text $text --backend cpu 2>/dev/null | sed 's/perplexity: //')."
echo
echo "| database | build (s) | perplexity | apply every unit (s) | one evaluation (s) |"
echo "|---|---|---|---|---|"
for db in magnitude-50 wanda-50 sparsegpt-50 magnitude-70 sparsegpt-70 rtn-3bit gptq-3bit; do
  t0=$(date +%s.%N)
  "$bin" db build configs/db/$db.ron --backend cpu >/dev/null 2>&1
  t1=$(date +%s.%N)
  out=$("$bin" db eval results/db/$db --model $model --text $text --backend cpu 2>/dev/null)
  ppl=$(grep '^perplexity' <<<"$out" | sed 's/perplexity: //')
  apply=$(grep '^apply' <<<"$out")
  all=$(sed -E 's/apply: [0-9]+ units in ([0-9.]+) s.*/\1/' <<<"$apply")
  ev=$(grep '^evaluation' <<<"$out" | sed -E 's/.* in ([0-9.]+) s/\1/')
  printf '| %s | %.0f | %s | %s | %s |\n' "$db" "$(echo "$t1 - $t0" | bc)" "$ppl" "$all" "$ev"
done
# Swapping a child that differs from its parent in 2 units needs two levels.
cat > /tmp/evocomp-rtn-3-4.ron <<RON
DatabaseSpec(model: "$model", output: "results/db/rtn-3-4bit",
  calibration: (text: "assets/text/sotu/calib", sequences: 4, seq_len: 512, seed: 0),
  compression: Quantization(method: Rtn, bits: [3, 4], group_size: 128))
RON
"$bin" db build /tmp/evocomp-rtn-3-4.ron --backend cpu >/dev/null 2>&1
echo
echo "Level swaps (RTN 3/4-bit database, 210 units):"
"$bin" db eval results/db/rtn-3-4bit --model $model --text $text --backend cpu 2>/dev/null | grep -E '^(apply|evaluation)' | sed 's/^/    /'
echo
python3 - <<'PY'
import json
def errs(name):
    m = json.load(open(f"results/db/{name}/manifest.json"))
    return {u["name"]: u["errors"][0] for u in m["units"]}
for a, b, label in [("sparsegpt-50", "magnitude-50", "SparseGPT vs magnitude, 50%"),
                    ("sparsegpt-50", "wanda-50", "SparseGPT vs Wanda, 50%"),
                    ("sparsegpt-70", "magnitude-70", "SparseGPT vs magnitude, 70%"),
                    ("gptq-3bit", "rtn-3bit", "GPTQ vs RTN, 3 bits, groups of 128")]:
    ea, eb = errs(a), errs(b)
    lower = sum(ea[k] < eb[k] for k in ea)
    ratio = sorted(ea[k] / eb[k] for k in ea if eb[k] > 0)
    worst = max(ea, key=lambda k: ea[k] / eb[k] if eb[k] > 0 else 0)
    print(f"- **{label}:** lower ‖WX−ŴX‖² in {lower} of {len(ea)} units; ratio median {ratio[len(ratio)//2]:.3f}, "
          f"best {ratio[0]:.3f}, worst {ratio[-1]:.3f} ({worst}); sum {sum(ea.values()):.4g} vs {sum(eb.values()):.4g}.")
PY
