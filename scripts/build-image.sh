#!/usr/bin/env bash
# Build the cpullm server image (ci/docker/Dockerfile), run it with a model folder at /mnt/models, and
# check it as KServe and a client would: the startup, readiness and liveness probes of
# ci/kserve/servingruntime.yaml and an OpenAI chat request (tests/support/serving_probes.py, the checks
# tests/wheel/test_image_runtime.py runs on the runtime stage reproduced without a daemon).
#
#   scripts/build-image.sh [--models DIR] [--tag NAME] [--port N] [--build-only]
#
#   --models DIR   a folder holding one .gguf file (default: a tiny random model written for the check)
#   --tag NAME     the image name (default: cpullm-server:0.1.0)
#   --port N       the host port on 127.0.0.1 that reaches the container's 8080 (default: 8080)
#   --build-only   build the image, do not run it
#
# Builders: buildah (daemonless; the image then runs with podman, or docker if its daemon answers), or
# docker with a running daemon. The checks run with the repository's .venv (`make venv`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag="cpullm-server:0.1.0"
models=""
port=8080
run=1
python=".venv/bin/python"

die() {
  echo "build-image.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="${2:?--models needs a folder}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    --port) port="${2:?--port needs a number}"; shift 2 ;;
    --build-only) run=0; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
done

docker_works() { command -v docker > /dev/null && docker info > /dev/null 2>&1; }

# --- the builder ---------------------------------------------------------------------------------------
if command -v buildah > /dev/null; then
  builder_name=buildah
  builder=(buildah build --layers --ignorefile ci/docker/Dockerfile.dockerignore)
  if command -v podman > /dev/null; then
    runner=podman
  elif docker_works; then
    runner=docker
    builder_name=docker # docker cannot see buildah's local images; let docker build what it runs
    builder=()
  else
    runner=""
  fi
elif docker_works; then
  runner=docker
  builder_name=docker
  builder=()
else
  why="neither buildah nor docker is installed"
  if command -v docker > /dev/null; then
    said="$(docker info 2>&1 | grep -m1 -i 'cannot connect\|error' || true)"
    why="docker is installed but its daemon does not answer (${said:-docker info failed})"
  fi
  echo "build-image.sh: no image builder here: $why." >&2
  echo "Install buildah (daemonless), or start the docker daemon, and run this again." >&2
  echo "Without a builder, tests/wheel/test_image_runtime.py checks the image's runtime stage instead." >&2
  exit 2
fi

if [ ${#builder[@]} -eq 0 ]; then
  # BuildKit reads ci/docker/Dockerfile.dockerignore (the context's ignore list for this Dockerfile).
  builder=(env DOCKER_BUILDKIT=1 docker build)
fi
echo "building $tag with $builder_name (ci/docker/Dockerfile)"
"${builder[@]}" -f ci/docker/Dockerfile -t "$tag" .
echo "built $tag"

[ "$run" -eq 1 ] || exit 0
[ -n "$runner" ] || die "built $tag, but nothing here can run it (install podman, or start docker's daemon)"
[ -x "$python" ] || die "the checks need the repository's environment; run 'make venv' first"

# --- the model -----------------------------------------------------------------------------------------
scratch=""
container=""
cleanup() {
  if [ -n "$container" ]; then "$runner" rm -f "$container" > /dev/null 2>&1 || true; fi
  if [ -n "$scratch" ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

if [ -z "$models" ]; then
  scratch="$(mktemp -d)"
  models="$scratch/models"
  mkdir -p "$models"
  "$python" - "$models/tiny-chat.gguf" << 'EOF'
import sys

sys.path.insert(0, "tests/engine")
from tiny_gguf import TinySpec, write_tiny_gguf

write_tiny_gguf(sys.argv[1], TinySpec(context_length=512))
EOF
  chmod -R a+rX "$scratch" # the image's user (uid 1000) reads it
fi
[ -d "$models" ] || die "--models $models is not a folder"
models="$(cd "$models" && pwd)"

# --- run it as KServe would, and check it ----------------------------------------------------------------
container="$("$runner" run --detach --publish "127.0.0.1:$port:8080" --volume "$models:/mnt/models:ro" "$tag")"
echo "running $tag as $container on 127.0.0.1:$port, model folder $models"
if ! PYTHONPATH=tests "$python" -m support.serving_probes --base-url "http://127.0.0.1:$port" --timeout 300; then
  echo "--- container log ---" >&2
  "$runner" logs "$container" >&2 || true
  die "the image did not pass the checks"
fi
user="$("$runner" exec "$container" id -u)"
[ "$user" != "0" ] || die "the server runs as root in the image; the Dockerfile's USER should prevent that"
echo "the image passes: probes, chat, non-root user (uid $user)"
