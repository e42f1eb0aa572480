"""Settings precedence (flag > CPULLM_* env > default), API keys, the queue when the KV cache or the
batch is full, loading state (503 until ready) and load failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_process import running_server, server_env, wait_ready

from cpullm.server.settings import ServerSettings, SettingsError, resolve_model_path

PARAMS = {"temperature": 0, "max_tokens": 150, "extra_body": {"ignore_eos": True}}
# 16-token blocks of the tiny model (2 layers, kv_dim 128, f16): 2 * 2 * 16 * 128 * 2 bytes each.
TINY_BLOCK_BYTES = 2 * 2 * 16 * 128 * 2


# ---- settings, in process ----
def test_flag_beats_env_beats_default():
    env = {"CPULLM_PORT": "9000", "CPULLM_MAX_NUM_SEQS": "4", "CPULLM_API_KEY": "from-env"}
    s = ServerSettings.resolve({"port": 7000, "max_num_seqs": None}, env)
    assert (s.port, s.max_num_seqs, s.api_key) == (7000, 4, ("from-env",))
    assert s.host == "127.0.0.1" and s.kv_cache_gb == 1.0  # defaults
    assert ServerSettings.resolve({}, {}).api_key == ()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CPULLM_PORT": "http"}, "CPULLM_PORT='http' is not an integer"),
        ({"CPULLM_KV_CACHE_GB": "lots"}, "CPULLM_KV_CACHE_GB='lots' is not a number"),
        ({"CPULLM_MAX_NUM_SEQS": "0"}, "max_num_seqs must be at least 1"),
        ({"CPULLM_KV_CACHE_GB": "-1"}, "kv_cache_gb must be a positive"),
        ({"CPULLM_LOG_LEVEL": "loud"}, "log_level must be one of critical, error"),
        ({"CPULLM_KV_CACHE_DTYPE": "q4_0"}, "kv_cache_dtype must be one of f16, f32, q8_0; got 'q4_0'"),
    ],
)
def test_bad_settings_are_named(env, words):
    with pytest.raises(SettingsError, match=words):
        ServerSettings.resolve({}, env)


def test_model_folder_with_one_gguf_is_accepted(tmp_path):
    (tmp_path / "models" / "sub").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    model = tmp_path / "models" / "sub" / "m.gguf"
    model.write_bytes(b"x")
    assert resolve_model_path(tmp_path / "models") == model
    assert resolve_model_path(model) == model
    (tmp_path / "models" / "other.gguf").write_bytes(b"x")
    with pytest.raises(SettingsError, match=r"several \.gguf files"):
        resolve_model_path(tmp_path / "models")
    with pytest.raises(SettingsError, match="does not exist"):
        resolve_model_path(tmp_path / "missing.gguf")
    with pytest.raises(SettingsError, match=r"no \.gguf file"):
        resolve_model_path(tmp_path / "empty")


# ---- a server configured through flags and environment ----
@pytest.fixture(scope="module")
def small_server(native_lib_dir, tiny_server_model, tmp_path_factory):
    """API key from the flag (the env's loses), name and batch size from env, a KV cache of 12 blocks
    (192 tokens): one sequence of the test's 170 tokens fills most of it."""
    kv_gb = 12 * TINY_BLOCK_BYTES / (1 << 30)
    args = [str(tiny_server_model), "--api-key", "flag-key", "--kv-cache-gb", repr(kv_gb)]
    args += ["--max-model-len", "192"]
    env = {"CPULLM_API_KEY": "env-key", "CPULLM_SERVED_MODEL_NAME": "from-env", "CPULLM_MAX_NUM_SEQS": "3",
           "CPULLM_THREADS": "1"}  # fmt: skip
    log = tmp_path_factory.mktemp("small_server") / "server.log"
    with running_server(native_lib_dir, args, log, env) as s:
        yield s


def test_api_key_from_the_flag_is_required(small_server):
    url = small_server.base_url
    good = openai.OpenAI(base_url=url + "/v1", api_key="flag-key", max_retries=0)
    assert [m.id for m in good.models.list().data] == ["from-env"]
    for key in ("env-key", "wrong"):
        bad = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="not valid"):
            bad.completions.create(model="from-env", prompt="hi", max_tokens=2)
    missing = httpx.post(url + "/openai/v1/completions", json={"prompt": "hi"}, timeout=10)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
    # probes and scrapers need no key
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    assert httpx.get(url + "/metrics", timeout=10).status_code == 200
    assert httpx.get(url + "/v2/models/from-env/ready", timeout=10).status_code == 200


def test_full_kv_cache_and_batch_make_requests_wait_not_fail(small_server):
    client = openai.OpenAI(
        base_url=small_server.base_url + "/v1", api_key="flag-key", max_retries=0, timeout=120
    )
    prompts = [[10 + i, 20 + i, 30 + i] * (5 + i) for i in range(6)]  # 15..30 tokens, + 150 generated
    alone = [client.completions.create(model="from-env", prompt=p, **PARAMS).choices[0].text for p in prompts]

    before = small_server.metrics()
    seen = {"running": 0.0, "blocks": 0.0}
    done = threading.Event()

    def watch() -> None:  # upper bounds only: a sample missed by polling cannot fail them
        while not done.is_set():
            m = small_server.metrics()
            seen["running"] = max(seen["running"], m["cpullm_num_requests_running"])
            seen["blocks"] = max(seen["blocks"], m["cpullm_kv_cache_blocks_used"])
            time.sleep(0.005)

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(
            base_url=small_server.base_url + "/v1", api_key="flag-key", max_retries=0, timeout=120
        )
        try:
            outs = await asyncio.gather(
                *(aclient.completions.create(model="from-env", prompt=p, **PARAMS) for p in prompts)
            )
        finally:
            await aclient.close()
        return [o.choices[0].text for o in outs]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        batched = asyncio.run(together())
    finally:
        done.set()
        watcher.join()
    after = small_server.metrics()
    assert batched == alone
    assert seen["running"] <= 3 and seen["blocks"] <= 12
    queued = "cpullm_step_queue_depth"  # per-step record: steps that left requests waiting
    steps_with_a_queue = [m[f"{queued}_count"] - m[f'{queued}_bucket{{le="0.0"}}'] for m in (before, after)]
    assert steps_with_a_queue[1] > steps_with_a_queue[0], (
        "six requests against a KV cache for about one never queued"
    )
    assert after["cpullm_kv_cache_blocks_used"] == 0


# ---- the command line ----
def _serve(
    lib_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cpullm", "serve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=server_env(lib_dir, env), timeout=60)


def test_cli_refuses_bad_settings_with_a_sentence(native_lib_dir, tmp_path):
    missing = _serve(native_lib_dir, [str(tmp_path / "nope.gguf")])
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_env = _serve(native_lib_dir, [str(tmp_path)], {"CPULLM_PORT": "eighty"})
    assert bad_env.returncode == 2 and "CPULLM_PORT='eighty' is not an integer" in bad_env.stderr


def test_model_that_fails_to_load_stops_the_server(native_lib_dir, tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really a model")
    log = tmp_path / "server.log"
    with running_server(native_lib_dir, [str(tmp_path)], log, wait=False) as s:
        rc = s.proc.wait(timeout=60)
    assert rc == 1
    assert "the model could not be loaded" in log.read_text()


# ---- loading state, in process ----
def test_health_is_503_while_loading_then_200(native_lib_dir, tiny_server_model, monkeypatch):
    monkeypatch.setenv("CPULLM_LIB_DIR", str(native_lib_dir))
    from fastapi.testclient import TestClient

    from cpullm.runtime.engine import Engine
    from cpullm.server.app import create_app

    release = threading.Event()

    def slow_load() -> Engine:
        release.wait(30)
        return Engine(tiny_server_model, threads=1, max_model_len=128)

    app = create_app(ServerSettings(model=str(tiny_server_model)), engine_factory=slow_load)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        assert client.get("/health").json() == {"status": "loading"}
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/tiny-chat/ready").status_code == 503
        loading = client.post("/v1/completions", json={"prompt": "hi"})
        assert loading.status_code == 503 and loading.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json() == {"status": "ok"}
        done = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True})
        assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 3


def test_wait_ready_reports_a_dead_server(tmp_path):
    from server_process import ServerProcess

    proc = subprocess.Popen(
        [sys.executable, "-c", "print('boom')"], stdout=open(tmp_path / "log", "w"), text=True
    )
    proc.wait(timeout=30)
    with pytest.raises(RuntimeError, match="boom"):
        wait_ready(ServerProcess(proc, 1, tmp_path / "log"), timeout=5)
