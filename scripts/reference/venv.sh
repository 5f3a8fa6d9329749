#!/usr/bin/env bash
# The reference venv (PyTorch, transformers, gguf, compressed-tensors) at
# $EVOCOMP_PYREF (default ~/.cache/evocomp-pyref), from requirements.txt beside
# this script. Idempotent: a venv whose stamp matches the requirements is kept.
# Prints the venv's python.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${EVOCOMP_PYREF:-$HOME/.cache/evocomp-pyref}"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" != "$want" ]; then
  echo "venv.sh: installing $here/requirements.txt into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
  echo "$want" > "$venv/.requirements-sha256"
fi
# The last releases that read compressed-tensors' sparse-bitmask layout (transformers 4.51.3 with
# compressed-tensors 0.9.4), beside the venv and not in it (the venv keeps the current ones):
# check_sparse_bitmask.py runs with them on its path.
legacy="$venv/legacy/sparse-bitmask"
if [ ! -f "$legacy/.done" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$legacy" \
    transformers==4.51.3 huggingface_hub==0.30.2 compressed-tensors==0.9.4 tokenizers==0.21.1 >&2
  touch "$legacy/.done"
fi
echo "$venv/bin/python"
