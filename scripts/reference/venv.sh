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
# --llmcompressor: LLM Compressor 0.14 (with compressed-tensors 0.19 and the datasets library)
# beside the venv, for llmcompressor_compare.py; its pins (torch<=2.14, transformers<=5.17) are
# older than the venv's, so nothing is resolved: the script runs it on the venv's torch.
if [ "${1:-}" = "--llmcompressor" ] && [ ! -f "$venv/legacy/llmcompressor/.done" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$venv/legacy/llmcompressor" \
    llmcompressor==0.14.0.1 compressed-tensors==0.19.0 datasets==5.2.0 pyarrow==26.0.1 pandas==3.1.1 \
    dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 pillow==13.0.0 python-dateutil==4.0.0 pytz==2026.6 \
    tzdata==2026.6 >&2
  touch "$venv/legacy/llmcompressor/.done"
fi
echo "$venv/bin/python"
