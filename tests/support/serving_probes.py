"""KServe's probes and one OpenAI chat request against a running `cpullm serve`.

Shared by tests/wheel/test_image_runtime.py (the image's runtime stage, reproduced without a container
daemon) and scripts/build-image.sh (the real image):

    PYTHONPATH=tests python -m support.serving_probes --base-url http://127.0.0.1:8080 [--timeout 300]

The probe paths are the ServingRuntime's (ci/kserve/servingruntime.yaml), so the checks follow it.
Exit status 0 when every check passes, 1 with the failed check on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "ci" / "kserve" / "servingruntime.yaml"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


class ProbeError(Exception):
    """A probe or the chat request did not answer as KServe and an OpenAI client expect."""


def probe_paths() -> dict[str, str]:
    """{probe name: HTTP path} from the ServingRuntime's container."""
    (container,) = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"]
    return {probe: container[probe]["httpGet"]["path"] for probe in PROBES}


def wait_ready(base_url: str, timeout_s: float, alive: Callable[[], bool] | None = None) -> float:
    """Poll the startup probe until it answers 200, as the kubelet does; the seconds it took."""
    path = probe_paths()["startupProbe"]
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if alive is not None and not alive():
            raise ProbeError("the server exited before it was ready")
        try:
            if httpx.get(base_url + path, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise ProbeError(f"the startup probe {path} did not answer 200 within {timeout_s:.0f} s")


def check(base_url: str, timeout_s: float = 300.0, alive: Callable[[], bool] | None = None) -> list[str]:
    """Wait for readiness, then every probe and one chat completion; one report line per check."""
    from openai import OpenAI, OpenAIError

    report = [f"ready after {wait_ready(base_url, timeout_s, alive):.1f} s"]
    for probe, path in probe_paths().items():
        response = httpx.get(base_url + path, timeout=10)
        if response.status_code != 200:
            raise ProbeError(f"{probe} {path} answered {response.status_code}: {response.text[:200]}")
        report.append(f"{probe} {path}: 200")
    client = OpenAI(base_url=base_url + "/v1", api_key="unused", timeout=120, max_retries=0)
    try:
        model = client.models.list().data[0].id
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
    except OpenAIError as exc:
        raise ProbeError(f"the chat request failed: {exc}") from None
    choice = answer.choices[0]
    if (
        answer.usage is None
        or answer.usage.completion_tokens < 1
        or choice.finish_reason not in ("stop", "length")
    ):
        raise ProbeError(f"the chat answer is incomplete: {answer.model_dump_json()[:300]}")
    report.append(
        f"chat with {model}: {answer.usage.completion_tokens} tokens, finish_reason {choice.finish_reason}"
    )
    # KServe routes OpenAI clients through /openai/v1.
    listed = httpx.get(base_url + "/openai/v1/models", timeout=10)
    if listed.status_code != 200 or listed.json()["data"][0]["id"] != model:
        raise ProbeError(f"/openai/v1/models answered {listed.status_code}: {listed.text[:200]}")
    report.append(f"/openai/v1/models: {model}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    try:
        lines = check(args.base_url.rstrip("/"), args.timeout)
    except (ProbeError, httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        print(f"probe failed against {args.base_url}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
