#!/usr/bin/env bash
# Issue 4's measurements on SmolLM2-135M (run from the repository root, after
# scripts/setup.sh):
#   1. 60% average unstructured sparsity: uniform, OWL and EvoPress (SparseGPT grid);
#   2. 20% of blocks dropped: ShortGPT and EvoPress;
#   3. prefix reuse: the same EvoPress study with and without it;
#   4. re-running a finished study.
# Writes results/search-vs-heuristics/README.md from the studies' summaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
mkdir -p results/search-vs-heuristics
export EVOCOMP_PROGRESS=1

run() { # config
  local name; name=$(basename "$1" .ron)
  echo "== $name"
  /usr/bin/time -f "%e s wall" "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 12
}

"$EVOCOMP" db build configs/db/sparsity-grid.ron 2>&1 | grep -v XDG_RUNTIME | tail -n 2
for c in sparsity60-uniform sparsity60-owl sparsity60-evopress depth20-shortgpt depth20-evopress; do
  run configs/studies/$c.ron
done

# Prefix reuse: the same short EvoPress study twice, with and without reuse, no shared cache.
for reuse in true false; do
  cfg=$(mktemp --suffix=.ron)
  sed -e "s/name: \"sparsity60-evopress\"/name: \"reuse-$reuse\"/" \
      -e "s/generations: Some(12)/generations: Some(3)/" \
      -e "s/    seed: 0,/    seed: 0,\n    prefix_reuse: $reuse,/" \
      configs/studies/sparsity60-evopress.ron > "$cfg"
  rm -rf "results/reuse-$reuse"
  echo "== prefix reuse: $reuse"
  /usr/bin/time -f "%e s wall" "$EVOCOMP" run "$cfg" --no-shared-cache 2>&1 | grep -v XDG_RUNTIME | tail -n 8
  rm -f "$cfg"
done

# Re-running a finished study: zero evaluations.
echo "== re-run sparsity60-evopress"
/usr/bin/time -f "%e s wall" "$EVOCOMP" run configs/studies/sparsity60-evopress.ron 2>&1 | grep -v XDG_RUNTIME | tail -n 3

python3 - results/search-vs-heuristics/README.md <<'PY'
import json, sys, pathlib
rows = []
def s(name):
    p = pathlib.Path("results") / name / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None
out = ["# Issue 4: search results on SmolLM2-135M-Instruct", "",
       "Held-out: the first 4096 tokens of the post-2000 State of the Union addresses, windows of 512,",
       "KL to the uncompressed model (top-64 teacher) and perplexity. Search fitness: KL on random",
       "256-token windows of the pre-2000 addresses. The uncompressed model's perplexity on the same",
       "held-out tokens is 21.98.", ""]
for title, names in [("60% average sparsity (SparseGPT grid, total exactly the uniform one)",
                      ["sparsity60-uniform", "sparsity60-owl", "sparsity60-evopress"]),
                     ("20% of blocks dropped (6 of 30)", ["depth20-shortgpt", "depth20-evopress"])]:
    out += [f"## {title}", "", "| study | strategy | cost | held-out KL | held-out perplexity | evaluations | search time (s) |",
            "|---|---|---|---|---|---|---|"]
    for n in names:
        x = s(n)
        if not x:
            out.append(f"| {n} | not run | | | | | |"); continue
        b = x["best"]
        out.append(f"| {n} | {x['strategy']} | {b['cost']} | {b['held_out_kl']:.4f} | {b['held_out_perplexity']:.2f} | {x['evaluations']} | {x['seconds']:.0f} |")
    out.append("")
a, b = s("reuse-true"), s("reuse-false")
if a and b:
    out += ["## Prefix reuse", "", "| prefix reuse | evaluations | search time (s) | evaluations/s | layers run |", "|---|---|---|---|---|"]
    for n, x in [("on", a), ("off", b)]:
        f = x.get("layers_run_fraction")
        out.append(f"| {n} | {x['evaluations']} | {x['seconds']:.1f} | {x['evaluations']/x['seconds']:.3f} | {'' if f is None else f'{100*f:.1f}%'} |")
    out += ["", f"Speed-up: {b['seconds']/a['seconds']:.2f}x; same best genome: {a['best']['genome'] == b['best']['genome']}.", ""]
pathlib.Path(sys.argv[1]).write_text("\n".join(out) + "\n")
print("\n".join(out))
PY
