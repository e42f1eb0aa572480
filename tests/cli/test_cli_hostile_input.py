"""Bad input to the CLI: bytes that are not UTF-8, a model whose chat template fails, a closed stdout.
Each ends in one error line (or silence) and a conventional exit status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec, write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--temperature", "0", "-n", "3", "--ignore-eos", "--threads", "1"]
# Python decodes argv and (in the C locale) stdin with surrogateescape; C.UTF-8 reads stdin strictly
LOCALES = [{"LC_ALL": "C"}, {"LC_ALL": "C.UTF-8"}]


@pytest.fixture(scope="module")
def failing_template_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinySpec(weight_type=QT.Q8_0, context_length=512, tied=False, chat_template="{{ 1 // 0 }}")
    return write_tiny_gguf(tmp_path_factory.mktemp("cli_hostile") / "bad_template.gguf", spec)


def _one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cpullm: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("locale", LOCALES, ids=["C", "C.UTF-8"])
def test_a_prompt_that_is_not_utf8_is_one_error_line(tiny_model, run_cli, locale):
    result = run_cli("generate", str(tiny_model), "-p", b"ab\xffcd", *ARGS, env_extra=locale)
    assert result.returncode == 1 and result.stdout == ""
    _one_error_line(result.stderr, "the prompt is not valid UTF-8", "byte 0xff at character 3")
    result = run_cli("generate", str(tiny_model), "-p", "-", *ARGS, input=b"ok\n\xc3(", env_extra=locale)
    assert result.returncode == 1 and result.stdout == ""
    _one_error_line(result.stderr, "the prompt on stdin is not valid UTF-8", "byte 0xc3 at character 4")


def test_other_text_arguments_that_are_not_utf8_are_refused(tiny_model, run_cli):
    result = run_cli("generate", str(tiny_model), "-p", "hi", "--chat", "--system", b"\xfe", *ARGS)
    assert result.returncode == 1
    _one_error_line(result.stderr, "the --system message is not valid UTF-8")
    result = run_cli("generate", str(tiny_model), "-p", "hi", "--stop", b"a\x80", *ARGS)
    assert result.returncode == 1
    _one_error_line(result.stderr, "the --stop text is not valid UTF-8")


@pytest.mark.parametrize("locale", LOCALES, ids=["C", "C.UTF-8"])
def test_chat_skips_a_line_that_is_not_utf8(tiny_model, run_cli, locale):
    result = run_cli("chat", str(tiny_model), *ARGS, input=b"ab\xffcd\nhello\n", env_extra=locale)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1  # "hello" is answered
    assert result.stderr == (
        "cpullm: that line is not valid UTF-8 (byte 0xff at character 3); "
        "it was skipped; type it again as UTF-8 text.\n"
    )


def test_a_failing_chat_template_is_one_error_line(failing_template_model, run_cli):
    for command in (["generate", "-p", "hi", "--chat"], ["chat"]):
        result = run_cli(command[0], str(failing_template_model), *command[1:], *ARGS, input="hi\nagain\n")
        assert result.returncode == 1 and result.stdout == ""
        _one_error_line(result.stderr, "chat template failed: ZeroDivisionError")
    # a plain prompt does not use the template
    result = run_cli("generate", str(failing_template_model), "-p", "hi", *ARGS)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["info", "--json"], 141),
        (["info"], 141),
        (["bench", "MODEL", "-p", "4", "-n", "2"], 141),
        (["--help"], 0),  # argparse ignores errors writing help
        (["--version"], 0),
    ],
    ids=["info --json", "info", "bench", "--help", "--version"],
)
def test_a_closed_stdout_ends_any_command_quietly(args, status, tiny_model, native_lib_dir):
    """`cpullm info --json | head -c 10`: the reader went away; no error message, no traceback, the
    status of a command killed by SIGPIPE."""
    args = [str(tiny_model) if a == "MODEL" else a for a in args] + (["-r", "1"] if "bench" in args else [])
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    env = dict(os.environ, CPULLM_LIB_DIR=str(native_lib_dir), PYTHONPATH=str(REPO / "engine"))
    try:
        command = [sys.executable, "-m", "cpullm", *args]
        done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == b""
    assert done.returncode == status


def test_counts_are_pluralized(tiny_model, run_cli):
    result = run_cli("generate", str(tiny_model), "-p", "hi", *ARGS, "-v")
    assert result.returncode == 0, result.stderr
    assert "; 1 thread, variant" in result.stderr
    result = run_cli("bench", str(tiny_model), "-p", "4", "-n", "0", "-r", "1", "-t", "1")
    assert result.returncode == 0, result.stderr
    assert "median of 1 repetition after" in result.stdout
