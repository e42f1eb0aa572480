#!/usr/bin/env bash
# `make wheel`: probe this host, build its tuned wheel (`--isa native` = this host's best recipe),
# verify it in a fresh virtual environment (import, kernel self-test, a short generation with the
# default model), and print where the wheel is.
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

# --- issue 5: run the wheel on the default model and print the answer ---
# In a venv kept at build/wheel-venv (verify's own venv is temporary): the wheel replaces any earlier
# build of the same version, its dependencies come through pip's cache, the model is fetched once.
run_venv=build/wheel-venv
test -x "$run_venv/bin/python" || .venv/bin/python -m venv "$run_venv"
# A tuned wheel is a PEP 825 variant wheel (its name ends in -<recipe>.whl), a name pip refuses: pip
# installs a copy under the plain name (the choice the label stands for is made here: --isa native).
plain="$(.venv/bin/python -c 'import pathlib, sys; from cpubuild.naming import WheelName; print(WheelName.parse(pathlib.Path(sys.argv[1]).name).plain_filename)' "$wheel")"
staged="build/wheel-staged/$plain"
mkdir -p build/wheel-staged
cp "$wheel" "$staged"
"$run_venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$staged"
"$run_venv/bin/python" -m pip install -q --disable-pip-version-check "$staged"
# The issue's prompt, one user turn in SmolLM2's ChatML with no system turn. (`--chat` would use the
# model's template, which adds a default system prompt; this small model then answers less well.)
prompt=$'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
echo
echo "running the wheel on the default model (greedy, 32 tokens at most):"
printf '%s' "$prompt"
cpullm="$PWD/$run_venv/bin/cpullm"
(cd /tmp && "$cpullm" generate -p "$prompt" -n 32 --temperature 0)

echo
echo "make wheel: your wheel is $wheel"
echo "install it with: .venv/bin/cpubuild install --wheelhouse $out   (plain pip skips variant wheels;"
echo "  it installs the portable wheel: .venv/bin/cpubuild wheel --isa all --out $out)"
