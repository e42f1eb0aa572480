"""A chat template is untrusted code: every render is bounded in time and memory, and every error it
raises is a ChatTemplateError. Real templates render exactly as stock Jinja renders them."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from real_chat_templates import CASES

from cpullm.model import template_budget
from cpullm.model.chat_template import (
    SOURCE_MAX_CHARS,
    ChatTemplate,
    ChatTemplateCancelled,
    ChatTemplateError,
    _GenerationTag,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _stock_jinja(source: str) -> jinja2.Template:
    """The environment transformers renders chat templates in, with Jinja's own sandbox only."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag]
    )

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, **kwargs: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize(("name", "source", "messages", "extra"), CASES, ids=[c[0] for c in CASES])
def test_real_templates_render_as_stock_jinja(
    name: str, source: str, messages: list[dict[str, Any]], extra: dict[str, Any], add_generation_prompt: bool
) -> None:
    expected = _stock_jinja(source).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="<s>",
        eos_token="</s>",
        **extra,
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert template.render(messages, add_generation_prompt, **extra) == expected


# Each would take gigabytes (or hours) without the limits; each is refused at the first step over them.
HOSTILE = {
    "output": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "repeat": "{{ 'x' * 1000000000 }}",
    "macro buffer": "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}{% endmacro %}"
    "{{ m() }}",
    "set block": "{% set x %}{% for i in range(100000) %}" + "y" * 10000 + "{% endfor %}{% endset %}{{ x }}",
    "width": "{{ 'x' | center(1000000000) }}",
    "width method": "{{ 'x'.ljust(1000000000) }}",
    "percent width": "{{ '%1000000000d' % 1 }}",
    "format width": "{{ '{:{}}'.format(1, 1000000000) }}",
    "format fields": "{{ ('{0}' * 100000).format('x' * 1000000) }}",
    "shared lists": "{% set ns = namespace(a=['x' * 1000]) %}{% for i in range(40) %}"
    "{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}",
    "join": "{{ range(100000) | join('x' * 1000000) }}",
    "replace": "{% set s = 'x' * 1000000 %}{{ s.replace('', s) }}",
    "indent": "{{ ('\\n' * 1000000) | indent(1000000) }}",
    "tojson indent": "{{ range(1000) | list | tojson(indent=1000000) }}",
    "power": "{{ 2 ** 1000000000 }}",
    "hoard": "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = ns.x + ['x' * 1000] %}"
    "{% endfor %}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_oversized_results_are_refused_quickly_in_bounded_memory(source: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ChatTemplateError, match="chat template was stopped: it "):
            ChatTemplate(source).render(QUESTION)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    # the render may build 64 M characters in all (ASCII here: a byte each); each asks for gigabytes
    assert peak < 100 * 2**20


@pytest.mark.parametrize(
    "source",
    [
        NESTED_LOOPS,
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s if false %}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 1000000 %}{% for x in [1] if x == 1 recursive %}{% set outer = loop %}"
        "{% for i in range(100000) %}{{ outer(s) }}{% endfor %}{% endfor %}",
    ],
    ids=["range", "string", "loop filter", "recursive loop"],
)
def test_endless_loops_stop_at_the_time_limit(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_budget, "RENDER_MAX_SECONDS", 0.3)
    monkeypatch.setattr(template_budget, "RENDER_MAX_STEPS", 10**12)
    start = time.perf_counter()
    with pytest.raises(ChatTemplateError, match=r"stopped: it ran longer than 0\.3 s"):
        ChatTemplate(source).render(QUESTION)
    assert 0.3 <= time.perf_counter() - start < 1.5


def test_loops_stop_at_the_step_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_budget, "RENDER_MAX_STEPS", 10_000)
    with pytest.raises(ChatTemplateError, match="ran more than 10,000 steps"):
        ChatTemplate(NESTED_LOOPS).render(QUESTION)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{{ 1 + 'a' }}", "TypeError"),
        ("{{ 2.0 ** 100000 }}", "OverflowError"),
        ("{{ range(10 ** 9) | list }}", "OverflowError"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "RecursionError"),
        ("{{ messages[5] + 1 }}", "rejected the messages: list object has no element 5"),
        ("{{ none.x() }}", "rejected the messages: 'None' has no attribute 'x'"),
        ("{{ 'x' | sum(start=[]) }}", "sum filter"),
    ],
)
def test_errors_inside_the_template_are_chat_template_errors(source: str, error: str) -> None:
    with pytest.raises(ChatTemplateError, match=error):
        ChatTemplate(source).render(QUESTION)


def test_the_error_message_quotes_the_template_briefly() -> None:
    with pytest.raises(ChatTemplateError) as caught:
        ChatTemplate("{{ raise_exception('x' * 100000) }}").render(QUESTION)
    assert 300 <= len(str(caught.value)) < 500


def test_should_stop_ends_the_render() -> None:
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    start = time.perf_counter()
    with pytest.raises(ChatTemplateCancelled, match="cancelled"):
        ChatTemplate(NESTED_LOOPS).render(QUESTION, should_stop=should_stop)
    assert calls == 4 and time.perf_counter() - start < 0.5


def test_should_stop_is_asked_before_rendering_and_cancels_from_another_thread() -> None:
    template = ChatTemplate(NESTED_LOOPS)
    with pytest.raises(ChatTemplateCancelled):
        template.render(QUESTION, should_stop=lambda: True)
    client_gone = threading.Event()
    threading.Timer(0.1, client_gone.set).start()
    start = time.perf_counter()
    with pytest.raises(ChatTemplateCancelled):
        template.render(QUESTION, should_stop=client_gone.is_set)
    assert time.perf_counter() - start < 0.5


def test_a_render_that_is_never_stopped_completes() -> None:
    template = ChatTemplate("{% for i in range(1000) %}{{ i }}{% endfor %}")
    assert template.render(QUESTION, should_stop=lambda: False) == "".join(map(str, range(1000)))


def test_each_render_has_its_own_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile render in one thread neither stops nor is helped by a render in another."""
    monkeypatch.setattr(template_budget, "RENDER_MAX_SECONDS", 0.5)
    monkeypatch.setattr(template_budget, "RENDER_MAX_STEPS", 10**12)
    good = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}")

    def many_good_renders() -> list[str]:
        return [good.render(QUESTION) for _ in range(200)]

    with ThreadPoolExecutor(2) as pool:
        hostile = pool.submit(ChatTemplate(NESTED_LOOPS).render, QUESTION)
        assert pool.submit(many_good_renders).result() == [QUESTION[0]["content"]] * 200
        with pytest.raises(ChatTemplateError, match="ran longer than"):
            hostile.result()


def test_a_template_too_long_to_compile_quickly_is_refused() -> None:
    start = time.perf_counter()
    with pytest.raises(ChatTemplateError, match=f"is {SOURCE_MAX_CHARS + 1:,} characters long"):
        ChatTemplate(("{{ x }}" * SOURCE_MAX_CHARS)[: SOURCE_MAX_CHARS + 1])
    assert time.perf_counter() - start < 0.1


def test_a_broken_template_still_serves_completions_and_refuses_chat(tmp_path, native_lib_dir, monkeypatch):
    """The template is compiled on first chat use: plain generation works, chat names the fault."""
    from tiny_gguf import TinySpec, write_tiny_gguf

    monkeypatch.setenv("CPULLM_LIB_DIR", str(native_lib_dir))
    from cpullm import LLM, SamplingParams
    from cpullm.model.chat_template import ChatTemplateError

    path = write_tiny_gguf(tmp_path / "broken.gguf", TinySpec(chat_template="{% for x in %}"))
    llm = LLM(path, threads=1)
    (out,) = llm.generate(["hello"], SamplingParams(max_tokens=2, temperature=0.0))
    assert len(out.token_ids) == 2
    with pytest.raises(ChatTemplateError):
        llm.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))
