#!/usr/bin/env python3
"""The PyTorch side of `evocomp bench`: the same KL-fitness evaluation in
PyTorch + transformers, on the token sequences evocomp chose.

It is what the research scripts (EvoPress, OWL) do per candidate: a float32
forward pass, log-softmax, and KL(teacher || student) against top-k teacher
log-probabilities computed once, plus the next-token NLL.

    python scripts/reference/bench_torch.py --model MODEL.gguf --input tokens.json

tokens.json: {"sequences": [[ids...], ...], "batch_size": B, "top_k": K,
"repeats": R}; --device cuda runs it on the GPU. Prints one JSON line: {"name", "tokens_per_s",
"seconds_per_eval", "warmup_s", "kl", "ppl_tokens_per_s"} (the last: a plain
perplexity forward, log-softmax and next-token NLL, on the same batches).
Needs torch, transformers, gguf, numpy.
"""

import argparse
import json
import pathlib
import sys
import time


def topk_kl(lp, tv, ti):
    """Per-token KL(teacher || student) over the partition {each of the
    teacher's top-k tokens, the rest}, as evocomp's `topk_kl` computes it:
    `lp` the student's log-probabilities [B, T, vocab], `tv`/`ti` the
    teacher's top-k log-probabilities and ids. Returns [B, T], float64."""
    import torch

    s = lp.gather(2, ti).double()
    t = tv.double()
    p = t.exp()
    kl = (p * (t - s)).sum(-1)
    rest_p = (1 - p.sum(-1)).clamp_min(0)
    rest_q = (1 - s.exp().sum(-1)).clamp_min(1e-30)
    kl = kl + torch.where(rest_p > 1e-9, rest_p * (rest_p.clamp_min(1e-30).log() - rest_q.log()), 0.0)
    return kl.clamp_min(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a .gguf file or an HF folder")
    ap.add_argument("--input", required=True)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    spec = json.loads(pathlib.Path(args.input).read_text())
    seqs, bs, k, repeats = spec["sequences"], spec["batch_size"], spec["top_k"], spec["repeats"]
    path = pathlib.Path(args.model)
    t0 = time.perf_counter()
    if path.is_file():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    dev = torch.device(args.device)
    model.to(dev).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dev}; loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    batches = [torch.tensor(seqs[i : i + bs], device=dev) for i in range(0, len(seqs), bs)]
    n_tokens = sum(len(s) for s in seqs)

    with torch.inference_mode():
        t0 = time.perf_counter()
        teacher = []
        for x in batches:
            lp = torch.log_softmax(model(x).logits.float(), dim=-1)
            teacher.append(lp.topk(k, dim=-1))

        def evaluate():
            kl_sum, kl_n, nll_sum, nll_n = 0.0, 0, 0.0, 0
            for x, (tv, ti) in zip(batches, teacher):
                lp = torch.log_softmax(model(x).logits.float(), dim=-1)
                nll = -lp[:, :-1].gather(2, x[:, 1:, None]).squeeze(2)
                nll_sum += nll.double().sum().item()
                nll_n += nll.numel()
                kl = topk_kl(lp, tv, ti)
                kl_sum += kl.sum().item()
                kl_n += kl.numel()
            return kl_sum / kl_n, nll_sum / nll_n

        def perplexity():
            nll_sum, nll_n = 0.0, 0
            for x in batches:
                lp = torch.log_softmax(model(x).logits.float(), dim=-1)
                nll = -lp[:, :-1].gather(2, x[:, 1:, None]).squeeze(2)
                nll_sum += nll.double().sum().item()
                nll_n += nll.numel()
            return nll_sum / nll_n

        evaluate()
        warmup = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(repeats):
            kl, _ = evaluate()
        secs = (time.perf_counter() - t1) / repeats
        t2 = time.perf_counter()
        for _ in range(repeats):
            perplexity()
        ppl_secs = (time.perf_counter() - t2) / repeats

    print(
        json.dumps(
            {
                "name": f"PyTorch {torch.__version__} + transformers ({dev.type.upper()}, float32)",
                "tokens_per_s": n_tokens / secs,
                "seconds_per_eval": secs,
                "warmup_s": warmup,
                "kl": kl,
                "ppl_tokens_per_s": n_tokens / ppl_secs,
            }
        )
    )


if __name__ == "__main__":
    main()
