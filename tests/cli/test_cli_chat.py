"""`cpullm chat` driven through stdin (no terminal): history, /reset, /exit, EOF."""

from __future__ import annotations

import pytest

from cpullm.llm import LLM
from cpullm.sampling import SamplingParams

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
