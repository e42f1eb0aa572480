"""Hugging Face Hub references (org/repo[:QUANT]) against a stub Hub on loopback, online and offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpullm.model.hub import HubError, choose_file, is_hub_ref
from support.hub_stub import HubStub

REPO = Path(__file__).resolve().parents[2]


def test_which_strings_are_hub_references(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"")
    assert is_hub_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF") and is_hub_ref("org/repo:Q4_K_M")
    assert not is_hub_ref("models/m.gguf")  # an existing path
    assert not is_hub_ref("m.gguf") and not is_hub_ref("/abs/org/repo") and not is_hub_ref("a/b/c")


def test_the_file_a_reference_names():
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-Q4_K_S.gguf"]
    assert choose_file(files, "q8_0", "org/m") == "m-Q8_0.gguf"
    assert choose_file(files, None, "org/m") == "m-Q4_K_M.gguf"  # several files: the Q4_K_M default
    assert choose_file(["only.gguf"], None, "org/m") == "only.gguf"
    with pytest.raises(HubError, match=r"several \.gguf files in org/m match 'Q4_K'"):
        choose_file(files, "Q4_K", "org/m")
    with pytest.raises(HubError, match=r"whose name holds 'Q2_K'; it holds: m-Q4_K_M"):
        choose_file(files, "Q2_K", "org/m")
    with pytest.raises(HubError, match=r"holds no \.gguf file"):
        choose_file(["README.md"], None, "org/m")
    with pytest.raises(HubError, match="split GGUF"):
        choose_file(["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"], "00001", "org/m")


def _generate(ref: str, hf_home: Path, endpoint: str, native_lib_dir: Path, **extra: str):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home),
           "CPULLM_LIB_DIR": str(native_lib_dir), "PYTHONPATH": str(REPO / "engine"), **extra}  # fmt: skip
    env.pop("HF_TOKEN", None)
    command = [sys.executable, "-m", "cpullm", "generate", ref, "-p", "hello", "-n", "3",
               "--temperature", "0", "--ignore-eos", "--threads", "1", "--json"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_generate_fetches_from_the_hub_then_runs_offline_from_the_cache(tiny_model, native_lib_dir, tmp_path):
    data = tiny_model.read_bytes()
    repos = {
        "org/tiny-GGUF": {"tiny-Q8_0.gguf": data, "tiny-Q4_K_M.gguf": b"not this one", "README.md": b"x"}
    }
    with HubStub(repos) as hub:
        online = _generate("org/tiny-GGUF:Q8_0", tmp_path / "hf", hub.url, native_lib_dir)
        assert online.returncode == 0, online.stderr
        assert "GET /org/tiny-GGUF/resolve/main/tiny-Q8_0.gguf" in hub.requests
        missing = _generate("org/absent", tmp_path / "hf", hub.url, native_lib_dir)
    assert missing.returncode == 1
    assert "the Hub repo org/absent was not found" in missing.stderr and "Traceback" not in missing.stderr
    # The stub is gone: offline, the same reference loads from huggingface_hub's cache.
    offline = _generate("org/tiny-GGUF:Q8_0", tmp_path / "hf", hub.url, native_lib_dir, HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["text"] == json.loads(online.stdout)["text"]
    never = _generate("org/other:Q8_0", tmp_path / "hf", hub.url, native_lib_dir, HF_HUB_OFFLINE="1")
    assert never.returncode == 1 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in never.stderr
