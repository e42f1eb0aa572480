"""`cpullm generate`: streamed text, --json fields, --chat, and clear refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpullm.cli import main as cli
from cpullm.llm import LLM
from cpullm.runtime.sampling import SamplingParams

REPO = Path(__file__).resolve().parents[2]
GREEDY = ["--temperature", "0", "-n", "7", "--ignore-eos", "--threads", "1"]
PARAMS = SamplingParams(temperature=0, max_tokens=7, ignore_eos=True)


@pytest.fixture(scope="module")
def api(tiny_model) -> LLM:
    return LLM(tiny_model, threads=1)


def test_text_is_the_api_completion_followed_by_a_newline(tiny_model, api, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hello world", *GREEDY]) == 0
    expected = api.generate("hello world", PARAMS)[0].text
    assert expected  # the tiny model produces some text
    assert capsys.readouterr().out == expected + "\n"


def test_json_fields(tiny_model, api, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hello world", *GREEDY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = api.generate("hello world", PARAMS)[0]
    assert out["text"] == expected.text
    assert out["finish_reason"] == "length"
    assert out["completion_tokens"] == 7
    assert out["prompt_tokens"] == len(api.encode("hello world"))
    assert out["model"] == str(tiny_model)
    assert out["threads"] == 1
    assert isinstance(out["variant"], str) and out["variant"]
    assert out["total_s"] >= out["first_token_s"] > 0
    assert out["decode_tokens_per_s"] > 0


def test_chat_wraps_the_prompt_in_the_template(tiny_model, api, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "the capital", "--chat", *GREEDY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    messages = [{"role": "user", "content": "the capital"}]
    assert out["text"] == api.chat(messages, PARAMS)[0].text
    assert out["prompt_tokens"] == len(api.encode_chat(messages))
    # the template's system turn and the generation prompt are in the prompt, not just the text
    assert out["prompt_tokens"] > len(api.encode("the capital")) + 5


def test_system_message_goes_first(tiny_model, api, capsys):
    args = ["generate", str(tiny_model), "-p", "hello", "--chat", "--system", "be brief", *GREEDY, "--json"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert out["prompt_tokens"] == len(api.encode_chat(messages))
    assert out["text"] == api.chat(messages, PARAMS)[0].text


def test_same_seed_same_text(tiny_model, capsys):
    args = ["generate", str(tiny_model), "-p", "hello", "-n", "24", "--top-k", "0", "--top-p", "1"]
    args += ["--min-p", "0", "--temperature", "5", "--seed", "7"]
    texts = []
    for seed in ("7", "7", "8"):
        args[-1] = seed
        assert cli.main(args) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_prompt_from_stdin_and_streaming_in_a_subprocess(tiny_model, api, run_cli):
    result = run_cli("generate", str(tiny_model), "-p", "-", *GREEDY, input="hello world")
    assert result.returncode == 0, result.stderr
    assert result.stdout == api.generate("hello world", PARAMS)[0].text + "\n"


def test_missing_model_is_one_error_line(run_cli, tmp_path):
    missing = tmp_path / "nope.gguf"
    result = run_cli("generate", str(missing), "-p", "hi")
    assert result.returncode == 1
    assert result.stderr.startswith("cpullm: error: ") and str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_not_a_gguf_file_is_one_error_line(tmp_path, capsys, tiny_model):
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("these are my notes, not a model\n")
    assert cli.main(["generate", str(bogus), "-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cpullm: error: ") and "not a GGUF file" in err


def test_prompt_longer_than_the_context_is_refused(tiny_model, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hello " * 600, "-n", "2"]) == 1
    assert "context" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["0", "-2", "two"])
def test_bad_thread_counts_are_refused(tiny_model, threads, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["generate", str(tiny_model), "-p", "hi", "--threads", threads])
    assert stopped.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_bad_sampling_value_is_one_error_line(tiny_model, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hi", "--top-p", "1.5"]) == 1
    assert "top_p" in capsys.readouterr().err


def test_system_without_chat_is_refused(tiny_model, capsys):
    assert cli.main(["generate", str(tiny_model), "-p", "hi", "--system", "x"]) == 1
    assert "--system needs --chat" in capsys.readouterr().err


def test_closed_stdout_stops_quietly(tiny_model, native_lib_dir):
    """`cpullm generate ... | head -c 1`: the reader went away; no error message, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write the command makes now fails with EPIPE
    env = dict(os.environ, CPULLM_LIB_DIR=str(native_lib_dir), PYTHONPATH=str(REPO / "engine"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cpullm", "generate", str(tiny_model), "-p", "hi", *GREEDY],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == b""
