#!/usr/bin/env python3
"""GPTQ written from the paper, checked against evocomp's database layer by layer.

Independent of evocomp's Rust code: the model is transformers' LlamaForCausalLM
loaded from the GGUF (float32), every linear layer's input is captured with
PyTorch hooks, and GPTQ is Algorithm 1 of Frantar et al. (2022), "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers":
H = 2XXᵀ/n, dampening λ = damp·mean(diag H), the upper Cholesky factor of H⁻¹,
blocks of 128 columns with lazy batch updates, min-max asymmetric grids per
group fitted on the updated weights when a group starts, act-order with static
groups when the database uses it, and GPTQ's sequential calibration when the
database was built that way. Run from the repository root in the reference venv
(scripts/reference/requirements.txt):

    python scripts/reference/gptq_reference.py GPTQ_DB RTN_DB [--text DIR]

GPTQ_DB and RTN_DB are databases built by `evocomp db build` with one level
(3 bits); the calibration tokens come from GPTQ_DB/calibration.json, so both
implementations see exactly the same inputs. Prints, per unit type:
  * how far evocomp's GPTQ weights are from this script's (relative Frobenius norm),
  * the normalised output error ‖(W−Ŵ)X‖²/‖WX‖² on the calibration inputs and on
    held-out inputs (the first tokens of --text) for evocomp's GPTQ, this
    script's GPTQ and evocomp's RTN,
and the held-out perplexity of: the uncompressed model, RTN, evocomp's GPTQ,
this script's GPTQ, and evocomp's GPTQ with RTN swapped in for one unit type at
a time (where the loss comes from).
"""

import argparse
import json
import math
import pathlib

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
GGUF_PATH = ROOT / "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf"
KINDS = ["q", "k", "v", "o", "gate", "up", "down"]
MODULE = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def load_model():
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(GGUF_PATH.parent), gguf_file=GGUF_PATH.name)
    model = LlamaForCausalLM.from_pretrained(
        str(GGUF_PATH.parent), gguf_file=GGUF_PATH.name, dtype=torch.float32
    )
    model.eval()
    return tok, model


def read_text_tokens(tok, path, n):
    p = pathlib.Path(path)
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    ids = []
    for f in files:
        ids += tok(f.read_text(), add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            break
    if len(ids) < n:
        raise SystemExit(f"{path}: only {len(ids)} tokens, {n} needed")
    return ids[:n]


def capture_xtx(model, sequences, batch=4):
    """XᵀX (float64) and token count of every linear layer's input."""
    sums, handles = {}, []
    for li, layer in enumerate(model.model.layers):
        for kind in KINDS:
            mod = layer.get_submodule(MODULE[kind])

            def hook(_m, inp, _out, key=(li, kind)):
                x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
                s = sums.get(key)
                sums[key] = x.T @ x if s is None else s + x.T @ x

            handles.append(mod.register_forward_hook(hook))
    n = 0
    with torch.no_grad():
        for i in range(0, len(sequences), batch):
            t = torch.tensor(sequences[i : i + batch])
            model(t)
            n += t.numel()
    for h in handles:
        h.remove()
    return sums, n


def quant_grid(w, bits):
    """Per-row asymmetric min-max grid over the columns of `w` (GPTQ's quantizer)."""
    maxq = 2**bits - 1
    lo = torch.clamp(w.min(dim=1).values, max=0.0)
    hi = torch.clamp(w.max(dim=1).values, min=0.0)
    both0 = (lo == 0) & (hi == 0)
    lo[both0], hi[both0] = -1.0, 1.0
    scale = (hi - lo) / maxq
    zero = torch.round(-lo / scale)
    return scale, zero, maxq


def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def rtn(w, bits, group):
    out = w.clone()
    for g in range(0, w.shape[1], group):
        s, z, m = quant_grid(w[:, g : g + group], bits)
        out[:, g : g + group] = quantize(w[:, g : g + group], s[:, None], z[:, None], m)
    return out


def gptq(w, h, bits, group, damp=0.01, block=128, act_order=False):
    """Algorithm 1 of the GPTQ paper, float64 throughout."""
    W = w.clone().double()
    H = h.clone().double()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    static = None
    if act_order:
        # Static groups: every group's grid is fitted on the original weights
        # in the original column order, before reordering.
        static = [quant_grid(W[:, g : g + group], bits) for g in range(0, cols, group)]
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    grid = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                s, z, m = static[int(perm[col]) // group]
            elif col % group == 0:
                # As the authors' code: W holds the updates of earlier blocks
                # (with groups of 128 = the block size, all of them).
                grid = quant_grid(W[:, col : col + group], bits)
                s, z, m = grid
            else:
                s, z, m = grid
            d = Hinv[col, col]
            q = quantize(W1[:, i], s, z, m)
            Q[:, col] = q
            e = (W1[:, i] - q) / d
            W1[:, i:] -= e[:, None] * Hinv[col, col:i2][None, :]
            Err1[:, i] = e
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if act_order:
        inv = torch.argsort(perm)
        Q = Q[:, inv]
    return Q.float()


def nerr(w, wq, xtx):
    d = (w - wq).double()
    num = torch.einsum("ij,jk,ik->", d, xtx, d)
    den = torch.einsum("ij,jk,ik->", w.double(), xtx, w.double())
    return float(num / den)


def decode_variant(path, shape, level=0):
    """One unit's variant as evocomp's database stores it (codec.rs: dense,
    sparse or palette), as a float32 tensor of `shape`."""
    from safetensors.numpy import load_file

    t = load_file(str(path))
    p = f"level_{level}"
    if p in t:
        return torch.from_numpy(t[p].copy()).reshape(shape)
    if f"{p}.palette" in t:
        pal = t[f"{p}.palette"]  # [rows, groups, 2^bits]
        rows, groups, size = pal.shape
        bits = size.bit_length() - 1
        group = int(t[f"{p}.group"][0])
        cols = (len(t[f"{p}.codes"]) * 8 // bits) // rows
        stream = np.unpackbits(t[f"{p}.codes"], bitorder="little")[: rows * cols * bits]
        codes = (stream.reshape(-1, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
        codes = codes.reshape(rows, cols)
        g = np.arange(cols) // group
        w = pal[np.arange(rows)[:, None], g[None, :], codes]
        return torch.from_numpy(w.astype(np.float32))
    if f"{p}.mask" in t:
        n = shape[0] * shape[1]
        keep = np.unpackbits(t[f"{p}.mask"], bitorder="little")[:n].astype(bool)
        w = np.zeros(n, dtype=np.float32)
        w[keep] = t[f"{p}.values"]
        return torch.from_numpy(w.reshape(shape))
    raise SystemExit(f"{path}: no {p} variant")


def load_units(path, level=0):
    """Every unit's variant at `level` in an evocomp database, decoded, keyed by
    (layer, kind); the manifest; and the level's labels."""
    path = pathlib.Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    out, labels = {}, []
    for u in manifest["units"]:
        layer, kind = u["name"].split(".")
        if level >= len(u["levels"]):
            raise SystemExit(f"{path}: {u['name']} has {len(u['levels'])} levels, no level {level}")
        out[(int(layer[1:]), kind)] = decode_variant(path / u["file"], u["shape"], level)
        labels.append(u["levels"][level]["label"])
    return out, manifest, labels


def load_db(path):
    return load_units(path)[0]


def perplexity(model, ids, context=512):
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), context):
            w = torch.tensor([ids[s : s + context]])
            if w.shape[1] < 2:
                break
            logits = model(w).logits[0, :-1].double()
            lp = torch.log_softmax(logits, dim=-1)
            tgt = w[0, 1:]
            nll -= float(lp[torch.arange(len(tgt)), tgt].sum())
            n += len(tgt)
    return math.exp(nll / n)


def set_weights(model, weights):
    with torch.no_grad():
        for (li, kind), w in weights.items():
            model.model.layers[li].get_submodule(MODULE[kind]).weight.copy_(w)


GROUPS = [["q", "k", "v"], ["o"], ["gate", "up"], ["down"]]


def sequential_gptq(model, sequences, orig, bits, group, damp, act_order, batch=4):
    """GPTQ's sequential protocol: block by block on the outputs of the blocks
    already quantized, and inside a block q/k/v, o, gate/up, down in turn,
    each on inputs through the block's units already quantized."""
    layers = model.model.layers
    with torch.no_grad():
        hs = [model.model.embed_tokens(torch.tensor(sequences[i : i + batch]))
              for i in range(0, len(sequences), batch)]
        t = hs[0].shape[1]
        pos = torch.arange(t)[None, :]
        rope = model.model.rotary_emb(hs[0], pos)
        out = {}
        for li, layer in enumerate(layers):
            for members in GROUPS:
                mod = layer.get_submodule(MODULE[members[0]])
                acc = {"xtx": None, "n": 0}

                def hook(_m, inp, _o, acc=acc):
                    x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                    acc["xtx"] = x.T @ x if acc["xtx"] is None else acc["xtx"] + x.T @ x
                    acc["n"] += x.shape[0]

                handle = mod.register_forward_hook(hook)
                for h in hs:
                    layer(h, position_embeddings=rope, position_ids=pos)
                handle.remove()
                hess = 2.0 * acc["xtx"] / acc["n"]
                for k in members:
                    q = gptq(orig[(li, k)], hess, bits, group, damp=damp, act_order=act_order)
                    layer.get_submodule(MODULE[k]).weight.copy_(q)
                    out[(li, k)] = q
            hs = [layer(h, position_embeddings=rope, position_ids=pos) for h in hs]
            hs = [h[0] if isinstance(h, tuple) else h for h in hs]
            print(f"  block {li} done", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gptq_db")
    ap.add_argument("rtn_db")
    ap.add_argument("--text", default=str(ROOT / "assets/text/sotu/eval"))
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--heldout-tokens", type=int, default=4096)
    ap.add_argument("--damp", type=float, default=0.01)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    manifest = json.loads((pathlib.Path(args.gptq_db) / "manifest.json").read_text())
    quant = manifest["compression"]["Quantization"]
    spec = quant["spec"]
    if len(quant["bits"]) != 1:
        raise SystemExit(f"{args.gptq_db}: give a database with one bit-width")
    bits, group = spec["bits"], spec["group_size"] or 10**9
    act_order = spec.get("act_order", False)
    sequential = isinstance(quant.get("propagation"), dict)
    print(f"GPTQ {bits} bits, groups of {group}, act-order {act_order}, "
          f"{'sequential' if sequential else 'uncompressed-input'} calibration", flush=True)
    calib = json.loads((pathlib.Path(args.gptq_db) / "calibration.json").read_text())["sequences"]

    tok, model = load_model()
    orig = {
        (li, k): layer.get_submodule(MODULE[k]).weight.detach().clone()
        for li, layer in enumerate(model.model.layers)
        for k in KINDS
    }
    print(f"capturing calibration inputs: {len(calib)} x {len(calib[0])} tokens", flush=True)
    xtx_cal, n_cal = capture_xtx(model, calib)
    held = read_text_tokens(tok, args.text, args.heldout_tokens)
    xtx_ho, _ = capture_xtx(model, [held[i : i + 512] for i in range(0, len(held), 512)])
    evo_gptq, evo_rtn = load_db(args.gptq_db), load_db(args.rtn_db)

    print("running the reference GPTQ", flush=True)
    if sequential:
        ref = sequential_gptq(model, calib, orig, bits, group, args.damp, act_order)
        set_weights(model, orig)
    else:
        ref = {}
        for key, w in orig.items():
            h = 2.0 * xtx_cal[key] / n_cal
            ref[key] = gptq(w, h, bits, group, damp=args.damp, act_order=act_order)

    print("\nper unit type, mean over layers (normalised output error ‖ΔW X‖²/‖W X‖²):")
    print(f"{'unit':>5} {'‖evo−ref‖/‖ref‖':>16} {'cal evo':>10} {'cal ref':>10} {'cal rtn':>10}"
          f" {'held evo':>10} {'held ref':>10} {'held rtn':>10}")
    for k in KINDS:
        rows = []
        for li in range(len(model.model.layers)):
            key = (li, k)
            w = orig[key]
            rows.append([
                float((evo_gptq[key] - ref[key]).norm() / ref[key].norm()),
                nerr(w, evo_gptq[key], xtx_cal[key]),
                nerr(w, ref[key], xtx_cal[key]),
                nerr(w, evo_rtn[key], xtx_cal[key]),
                nerr(w, evo_gptq[key], xtx_ho[key]),
                nerr(w, ref[key], xtx_ho[key]),
                nerr(w, evo_rtn[key], xtx_ho[key]),
            ])
        m = np.mean(np.array(rows), axis=0)
        print(f"{k:>5} {m[0]:16.2e} " + " ".join(f"{v:10.4f}" for v in m[1:]))

    ids = read_text_tokens(tok, args.text, args.tokens)
    print(f"\nheld-out perplexity ({args.tokens} tokens of {args.text}, windows of 512):")
    results = {"uncompressed": perplexity(model, ids)}
    for name, ws in [("rtn (evocomp)", evo_rtn), ("gptq (evocomp)", evo_gptq), ("gptq (reference)", ref)]:
        set_weights(model, ws)
        results[name] = perplexity(model, ids)
    for k in KINDS:
        mixed = dict(evo_gptq)
        for li in range(len(model.model.layers)):
            mixed[(li, k)] = evo_rtn[(li, k)]
        set_weights(model, mixed)
        results[f"gptq, rtn for {k}"] = perplexity(model, ids)
    set_weights(model, orig)
    for name, p in results.items():
        print(f"  {name:>22}: {p:8.2f}")


if __name__ == "__main__":
    main()
