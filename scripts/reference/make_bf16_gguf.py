"""A BF16 GGUF of a model from its GGUF file (no F16/BF16 release is reachable here): every
2-D tensor dequantised by the `gguf` package and rounded to BF16, 1-D tensors (norms) kept
F32 as llama.cpp's converter keeps them, every metadata key copied (the tokenizer included),
general.file_type set to MOSTLY_BF16. What a user's own `convert_hf_to_gguf.py --outtype bf16`
file looks like, for testing evocomp's GGUF-types databases on a source without a lossless
level.

    ~/.cache/evocomp-pyref/bin/python scripts/reference/make_bf16_gguf.py SRC.gguf DST.gguf
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType
from gguf.quants import dequantize, quantize


def main():
    src, dst = sys.argv[1], sys.argv[2]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub_type=sub)
    w.add_file_type(32)  # LLAMA_FTYPE_MOSTLY_BF16
    for t in r.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape)]  # numpy order: rows first
        values = values.reshape(shape)
        if len(shape) == 1:
            w.add_tensor(t.name, values)
        else:
            bf16 = quantize(values, GGMLQuantizationType.BF16)
            w.add_tensor(t.name, bf16, raw_dtype=GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {dst}: {len(r.tensors)} tensors")


if __name__ == "__main__":
    main()
