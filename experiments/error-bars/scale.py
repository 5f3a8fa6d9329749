#!/usr/bin/env python3
"""Each study's scale against the published EvoPress depth protocol, computed from the studies'
summaries (evaluations and tokens asked), and the final choice's standard errors."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parents[2] / "results"
# Published depth protocol for dropping k of n blocks (EvoPress, Sieberling et al.):
# k(n-k)/1.5 generations of 32 offspring, 2 survivors on 2048 tokens -> 1 on 32768,
# the first parent the best of 64 random genomes on 2048 tokens.
n, k = 30, 6
gens = -(-k * (n - k) // 1.5)
gens = int(gens)
pub_evals = 64 + gens * (32 + 3)
pub_tokens = 64 * 2048 + gens * (32 * 2048 + 3 * 32768)

studies = sys.argv[1:] or [
    "depth-evopress/dropped6",
    *(f"errorbars-depth20-s{s}" for s in range(3)),
    *(f"errorbars-depth20-ctx512-s{s}" for s in range(3)),
]
print(f"Published protocol at {k} of {n} blocks: {gens} generations, {pub_evals:,} evaluations, "
      f"{pub_tokens:,} tokens.\n")
print("| study | evaluations | tokens asked | share of published tokens | seconds | "
      "final choice: fitness ± s.e. | gap to runner-up ± s.e. |")
print("|---|---|---|---|---|---|---|")
for s in studies:
    p = root / s / "summary.json"
    d = json.loads(p.read_text())
    last = d["history"][-1].get("metrics", {})
    tokens = int(last.get("tokens_asked", 0))
    if tokens == 0 and s.startswith("depth-evopress/"):
        # Recorded before studies counted their tokens: from its schedule (experiments/depth):
        # the best of 64 random genomes on 2048 tokens, 12 generations of 8 offspring on 512,
        # 2 + the parent on 2048.
        tokens = 64 * 2048 + 12 * (8 * 512 + 3 * 2048)
    fin = ("–" if "final_standard_error" not in last else
           f"{last['final_fitness']:.4f} ± {last['final_standard_error']:.4f}")
    gap = ("–" if "final_gap_to_runner_up" not in last else
           f"{last['final_gap_to_runner_up']:.4f} ± {last['final_gap_standard_error']:.4f}")
    print(f"| {s} | {d['evaluations']} | {tokens:,} | {tokens / pub_tokens:.2%} | "
          f"{d['seconds']:.0f} | {fin} | {gap} |")
