#!/usr/bin/env python3
"""results/one-billion/table.md from what run.sh measured: steps.tsv (step, peak RSS MiB, wall s,
exit status), bench.json (`evocomp bench --json`) and make.json (the model's parameters)."""
import json
import pathlib
import sys

WHAT = {
    "perplexity-f32": "load + perplexity, 2,048 tokens in windows of 512, weights f32",
    "perplexity-bf16": "load + perplexity, same tokens, weights bf16",
    "bench": "`evocomp bench` (4 x 512 tokens, f32 and bf16) + PyTorch f32 on the same tokens",
    "db-sparsegpt": "database build: SparseGPT grid, 3 levels a layer, sequential, 8 x 512 calibration",
    "db-gptq": "database build: GPTQ 3 and 4 bits, groups of 128, 8 x 512 calibration",
    "depth": "depth study: EvoPress, 4 of 22 blocks, 3 generations x 4, bf16 (db build included)",
    "sparsity": "sparsity study: EvoPress at 50%, 3 generations x 4, bf16",
    "export": "HF export of the sparsity study, bf16",
}


def main():
    out = pathlib.Path(sys.argv[1])
    make = json.loads((out / "make.json").read_text()) if (out / "make.json").exists() else {}
    params = make.get("parameters", 1_100_048_384)
    rows = {}
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rss, wall, rc = line.split("\t")
        if not rss or not wall:
            continue  # a step stopped from outside: nothing measured
        rows[name] = (int(rss), float(wall), int(rc))  # the last run of a step counts
    gib = 2**30
    print(f"# A 1.1B-parameter Llama on this machine ({params:,} parameters, random weights)\n")
    print(f"Model in f32: {params * 4 / gib:.2f} GiB; in bf16: {params * 2 / gib:.2f} GiB "
          "(the GGUF file is bf16 and memory-mapped: its pages count in RSS once read).\n")
    print("| step | what | peak RSS (GiB) | RSS / bf16 model | wall (s) | exit |")
    print("|---|---|---|---|---|---|")
    for name, (rss, wall, rc) in rows.items():
        r = rss / 1024
        print(f"| {name} | {WHAT.get(name, '')} | {r:.2f} | {rss * 2**20 / (params * 2):.2f} "
              f"| {wall:.0f} | {rc} |")
    b = out / "bench.json"
    if b.exists():
        bench = json.loads(b.read_text())
        print(f"\nFitness throughput ({bench['sequences']} x {bench['seq_len']} tokens, batch "
              f"{bench['batch_size']}, top-{bench['top_k']} KL, {bench['repeats']} timed "
              "evaluation(s) after a warm-up):\n")
        print("| | KL fitness tokens/s | perplexity tokens/s | KL to f32 |")
        print("|---|---|---|---|")
        figs = bench["figures"] + ([bench["torch"]] if bench.get("torch") else [])
        for f in figs:
            print(f"| {f['name']} | {f['tokens_per_s']:.1f} | {f['ppl_tokens_per_s']:.1f} "
                  f"| {f['kl']:.2e} |")
        if bench.get("torch"):
            t = bench["torch"]["tokens_per_s"]
            for f in bench["figures"]:
                print(f"\n{f['name']}: {f['tokens_per_s'] / t:.2f}x PyTorch's KL fitness throughput.",
                      end="")
            print()


if __name__ == "__main__":
    main()
