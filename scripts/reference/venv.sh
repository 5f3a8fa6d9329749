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
echo "$venv/bin/python"
