#!/usr/bin/env bash
# Every test of the workspace in the release profile (the one the binary uses,
# so CI builds burn once). Integration tests on the real model need
# scripts/fetch-assets.sh first; wgpu tests need a Vulkan driver (on a machine
# without a GPU: apt-get install mesa-vulkan-drivers libvulkan1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evocomp-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/evocomp-xdg-$UID}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
exec cargo test --release --workspace --locked "$@"
