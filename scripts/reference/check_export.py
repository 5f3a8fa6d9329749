"""Load a folder written by `evocomp export` (or a GGUF file: its
`--format gguf` model.gguf, dequantised by transformers through the `gguf`
package) with transformers (an independent implementation) and print its perplexity on the first TOKENS tokens of a text
file, in windows of CONTEXT, the way `evocomp perplexity` counts them
(each window scores its CONTEXT-1 next-token predictions).

    ~/.cache/evocomp-pyref/bin/python scripts/reference/check_export.py DIR|FILE.gguf TEXT [TOKENS] [CONTEXT]

Compare with:

    evocomp perplexity --model DIR|FILE.gguf --text TEXT --tokens TOKENS --context CONTEXT
"""
import os
import math
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def folder_args():
    """The command line of the compressed-tensors checks: FOLDER TEXT
    [--tokens N] [--context N] [--expect PPL] [--json OUT]."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("text")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--expect", type=float)
    ap.add_argument("--json")
    return ap.parse_args()


def folder_ids(a):
    """The first --tokens tokens of TEXT with the folder's tokenizer.json."""
    ids = Tokenizer.from_file(f"{a.folder}/tokenizer.json").encode(
        open(a.text, encoding="utf-8").read(), add_special_tokens=False
    ).ids[: a.tokens]
    if len(ids) < a.context:
        sys.exit(f"{a.text}: {len(ids)} tokens, fewer than one window of {a.context}")
    return ids


def model_from_state(folder, state, dtype_arg="dtype"):
    """The folder's architecture (its config.json without the quantization
    config) holding `state`, every weight accounted for. `dtype_arg`: the
    name transformers gives the dtype argument (`torch_dtype` before 4.56)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, **{dtype_arg: torch.float32}).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        sys.exit(f"{folder}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model


def perplexity(model, ids, context):
    """Perplexity over windows of `context` tokens, each scoring its context-1
    predictions (as `evocomp perplexity` counts them), and the predictions."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - context + 1, context):
            x = torch.tensor([ids[i : i + context]])
            nll += model(x, labels=x).loss.item() * (context - 1)
            n += context - 1
    return math.exp(nll / n), n


def main() -> None:
    folder, text_path = sys.argv[1], sys.argv[2]
    n_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
    context = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    if folder.endswith(".gguf"):
        from transformers import AutoTokenizer

        where, name = os.path.split(os.path.abspath(folder))
        ids = AutoTokenizer.from_pretrained(where, gguf_file=name)(text, add_special_tokens=False)["input_ids"]
        ids = ids[:n_tokens]
        load = dict(pretrained_model_name_or_path=where, gguf_file=name)
    else:
        tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
        ids = tok.encode(text, add_special_tokens=False).ids[:n_tokens]
        load = dict(pretrained_model_name_or_path=folder)
    if len(ids) < context:
        sys.exit(f"{text_path}: {len(ids)} tokens, fewer than one window of {context}")
    # Llama, Mistral or Gemma 3 (text), as config.json says.
    model = AutoModelForCausalLM.from_pretrained(**load, dtype=torch.float32).eval()
    ppl, n = perplexity(model, ids, context)
    layers = model.config.num_hidden_layers
    kind = type(model).__name__
    print(f"transformers perplexity: {ppl:.4f} ({n} predictions, {layers} layers, {kind})")


if __name__ == "__main__":
    main()
