#!/usr/bin/env python3
"""An EvoPress study's scale against the published protocol of its preset, and what its search
fitness did, computed from the study's files (never by hand):

    python3 scripts/study-scale.py results/<study> [results/<study> ...]

Tokens are those the strategy asked for: the `tokens_asked` metric where the study recorded it,
else its schedule (start + generations x (offspring x first stage + survivors and the parent on
the later stages)). The published protocols (EvoPress, Sieberling et al., 2024): sparsity 400
generations x 64 offspring, 8/2048 -> 2/16384 -> 1/65536 tokens; quantization 150 x 128,
16/2048 -> 4/16384 -> 1/131072; depth k(n-k)/1.5 generations x 32, 2/2048 -> 1/32768, the first
parent the best of 64 random genomes on 2048 tokens.
"""
import json
import math
import pathlib
import sys

PUBLISHED = {
    "Sparsity": (400, 64, [(8, 2048), (2, 16384), (1, 65536)]),
    "Quantization": (150, 128, [(16, 2048), (4, 16384), (1, 131072)]),
}


def per_generation(offspring, stages):
    """Tokens of one generation: every child on the first stage, the survivors of each stage (and
    the parent, on the last) on the next."""
    tokens = offspring * stages[0][1]
    for i in range(1, len(stages)):
        extra = 1 if i == len(stages) - 1 else 0
        tokens += (stages[i - 1][0] + extra) * stages[i][1]
    return tokens


def published(preset, n_units, dropped):
    if preset == "Depth":
        gens = math.ceil(dropped * (n_units - dropped) / 1.5)
        return gens, 64 * 2048 + gens * per_generation(32, [(2, 2048), (1, 32768)])
    gens, lam, stages = PUBLISHED[preset]
    return gens, gens * per_generation(lam, stages)


def trend(values):
    """First, last and lowest value, and the least-squares slope per step."""
    n = len(values)
    if n < 2:
        return values[0], values[-1], min(values), 0.0
    mx, my = (n - 1) / 2, sum(values) / n
    slope = sum((i - mx) * (v - my) for i, v in enumerate(values)) / sum(
        (i - mx) ** 2 for i in range(n))
    return values[0], values[-1], min(values), slope


def main():
    print("| study | preset | generations × offspring | stages | tokens asked | published tokens "
          "| share | evaluations | search fitness first → last (lowest; slope per step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        d = pathlib.Path(arg)
        name = str(d).removeprefix("results/")
        exp = json.loads((d / "experiment.json").read_text())
        summ = json.loads((d / "summary.json").read_text())
        evo = exp["strategy"].get("EvoPress")
        if evo is None:
            print(f"| {name} | not EvoPress | | | | | | {summ['evaluations']} | |")
            continue
        preset = evo["preset"]
        stages = [tuple(s) for s in evo["stages"]]
        gens = evo["generations"]
        lam = evo["offspring"]
        hist = summ["history"]
        tokens = hist[-1].get("metrics", {}).get("tokens_asked")
        if tokens is None:
            start = 0
            if preset == "Depth" and evo.get("start") is None:
                start = 64 * 2048  # the preset's start, as these studies ran
            tokens = start + gens * per_generation(lam, stages)
        dropped = exp["budget"].get("Dropped", 0) if isinstance(exp["budget"], dict) else 0
        n_units = len(summ["units"])
        pgens, ptokens = published(preset, n_units, dropped)
        best = [h["best"] for h in hist if h.get("best") is not None]
        first, last, low, slope = trend(best)
        print(f"| {name} | {preset} | {gens} × {lam} (published {pgens}) | "
              f"{' → '.join(f'{k}/{t}' for k, t in stages)} | {int(tokens):,} | {ptokens:,} | "
              f"1/{ptokens / tokens:,.0f} | {summ['evaluations']} | {first:.3f} → {last:.3f} "
              f"({low:.3f}; {slope:+.4f}) |")


main()
