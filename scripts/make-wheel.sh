#!/usr/bin/env bash
# `make wheel`: probe this host, build its tuned wheel (`--isa native` = this host's best recipe),
# verify it in a fresh virtual environment, and print where the wheel is.
set -euo pipefail
cd "$(dirname "$0")/.."
out=wheelhouse

.venv/bin/cpubuild detect
echo
result="$(.venv/bin/cpubuild wheel --isa native --out "$out" --json)"
wheel="$(.venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["wheel"])' <<<"$result")"
summary="$(.venv/bin/python -c 'import json, sys; d = json.load(sys.stdin); print(d["isa"], d["platform_tag"], str(d["seconds"]) + " s")' <<<"$result")"
echo "built: $wheel ($summary)"
echo
.venv/bin/cpubuild verify "$wheel"

# --- issue 5: run the wheel on the default model and print the answer (append here) ---

echo
echo "make wheel: your wheel is $wheel"
echo "install it with: pip install '$wheel'   (or: .venv/bin/cpubuild install --wheelhouse $out)"
