#!/usr/bin/env python3
"""The 8B projection table of ARCHITECTURE.md ("Planned") from what run.sh measured: the KL-fitness
tokens/s of the 1.1B model (bench.json, f32 row) turned into a FLOP rate, applied to Llama-3-8B,
and the tokens each published EvoPress protocol scores (every offspring on every stage, the parent
in the last, no cache hits). The H100 rows assume 100-300 TFLOP/s for wgpu f16: not measured.

    python3 experiments/one-billion/project.py results/one-billion
"""
import json
import pathlib
import sys

# Llama-3-8B: 8.03B parameters, a 128,256 x 4,096 embedding (a lookup, no FLOPs), 32 blocks.
P8, EMBED8, BLOCKS8 = 8.03e9, 128_256 * 4096, 32
# The 1.1B model: 1,100,048,384 parameters, a 32,000 x 2,048 embedding.
P1, EMBED1 = 1_100_048_384, 32_000 * 2048
H100_TFLOPS = (100, 300)

PROTOCOLS = {
    # name: (generations, offspring, [(survivors, tokens) per stage], share of blocks run)
    "sparsity: 400 generations x 64, 8/2048 -> 2/16384 -> 1/65536":
        (400, 64, [(8, 2048), (2, 16384), (1, 65536)], 1.0),
    "quantization: 150 x 128, 16/2048 -> 4/16384 -> 1/131072":
        (150, 128, [(16, 2048), (4, 16384), (1, 131072)], 1.0),
    "depth, 8 of 32 blocks: k(n-k)/1.5 = 128 x 32, 2/2048 -> 1/32768":
        (8 * 24 / 1.5, 32, [(2, 2048), (1, 32768)], 24 / BLOCKS8),
    "super-fast: 400 x 16, 1/512 -> 1/8192": (400, 16, [(1, 512), (1, 8192)], 1.0),
}


def tokens(generations, offspring, stages, blocks):
    """Tokens scored: stage 1 scores every offspring, stage i the survivors of stage i-1, the
    last adds the parent; in full-model equivalents when only `blocks` of the model run."""
    per, scored = 0, offspring
    for i, (survivors, t) in enumerate(stages):
        per += (scored + (1 if i == len(stages) - 1 else 0)) * t
        scored = survivors
    return generations * per * blocks


def main():
    bench = json.loads((pathlib.Path(sys.argv[1]) / "bench.json").read_text())
    f32 = next(f for f in bench["figures"] if " f32 " in f["name"] and "bf16" not in f["name"])
    flop1, flop8 = 2 * (P1 - EMBED1), 2 * (P8 - EMBED8)
    rate = f32["tokens_per_s"] * flop1
    cpu8 = rate / flop8
    print(f"measured: {f32['tokens_per_s']:.1f} tokens/s on the 1.1B model, "
          f"{flop1 / 1e9:.2f} GFLOP a token: {rate / 1e9:.0f} GFLOP/s")
    print(f"projected: Llama-3-8B at {flop8 / 1e9:.1f} GFLOP a token: {cpu8:.1f} tokens/s here\n")
    print("| protocol (8B) | tokens scored | this CPU (2 cores) | one H100 (projected) |")
    print("|---|---|---|---|")
    for name, p in PROTOCOLS.items():
        n = tokens(*p)
        lo, hi = (n * flop8 / (t * 1e12) for t in reversed(H100_TFLOPS))
        fmt = (lambda s: f"{s / 3600:.1f} h") if hi >= 3600 else (lambda s: f"{s / 60:.0f} min")
        print(f"| {name} | {n / 1e6:.1f} M | {n / cpu8 / 86400:.1f} days "
              f"| {fmt(lo)}-{fmt(hi)} |")


if __name__ == "__main__":
    main()
