"""`evocomp kld`'s figures computed independently with PyTorch and transformers:
both models on the first TOKENS tokens of TEXT in windows of CONTEXT, every
window's CONTEXT-1 predictions, full-vocabulary KL(base || model), the true
token's log-likelihood under each, and whether the most likely tokens agree.

    ~/.cache/evocomp-pyref/bin/python scripts/reference/kld_reference.py BASE MODEL TEXT \
        [--tokens N] [--context N] [--compare EVOCOMP.json]

BASE and MODEL are HF folders or .gguf files (transformers dequantises GGUF);
the tokens come from the first HF folder's tokenizer.json (else the GGUF's
tokenizer). With --compare (the output of `evocomp kld --json`), exits 1 unless
every figure agrees within 1e-3 relative (or 1e-6 absolute for figures near 0).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def load(path):
    if path.endswith(".gguf"):
        where, name = os.path.split(os.path.abspath(path))
        return AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32).eval()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def tokens(paths, text):
    for p in paths:
        if os.path.isdir(p):
            from tokenizers import Tokenizer

            return Tokenizer.from_file(f"{p}/tokenizer.json").encode(text, add_special_tokens=False).ids
    from transformers import AutoTokenizer

    where, name = os.path.split(os.path.abspath(paths[0]))
    return AutoTokenizer.from_pretrained(where, gguf_file=name)(text, add_special_tokens=False)["input_ids"]


def est(v):
    v = np.asarray(v, dtype=np.float64)
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "standard_error": float(se)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--compare")
    a = ap.parse_args()
    ids = tokens([a.model, a.base], open(a.text, encoding="utf-8").read())[: a.tokens]
    c = a.context
    windows = [ids[i : i + c] for i in range(0, len(ids) - c + 1, c)]
    base, model = load(a.base), load(a.model)
    kl, blp, lp, same = [], [], [], []
    with torch.no_grad():
        for w in windows:
            x = torch.tensor([w])
            b = torch.log_softmax(base(x).logits[0, :-1].double(), -1)
            m = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
            kl += (b.exp() * (b - m)).sum(-1).clamp(min=0).tolist()
            nxt = torch.tensor(w[1:])
            blp += b[torch.arange(c - 1), nxt].tolist()
            lp += m[torch.arange(c - 1), nxt].tolist()
            same += (b.argmax(-1) == m.argmax(-1)).tolist()
    kl, blp, lp = np.array(kl), np.array(blp), np.array(lp)
    ppl = lambda e: {"mean": math.exp(e["mean"]), "standard_error": math.exp(e["mean"]) * e["standard_error"]}
    dp = np.exp(lp) - np.exp(blp)
    r = {
        "predictions": len(kl),
        "base_perplexity": ppl(est(-blp)),
        "perplexity": ppl(est(-lp)),
        "ln_ppl_ratio": est(blp - lp),
        "kld": est(kl),
        "kld_window_standard_error": est(kl.reshape(len(windows), c - 1).mean(1))["standard_error"],
        "kld_median": float(np.quantile(kl, 0.5)),
        "kld_p90": float(np.quantile(kl, 0.9)),
        "kld_p99": float(np.quantile(kl, 0.99)),
        "kld_max": float(kl.max()),
        "same_top": est(np.array(same, dtype=np.float64)),
        "delta_p": est(dp),
        "delta_p_rms": float(np.sqrt((dp**2).mean())),
    }
    print(json.dumps(r, indent=1))
    if a.compare:
        ours = json.load(open(a.compare))
        bad = []

        def check(name, x, y):
            if abs(x - y) > max(1e-3 * abs(y), 1e-6):
                bad.append(f"{name}: evocomp {x} vs PyTorch {y}")

        for k, v in r.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    check(f"{k}.{kk}", ours[k][kk], vv)
            else:
                check(k, ours[k], v)
        if bad:
            sys.exit("\n".join(bad))
        print(f"every figure agrees with evocomp's within 1e-3 relative ({len(r)} figures)", file=sys.stderr)


if __name__ == "__main__":
    main()
