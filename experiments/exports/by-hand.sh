#!/usr/bin/env bash
# The figures of the closing note that CI does not compute (they need a bigger database or take
# longer): the 3-bit EvoPress study (results/quant3-evopress) and the 50% EvoPress sparsity study
# (results/sparsity-50-evopress) exported as compressed-tensors and read back; the BF16 GGUF made from the Q4_1 file and its perplexity; --threads 1 against 2.
# Writes results/exports/by-hand.md. Run from anywhere after scripts/setup.sh and a release
# build; builds configs/db/quant-2-4bit.ron and sparsity-grid-50.ron first if missing (minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-${CARGO_TARGET_DIR:-./target}/release/evocomp}
PY=$(bash scripts/reference/venv.sh)
TEXT=assets/text/sotu/eval/2000_william_j_clinton_d.txt
out=results/exports
mkdir -p "$out"
export RUST_LOG=${RUST_LOG:-warn}
md=$out/by-hand.md
echo "# Figures run by hand (experiments/exports/by-hand.sh)" > $md
"$EVOCOMP" db build configs/db/quant-2-4bit.ron | tail -n 1
for v in dense ct ct-f16; do
  case $v in
    dense) args=() ;;
    ct) args=(--format compressed-tensors) ;;
    ct-f16) args=(--format compressed-tensors --dtype f16) ;;
  esac
  "$EVOCOMP" export results/quant3-evopress --out $out/quant3-$v --replace "${args[@]}" > $out/quant3-$v.txt
done
ppl=$("$EVOCOMP" perplexity --model $out/quant3-dense --text $TEXT --tokens 2048 --context 512 | sed -n 's/^perplexity: //p')
{
  echo; echo "## quant3-evopress as compressed-tensors"; echo
  echo "evocomp perplexity of the dense export: $ppl (2,044 predictions of $TEXT)"; echo
  for v in ct ct-f16; do
    echo '```'; sed -n 1p $out/quant3-$v.txt
    "$PY" scripts/reference/check_compressed_tensors.py $out/quant3-$v $TEXT --expect "$ppl" 2>/dev/null \
      | grep -E "^(compressed|transformers|against)" || true
    echo '```'
  done
  echo "MiB: $(du -m $out/quant3-dense/model.safetensors | cut -f1) dense"
} >> $md
"$EVOCOMP" db build configs/db/sparsity-grid-50.ron | tail -n 1
for v in dense dense-f16 ct ct-f16; do
  case $v in
    dense) args=() ;;
    dense-f16) args=(--dtype f16) ;;
    ct) args=(--format compressed-tensors) ;;
    ct-f16) args=(--format compressed-tensors --dtype f16) ;;
  esac
  "$EVOCOMP" export results/sparsity-50-evopress --out $out/sparsity50-$v --replace "${args[@]}" > $out/sparsity50-$v.txt
done
{
  echo; echo "## sparsity-50-evopress as compressed-tensors (sparse-bitmask)"; echo
  for v in ct ct-f16; do
    d=${v/ct/dense}
    p=$("$EVOCOMP" perplexity --model $out/sparsity50-$d --text $TEXT --tokens 2048 --context 512 | sed -n 's/^perplexity: //p')
    echo "evocomp perplexity of the $d export: $p; MiB: $(du -m $out/sparsity50-$d/model.safetensors | cut -f1) ($d)"; echo
    echo '```'; sed -n 1p $out/sparsity50-$v.txt
    "$PY" scripts/reference/check_sparse_bitmask.py $out/sparsity50-$v $TEXT --expect "$p" 2>/dev/null \
      | grep -E "^(compressed|transformers|against)" || true
    echo '```'
  done
} >> $md
# evocomp kld against PyTorch on the Q3_K_M-size GGUF export (DP on the GGUF-types database,
# results/gguf-mix-dp-q3-k-m): every figure within 1e-3 relative, or the script fails.
"$EVOCOMP" db build configs/db/gguf-types.ron | tail -n 1
"$EVOCOMP" export results/gguf-mix-dp-q3-k-m --out $out/q3km-gguf --format gguf --replace > $out/q3km-gguf.txt
q3=(--base assets/models/SmolLM2-135M-Instruct.Q4_1.gguf --model $out/q3km-gguf/model.gguf --text $TEXT --tokens 2048 --context 512)
"$EVOCOMP" kld "${q3[@]}" > $out/q3km-kld.txt
"$EVOCOMP" kld "${q3[@]}" --json > $out/q3km-kld.json
"$PY" scripts/reference/kld_reference.py assets/models/SmolLM2-135M-Instruct.Q4_1.gguf $out/q3km-gguf/model.gguf \
  $TEXT --tokens 2048 --context 512 --compare $out/q3km-kld.json > $out/q3km-kld-pytorch.json 2>$out/q3km-kld-pytorch.log \
  || { tail -n 20 $out/q3km-kld-pytorch.log; exit 1; }
{
  echo; echo "## evocomp kld on the Q3_K_M-size GGUF export, against PyTorch"; echo
  echo '```'; sed -n 1p $out/q3km-gguf.txt; cat $out/q3km-kld.txt; tail -n 1 $out/q3km-kld-pytorch.log; echo '```'
} >> $md
# A BF16 GGUF from the Q4_1 file, and both perplexities on 2,048 SOTU tokens.
bf16=assets/models/SmolLM2-135M-Instruct.BF16.gguf
[ -f $bf16 ] || "$PY" scripts/reference/make_bf16_gguf.py assets/models/SmolLM2-135M-Instruct.Q4_1.gguf $bf16
{
  echo; echo "## BF16 source"; echo
  for m in assets/models/SmolLM2-135M-Instruct.Q4_1.gguf $bf16; do
    echo "- $m: $("$EVOCOMP" perplexity --model $m --text assets/text/sotu/eval --tokens 2048 --backend cpu 2>/dev/null)"
  done
  echo; echo "## --threads (4,096 tokens, batch 1)"; echo
  for t in 1 2; do
    /usr/bin/time -f "- $t thread(s): %e s wall, %P CPU" "$EVOCOMP" --threads $t perplexity \
      --model assets/models/SmolLM2-135M-Instruct.Q4_1.gguf --text assets/text/sotu/eval --tokens 4096 \
      --backend cpu --batch-size 1 2>&1 >/dev/null | tail -n 1
  done
} >> $md
cat $md
