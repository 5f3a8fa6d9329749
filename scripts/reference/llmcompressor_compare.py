#!/usr/bin/env python3
"""evocomp's GPTQ or SparseGPT databases against LLM Compressor's on the same model, the
same calibration sequences and the same held-out windows.

LLM Compressor (PyPI `llmcompressor`, installed beside the reference venv by
`scripts/reference/venv.sh --llmcompressor`; about 300 MB) compresses SmolLM2-135M, loaded by transformers
from the GGUF as float32, with its own pipeline: `oneshot`, block by block ("sequential"),
calibrated on the token sequences of the first database's calibration.json, with
  --method gptq:      a `GPTQModifier` (int, asymmetric, groups of --group, its default
                      act-order unless --actorder, dampening --damp), the bits of the database;
  --method sparsegpt: a `SparseGPTModifier` (unstructured, --sparsity, dampening --damp).
evocomp's variants are decoded from each database's unit files (their --level). Every
configuration is then scored by this script alone, on the same windows of each --text:
full-vocabulary KL to the uncompressed model and perplexity per window, with a paired bootstrap
95% interval of each KL difference from the first database. Run from the repository root:

    python scripts/reference/llmcompressor_compare.py --method gptq --group 64 \
        --db evocomp=results/db/gptq-3bit-g64 --text sotu=assets/text/sotu/eval ...

`--llmc-weights FILE` saves LLM Compressor's weights, and reuses them when the recipe, the
dampening and the calibration are the same;
`--json FILE` writes every window's scores.
"""

import argparse
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

# LLM Compressor pins older torch and transformers than the venv's: venv.sh --llmcompressor
# installs it (with compressed-tensors 0.19) beside the venv, and this script runs with it first
# on its path, on the venv's torch and transformers (which it imports and runs with).
LLMC = os.path.join(sys.prefix, "legacy", "llmcompressor")
if os.environ.get("PYTHONPATH") != LLMC:
    if not os.path.isdir(LLMC):
        sys.exit(f"{LLMC}: missing; run: bash scripts/reference/venv.sh --llmcompressor")
    os.environ["PYTHONPATH"] = LLMC
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gptq_reference import KINDS, MODULE, load_model, load_units  # noqa: E402


def load_db(path, layers, level):
    """Every linear layer's variant at `level`, the database's compression and the level's label."""
    weights, manifest, labels = load_units(path, level)
    missing = [f"L{li:02d}.{k}" for li in range(layers) for k in KINDS if (li, k) not in weights]
    if missing:
        raise SystemExit(f"{path}: no unit {missing[0]} (is it a SmolLM2 database?)")
    return weights, manifest["compression"], labels[0]


def gptq_recipe(bits, group, damp, actorder):
    from llmcompressor.modifiers.gptq import GPTQModifier
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(
            num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group
        ),
    )
    extra = {} if actorder == "default" else {"actorder": None if actorder == "none" else actorder}
    return GPTQModifier(
        config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=damp, **extra
    )


def sparsegpt_recipe(sparsity, damp):
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier

    return SparseGPTModifier(
        sparsity=sparsity, mask_structure="0:0", targets=["Linear"], ignore=["lm_head"],
        dampening_frac=damp, block_size=128,
    )


def llmcompressor_run(model, tok, calib, recipe):
    """LLM Compressor's `oneshot` with `recipe` on `model` in place; returns its weights."""
    from datasets import Dataset
    from llmcompressor import oneshot

    # oneshot reads the model's config.json again from its name_or_path: give it a folder.
    # The weights are already dequantized to float32: drop transformers' note of the GGUF.
    folder = tempfile.mkdtemp(prefix="evocomp-llmc-")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    model.config.save_pretrained(folder)
    model.config.name_or_path = folder
    data = Dataset.from_dict({"input_ids": calib, "attention_mask": [[1] * len(s) for s in calib]})
    oneshot(
        model=model,
        processor=tok,
        dataset=data,
        recipe=[recipe],
        num_calibration_samples=len(calib),
        max_seq_length=len(calib[0]),
        shuffle_calibration_samples=False,
        pipeline="sequential",
    )
    shutil.rmtree(folder, ignore_errors=True)
    return {
        (li, k): layer.get_submodule(MODULE[k]).weight.detach().float().clone()
        for li, layer in enumerate(model.model.layers)
        for k in KINDS
    }


def read_ids(tok, path, n):
    p = pathlib.Path(path)
    files = sorted(x for x in p.rglob("*.txt") if x.name != "metadata.txt") if p.is_dir() else [p]
    ids = []
    for f in files:
        ids += tok(f.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            return ids[:n]
    raise SystemExit(f"{path}: only {len(ids)} tokens, {n} needed")


def set_weights(model, weights):
    with torch.no_grad():
        for (li, kind), w in weights.items():
            model.model.layers[li].get_submodule(MODULE[kind]).weight.copy_(w)


def logprobs(model, window):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([window])).logits[0, :-1].double(), dim=-1)


def window_scores(model, windows, teacher):
    """Per window: mean full KL(teacher ‖ model) and mean NLL over its predictions."""
    kl, nll = [], []
    for w, t in zip(windows, teacher):
        lp = logprobs(model, w)
        kl.append(float((t.exp() * (t - lp)).sum(dim=-1).mean()))
        tgt = torch.tensor(w[1:])
        nll.append(float(-lp[torch.arange(len(tgt)), tgt].mean()))
    return np.array(kl), np.array(nll)


def bootstrap(d, resamples=10000, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", required=True, choices=["gptq", "sparsegpt"])
    ap.add_argument("--db", action="append", required=True, metavar="NAME=PATH",
                    help="an evocomp database; the first one's calibration is used")
    ap.add_argument("--level", type=int, default=0, help="the databases' level to score")
    ap.add_argument("--text", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--tokens", type=int, default=6144, help="held-out tokens per text")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--group", type=int, help="gptq: LLM Compressor's group size")
    ap.add_argument("--actorder", default="default", choices=["default", "weight", "none"])
    ap.add_argument("--sparsity", type=float, default=0.5, help="sparsegpt: the sparsity")
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("--llmc-weights", help="save/reuse LLM Compressor's weights here (.pt)")
    ap.add_argument("--json")
    args = ap.parse_args()

    tok, model = load_model()
    layers = len(model.model.layers)
    orig = {
        (li, k): layer.get_submodule(MODULE[k]).weight.detach().clone()
        for li, layer in enumerate(model.model.layers)
        for k in KINDS
    }
    configs = {}
    for spec in args.db:
        name, _, path = spec.partition("=")
        configs[name], compression, label = load_db(path, layers, args.level)
        print(f"{name}: {path}: level {args.level} ({label}): {json.dumps(compression)}", flush=True)
    first_db = pathlib.Path(args.db[0].partition("=")[2])
    calib = json.loads((first_db / "calibration.json").read_text())["sequences"]

    if args.method == "gptq":
        quant = json.loads((first_db / "manifest.json").read_text())["compression"].get("Quantization")
        if quant is None or args.group is None:
            raise SystemExit("--method gptq: give --group and a quantization database first")
        bits = quant["bits"][min(args.level, len(quant["bits"]) - 1)]
        llmc = f"llmcompressor gptq {bits}-bit g{args.group} actorder={args.actorder}"
        recipe = lambda: gptq_recipe(bits, args.group, args.damp, args.actorder)  # noqa: E731
    else:
        llmc = f"llmcompressor sparsegpt {args.sparsity:.0%}"
        recipe = lambda: sparsegpt_recipe(args.sparsity, args.damp)  # noqa: E731
    # A saved run is reused only for the same recipe, calibration and dampening.
    key = hashlib.sha256(json.dumps([llmc, args.damp, calib]).encode()).hexdigest()
    saved = None
    if args.llmc_weights and pathlib.Path(args.llmc_weights).is_file():
        saved = torch.load(args.llmc_weights)
        if not isinstance(saved, dict) or saved.get("key") != key:
            print(f"{args.llmc_weights}: another recipe or calibration; running again", flush=True)
            saved = None
    if saved is not None:
        configs[llmc] = saved["weights"]
        print(f"{llmc}: weights from {args.llmc_weights} (a run of {saved['seconds']:.0f} s)", flush=True)
    else:
        print(f"{llmc}: {len(calib)} x {len(calib[0])} calibration tokens from {first_db}", flush=True)
        t0 = time.time()
        _, work = load_model()
        configs[llmc] = llmcompressor_run(work, tok, calib, recipe())
        del work
        seconds = time.time() - t0
        print(f"{llmc}: {seconds:.0f} s", flush=True)
        if args.llmc_weights:
            torch.save({"key": key, "seconds": seconds, "weights": configs[llmc]}, args.llmc_weights)
    for name, ws in configs.items():
        rel = np.mean([float((ws[k] - orig[k]).norm() / orig[k].norm()) for k in orig])
        zeros = np.mean([float((ws[k] == 0).float().mean()) for k in orig])
        print(f"{name}: mean relative weight change {rel:.4f}, zeros {zeros:.4f}", flush=True)

    names = list(configs)
    scores = {n: {"kl": [], "nll": []} for n in names}
    genre_of = []
    for spec in args.text:
        genre, _, path = spec.partition("=")
        ids = read_ids(tok, path, args.tokens)
        windows = [ids[i : i + args.context] for i in range(0, len(ids) - args.context + 1, args.context)]
        set_weights(model, orig)
        teacher = [logprobs(model, w) for w in windows]
        for n in names:
            set_weights(model, configs[n])
            kl, nll = window_scores(model, windows, teacher)
            scores[n]["kl"].append(kl)
            scores[n]["nll"].append(nll)
        genre_of.append(genre)
        print(f"{genre}: {len(windows)} windows of {args.context} scored", flush=True)

    base = names[0]
    header = "| configuration | " + " | ".join(genre_of + ["pooled"]) + " |"
    print("\nKL to the uncompressed model (mean over windows ± s.e.), perplexity, and the KL")
    print(f"difference from {base} with its paired bootstrap 95% interval over windows:\n")
    print(header)
    print("|" + "---|" * (len(genre_of) + 2))
    out = {"texts": genre_of, "tokens": args.tokens, "context": args.context, "configs": {}}
    def per_window(n, what, gi):
        """Configuration n's per-window `what` on text gi, or pooled (gi None)."""
        return np.concatenate(scores[n][what]) if gi is None else scores[n][what][gi]

    for n in names:
        cells = []
        for gi in list(range(len(genre_of))) + [None]:
            kl, nll = per_window(n, "kl", gi), per_window(n, "nll", gi)
            cell = f"{kl.mean():.4f} ± {kl.std(ddof=1) / math.sqrt(len(kl)):.4f}, ppl {math.exp(nll.mean()):.2f}"
            if n != base:
                m, lo, hi = bootstrap(kl - per_window(base, "kl", gi))
                verdict = "better" if hi < 0 else "worse" if lo > 0 else "tie"
                cell += f"; {m:+.4f} [{lo:+.4f}, {hi:+.4f}] {verdict}"
            cells.append(cell)
        print(f"| {n} | " + " | ".join(cells) + " |")
        out["configs"][n] = {s: [a.tolist() for a in scores[n][s]] for s in ("kl", "nll")}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
