#!/usr/bin/env python3
"""How the fitnesses of experiments/fitness-ranking rank the same 200 genomes: Spearman's rho,
the share of pairs in the same order, and whether the best genome is the same, for each pair of
(fitness, sequence length) against full KL on 512-token sequences (the held-out measure's)."""
import json
import pathlib

R = pathlib.Path(__file__).resolve().parents[2] / "results" / "fitness-ranking"


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            r[k] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5


def pairs(a, b):
    n, same, total = len(a), 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            total += 1
            same += (a[i] - a[j] > 0) == (b[i] - b[j] > 0)
    return same / total


d512 = json.loads((R / "depth20-seq512.json").read_text())
d128 = json.loads((R / "depth20-seq128.json").read_text())
ref = d512["full_kl"]
print("# Top-64 KL against full KL as the search fitness\n")
print(f"{d512['genomes']} random genomes dropping {d512['dropped']} of 30 blocks of SmolLM2-135M, "
      f"each scored on {d512['tokens']} calibration tokens (fresh sample, seed 7). Reference: full "
      "KL on 4 sequences of 512 tokens (the held-out windows' length). Made by "
      "`experiments/fitness-ranking/run.sh`.\n")
print("| fitness | sequences | Spearman ρ vs reference | pairs in the same order | same best genome | "
      "reference's best ranks |")
print("|---|---|---|---|---|---|")
best = min(range(len(ref)), key=lambda i: ref[i])
for name, d, key in [("full KL", d512, "full_kl"), ("top-64 KL", d512, "top_k_kl"),
                     ("full KL", d128, "full_kl"), ("top-64 KL", d128, "top_k_kl")]:
    v = d[key]
    r = ranks(v)
    print(f"| {name} | {d['tokens'] // d['seq_len']} × {d['seq_len']} | {spearman(v, ref):.4f} | "
          f"{pairs(v, ref):.4f} | {min(range(len(v)), key=lambda i: v[i]) == best} | "
          f"{r[best]:.0f} of {len(v)} |")
