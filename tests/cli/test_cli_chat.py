"""`cpullm chat` driven through stdin (no terminal): history, /reset, /exit, EOF."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from cpullm.llm import LLM
from cpullm.runtime.sampling import SamplingParams

REPO = Path(__file__).resolve().parents[2]

ARGS = ["--temperature", "0", "-n", "6", "--ignore-eos", "--threads", "1"]
PARAMS = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def api(tiny_model) -> LLM:
    return LLM(tiny_model, threads=1)


def _answer(api: LLM, messages: list[dict[str, str]]) -> str:
    return api.chat(messages, PARAMS)[0].text


def test_conversation_keeps_history_resets_and_exits(tiny_model, api, run_cli):
    stdin = "hello\n\nthe world\n/reset\nthe world\n/exit\nnever answered\n"
    result = run_cli("chat", str(tiny_model), *ARGS, input=stdin)
    assert result.returncode == 0, result.stderr
    first = [{"role": "user", "content": "hello"}]
    a1 = _answer(api, first)
    second = [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "the world"}]
    a2 = _answer(api, second)
    a3 = _answer(api, [{"role": "user", "content": "the world"}])  # after /reset: no history
    assert a2 != a3  # the history changes the answer, so the check below can tell them apart
    assert result.stdout == f"{a1}\n{a2}\n{a3}\n"
    assert "(conversation reset)" in result.stderr
    assert "> " not in result.stdout  # no prompt marker without a terminal


def test_end_of_input_ends_the_session(tiny_model, api, run_cli):
    result = run_cli("chat", str(tiny_model), *ARGS, "--system", "be brief", input="hello")
    assert result.returncode == 0, result.stderr
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert result.stdout == _answer(api, messages) + "\n"


def test_a_conversation_too_long_for_the_context_says_reset(tiny_model, api, run_cli):
    long_line = "hello " * 600  # more tokens than the tiny model's 512-token context
    result = run_cli("chat", str(tiny_model), *ARGS, input=f"{long_line}\nhello\n")
    assert result.returncode == 0, result.stderr
    assert "/reset" in result.stderr and "context" in result.stderr
    # the refused message is dropped, so the next one is answered as a fresh conversation
    assert result.stdout == _answer(api, [{"role": "user", "content": "hello"}]) + "\n"


def _read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
    return out


def test_in_a_terminal_it_prompts_resets_and_ends_on_ctrl_d(tiny_model, native_lib_dir):
    env = dict(os.environ, CPULLM_LIB_DIR=str(native_lib_dir), PYTHONPATH=str(REPO / "engine"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: cpullm chat on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "cpullm", "chat", str(tiny_model), *ARGS], env)
    try:
        banner = _read_until(fd, b"> ")
        assert b"/reset" in banner and banner.endswith(b"> ")
        os.write(fd, b"hello\n")
        assert _read_until(fd, b"\n> ").endswith(b"\n> ")  # the answer, then the prompt again
        os.write(fd, b"/reset\n")
        assert b"(conversation reset)" in _read_until(fd, b"reset)")
        os.write(fd, b"\x04")  # Ctrl-D at the prompt
        _read_until(fd, b"never", timeout=30)  # returns when the child closes the terminal
    finally:
        deadline = time.monotonic() + 30
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # still running: the test fails below, without leaving the child behind
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert done and os.waitstatus_to_exitcode(status) == 0
