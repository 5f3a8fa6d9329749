#!/usr/bin/env bash
# Half-precision weights against f32: the same candidates scored both ways (issue 14).
# Needs the studies of experiments/sparsity (60%), experiments/nsga2 and experiments/depth.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p results/half-precision
fidelity() { cargo run --release -p evocomp-cli --example dtype_fidelity -- "$@"; }
fidelity experiments/sparsity/60-evopress.ron --dtype bf16 --genomes 300 --tokens 512 \
    --json results/half-precision/sparsity60.json \
    results/sparsity-60-evopress results/sparsity-60-dp results/sparsity-60-owl \
    results/sparsity-60-uniform results/nsga2-front results/nsga2-uniform/level-2 \
    results/nsga2-uniform/level0 | tee results/half-precision/sparsity60.txt
fidelity experiments/depth/evopress.ron --dtype bf16 --genomes 160 --tokens 512 \
    --json results/half-precision/depth.json \
    results/depth-shortened-llama/dropped6 results/depth-evopress/dropped6 \
    results/depth-evopress/dropped3 results/depth-evopress/dropped9 \
    results/depth-shortgpt/dropped6 | tee results/half-precision/depth.txt
# bf16 products (fitness.matmul: Bf16; f32 weights, both matmul inputs rounded to bf16), on the
# same genomes (read from the runs above).
fidelity experiments/sparsity/60-evopress.ron --dtype f32 --matmul bf16 --genomes 300 --tokens 512 \
    --json results/half-precision/sparsity60-matmul-bf16.json results/half-precision/sparsity60.json \
    | tee results/half-precision/sparsity60-matmul-bf16.txt
fidelity experiments/depth/evopress.ron --dtype f32 --matmul bf16 --genomes 160 --tokens 512 \
    --json results/half-precision/depth-matmul-bf16.json results/half-precision/depth.json \
    | tee results/half-precision/depth-matmul-bf16.txt
for m in assets/models/SmolLM2-135M-Instruct.Q4_1.gguf assets/models/gemma-3-270m-q4_k_m.gguf; do
    cargo run --release -p evocomp-cli -- bench --model "$m" --text assets/text/sotu/eval \
        --backends cpu --dtypes f32,bf16,f16 --sequences 2 --repeats 1
    for dtype in f32 bf16; do
        for how in stream host; do
            cargo run --release -p evocomp-model --example load_peak -- "$m" "$dtype" "$how"
        done
    done
done
