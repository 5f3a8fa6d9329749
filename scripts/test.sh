#!/usr/bin/env bash
# Every test of the workspace in the release profile (the one the binary uses,
# so `cargo run --release` and the tests build burn once, in ./target unless
# CARGO_TARGET_DIR says otherwise; CI keeps it outside the clone). Integration tests on the real model need
# scripts/fetch-assets.sh first; wgpu tests need a Vulkan driver (on a machine
# without a GPU: apt-get install mesa-vulkan-drivers libvulkan1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/evocomp-xdg-$UID}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# --no-fail-fast: one failing test binary does not hide the results of the others.
exec cargo test --release --workspace --locked --no-fail-fast "$@"
