#!/usr/bin/env bash
# Unpack an arm64 (aarch64) CPython 3.11 from Debian's packages into a sysroot folder, for running the
# aarch64 wheel's self-test under qemu-aarch64 on an x86_64 host:
#   qemu-aarch64 -L SYSROOT SYSROOT/usr/bin/python3.11 -c '...'
# Idempotent: does nothing when the sysroot is already complete. Prints the sysroot's path.
# Usage: scripts/arm64-python.sh [SYSROOT]   (default: build/arm64-sysroot)
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot="$(realpath -m "${1:-build/arm64-sysroot}")"
stamp="$sysroot/.complete"

# Python itself and the shared libraries it (and the engine's C++ libraries) load at run time.
packages=(
  libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libcrypt1 libssl3 libbz2-1.0 liblzma5 libuuid1
  libpython3.11-minimal libpython3.11-stdlib python3.11-minimal
)

if [[ -f "$stamp" && "$(cat "$stamp")" == "${packages[*]}" ]]; then
  echo "$sysroot"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "arm64-python: run as root (or with sudo) once, to add the arm64 package lists." >&2
    exit 1
  fi
fi
# apt-get download needs arm64 package lists; adding the architecture installs nothing.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq >&2
fi
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT
chown _apt "$debs" 2>/dev/null || chmod 777 "$debs"  # apt downloads as the _apt user
specs=()
for p in "${packages[@]}"; do specs+=("$p:arm64"); done
if ! (cd "$debs" && apt-get download -qq "${specs[@]}" >&2); then
  # The lists may be stale (a package version moved on): refresh once and retry.
  $SUDO apt-get update -qq >&2
  (cd "$debs" && apt-get download -qq "${specs[@]}" >&2)
fi
# Unpack beside the target and move it into place, so a concurrent run never sees half a sysroot.
staging="$sysroot.partial.$$"
rm -rf "$staging"
mkdir -p "$staging"
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$staging"; done
test -x "$staging/usr/bin/python3.11" || { echo "arm64-python: python3.11 missing after unpacking" >&2; exit 1; }
echo "${packages[*]}" > "$staging/.complete"
rm -rf "$sysroot"
mv "$staging" "$sysroot"
echo "$sysroot"
