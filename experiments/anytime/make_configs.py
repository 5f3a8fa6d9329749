#!/usr/bin/env python3
"""Write the anytime experiment's configs: 2 settings x 5 variants x 3 seeds.

Run from anywhere; the configs are committed, this only keeps them consistent.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = [0, 1, 2]
DATA = ('(calibration: "assets/text/sotu/calib", evaluation: "assets/text/sotu/eval", '
        'held_out_tokens: 2048, held_out_context: 512)')

SETTINGS = {
    # Published: 96 generations x 32 offspring, 2/2048 -> 1/32768, start the best of 64
    # random genomes on 2048 tokens. Stage sizes / 32 (sequences of 64 tokens).
    "depth20": dict(
        what="Depth pruning at 20% (6 of 30 blocks dropped)",
        database="configs/db/depth-blocks.ron",
        budget="Dropped(6)",
        seq_len=64,
        base="preset: Depth, generations: 1000, stages: [(2, 64), (1, 1024)]",
        start="start: Some(BestOfRandom(candidates: 64, tokens: 64))",
        published="published EvoPress (96 x 32; 2/2048 -> 1/32768; best of 64 random on 2048), stage tokens / 32",
        warm="start: Some(Best(of: [ShortGpt], tokens: 64))",
        # Shortened LLaMA's leave-one-out as well: 30 probes on the start's 64 tokens first.
        warm_loo="start: Some(Best(of: [ShortGpt, ShortenedLlama], tokens: 64))",
        chunk=128,
        max_tokens=40000,
    ),
    # Published: 400 generations x 64 offspring, 8/2048 -> 2/16384 -> 1/65536, from uniform.
    # Stage sizes / 64 (sequences of 32 tokens).
    "sparsity60": dict(
        what="Unstructured sparsity at 60% on average (SparseGPT, EvoPress's grid)",
        database="configs/db/sparsity-grid.ron",
        budget="UniformLevel(0)",
        seq_len=32,
        base="preset: Sparsity, generations: 1000, stages: [(8, 32), (2, 256), (1, 1024)]",
        start="",
        published="published EvoPress (400 x 64; 8/2048 -> 2/16384 -> 1/65536; uniform start), stage tokens / 64",
        warm="start: Some(Best(of: [Uniform, Dp(max_states: 2000000)], tokens: 1024))",
        chunk=64,
        max_tokens=28000,
    ),
}

# Every variant but the warm starts keeps the published start.
VARIANTS = {
    "published": lambda s: "",
    "racing": lambda s: f"racing: (chunk: {s['chunk']}, confidence: 0.9, min_chunks: 2)",
    "warm": lambda s: s["warm"],
    "surrogate": lambda s: "surrogate: (screen: 4, explore: 0.25, min_train: 24)",
    "all": lambda s: ", ".join(VARIANTS[v](s) for v in ["racing", "warm", "surrogate"]),
    "warm-loo": lambda s: s.get("warm_loo"),
}

for key, s in SETTINGS.items():
    for variant, extra in VARIANTS.items():
        if extra(s) is None:
            continue
        for seed in SEEDS:
            name = f"anytime-{key}-{variant}-s{seed}"
            path = HERE / f"{key}-{variant}-s{seed}.ron"
            more = extra(s)
            if "start:" not in more and s["start"]:
                more = ", ".join(x for x in [s["start"], more] if x)
            strategy = f"EvoPress({s['base']}, max_tokens: {s['max_tokens']}" + (f", {more}" if more else "") + ")"
            path.write_text(f"""// evocomp run experiments/anytime/{path.name}
// {s['what']}: EvoPress, variant `{variant}`, seed {seed}.
// Base: {s['published']}; every variant stops starting generations after {s['max_tokens']} tokens.
Experiment(
    name: "{name}",
    model: "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf",
    database: "{s['database']}",
    data: {DATA},
    budget: {s['budget']},
    strategy: {strategy},
    fitness: (metric: Kl, teacher: TopK(64), seq_len: {s['seq_len']}, tokens: 2048, batch_size: 16),
    seed: {seed},
    anytime: Some(8),
)
""")
print("written")
