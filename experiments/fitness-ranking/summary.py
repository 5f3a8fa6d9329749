#!/usr/bin/env python3
"""How top-64 KL and full KL rank the same 200 genomes (results/fitness-ranking/depth20-seq512.json):
Spearman's rho and the share of pairs in the same order, over all genomes and over the best ones
(where a search ends up), and whether both pick the same best genome."""
import json
import pathlib

R = pathlib.Path(__file__).resolve().parents[2] / "results" / "fitness-ranking"


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    for k, i in enumerate(order):
        r[i] = k + 1.0
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def pairs(a, b):
    same = total = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            total += 1
            same += (a[i] - a[j] > 0) == (b[i] - b[j] > 0)
    return same / total


d = json.loads((R / "depth20-seq512.json").read_text())
full, top = d["full_kl"], d["top_k_kl"]
order = sorted(range(len(full)), key=lambda i: full[i])
print("# Top-64 KL against full KL as the search fitness\n")
print(f"{d['genomes']} random genomes dropping {d['dropped']} of SmolLM2-135M's 30 blocks, each "
      f"scored on the same {d['tokens']} calibration tokens ({d['tokens'] // d['seq_len']} "
      f"sequences of {d['seq_len']}) with full-vocabulary KL and with top-{d['top_k']} KL, from "
      "the same logits (`experiments/fitness-ranking/run.sh`).\n")
print("| genomes (best by full KL) | full KL up to | Spearman ρ | pairs in the same order |")
print("|---|---|---|---|")
for k in (len(full), 40, 20):
    idx = order[:k]
    a, b = [full[i] for i in idx], [top[i] for i in idx]
    print(f"| {k} | {max(a):.3f} | {spearman(a, b):.4f} | {pairs(a, b):.4f} |")
print(f"\nSame best genome: {d['same_best']}.")
