"""Read a folder written by `evocomp export --format compressed-tensors` with
the compressed-tensors library (its own decompressor for every quantized
module, by the folder's config groups), load the result into transformers,
and print its perplexity on the first TOKENS tokens of a text, in windows of
CONTEXT, the way `evocomp perplexity` counts them. Then try transformers'
own loader on the folder (`from_pretrained`, both its compressed and its
dequantize route) and say whether each loads and what it gives.

    ~/.cache/evocomp-pyref/bin/python scripts/reference/check_compressed_tensors.py DIR TEXT \
        [--tokens N] [--context N] [--expect PPL] [--json OUT]

With --expect (evocomp's perplexity of the same genome: `evocomp perplexity
--model` on the dense `evocomp export` of the study), exits 1 unless the
library's decompression gives it within 1e-3 relative.
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from check_export import folder_args, folder_ids, model_from_state, perplexity


def decompressed_state_dict(folder):
    """Every tensor of the folder, quantized modules decompressed by compressed-tensors."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    raw = json.load(open(f"{folder}/config.json"))["quantization_config"]
    qc = QuantizationConfig.model_validate(raw)
    tensors = load_file(f"{folder}/model.safetensors")
    out = {k: v for k, v in tensors.items() if not any(s in k for s in (".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape"))}
    quantized_weights, quantized_bytes, modules = 0, 0, 0
    for scheme in qc.config_groups.values():
        fmt = scheme.format or qc.format
        compressor = BaseCompressor.get_value_from_registry(fmt)
        for module in scheme.targets:
            local = {
                k[len(module) + 1 :]: v
                for k, v in tensors.items()
                if k.startswith(module + ".weight_")
            }
            if not local:
                sys.exit(f"{folder}: config group names {module}, which has no tensors")
            dense = compressor.decompress(dict(local), scheme)["weight"]
            out[f"{module}.weight"] = dense.to(torch.float32)
            quantized_weights += dense.numel()
            quantized_bytes += sum(v.numel() * v.element_size() for v in local.values())
            modules += 1
    return out, modules, 8 * quantized_bytes / max(quantized_weights, 1)


def main():
    a = folder_args()
    ids = folder_ids(a)
    result = {}
    state, modules, bpw = decompressed_state_dict(a.folder)
    model = model_from_state(a.folder, state, "dtype")
    ppl, n = perplexity(model, ids, a.context)
    result["decompressed"] = {"perplexity": ppl, "predictions": n, "modules": modules, "bits_per_weight": bpw}
    print(f"compressed-tensors decompression: perplexity {ppl:.4f} ({n} predictions; {modules} quantized modules, {bpw:.4f} bits per weight)")
    for route, kwargs in (("transformers (compressed)", {}), ("transformers (dequantize=True)", {"dequantize": True})):
        try:
            from transformers import CompressedTensorsConfig

            q = {"quantization_config": CompressedTensorsConfig(**kwargs)} if kwargs else {}
            m = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32, **q).eval()
            p, _ = perplexity(m, ids, a.context)
            result[route] = {"perplexity": p}
            print(f"{route}: loads; perplexity {p:.4f}")
        except Exception as e:  # report, do not hide: this is what a user would meet
            msg = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
            result[route] = {"error": msg}
            print(f"{route}: does not load: {msg}")
    if a.json:
        json.dump(result, open(a.json, "w"), indent=1)
    if a.expect is not None:
        rel = abs(ppl - a.expect) / a.expect
        print(f"against evocomp's {a.expect:.4f}: relative difference {rel:.2e}")
        if rel > 1e-3:
            sys.exit(1)


if __name__ == "__main__":
    main()
