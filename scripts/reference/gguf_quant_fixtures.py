#!/usr/bin/env python3
"""Fixtures for evocomp's GGUF encoders, made by llama.cpp's own quantizer.

Real rows of the two shipped models (dequantised by the `gguf` package) and a
few constructed rows are quantised by `ggml_quantize_chunk` from a built
libggml-base (llama.cpp; for example from the source package of
llama-cpp-python on PyPI), to every type evocomp writes, without and with an
importance matrix. The fixture keeps the input rows, the importance weights,
and for each case the sha256 of llama.cpp's bytes and of the `gguf` package's
dequantisation of those bytes. crates/evocomp-gguf/tests/quantize.rs checks
evocomp's bytes and decoder against them.

    python scripts/reference/gguf_quant_fixtures.py LIBGGML_BASE_SO OUT_DIR [--many]

`--many` takes 96 real rows (every ffn_down and attn_output of SmolLM2, 16
ffn_down rows of Gemma) instead of 4, for a one-off wider check:
EVOCOMP_QUANT_FIXTURE=OUT_DIR cargo test -p evocomp-gguf --test quantize
"""
import ctypes, hashlib, json, struct, sys
from pathlib import Path

import numpy as np
import gguf

TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11,
         "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "IQ4_NL": 20}
BLOCK = {name: (256 if name.endswith("_K") else 32) for name in TYPES}


def real_rows(path, wanted):
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    rows = []
    for name, idx in wanted:
        t = by_name[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        rows.append((f"{Path(path).name}:{name}[{idx}]", w[idx].copy()))
    return rows


def constructed_rows():
    rng = np.random.default_rng(7)
    g = rng.standard_normal(256).astype(np.float32) * 0.02
    outlier = g.copy(); outlier[17] = 0.9
    tiny = (rng.standard_normal(256) * 1e-9).astype(np.float32)
    positive = np.abs(g) + 0.01
    half_zero = g.copy(); half_zero[:128] = 0
    return [
        ("zeros", np.zeros(256, np.float32)),
        ("constant", np.full(256, 0.125, np.float32)),
        ("gaussian", g),
        ("outlier", outlier),
        ("tiny", tiny),
        ("positive", positive.astype(np.float32)),
        ("half zero", half_zero),
    ]


def main():
    lib = ctypes.CDLL(sys.argv[1])
    out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
    q = lib.ggml_quantize_chunk
    q.restype = ctypes.c_size_t
    q.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                  ctypes.c_int64, ctypes.c_void_p]
    models = Path(__file__).resolve().parents[2] / "assets" / "models"
    if "--many" in sys.argv:
        smol = [(f"blk.{b}.{t}.weight", (37 * b + 11) % 576) for b in range(30)
                for t in ("ffn_down", "attn_output")]
        smol += [(f"blk.{b}.ffn_gate.weight", (53 * b) % 1536) for b in range(0, 30, 2)]
        gemma = [(f"blk.{b}.ffn_down.weight", (41 * b + 3) % 640) for b in range(16)]
        gemma += [("token_embd.weight", 1000 + i) for i in range(5)]
    else:
        smol = [("blk.3.ffn_down.weight", 5), ("blk.17.ffn_down.weight", 100),
                ("blk.0.attn_q.weight", 7)]
        gemma = [("blk.2.ffn_down.weight", 9)]
    rows = real_rows(models / "SmolLM2-135M-Instruct.Q4_1.gguf", smol)
    rows += real_rows(models / "gemma-3-270m-q4_k_m.gguf", gemma)
    rows += constructed_rows()
    rng = np.random.default_rng(11)
    blob = bytearray()
    cases, inputs = [], []
    for name, x in rows:
        n = len(x)
        imatrix = np.exp(rng.standard_normal(n)).astype(np.float32)
        inputs.append({"name": name, "n": n, "offset": len(blob)})
        blob += x.astype("<f4").tobytes() + imatrix.astype("<f4").tobytes()
        for tname, tid in TYPES.items():
            if n % BLOCK[tname]:
                continue
            for weighted in (False, True):
                (bs, ts) = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tid)]
                dst = ctypes.create_string_buffer(n // bs * ts)
                src = np.ascontiguousarray(x, dtype=np.float32)
                imx = np.ascontiguousarray(imatrix) if weighted else None
                size = q(tid, src.ctypes.data, dst, 0, 1, n,
                         imx.ctypes.data if weighted else None)
                data = dst.raw[:size]
                deq = gguf.quants.dequantize(np.frombuffer(data, np.uint8),
                                             gguf.GGMLQuantizationType(tid)).astype("<f4")
                cases.append({"row": name, "type": tname, "imatrix": weighted,
                              "bytes_sha256": hashlib.sha256(data).hexdigest(),
                              "bytes_head": data[:48].hex(),
                              "gguf_dequant_sha256": hashlib.sha256(deq.tobytes()).hexdigest()})
    (out / "rows.bin").write_bytes(bytes(blob))
    (out / "cases.json").write_text(json.dumps(
        {"source": "llama.cpp ggml_quantize_chunk (libggml-base, llama-cpp-python 0.3.36 source); "
                   "gguf " + getattr(gguf, "__version__", "?") + " dequantize",
         "inputs": inputs, "cases": cases}, indent=1) + "\n")
    print(f"{len(rows)} rows, {len(cases)} cases, {len(blob)} input bytes -> {out}")


if __name__ == "__main__":
    main()
