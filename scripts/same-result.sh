#!/usr/bin/env bash
# Run one experiment config (default: configs/quickstart.ron, seed as
# written) with two evocomp binaries, each in a fresh study without the shared
# fitness cache, and check that they find the same best genome with
# bit-identical search fitness and held-out numbers: the check a refactor
# that must not change behaviour passes.
#
#   bash scripts/same-result.sh OLD_BINARY NEW_BINARY [CONFIG.ron]
#
# e.g. an older commit's binary: git worktree add /tmp/old <commit> &&
# (cd /tmp/old && ln -s "$PWD/../main/assets" assets && cargo build --release -p evocomp-cli)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
old="$1"; new="$2"; config="${3:-configs/quickstart.ron}"
out="$(mktemp -d)"
for which in old new; do
  bin="$old"; [ "$which" = new ] && bin="$new"
  # Same experiment, its own study folder (in $out).
  grep -v '^\s*output:' "$config" \
    | sed -E "s#^(\s*)name: \"([^\"]*)\",#\1name: \"\2-same-$which\", output: \"$out/$which\",#" > "$out/$which.ron"
  grep -q "same-$which" "$out/$which.ron" || { echo "no name: line in $config" >&2; exit 1; }
  "$bin" run "$out/$which.ron" --no-shared-cache --json > "$out/$which.json"
done
python3 - "$out/old.json" "$out/new.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
keys = ["genome", "cost", "search_fitness", "held_out_kl", "held_out_nll", "held_out_perplexity"]
same = all(a["best"][k] == b["best"][k] for k in keys)
same &= [h["best"] for h in a["history"]] == [h["best"] for h in b["history"]]
same &= a["front"] == b["front"] and a["evaluations"] == b["evaluations"]
for k in keys[1:]:
    print(f"{k:20} {a['best'][k]!r:24} {b['best'][k]!r}")
print("evaluations", a["evaluations"], b["evaluations"])
print("same result" if same else "DIFFERENT RESULT")
sys.exit(0 if same else 1)
PY
