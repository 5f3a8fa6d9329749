#!/usr/bin/env bash
# A mixed 3/4-bit GPTQ genome of SmolLM2-135M exported as compressed-tensors and read back by
# other code (CI runs this after the tests):
# - the compressed-tensors library's own decompressor gives evocomp's perplexity of the same
#   genome (`evocomp perplexity` on the dense export) within 1e-3 relative, for symmetric and
#   asymmetric grids;
# - transformers loads the symmetric folder itself (its compressed route) to the same perplexity;
# - with f16 scales, the quantized layers' bytes are the study's cost (b bits a weight and a 16-bit
#   scale a group) plus each layer's 16-byte shape, exactly;
# - a 50% SparseGPT genome as sparse bitmasks: compressed-tensors 0.9.4's decompressor and
#   transformers 4.51.3's own loader (the last releases that read the layout) give evocomp's
#   perplexity within 1e-3 relative, in f32 and f16;
# - `evocomp kld` (through a saved base) gives every figure a PyTorch computation gives on the same
#   tokens, within 1e-3 relative.
# Exported folders go to results/exports/<name>/ (ignored); the findings to results/exports/*.json
# and results/exports/table.md. Run from anywhere after scripts/setup.sh and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
EVOCOMP=${EVOCOMP:-${CARGO_TARGET_DIR:-./target}/release/evocomp}
PY=$(bash scripts/reference/venv.sh)
TEXT=assets/text/sotu/eval/2000_william_j_clinton_d.txt
out=results/exports
mkdir -p "$out"
export RUST_LOG=${RUST_LOG:-warn}
for v in sym asym; do
  echo "== $v"
  "$EVOCOMP" db build configs/db/exports-gptq-$v.ron | tail -n 1
  "$EVOCOMP" run experiments/exports/$v-dp.ron | tail -n 2
  study=results/exports-$v-dp
  "$EVOCOMP" export $study --out $out/$v-dense --replace > $out/$v-dense.txt
  "$EVOCOMP" export $study --out $out/$v-ct --format compressed-tensors --replace > $out/$v-ct.txt
  "$EVOCOMP" export $study --out $out/$v-ct-f16 --format compressed-tensors --dtype f16 --replace > $out/$v-ct-f16.txt
  sed -n 1p $out/$v-ct.txt
  ppl=$("$EVOCOMP" perplexity --model $out/$v-dense --text $TEXT --tokens 2048 --context 512 | sed -n 's/^perplexity: //p')
  echo "evocomp perplexity of the dense export: $ppl"
  "$PY" scripts/reference/check_compressed_tensors.py $out/$v-ct $TEXT --expect "$ppl" --json $out/$v-ct.json 2>/dev/null
  "$PY" scripts/reference/check_compressed_tensors.py $out/$v-ct-f16 $TEXT --json $out/$v-ct-f16.json 2>/dev/null
  echo "$ppl" > $out/$v-evocomp-perplexity.txt
done
echo "== sparse"
"$EVOCOMP" db build configs/db/exports-sparsegpt.ron | tail -n 1
"$EVOCOMP" run experiments/exports/sparse-dp.ron | tail -n 2
study=results/exports-sparse-dp
"$EVOCOMP" export $study --out $out/sparse-dense --replace > $out/sparse-dense.txt
"$EVOCOMP" export $study --out $out/sparse-dense-f16 --dtype f16 --replace > $out/sparse-dense-f16.txt
"$EVOCOMP" export $study --out $out/sparse-ct --format compressed-tensors --replace > $out/sparse-ct.txt
"$EVOCOMP" export $study --out $out/sparse-ct-f16 --format compressed-tensors --dtype f16 --replace > $out/sparse-ct-f16.txt
sed -n 1p $out/sparse-ct.txt
for v in dense dense-f16; do
  "$EVOCOMP" perplexity --model $out/sparse-$v --text $TEXT --tokens 2048 --context 512 \
    | sed -n 's/^perplexity: //p' > $out/sparse-$v-evocomp-perplexity.txt
done
echo "evocomp perplexity of the dense exports: $(cat $out/sparse-dense-evocomp-perplexity.txt) (f32), $(cat $out/sparse-dense-f16-evocomp-perplexity.txt) (f16)"
"$PY" scripts/reference/check_sparse_bitmask.py $out/sparse-ct $TEXT \
  --expect "$(cat $out/sparse-dense-evocomp-perplexity.txt)" --json $out/sparse-ct.json 2>/dev/null
"$PY" scripts/reference/check_sparse_bitmask.py $out/sparse-ct-f16 $TEXT \
  --expect "$(cat $out/sparse-dense-f16-evocomp-perplexity.txt)" --json $out/sparse-ct-f16.json 2>/dev/null
# evocomp kld against a PyTorch computation on the same tokens: the base (the GGUF, which
# transformers dequantises) against the symmetric genome's dense export, through a saved base.
"$EVOCOMP" kld --base assets/models/SmolLM2-135M-Instruct.Q4_1.gguf --model $out/sym-dense --text $TEXT \
  --tokens 2048 --context 512 --save-base $out/base.kld > $out/kld.txt
"$EVOCOMP" kld --base-logits $out/base.kld --model $out/sym-dense --text $TEXT --tokens 2048 --context 512 \
  --json > $out/kld.json
rm -f $out/base.kld
cat $out/kld.txt
"$PY" scripts/reference/kld_reference.py assets/models/SmolLM2-135M-Instruct.Q4_1.gguf $out/sym-dense $TEXT \
  --tokens 2048 --context 512 --compare $out/kld.json > $out/kld-pytorch.json 2>$out/kld-pytorch.log \
  || { cat $out/kld-pytorch.log; exit 1; }
tail -n 1 $out/kld-pytorch.log
python3 - "$out" <<'PY'
import json, struct, sys, os
out = sys.argv[1]
def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))
rows, failed = [], []
for v in ("sym", "asym"):
    evo = float(open(f"{out}/{v}-evocomp-perplexity.txt").read())
    for name in (f"{v}-ct", f"{v}-ct-f16"):
        meta = json.load(open(f"{out}/{name}/evocomp.json"))
        h = header(f"{out}/{name}/model.safetensors")
        q = sum(t["data_offsets"][1] - t["data_offsets"][0] for k, t in h.items() if ".weight_" in k)
        layers = sum(1 for k in h if k.endswith(".weight_shape"))
        size = os.path.getsize(f"{out}/{name}/model.safetensors")
        dense = os.path.getsize(f"{out}/{v}-dense/model.safetensors")
        r = json.load(open(f"{out}/{name}.json"))
        tf = r["transformers (compressed)"]
        rows.append((name, size / 2**20, dense / 2**20, meta["bits_per_weight"], meta["study_bits_per_weight"],
                     evo, r["decompressed"]["perplexity"], tf.get("perplexity"), tf.get("error")))
        if name == "sym-ct-f16" and 8 * q != meta["cost"] + 128 * layers:
            failed.append(f"{name}: quantized layers take {8 * q} bits, the study counts {meta['cost']} + {128 * layers} of shapes")
        if name == "sym-ct" and (tf.get("perplexity") is None or abs(tf["perplexity"] - evo) / evo > 1e-3):
            failed.append(f"{name}: transformers' own loader: {tf}")
for name, dense in (("sparse-ct", "sparse-dense"), ("sparse-ct-f16", "sparse-dense-f16")):
    meta = json.load(open(f"{out}/{name}/evocomp.json"))
    r = json.load(open(f"{out}/{name}.json"))
    evo = float(open(f"{out}/{dense}-evocomp-perplexity.txt").read())
    rows.append((name, os.path.getsize(f"{out}/{name}/model.safetensors") / 2**20,
                 os.path.getsize(f"{out}/sparse-dense/model.safetensors") / 2**20,
                 meta["bits_per_weight"], None, evo, r["decompressed"]["perplexity"],
                 r["transformers"].get("perplexity"), r["transformers"].get("error")))
with open(f"{out}/table.md", "w") as f:
    f.write("| export | MiB | dense f32 MiB | bits/weight written | study's bits/weight | evocomp ppl | compressed-tensors ppl | transformers ppl |\n|---|---|---|---|---|---|---|---|\n")
    for n, s, d, b, sb, e, c, t, err in rows:
        tcell = f"{t:.4f}" if t is not None else "does not load"
        sbcell = f"{sb:.4f}" if sb is not None else "(50% sparse)"
        f.write(f"| {n} | {s:.2f} | {d:.2f} | {b:.4f} | {sbcell} | {e:.4f} | {c:.4f} | {tcell} |\n")
    f.write("\nsparse-*: the sparse-bitmask layout, read by compressed-tensors 0.9.4 and transformers 4.51.3 "
            "(the current releases dropped it); its evocomp perplexity is the dense export's in the same dtype.\n")
print(open(f"{out}/table.md").read())
if failed:
    sys.exit("\n".join(failed))
PY
