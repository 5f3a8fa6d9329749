#!/usr/bin/env python3
"""One generation of EvoPress's search loop in PyTorch, timed end to end:
the baseline `experiments/throughput/` compares `evocomp run` against.

It follows the reference implementation (IST-DASLab/EvoPress,
`evo_quant_search.py`; the sparsity search has the same loop): offspring of
the parent by level switches (min(U{1..3}, U{1..3}) flips, each raising one
layer's level and lowering another's, no duplicates), then selection stages:
each draws a fresh set of calibration windows, loads every candidate's
levels into the model (`load_layers`: only layers whose level changed, each
read from its own file on disk) and scores it by KL to the uncompressed
model's top-k outputs; the survivors go on, the parent joins the last stage.

The levels are evocomp's own database variants, written in EvoPress's layout
by `evocomp db dump DB --out DIR` (DIR/<module>/<level>.safetensors and
DIR/index.json), so both sides apply the same weights.

    python scripts/reference/evopress_loop.py --model MODEL.gguf --levels DIR \
        --text CALIB_FOLDER [--stages 8:2048,2:16384,1:65536] [--offspring 64]

The teacher's top-k for every window the generation draws is computed
before the generation from the uncompressed weights (EvoPress computes it
for the whole calibration set up front) and timed apart. Prints one JSON
line: candidates evaluated, seconds per stage, teacher seconds, candidates
and tokens per second, and the chosen genome's fitness.
Needs torch, transformers, gguf, safetensors, numpy.
"""

import argparse
import json
import pathlib
import random
import sys
import time


def read_text(path):
    p = pathlib.Path(path)
    if p.is_file():
        return [p.read_text()]
    return [f.read_text() for f in sorted(p.rglob("*.txt"))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a .gguf file or an HF folder")
    ap.add_argument("--levels", required=True, help="the folder `evocomp db dump` wrote")
    ap.add_argument("--text", required=True, help="calibration text: a file or a folder of .txt files")
    ap.add_argument("--offspring", type=int, default=64)
    ap.add_argument("--stages", default="8:2048,2:16384,1:65536", help="survivors:tokens per stage")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--max-flips", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the weights' and activations' dtype (EvoPress runs bfloat16/float16 on GPUs)",
    )
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_torch import topk_kl  # the same KL as `evocomp bench`'s PyTorch side

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    stages = [tuple(int(x) for x in s.split(":")) for s in args.stages.split(",")]
    levels_dir = pathlib.Path(args.levels)
    index = json.loads((levels_dir / "index.json").read_text())
    units = index["units"]
    avail = [[lv["level"] for lv in u["levels"] if lv["dumped"]] for u in units]

    t0 = time.perf_counter()
    path = pathlib.Path(args.model)
    if path.is_file():
        kw = dict(gguf_file=path.name)
        folder = str(path.parent)
    else:
        kw, folder = {}, str(path)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).to(dtype)
    model.eval()
    tok = AutoTokenizer.from_pretrained(folder, **kw)
    ids = []
    for text in read_text(args.text):
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
    calib = torch.tensor(ids)
    modules = [model.get_submodule(u["module"]) for u in units]
    load_s = time.perf_counter() - t0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; model and "
        f"{len(ids)} calibration tokens in {load_s:.1f} s; {len(units)} units",
        file=sys.stderr,
    )

    # Offspring: EvoPress's level switches from the uniform parent (level 0).
    parent = [0] * len(units)

    def can(i, level):
        return level in avail[i]

    offspring, attempts = [], 0
    while len(offspring) < args.offspring and attempts < 200 * args.offspring:
        attempts += 1
        child = list(parent)
        flips = min(rng.randint(1, args.max_flips), rng.randint(1, args.max_flips))
        for _ in range(flips):
            up = [i for i in range(len(units)) if can(i, child[i] + 1)]
            down = [i for i in range(len(units)) if can(i, child[i] - 1)]
            a = rng.choice(up)
            b = rng.choice([i for i in down if i != a])
            child[a] += 1
            child[b] -= 1
        if child != parent and child not in offspring:
            offspring.append(child)

    # The windows every stage draws, and the teacher on them (uncompressed weights).
    def draw(n_tokens):
        n = -(-n_tokens // args.seq_len)
        starts = [rng.randrange(0, len(calib) - args.seq_len) for _ in range(n)]
        return [calib[s : s + args.seq_len] for s in starts]

    samples = [draw(tokens) for _, tokens in stages]
    with torch.inference_mode():
        t0 = time.perf_counter()
        teachers = []
        for windows in samples:
            per = []
            for i in range(0, len(windows), args.batch_size):
                x = torch.stack(windows[i : i + args.batch_size])
                lp = torch.log_softmax(model(x).logits.float(), dim=-1)
                per.append((x, lp.topk(args.top_k, dim=-1)))
            teachers.append(per)
        teacher_s = time.perf_counter() - t0

        state = [None] * len(units)

        def load_layers(genome):
            for i, (new, old) in enumerate(zip(genome, state)):
                if new != old:
                    w = load_file(str(levels_dir / units[i]["module"] / f"{new}.safetensors"))["weight"]
                    modules[i].weight.data = w.to(dtype)
                    state[i] = new

        def fitness(batches):
            kl_sum, kl_n = 0.0, 0
            for x, (tv, ti) in batches:
                kl = topk_kl(torch.log_softmax(model(x).logits.float(), dim=-1), tv, ti)
                kl_sum += kl.sum().item()
                kl_n += kl.numel()
            return kl_sum / kl_n

        t0 = time.perf_counter()
        candidates, stage_s, evaluated, tokens_scored = offspring, [], 0, 0
        for si, (survivors, _) in enumerate(stages):
            ts = time.perf_counter()
            if si == len(stages) - 1 and parent not in candidates:
                candidates = candidates + [parent]
            scores = []
            for c in candidates:
                load_layers(c)
                scores.append(fitness(teachers[si]))
                evaluated += 1
                tokens_scored += sum(x.numel() for x, _ in teachers[si])
            order = sorted(range(len(candidates)), key=lambda i: scores[i])[:survivors]
            candidates = [candidates[i] for i in order]
            best = scores[order[0]]
            stage_s.append(time.perf_counter() - ts)
            print(
                f"stage {si + 1}: {len(scores)} candidates x {sum(x.numel() for x, _ in teachers[si])} tokens "
                f"in {stage_s[-1]:.1f} s, best KL {best:.6f}",
                file=sys.stderr,
            )
        generation_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "name": f"PyTorch {torch.__version__} + transformers (CPU, {args.dtype}), EvoPress loop",
                "dtype": args.dtype,
                "threads": torch.get_num_threads(),
                "offspring": len(offspring),
                "stages": stages,
                "candidates_evaluated": evaluated,
                "tokens_scored": tokens_scored,
                "teacher_s": teacher_s,
                "stage_s": stage_s,
                "generation_s": generation_s,
                "candidates_per_s": evaluated / generation_s,
                "candidates_per_s_with_teacher": evaluated / (generation_s + teacher_s),
                "tokens_per_s": tokens_scored / generation_s,
                "best_kl": best,
                "best_changed_units": sum(1 for g in candidates[0] if g != 0),
            }
        )
    )


if __name__ == "__main__":
    main()
