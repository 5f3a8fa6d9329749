#!/usr/bin/env python3
"""Per-study figures of the anytime experiment, as Markdown, from results/anytime-*/.

"to reach (exact)": each study's history records the token count at which every best genome
became the best; the anytime points give the held-out KL of the genomes that were best at an
eighth, a quarter, ... of the tokens. Between changes the best genome, and so its KL, holds. The
mean over seeds is known wherever every seed's current genome was measured; the first such
token count at which it is at or below the published variant's mean final KL is reported (a
span where some seed's genome was never measured does not count). The report's coarser figure
uses the grid points alone.

For each setting and variant (mean over seeds, and each seed): tokens scored, generations,
evaluations, search seconds, the held-out KL of the start and the final genome, the held-out
KL at the published variant's mean token count, and the surrogate's mean rank correlation
over the generations it screened.
"""
import json
import statistics as st
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "results"
VARIANTS = ["published", "racing", "warm", "surrogate", "all", "warm-loo"]


def load(setting, variant, seed):
    d = ROOT / f"anytime-{setting}-{variant}-s{seed}"
    if not (d / "summary.json").exists():
        return None
    s = json.loads((d / "summary.json").read_text())
    status = json.loads((d / "status.json").read_text())
    rho = [h["metrics"]["surrogate_rank_correlation"] for h in s["history"]
           if "surrogate_rank_correlation" in h.get("metrics", {})]
    # One value per generation: the metric repeats on the steps in between.
    per_gen = [r for i, r in enumerate(rho) if i == 0 or r != rho[i - 1]]
    changes = [(h["tokens"], tuple(h["best_genome"])) for h in s["history"] if h.get("best_genome")]
    known = {}
    for a in s["anytime"]:
        current = [g for t, g in changes if t <= a["tokens"]]
        if current:
            known[current[-1]] = a["held_out_kl"]
    return dict(
        exact=[(t, known.get(g)) for t, g in changes],
        tokens=s["history"][-1]["tokens"],
        generations=status["progress"],
        evaluations=s["evaluations"],
        seconds=s["seconds"],
        start=s["anytime"][0]["held_out_kl"],
        start_tokens=s["anytime"][0]["tokens"],
        final=s["best"]["held_out_kl"],
        ppl=s["best"]["held_out_perplexity"],
        anytime=[(a["tokens"], a["held_out_kl"]) for a in s["anytime"]],
        rho=st.mean(per_gen) if per_gen else None,
    )


def exact_reach(runs, target):
    """The first token count at which every seed's best genome so far was measured and their
    mean KL is at most `target` (None if never)."""
    for t in sorted({t for r in runs for t, _ in r["exact"]}):
        vals = []
        for r in runs:
            cur = [k for u, k in r["exact"] if u <= t]
            vals.append(cur[-1] if cur else None)
        if all(v is not None for v in vals) and st.mean(vals) <= target:
            return t
    return None


def at(points, tokens):
    v = [k for t, k in points if t <= tokens]
    return v[-1] if v else None


def main():
    for setting in sys.argv[1:] or ["depth20", "sparsity60"]:
        runs = {v: [r for r in (load(setting, v, s) for s in range(3)) if r] for v in VARIANTS}
        if not runs["published"]:
            continue
        ref_tokens = st.mean(r["tokens"] for r in runs["published"])
        ref_kl = st.mean(r["final"] for r in runs["published"])
        print(f"\n### {setting}\n")
        print(f"Equal tokens: {ref_tokens:.0f} (the published variant's mean).\n")
        print(f"Published final KL (mean): {ref_kl:.4f}.\n")
        print("| variant | seeds | tokens | generations | evaluations | search s | held-out KL at 1/8 of the tokens | final | at equal tokens | to reach (exact) | perplexity | surrogate ρ |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v in VARIANTS:
            rs = runs[v]
            if not rs:
                continue
            m = lambda k: st.mean(r[k] for r in rs)
            eq = [at(r["anytime"], ref_tokens) for r in rs]
            eq = [e for e in eq if e is not None]
            rho = [r["rho"] for r in rs if r["rho"] is not None]
            reach = exact_reach(rs, ref_kl)
            reach = "not reached" if reach is None else f"{reach} ({100 * reach / ref_tokens:.1f}%)"
            print(f"| {v} | {len(rs)} | {m('tokens'):.0f} | {m('generations'):.1f} | {m('evaluations'):.0f} | "
                  f"{m('seconds'):.0f} | {m('start'):.4f} | {m('final'):.4f} "
                  f"({min(r['final'] for r in rs):.4f}–{max(r['final'] for r in rs):.4f}) | "
                  f"{(st.mean(eq) if eq else float('nan')):.4f} | {reach} | {m('ppl'):.2f} | "
                  f"{(f'{st.mean(rho):.2f}' if rho else '–')} |")


if __name__ == "__main__":
    main()
