#!/usr/bin/env python3
"""Make the reference fixtures that evocomp's tests compare against.

Independent of evocomp's Rust code:
  * token ids come from a small pure-Python byte-level BPE written here from the
    GGUF vocabulary and merges, with llama.cpp's "smollm" pre-tokenizer split
    (each digit alone, then the GPT-2 regex). They are cross-checked against
    transformers' GGUF tokenizer, which does not know "smollm" and so may only
    differ around digits (reported, not fatal);
  * logits come from PyTorch + transformers' LlamaForCausalLM loaded from the
    GGUF (transformers dequantises and un-permutes Q/K itself), in float32;
  * dequantisation fixtures come from the `gguf` Python package.

Run it from the repository root after scripts/fetch-assets.sh, in a venv with
`pip install numpy gguf transformers accelerate torch regex`:

    python scripts/reference/make_fixtures.py

Writes:
  crates/evocomp-gguf/tests/fixtures/dequant_reference.json
  crates/evocomp-model/tests/fixtures/tokenizer_ids.json
  crates/evocomp-model/tests/fixtures/smollm2_logits.json (+ .bin)
"""

import json
import math
import pathlib
import struct

import numpy as np
import regex

ROOT = pathlib.Path(__file__).resolve().parents[2]
GGUF_PATH = ROOT / "assets/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT_PATH = ROOT / "assets/text/sotu/eval/2021_joseph_r_biden_d.txt"
N_TOKENS = 1024
CONTEXT = 512
TOP = 32
FULL_ROWS = [0, 1, 255, 511, 512, 700, 1023]


# --------------------------------------------------------------------------
# Dequantisation fixtures (gguf package)
# --------------------------------------------------------------------------
def dequant_fixture():
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(1234)
    out = {}

    def f16(x):
        return np.asarray([x], dtype=np.float16).view(np.uint8)

    specs = {
        "Q4_0": (Q.Q4_0, 18, [(0, 0.05)]),
        "Q4_1": (Q.Q4_1, 20, [(0, 0.05), (2, -0.4)]),
        "Q8_0": (Q.Q8_0, 34, [(0, 0.01)]),
        "Q4_K": (Q.Q4_K, 144, [(0, 0.01), (2, 0.02)]),
        "Q6_K": (Q.Q6_K, 210, [(208, 0.003)]),
    }
    for name, (qt, nbytes, scales) in specs.items():
        blocks = rng.integers(0, 256, size=(3, nbytes), dtype=np.uint8)
        for b in range(3):
            for off, s in scales:
                blocks[b, off : off + 2] = f16(s * (1 + 0.3 * b) * rng.uniform(0.5, 1.5))
        vals = gguf.quants.dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
        out[name] = {"bytes": blocks.reshape(-1).tobytes().hex(), "values": [float(v) for v in vals]}

    # Types added later draw from their own generator, so the fixtures above stay byte-identical.
    rng2 = np.random.default_rng(4321)
    later = {
        "Q5_0": (Q.Q5_0, 22, [(0, 0.05)]),
        "Q5_1": (Q.Q5_1, 24, [(0, 0.05), (2, -0.4)]),
        "Q2_K": (Q.Q2_K, 84, [(80, 0.01), (82, 0.02)]),
        "Q3_K": (Q.Q3_K, 110, [(108, 0.004)]),
        "Q5_K": (Q.Q5_K, 176, [(0, 0.01), (2, 0.02)]),
    }
    for name, (qt, nbytes, scales) in later.items():
        blocks = rng2.integers(0, 256, size=(3, nbytes), dtype=np.uint8)
        for b in range(3):
            for off, s in scales:
                blocks[b, off : off + 2] = f16(s * (1 + 0.3 * b) * rng2.uniform(0.5, 1.5))
        vals = gguf.quants.dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
        out[name] = {"bytes": blocks.reshape(-1).tobytes().hex(), "values": [float(v) for v in vals]}

    x = rng.normal(size=64).astype(np.float32)
    h = x.astype(np.float16)
    out["F16"] = {"bytes": h.tobytes().hex(), "values": [float(v) for v in h.astype(np.float32)]}
    bf_bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    bf_vals = (bf_bits.astype(np.uint32) << 16).view(np.float32)
    out["BF16"] = {"bytes": bf_bits.tobytes().hex(), "values": [float(v) for v in bf_vals]}
    out["F32"] = {"bytes": x.tobytes().hex(), "values": [float(v) for v in x]}
    path = ROOT / "crates/evocomp-gguf/tests/fixtures/dequant_reference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    print(f"wrote {path}")


# --------------------------------------------------------------------------
# A pure-Python byte-level BPE (GPT-2 style) with the smollm split
# --------------------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_RE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGIT_RE = regex.compile(r"\p{N}")


class PyBpe:
    def __init__(self, tokens, merges):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.byte_map = bytes_to_unicode()
        self.cache = {}

    def pieces(self, text):
        # llama.cpp "smollm": isolate every digit, then GPT-2's regex on the rest.
        out = []
        pos = 0
        for m in DIGIT_RE.finditer(text):
            if m.start() > pos:
                out.extend(GPT2_RE.findall(text[pos : m.start()]))
            out.append(m.group())
            pos = m.end()
        if pos < len(text):
            out.extend(GPT2_RE.findall(text[pos:]))
        return out

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            _, i = best
            a, b = parts[i], parts[i + 1]
            merged = []
            j = 0
            while j < len(parts):
                if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                    merged.append(a + b)
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        self.cache[word] = parts
        return parts

    def encode(self, text):
        ids = []
        for piece in self.pieces(text):
            word = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
            ids.extend(self.vocab[p] for p in self.bpe(word))
        return ids


def load_bpe():
    import gguf

    r = gguf.GGUFReader(str(GGUF_PATH))
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    return PyBpe(tokens, merges)


TOKENIZER_TEXTS = {
    "sotu_2021": None,  # filled from the file
    "shakespeare": "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\nAnd by opposing end them.",
    "moby_dick": None,
    "numbers_and_symbols": "In 1790, revenue was $4,409,951.19 -- up 12.5% (vs. 2019's 3.14159).  Tabs\there;\nnew lines\n\n  and   spaces… «quotes» — ünïcödé, 日本語, emoji 🚀!",
}


def tokenizer_fixture(bpe):
    texts = dict(TOKENIZER_TEXTS)
    texts["sotu_2021"] = TEXT_PATH.read_text(encoding="utf-8")[:6000]
    texts["moby_dick"] = (ROOT / "assets/text/moby-dick/chapter_1.txt").read_text(encoding="utf-8")[:4000]
    out = {}
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(GGUF_PATH.parent), gguf_file=GGUF_PATH.name)
    except Exception as e:  # pragma: no cover - informational only
        print(f"transformers tokenizer unavailable: {e}")
        hf = None
    for name, text in texts.items():
        ids = bpe.encode(text)
        out[name] = {"text": text, "ids": ids}
        if hf is not None:
            hf_ids = hf.encode(text, add_special_tokens=False)
            same = hf_ids == ids
            print(f"tokenizer {name}: {len(ids)} ids; transformers agrees: {same}")
    path = ROOT / "crates/evocomp-model/tests/fixtures/tokenizer_ids.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False, indent=0))
    print(f"wrote {path}")


# --------------------------------------------------------------------------
# Logits and perplexity from PyTorch + transformers
# --------------------------------------------------------------------------
def logits_fixture(bpe):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(GGUF_PATH.parent), gguf_file=GGUF_PATH.name, dtype=torch.float32)
    model.eval()
    ids = bpe.encode(TEXT_PATH.read_text(encoding="utf-8"))[:N_TOKENS]
    assert len(ids) == N_TOKENS
    rows = []
    nll = []
    with torch.no_grad():
        for w in range(N_TOKENS // CONTEXT):
            x = torch.tensor([ids[w * CONTEXT : (w + 1) * CONTEXT]])
            logits = model(x).logits[0].double()
            rows.append(logits.float().numpy())
            logp = torch.log_softmax(logits, dim=-1)
            tgt = x[0, 1:]
            nll.extend((-logp[:-1].gather(1, tgt[:, None])[:, 0]).tolist())
    logits = np.concatenate(rows, axis=0)
    ppl = math.exp(sum(nll) / len(nll))
    lse = np.log(np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    top_idx = np.argsort(-logits, axis=1)[:, :TOP]
    top_val = np.take_along_axis(logits, top_idx, 1)
    meta = {
        "model_sha256_prefix": "b179c9523d0e6a0f",
        "text": str(TEXT_PATH.relative_to(ROOT)),
        "n_tokens": N_TOKENS,
        "context": CONTEXT,
        "top": TOP,
        "full_rows": FULL_ROWS,
        "vocab": int(logits.shape[1]),
        "perplexity": ppl,
        "token_ids": ids,
        "argmax": [int(v) for v in logits.argmax(1)],
        "logsumexp": [float(v) for v in lse],
        "reference": "torch %s, transformers LlamaForCausalLM, float32" % torch.__version__,
    }
    base = ROOT / "crates/evocomp-model/tests/fixtures/smollm2_logits"
    base.with_suffix(".json").write_text(json.dumps(meta))
    with open(base.with_suffix(".bin"), "wb") as f:
        f.write(top_idx.astype("<u4").tobytes())
        f.write(top_val.astype("<f4").tobytes())
        f.write(logits[FULL_ROWS].astype("<f4").tobytes())
    print(f"wrote {base}.json/.bin: perplexity {ppl:.4f}")


# --------------------------------------------------------------------------
# The real Gemma 3 270M (GGUF Q4_K_M): transformers' tokenizer and logits
# --------------------------------------------------------------------------
GEMMA_PATH = ROOT / "assets/models/gemma-3-270m-q4_k_m.gguf"
GEMMA_TOP = 8


def gemma3_real_fixture():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(GEMMA_PATH.parent), gguf_file=GEMMA_PATH.name)
    text = TEXT_PATH.read_text(encoding="utf-8")
    ids = tok.encode(text, add_special_tokens=False)[:N_TOKENS]
    assert len(ids) == N_TOKENS
    sample = "Hello world!  Two spaces,\ttab\nnewline: caf\u00e9 \u2014 \U0001F600 <start_of_turn>user 12345"
    model = AutoModelForCausalLM.from_pretrained(
        str(GEMMA_PATH.parent), gguf_file=GEMMA_PATH.name, dtype=torch.float32
    ).eval()
    nll, top_idx, top_val, lse = [], [], [], []
    with torch.no_grad():
        for w in range(N_TOKENS // CONTEXT):
            x = torch.tensor([ids[w * CONTEXT : (w + 1) * CONTEXT]])
            logits = model(x).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            nll.extend((-logp[:-1].gather(1, x[0, 1:, None])[:, 0]).tolist())
            v, i = torch.topk(logits, GEMMA_TOP, dim=-1)
            top_idx.extend(i.tolist())
            top_val.extend(v.float().tolist())
            lse.extend(torch.logsumexp(logits, dim=-1).tolist())
    meta = {
        "model_sha256_prefix": "a5fd3b62230aa5ec",
        "text": str(TEXT_PATH.relative_to(ROOT)),
        "n_tokens": N_TOKENS,
        "context": CONTEXT,
        "perplexity": math.exp(sum(nll) / len(nll)),
        "token_ids": ids,
        "sample": sample,
        "sample_ids": tok.encode(sample, add_special_tokens=False),
        "top_idx": top_idx,
        "top_val": top_val,
        "logsumexp": lse,
        "reference": "torch %s, transformers %s Gemma3ForCausalLM from the GGUF, float32"
        % (torch.__version__, __import__("transformers").__version__),
    }
    path = ROOT / "crates/evocomp-model/tests/fixtures/gemma3_270m.json"
    path.write_text(json.dumps(meta))
    print(f"wrote {path}: perplexity {meta['perplexity']:.4f}")


# --------------------------------------------------------------------------
# A tiny random Gemma 3 (transformers builds it): HF folder + logits
# --------------------------------------------------------------------------
def tiny_hf_fixture(name, model_cls, cfg, norm_center=0.0):
    """A tiny random model of one architecture, built and run by transformers: its HF folder
    (config.json + model.safetensors) and the logits of two 12-token sequences."""
    import torch

    torch.manual_seed(0)
    model = model_cls(cfg).to(torch.float32).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(norm_center + 0.3 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.dim() > 1 else 1.0))
    out = ROOT / f"crates/evocomp-model/tests/fixtures/{name}"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    tokens = [[(i * 37 + 11 * s) % 256 + 4 for i in range(12)] for s in range(2)]
    with torch.no_grad():
        logits = model(torch.tensor(tokens)).logits.float().numpy()
    (out / "logits.json").write_text(json.dumps({"tokens": tokens, "logits": logits.reshape(-1).tolist()}))
    print(f"wrote {out}")


TINY = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
            rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2)


def gemma3_tiny_fixture():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        **TINY, query_pre_attn_scalar=6, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        tie_word_embeddings=True,
    )
    # Gemma stores w for 1 + w: random around 0.
    tiny_hf_fixture("gemma3_tiny", Gemma3ForCausalLM, cfg)


def other_tiny_fixtures():
    """Qwen 2 (q/k/v biases), Qwen 3 (q/k norms, head_dim != hidden/heads) and Mistral (a
    window of 4 on every block): no real weights of these are reachable here."""
    from transformers import (MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                              Qwen3Config, Qwen3ForCausalLM)

    tiny_hf_fixture("qwen2_tiny", Qwen2ForCausalLM,
                    Qwen2Config(**TINY, rope_theta=1_000_000.0, tie_word_embeddings=True), norm_center=1.0)
    q3 = dict(TINY, head_dim=16)
    tiny_hf_fixture("qwen3_tiny", Qwen3ForCausalLM,
                    Qwen3Config(**q3, rope_theta=1_000_000.0, tie_word_embeddings=False), norm_center=1.0)
    tiny_hf_fixture("mistral_tiny", MistralForCausalLM,
                    MistralConfig(**TINY, sliding_window=4, rope_theta=10_000.0, tie_word_embeddings=False),
                    norm_center=1.0)


if __name__ == "__main__":
    import sys as _sys
    if _sys.argv[1:] == ["gemma3"]:
        gemma3_tiny_fixture()
        gemma3_real_fixture()
        _sys.exit(0)
    if _sys.argv[1:] == ["tiny"]:
        gemma3_tiny_fixture()
        other_tiny_fixtures()
        _sys.exit(0)
    dequant_fixture()
    bpe = load_bpe()
    tokenizer_fixture(bpe)
    logits_fixture(bpe)
    gemma3_tiny_fixture()
    other_tiny_fixtures()
    gemma3_real_fixture()
