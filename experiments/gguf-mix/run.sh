#!/usr/bin/env bash
# Searched llama.cpp quantization mixes (EvoPress, NSGA-II) against llama.cpp's Q3_K_M and Q4_K_M
# at their own sizes, on SmolLM2-135M; each searched genome and preset is exported as a GGUF.
# Run from anywhere, after scripts/setup.sh; databases are built on first use.
# Each study resumes if interrupted and re-running a finished one costs nothing.
# LLAMA_PERPLEXITY=/path/to/llama-perplexity adds llama.cpp's own perplexity of every export.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-./target/release/evocomp}
run() { echo "== $1"; "$EVOCOMP" run "$1" 2>&1 | grep -v XDG_RUNTIME | tail -n 8; }
for s in llamacpp-q3-k-m-plain llamacpp-q4-k-m-plain llamacpp-q3-k-m llamacpp-q4-k-m \
         dp-q3-k-m dp-q4-k-m evopress-q3-k-m evopress-q4-k-m nsga2 \
         llamacpp-q4-k-m-lossy dp-q4-k-m-lossy evopress-q4-k-m-lossy evopress-q4-k-m-lossy-warm; do
    run experiments/gguf-mix/$s.ron
done
mkdir -p results/gguf-mix/exports
export_one() { # study, out, [budget]
    rm -rf "results/gguf-mix/exports/$2"
    "$EVOCOMP" export "$1" --format gguf --out "results/gguf-mix/exports/$2" ${3:+--budget "$3"} 2>&1 | grep "^wrote" 
}
for s in llamacpp-q3-k-m-plain llamacpp-q4-k-m-plain llamacpp-q3-k-m llamacpp-q4-k-m dp-q3-k-m dp-q4-k-m \
         evopress-q3-k-m evopress-q4-k-m llamacpp-q4-k-m-lossy dp-q4-k-m-lossy evopress-q4-k-m-lossy \
         evopress-q4-k-m-lossy-warm; do
    export_one "results/gguf-mix-$s" "$s"
done
# NSGA-II's front member with the lowest held-out KL at each preset's size.
for p in q3-k-m q4-k-m; do
    bits=$(python3 -c "import json; print(json.load(open('results/gguf-mix-llamacpp-$p/summary.json'))['best']['cost'])")
    export_one results/gguf-mix-nsga2 "nsga2-$p" "$bits"
done
"$EVOCOMP" report --out results/gguf-mix results/gguf-mix-llamacpp-q3-k-m results/gguf-mix-llamacpp-q4-k-m \
    results/gguf-mix-dp-q3-k-m results/gguf-mix-dp-q4-k-m \
    results/gguf-mix-evopress-q3-k-m results/gguf-mix-evopress-q4-k-m results/gguf-mix-nsga2 \
    results/gguf-mix-llamacpp-q4-k-m-lossy results/gguf-mix-dp-q4-k-m-lossy results/gguf-mix-evopress-q4-k-m-lossy \
    results/gguf-mix-evopress-q4-k-m-lossy-warm
if [ -n "${LLAMA_PERPLEXITY:-}" ]; then
    : > results/gguf-mix/llama-perplexity.txt
    for d in results/gguf-mix/exports/*/; do
        ppl=$("$LLAMA_PERPLEXITY" -m "$d/model.gguf" -f assets/text/sotu/eval/2001_george_w_bush_r.txt \
              -c 512 --chunks 8 -t 2 2>&1 | grep -o "Final estimate: PPL = [0-9.]*" || true)
        echo "$(basename "$d"): llama.cpp $ppl" | tee -a results/gguf-mix/llama-perplexity.txt
    done
fi
python3 experiments/gguf-mix/table.py | tee results/gguf-mix/table.md
