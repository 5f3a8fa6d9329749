#!/usr/bin/env python3
"""The gguf-mix results as a markdown table: per study, the size (units' bits as a
share of all-Q8_0, the exported file's MiB and bits per weight over every tensor),
held-out KL and perplexity, and llama.cpp's perplexity of the export where run.sh
measured it (results/gguf-mix/llama-perplexity.txt)."""
import json, re
from pathlib import Path

root = Path(__file__).resolve().parents[2] / "results"
llama = {}
log = root / "gguf-mix" / "llama-perplexity.txt"
if log.exists():
    for line in log.read_text().splitlines():
        m = re.match(r"(\S+): llama.cpp Final estimate: PPL = ([0-9.]+)", line)
        if m:
            llama[m.group(1)] = float(m.group(2))
rows = [
    ("Q3_K_M size", "llama.cpp Q3_K_M, no imatrix", "gguf-mix-llamacpp-q3-k-m-plain", "llamacpp-q3-k-m-plain", None),
    ("Q3_K_M size", "llama.cpp Q3_K_M", "gguf-mix-llamacpp-q3-k-m", "llamacpp-q3-k-m", None),
    ("Q3_K_M size", "DP", "gguf-mix-dp-q3-k-m", "dp-q3-k-m", None),
    ("Q3_K_M size", "EvoPress", "gguf-mix-evopress-q3-k-m", "evopress-q3-k-m", None),
    ("Q3_K_M size", "NSGA-II front", "gguf-mix-nsga2", "nsga2-q3-k-m", "q3"),
    ("Q4_K_M size", "llama.cpp Q4_K_M, no imatrix", "gguf-mix-llamacpp-q4-k-m-plain", "llamacpp-q4-k-m-plain", None),
    ("Q4_K_M size", "llama.cpp Q4_K_M", "gguf-mix-llamacpp-q4-k-m", "llamacpp-q4-k-m", None),
    ("Q4_K_M size", "DP", "gguf-mix-dp-q4-k-m", "dp-q4-k-m", None),
    ("Q4_K_M size", "EvoPress", "gguf-mix-evopress-q4-k-m", "evopress-q4-k-m", None),
    ("Q4_K_M size", "NSGA-II front", "gguf-mix-nsga2", "nsga2-q4-k-m", "q4"),
    ("Q4_K_M size, no Q5_1", "llama.cpp Q4_K_M", "gguf-mix-llamacpp-q4-k-m-lossy", "llamacpp-q4-k-m-lossy", None),
    ("Q4_K_M size, no Q5_1", "DP", "gguf-mix-dp-q4-k-m-lossy", "dp-q4-k-m-lossy", None),
    ("Q4_K_M size, no Q5_1", "EvoPress", "gguf-mix-evopress-q4-k-m-lossy", "evopress-q4-k-m-lossy", None),
    ("Q4_K_M size, no Q5_1", "EvoPress from Q4_K_M", "gguf-mix-evopress-q4-k-m-lossy-warm", "evopress-q4-k-m-lossy-warm", None),
]
def summary(name):
    p = root / name / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None
limits = {}
for key, name in (("q3", "gguf-mix-llamacpp-q3-k-m"), ("q4", "gguf-mix-llamacpp-q4-k-m")):
    s = summary(name)
    if s:
        limits[key] = s["best"]["cost"]
print("| budget | configuration | units' bits (% of Q8_0) | file MiB | bpw (file) | held-out KL | perplexity | llama.cpp PPL |")
print("|---|---|---|---|---|---|---|---|")
for budget, label, study, export, front in rows:
    s = summary(study)
    if not s:
        continue
    m = s["best"]
    if front:
        members = [f for f in s["front"] if f["cost"] <= limits.get(front, 0)]
        if not members:
            continue
        m = min(members, key=lambda f: f["held_out_kl"])
    size = bpw = "–"
    if export:
        e = root / "gguf-mix" / "exports" / export / "evocomp.json"
        if e.exists():
            j = json.loads(e.read_text())
            size = f"{j['bytes'] / 2**20:.2f}"
            bpw = f"{j['bits_per_weight']:.3f}"
    lp = llama.get(export, None)
    print(f"| {budget} | {label} | {m['cost']:,} ({100 * m['cost'] / s['full_cost']:.2f}%) | {size} | {bpw} | "
          f"{m['held_out_kl']:.4f} | {m['held_out_perplexity']:.3f} | {lp if lp else '–'} |")
