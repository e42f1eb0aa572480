#!/usr/bin/env bash
# Install the Debian packages the project needs, only those that are missing (idempotent).
# Called by the Makefile; safe to run by hand. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential      # gcc/g++ for the native build
  ccache               # fast rebuilds of the engine
  patchelf             # auditwheel repair
  qemu-user            # run other CPUs' code: qemu-x86_64 -cpu Haswell/Nehalem, qemu-aarch64
  g++-aarch64-linux-gnu  # cross-compile the aarch64 variants
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${missing[*]}, and apt-get is not available; install them by hand." >&2
  exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: missing ${missing[*]}; run as root or install them by hand." >&2
    exit 1
  fi
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
