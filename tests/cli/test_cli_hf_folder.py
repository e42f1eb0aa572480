"""`cpullm generate|bench|serve FOLDER`: a Hugging Face model folder on the command line, --quantization,
and refusals of bad folders as one line with exit status 1."""

from __future__ import annotations

import json
import shutil

import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec
from tiny_hf import write_tiny_hf_folder

from cpullm.cli import main as cli
from cpullm.server.settings import ServerSettings, SettingsError, resolve_model_path

GREEDY = ["--temperature", "0", "-n", "7", "--ignore-eos", "--threads", "1"]
SPEC = TinySpec(weight_type=QT.Q8_0, context_length=512, tied=False)  # as conftest's tiny_model


@pytest.fixture(scope="module")
def folder(tiny_model, tmp_path_factory):
    """The tiny_model's weights as a Hugging Face folder (the GGUF is written from the same arrays)."""
    return write_tiny_hf_folder(tmp_path_factory.mktemp("hf") / "tiny-hf", SPEC)


def test_generate_from_a_folder_is_the_gguf_output(folder, tiny_model, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hello world", *GREEDY]) == 0
    from_gguf = capsys.readouterr().out
    assert cli.main(["generate", str(folder), "-p", "hello world", *GREEDY]) == 0  # default q8_0
    assert capsys.readouterr().out == from_gguf
    assert from_gguf.strip()
    args = ["generate", str(folder), "-p", "hello world", "--chat", *GREEDY, "--json", "-q", "F16"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["completion_tokens"] == 7 and out["model"] == str(folder)


def test_bench_reports_the_loaded_weights(folder, capsys):
    assert (
        cli.main(["bench", str(folder), "-p", "8", "-n", "2", "-r", "1", "-t", "1", "--json", "-q", "q4_0"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "llama" and report["model"] == str(folder)
    # Q4_0 matrices (18 bytes per 32 weights) and F32 norms: about a seventh of the F32 weights' bytes
    assert report["n_params"] * 18 / 32 < report["model_bytes"] < report["n_params"] * 0.6


def test_bad_folder_is_one_line_and_exit_1(folder, tmp_path, run_cli):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["BloomForCausalLM"]}))
    result = run_cli("generate", str(bad), "-p", "hi", "-n", "1")
    assert result.returncode == 1
    assert "architecture 'BloomForCausalLM' is not supported" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_quantization_is_checked(folder, tiny_model, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", str(folder), "-p", "hi", "-q", "q3_k"])
    assert e.value.code == 2 and "invalid choice: 'q3_k'" in capsys.readouterr().err
    assert cli.main(["generate", str(tiny_model), "-p", "hi", "-q", "q8_0"]) == 1
    assert "quantization applies to Hugging Face model folders" in capsys.readouterr().err


def test_serve_settings_take_a_folder_and_its_quantization(folder):
    assert resolve_model_path(folder) == folder  # not a search for a .gguf inside it
    settings = ServerSettings.resolve({"model": str(folder)}, {"CPULLM_QUANTIZATION": "bf16"})
    assert settings.quantization == "bf16"
    with pytest.raises(SettingsError, match="quantization must be one of q8_0"):
        ServerSettings.resolve({}, {"CPULLM_QUANTIZATION": "int3"})
