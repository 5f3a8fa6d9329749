#!/usr/bin/env python3
"""Compare an `evocomp export --format gguf` file with llama-quantize's.

    python scripts/reference/check_gguf_export.py OURS.gguf LLAMA_QUANTIZE.gguf

Every tensor (matched by name; llama-quantize writes its own order): same
shape, type and bytes. Metadata: every key
of llama.cpp's file present with the same value, except the ones that
describe how the file was made (general.file_type may differ where our file
names its dominant type; evocomp.* and general.quantized_by are ours;
quantize.imatrix.file is the path llama-quantize was given).
Exit status 1 on any difference, listing the first ones.
"""
import sys
import numpy as np
import gguf


def fields(r):
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        out[k] = [np.asarray(f.parts[i]).tobytes() for i in f.data]
    return out


def main():
    ours, theirs = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
    diffs = []
    ot = {t.name: t for t in ours.tensors}
    tt = theirs.tensors
    if set(ot) != {t.name for t in tt}:
        diffs.append(f"tensor names differ: {sorted(set(ot) ^ {t.name for t in tt})[:5]}")
    same = 0
    for b in tt:
        a = ot.get(b.name)
        if a is None:
            continue
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape):
            diffs.append(f"{a.name}: ours {a.tensor_type.name} {list(a.shape)}, llama.cpp {b.tensor_type.name} {list(b.shape)}")
        elif a.data.tobytes() != b.data.tobytes():
            x, y = np.frombuffer(a.data.tobytes(), np.uint8), np.frombuffer(b.data.tobytes(), np.uint8)
            n = int((x != y).sum())
            diffs.append(f"{a.name} ({a.tensor_type.name}): {n} of {x.size} bytes differ")
        else:
            same += 1
    fo, ft = fields(ours), fields(theirs)
    # quantize.imatrix.file is the path llama-quantize was given (evocomp has none).
    skip = {"general.file_type", "general.quantized_by", "general.quantization_version",
            "quantize.imatrix.file"}
    for k, v in ft.items():
        if k in skip:
            continue
        if k not in fo:
            diffs.append(f"metadata {k}: missing in ours")
        elif fo[k] != v:
            diffs.append(f"metadata {k}: differs")
    print(f"{same} of {len(tt)} tensors identical (type and bytes); {len(ft)} metadata keys compared")
    for d in diffs[:20]:
        print("DIFF", d)
    if diffs:
        print(f"{len(diffs)} differences")
        sys.exit(1)


if __name__ == "__main__":
    main()
