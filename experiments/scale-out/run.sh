#!/usr/bin/env bash
# Issue 13's measurements (SmolLM2-135M-Instruct, the quick-start depth study,
# EvoPress 8 generations): wall time of `evocomp run` with its in-process
# workers (one using both cores; two with one core each) and with 1 and 2
# `evocomp worker` processes of one core each behind a local
# `nats-server -js`; the best genome must be the same every way. Needs
# scripts/setup.sh (assets, nats-server); about 10 minutes on 2 cores.
#   bash experiments/scale-out/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=results/scale-out
mkdir -p "$out"
cargo build --release -p evocomp-cli
EVOCOMP="${CARGO_TARGET_DIR:-target}/release/evocomp"
grep -m1 "model name" /proc/cpuinfo > "$out/cpu.txt"

store=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nats-server -js -a 127.0.0.1 -p "$port" -sd "$store" >/dev/null 2>&1 &
nats=$!
pids=()
trap 'kill $nats "${pids[@]}" 2>/dev/null || true; rm -rf "$store"' EXIT
url="nats://127.0.0.1:$port"
sleep 1

run() { # MODE ARGS...
  local mode=$1; shift
  local cfg
  cfg=$(mktemp --suffix=.ron)
  sed -e "s/name: \"scale-out-depth\"/name: \"scale-out-$mode\"/" \
      -e "s|    seed: 0,|    seed: 0,\n    output: \"$out/$mode\",|" \
      experiments/scale-out/depth.ron > "$cfg"
  rm -rf "$out/$mode"
  echo "== $mode"
  /usr/bin/time -f "%e" -o "$out/$mode.wall" "$EVOCOMP" run "$cfg" --no-shared-cache "$@" \
    2> >(grep -v XDG_RUNTIME | tee "$out/$mode.log" >&2) | tail -n 4
  rm -f "$cfg"
}

run local
run local-2 --cpu-workers 2
for n in 1 2; do
  pids=()
  for i in $(seq 1 "$n"); do
    RUST_LOG=evocomp_queue=info "$EVOCOMP" worker --queue "$url" --backend cpu --threads 1 --name "w$i" \
      2>"$out/queue-$n-w$i.log" &
    pids+=($!)
  done
  run "queue-$n" --queue "$url"
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
done

python3 - "$out" <<'PY'
import json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
modes = [
    ("local", "in-process, 1 worker on both cores (default)"),
    ("local-2", "in-process, 2 workers of one core (--cpu-workers 2)"),
    ("queue-1", "1 `evocomp worker` process, one core (--queue)"),
    ("queue-2", "2 `evocomp worker` processes, one core each (--queue)"),
]
base = None
lines = [
    f"CPU: {(out / 'cpu.txt').read_text().strip()}, 2 cores",
    "",
    "| evaluated by | evaluations | wall s | search s | speed-up (wall) | best fitness | best genome = local |",
    "|---|---|---|---|---|---|---|",
]
ref = json.loads((out / "local" / "summary.json").read_text())["best"]
for mode, label in modes:
    s = json.loads((out / mode / "summary.json").read_text())
    wall = float((out / f"{mode}.wall").read_text().split()[-1])
    base = base or wall
    same = s["best"]["genome"] == ref["genome"] and s["best"]["search_fitness"] == ref["search_fitness"]
    lines.append(
        f"| {label} | {s['evaluations']} | {wall:.1f} | {s['seconds']:.1f} | {base / wall:.2f}x | {s['best']['search_fitness']:.6f} | {'yes' if same else 'NO'} |"
    )
lines.append("")
lines.append("Overhead of the queue per job (loopback):")
lines.append("")
for mode in ["queue-1", "queue-2"]:
    m = re.search(r"(\d+) jobs published \(([\d.]+) ms each", (out / f"{mode}.log").read_text())
    per = [
        tuple(float(x) for x in g)
        for w in sorted(out.glob(f"{mode}-w*.log"))
        for g in re.findall(r"queue overhead ([\d.]+) ms \(delivery ([\d.]+) ms, result stored and job acked ([\d.]+) ms", w.read_text())
    ]
    if m and per:
        n = len(per)
        mean = [sum(p[i] for p in per) / n for i in range(3)]
        lines.append(
            f"- {mode}: publishing a job {m.group(2)} ms (until the stream stored it); on the workers, "
            f"{mean[1]:.2f} ms delivery + {mean[2]:.2f} ms storing the result and acking = {mean[0]:.2f} ms "
            f"per job (mean of {n}); {float(m.group(2)) + mean[0]:.2f} ms per job in all"
        )
(out / "README.md").write_text("# Scale-out (experiments/scale-out/run.sh)\n\n" + "\n".join(lines) + "\n")
print("\n".join(lines))
PY
