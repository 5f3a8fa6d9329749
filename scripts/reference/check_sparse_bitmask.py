"""Read a folder written by `evocomp export --format compressed-tensors` from a
sparsity study (the `sparse-bitmask` layout) with the releases that still read
that layout: compressed-tensors 0.9.4 and transformers 4.51.3, installed
beside the venv by venv.sh (the script puts them first on its path). Two
routes, each giving its perplexity on the first TOKENS tokens of a text in
windows of CONTEXT, as `evocomp perplexity` counts them:
- the library: its `ModelCompressor` parses the folder's
  `quantization_config`, its bitmask compressor decompresses every layer, and
  the result is loaded into a transformers model;
- transformers' own `from_pretrained` on the folder.

    ~/.cache/evocomp-pyref/bin/python scripts/reference/check_sparse_bitmask.py DIR TEXT \
        [--tokens N] [--context N] [--expect PPL] [--json OUT]

With --expect (evocomp's perplexity of the same genome), exits 1 unless both
routes give it within 1e-3 relative.
"""
import json
import os
import sys

LEGACY = os.path.join(sys.prefix, "legacy", "sparse-bitmask")
if os.environ.get("PYTHONPATH") != LEGACY:
    os.environ["PYTHONPATH"] = LEGACY
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from check_export import folder_args, folder_ids, model_from_state, perplexity



def decompressed_state_dict(folder):
    """Every tensor of the folder, bitmask layers decompressed by compressed-tensors."""
    from compressed_tensors.compressors import ModelCompressor

    raw = json.load(open(f"{folder}/config.json"))["quantization_config"]
    mc = ModelCompressor.from_compression_config(raw)
    if mc is None or mc.sparsity_compressor is None or mc.quantization_config is not None:
        sys.exit(f"{folder}: compressed-tensors reads no sparsity-only config from {raw}")
    targets = set(raw["sparsity_config"]["targets"])
    out, sparse, zeros, weights, nbytes = {}, 0, 0, 0, 0
    for name, tensor in mc.sparsity_compressor.decompress(folder):
        module = name.removesuffix(".weight")
        if module in targets:
            sparse += 1
            zeros += int((tensor == 0).sum())
            weights += tensor.numel()
        out[name] = tensor.to(torch.float32)
    with safe_open(f"{folder}/model.safetensors", framework="pt") as f:
        for k in f.keys():
            if k.rsplit(".", 1)[0] in targets:
                t = f.get_tensor(k)
                nbytes += t.numel() * t.element_size()
    if sparse != len(targets):
        sys.exit(f"{folder}: {sparse} layers decompressed, the config names {len(targets)}")
    return out, sparse, zeros / max(weights, 1), 8 * nbytes / max(weights, 1)


def main():
    a = folder_args()
    import compressed_tensors
    import transformers

    versions = f"compressed-tensors {compressed_tensors.__version__}, transformers {transformers.__version__}"
    if not compressed_tensors.__version__.startswith("0.9."):
        sys.exit(f"{LEGACY}: expected compressed-tensors 0.9.x, got {versions} (run scripts/reference/venv.sh)")
    ids = folder_ids(a)
    state, layers, sparsity, bpw = decompressed_state_dict(a.folder)
    model = model_from_state(a.folder, state, "torch_dtype")
    ppl, n = perplexity(model, ids, a.context)
    result = {"versions": versions, "decompressed": {"perplexity": ppl, "predictions": n, "layers": layers,
                               "sparsity": sparsity, "bits_per_weight": bpw}}
    print(f"{versions}")
    print(f"compressed-tensors decompression: perplexity {ppl:.4f} ({n} predictions; "
          f"{layers} bitmask layers, {100 * sparsity:.2f}% zeros, {bpw:.4f} bits per weight)")
    try:
        m = AutoModelForCausalLM.from_pretrained(a.folder, torch_dtype=torch.float32).eval()
        # The decompressor hands back the stored values' dtype: f16 values
        # come back as f16 weights inside an f32 model, which does not run
        # until cast (`.float()` is refused for a compressed model: each
        # parameter is cast; this says nothing of the values).
        mixed = sorted({str(t.dtype) for t in m.parameters()} - {"torch.float32"})
        for t in m.parameters():
            t.data = t.data.float()
        p, _ = perplexity(m, ids, a.context)
        result["transformers"] = {"perplexity": p, "cast_from": mixed}
        cast = f" (weights loaded as {', '.join(mixed)}, cast to f32)" if mixed else ""
        print(f"transformers: loads{cast}; perplexity {p:.4f}")
    except Exception as e:  # report, do not hide: this is what a user would meet
        msg = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
        result["transformers"] = {"error": msg}
        print(f"transformers: does not load: {msg}")
    if a.json:
        json.dump(result, open(a.json, "w"), indent=1)
    if a.expect is not None:
        rel = abs(ppl - a.expect) / a.expect
        print(f"against evocomp's {a.expect:.4f}: relative difference {rel:.2e}")
        tf = result["transformers"].get("perplexity")
        tf_rel = abs(tf - a.expect) / a.expect if tf is not None else float("inf")
        print(f"transformers' loader against evocomp's: relative difference {tf_rel:.2e}")
        if rel > 1e-3 or tf_rel > 1e-3:
            sys.exit(1)


if __name__ == "__main__":
    main()
