#!/usr/bin/env python3
"""The summary table of experiments/error-bars from the `evocomp compare` JSON files: per budget,
the best baseline (lowest pooled KL among the one-shot heuristics), each search seed's pooled KL
and its difference from that baseline with the paired bootstrap 95% interval, per genre too."""
import json
import pathlib
import random

ROOT = pathlib.Path(__file__).resolve().parents[2] / "results" / "error-bars"
HEURISTICS = ("ShortGPT", "Shortened-LLaMA", "ShortenedLlama", "uniform", "OWL", "DP")


def bootstrap(a, b, resamples=10000, seed=0):
    """mean(a - b) and its 95% percentile interval, windows resampled in pairs."""
    d = [x - y for x, y in zip(a, b)]
    rng = random.Random(seed)
    n = len(d)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return sum(d) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples)]


def verdict(lo, hi):
    return "**better** (significant)" if hi < 0 else "worse (significant)" if lo > 0 else "tie"


for f in sorted(ROOT.glob("*.json")):
    c = json.loads(f.read_text())
    entries = c["entries"]
    texts = [t["text"] for t in c["tables"]]
    # scores[text][entry][window]; pooled: the texts' windows joined.
    pooled = [[w for t in c["scores"] for w in t[e]] for e in range(len(entries))]
    kl = lambda e, ws=None: [w["kl"] for w in (ws if ws is not None else pooled[e])]
    mean = lambda v: sum(v) / len(v)
    base = [i for i, e in enumerate(entries) if e["strategy"] in HEURISTICS]
    best = min(base, key=lambda i: mean(kl(i)))
    searches = [i for i, e in enumerate(entries) if e["study"].split("/")[-1].startswith("errorbars-")]
    print(f"### {f.stem}\n")
    print(f"{len(pooled[0])} windows of {c['context']} tokens ({', '.join(texts)}: "
          f"{c['tokens_per_text']} tokens each). Best baseline: {entries[best]['label']}, "
          f"pooled KL {mean(kl(best)):.4f}.\n")
    print("| configuration | pooled KL | Δ vs best baseline [95%] | verdict | " +
          " | ".join(f"Δ {t}" for t in texts) + " |")
    print("|---|---|---|---|" + "---|" * len(texts))
    for i in [j for j in range(len(entries)) if j != best]:
        m, lo, hi = bootstrap(kl(i), kl(best))
        per = []
        for ti in range(len(texts)):
            a = [w["kl"] for w in c["scores"][ti][i]]
            b = [w["kl"] for w in c["scores"][ti][best]]
            pm, plo, phi = bootstrap(a, b)
            per.append(f"{pm:+.4f} [{plo:+.4f}, {phi:+.4f}]")
        print(f"| {entries[i]['label']} | {mean(kl(i)):.4f} | {m:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
              f"{verdict(lo, hi)} | " + " | ".join(per) + " |")
    # Per variant (a study name without its -s<seed>): seeds, mean pooled KL and range, verdicts.
    variants = {}
    for i in searches:
        name = entries[i]["study"].split("/")[-1]
        variants.setdefault(name.rsplit("-s", 1)[0], []).append(i)
    if variants:
        print("\n| variant | seeds | pooled KL mean (lowest–highest) | better / tie / worse than the best baseline |")
        print("|---|---|---|---|")
        for v, idx in variants.items():
            ks = [mean(kl(i)) for i in idx]
            verdicts = [bootstrap(kl(i), kl(best))[1:] for i in idx]
            b = sum(hi < 0 for lo, hi in verdicts)
            w = sum(lo > 0 for lo, hi in verdicts)
            print(f"| {v} | {len(idx)} | {mean(ks):.4f} ({min(ks):.4f}–{max(ks):.4f}) | "
                  f"{b} / {len(idx) - b - w} / {w} |")
    # The default (-incumbent) against another variant seed by seed, where both are here.
    for v, idx in variants.items():
        default = v.rsplit("-", 1)[0] + "-incumbent"
        if v == default or default not in variants or len(variants[default]) != len(idx):
            continue
        print(f"\n| seed | default − {v} pooled KL [95%] | verdict for the default |")
        print("|---|---|---|")
        for s, (i, j) in enumerate(zip(variants[default], idx)):
            m, lo, hi = bootstrap(kl(i), kl(j))
            print(f"| {s} | {m:+.4f} [{lo:+.4f}, {hi:+.4f}] | {verdict(lo, hi)} |")
    print()
