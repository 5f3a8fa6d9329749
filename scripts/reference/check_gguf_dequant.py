"""Every tensor of a GGUF file dequantised by evocomp against the `gguf` package.

    python scripts/reference/check_gguf_dequant.py MODEL.gguf

Runs crates/evocomp-gguf/examples/dequant_all.rs (cargo, release) into a temporary
folder, then compares each tensor with gguf.quants.dequantize: prints, per ggml type,
the number of tensors, elements and the largest absolute and relative difference.
Exits 1 if any tensor differs by more than 1e-6 relative to its largest magnitude.
"""
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np
import gguf

model = sys.argv[1]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
with tempfile.TemporaryDirectory() as out:
    subprocess.run(["cargo", "run", "--quiet", "--release", "--offline", "--example", "dequant_all",
                    "-p", "evocomp-gguf", "--", model, out], check=True, cwd=root)
    ours = {}
    for line in open(os.path.join(out, "index.tsv")):
        name, ty, shape, file = line.rstrip("\n").split("\t")
        ours[name] = (ty, os.path.join(out, file))
    reader = gguf.GGUFReader(model)
    stats = defaultdict(lambda: [0, 0, 0.0, 0.0])
    bad = []
    for t in reader.tensors:
        ty, file = ours[t.name]
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        got = np.fromfile(file, dtype="<f4")
        assert got.shape == want.shape, (t.name, got.shape, want.shape)
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
        scale = float(np.max(np.abs(want))) or 1.0
        s = stats[ty]
        s[0] += 1
        s[1] += got.size
        s[2] = max(s[2], diff)
        s[3] = max(s[3], diff / scale)
        if diff > 1e-6 * scale:
            bad.append((t.name, ty, diff))
    print(f"{model}: {len(reader.tensors)} tensors")
    print("| type | tensors | elements | max abs diff | max diff / max abs |")
    print("|---|---|---|---|---|")
    for ty, (n, e, d, r) in sorted(stats.items()):
        print(f"| {ty} | {n} | {e} | {d:.3g} | {r:.3g} |")
    for b in bad:
        print("DIFFERS:", *b)
    sys.exit(1 if bad else 0)
