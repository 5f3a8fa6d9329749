#!/usr/bin/env python3
"""A 1.1B-parameter Llama with TinyLlama's shape and random weights (issue 31): its memory
and time are real, its quality is not.

Shape: hidden 2048, 22 blocks, 32 heads, 4 KV heads, FFN 5632, vocabulary 32,000, untied
output head, RoPE base 10,000, context 2048 (1,100,048,384 parameters). transformers builds it
(`LlamaForCausalLM` from the config, its own initialisation, std 0.02) under a fixed torch seed
and writes it as BF16 safetensors (`save_pretrained`); the GGUF is converted from those
safetensors as llama.cpp's `convert_hf_to_gguf.py --outtype bf16` does (matrices BF16, norms
F32, Q/K rows permuted to llama.cpp's RoPE order).

The tokenizer is SmolLM2's byte-level BPE cut to its first 32,000 tokens, keeping only the
merges whose parts and result are among them (what training the same BPE for fewer merges
gives), read from SmolLM2's GGUF; its special tokens keep their ids.

    ~/.cache/evocomp-pyref/bin/python scripts/reference/make_1b.py \
        --out assets/models/tinyllama-shape-1b [--seed 0]

Writes OUT/hf/ (config.json, model.safetensors) and OUT.bf16.gguf. Deterministic: the same
seed gives the same bytes (the script prints each file's sha256).
"""
import argparse
import hashlib
import json
import pathlib
import sys
import time

import numpy as np

VOCAB = 32000
ROPE_BASE = 10000.0


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def cut_tokenizer(src):
    """SmolLM2's GGUF tokenizer metadata cut to VOCAB tokens: (key, value, type, subtype)."""
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(src)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()[:VOCAB]
    kept = set(tokens)
    merges = [
        m
        for m in f["tokenizer.ggml.merges"].contents()
        if (lambda a, b: a in kept and b in kept and a + b in kept)(*m.split(" ", 1))
    ]
    types = f["tokenizer.ggml.token_type"].contents()[:VOCAB]
    out = [
        ("tokenizer.ggml.model", "gpt2", GGUFValueType.STRING, None),
        ("tokenizer.ggml.pre", f["tokenizer.ggml.pre"].contents(), GGUFValueType.STRING, None),
        ("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY, GGUFValueType.STRING),
        ("tokenizer.ggml.token_type", types, GGUFValueType.ARRAY, GGUFValueType.INT32),
        ("tokenizer.ggml.merges", merges, GGUFValueType.ARRAY, GGUFValueType.STRING),
    ]
    for k in (
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ):
        v = f[k].contents()
        assert v < VOCAB, (k, v)
        out.append((k, v, GGUFValueType.UINT32, None))
    for k in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix"):
        out.append((k, f[k].contents(), GGUFValueType.BOOL, None))
    return out, len(merges)


def permute(w, heads):
    """HF's rotate-half Q/K rows to llama.cpp's interleaved order (as convert_hf_to_gguf)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")  # model.layers.N.<module>.<proj>.weight
    n, rest = parts[2], ".".join(parts[3:])
    names = {
        "self_attn.q_proj.weight": "attn_q",
        "self_attn.k_proj.weight": "attn_k",
        "self_attn.v_proj.weight": "attn_v",
        "self_attn.o_proj.weight": "attn_output",
        "mlp.gate_proj.weight": "ffn_gate",
        "mlp.up_proj.weight": "ffn_up",
        "mlp.down_proj.weight": "ffn_down",
        "input_layernorm.weight": "attn_norm",
        "post_attention_layernorm.weight": "ffn_norm",
    }
    return f"blk.{n}.{names[rest]}.weight"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="assets/models/tinyllama-shape-1b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", default="assets/models/SmolLM2-135M-Instruct.BF16.gguf")
    a = ap.parse_args()

    import torch
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    out = pathlib.Path(a.out)
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=ROPE_BASE,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="bfloat16",
    )
    t0 = time.time()
    torch.manual_seed(a.seed)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    model = model.to(torch.bfloat16)
    model.save_pretrained(hf, safe_serialization=True, max_shard_size="8GB")
    del model
    print(f"transformers: {n_params:,} parameters, BF16 safetensors in {time.time() - t0:.0f} s",
          file=sys.stderr)

    t0 = time.time()
    tok, n_merges = cut_tokenizer(a.tokenizer_from)
    dst = pathlib.Path(f"{out}.bf16.gguf")
    w = GGUFWriter(str(dst), "llama")
    w.add_name("tinyllama-shape-1b-random")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_file_type(32)  # LLAMA_FTYPE_MOSTLY_BF16
    for k, v, t, sub in tok:
        w.add_key_value(k, v, t, sub_type=sub)
    files = sorted(hf.glob("*.safetensors"))
    for f in files:
        with safe_open(f, "pt") as st:
            for name in st.keys():
                x = st.get_tensor(name).float().numpy()
                if name.endswith("q_proj.weight"):
                    x = permute(x, cfg.num_attention_heads)
                elif name.endswith("k_proj.weight"):
                    x = permute(x, cfg.num_key_value_heads)
                if x.ndim == 1:
                    w.add_tensor(gguf_name(name), x.astype(np.float32))
                else:
                    bits = quantize(x, GGMLQuantizationType.BF16)
                    w.add_tensor(gguf_name(name), bits, raw_dtype=GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"GGUF: {dst} ({dst.stat().st_size / 2**30:.2f} GiB, tokenizer {VOCAB} tokens, "
          f"{n_merges} merges) in {time.time() - t0:.0f} s", file=sys.stderr)
    json.dump(
        {
            "parameters": n_params,
            "seed": a.seed,
            "gguf": {"path": str(dst), "sha256": sha256(dst)},
            "safetensors": [{"path": str(f), "sha256": sha256(f)} for f in files],
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
