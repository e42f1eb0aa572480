#!/usr/bin/env bash
# `make wheel`: probe this host, then (once the wheel factory lands) build, verify and run its tuned wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/cpubuild detect
echo
echo "make wheel: the wheel factory is not built yet; this step stops after 'cpubuild detect'."
