"""Chat template rendering: transformers-compatible Jinja environment and the ChatML fallback."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cpullm.model.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from cpullm.model.gguf_file import GGUFFile
from cpullm.model.tokenizer import Tokenizer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _from_file(path: Path) -> tuple[ChatTemplate, Tokenizer]:
    gguf_file = GGUFFile.open(path)
    tok = Tokenizer.from_gguf(gguf_file)
    return ChatTemplate.from_gguf(gguf_file, tok), tok


def test_file_template_adds_default_system_turn(tiny_llama: Path) -> None:
    template, _ = _from_file(tiny_llama)
    assert not template.is_fallback
    assert template.render(QUESTION) == (
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *QUESTION]
    assert template.render(with_system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    )


def test_chatml_fallback_without_template(tiny_spm: Path) -> None:
    template, _ = _from_file(tiny_spm)
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    assert template.render(QUESTION) == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render(QUESTION, add_generation_prompt=False).endswith("<|im_end|>\n")


def test_trim_and_lstrip_blocks_like_transformers() -> None:
    source = (
        "{% for m in messages %}\n    {% if m['role'] == 'user' %}\n[{{ m['content'] }}]\n"
        "    {% endif %}\n{% endfor %}"
    )
    template = ChatTemplate(source)
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "b"},
    ]
    assert template.render(messages) == "[a]\n[b]\n"


def test_special_token_variables_and_loop_controls() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m['content'] }}{% endfor %}{{ eos_token }}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert (
        template.render([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
        == "<s>one</s>"
    )


def test_raise_exception_becomes_a_clear_error() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversations must start with user') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="Conversations must start with user"):
        template.render([{"role": "assistant", "content": "hi"}])
    assert template.render(QUESTION) == ""


def test_tojson_keeps_unicode_and_strftime_now() -> None:
    template = ChatTemplate(
        "{{ messages[0]['content'] | tojson }} {{ tools | tojson(indent=2) }}|{{ strftime_now('%Y') }}"
    )
    rendered = template.render([{"role": "user", "content": "café 😀"}], tools=[{"name": "f"}])
    assert rendered == f'"café 😀" [\n  {{\n    "name": "f"\n  }}\n]|{datetime.now().year}'


def test_sandbox_blocks_mutation_and_internals() -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages.append(1) }}").render(QUESTION)
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render(QUESTION)


def test_syntax_error_is_reported() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ("hello", "must be a list"),
        ([{"content": "hi"}], "no 'role'"),
        ([{"role": "user", "content": 3}], "non-text 'content'"),
        (["hi"], "message 0 is str"),
    ],
)
def test_bad_messages_are_value_errors(messages: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ChatTemplate(None).render(messages)  # type: ignore[arg-type]


def test_encode_parses_special_tokens(tiny_llama: Path) -> None:
    template, tok = _from_file(tiny_llama)
    ids = template.encode(tok, QUESTION)
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> x3, <|im_end|> x2
    assert tok.decode(ids) == template.render(QUESTION)


def test_encode_does_not_double_bos(tiny_spm: Path) -> None:
    _, tok = _from_file(tiny_spm)
    assert tok.add_bos
    template = ChatTemplate("{{ bos_token }}{{ messages[0]['content'] }}", bos_token="<s>")
    ids = template.encode(tok, [{"role": "user", "content": "hello"}])
    assert ids.count(tok.bos_id) == 1 and ids[0] == tok.bos_id
    plain = ChatTemplate("{{ messages[0]['content'] }}")
    assert plain.encode(tok, [{"role": "user", "content": "hello"}])[0] == tok.bos_id


@pytest.mark.slow
def test_smollm2_template(smollm2_path: Path) -> None:
    template, _ = _from_file(smollm2_path)
    # SmolLM2's own template inserts a default system turn when the conversation has none.
    assert template.render(QUESTION) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (template.bos_token, template.eos_token) == ("<|im_start|>", "<|im_end|>")


def test_generation_blocks_render_their_body() -> None:
    source = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
        "A:{{ m['content'] }}{% endgeneration %}{% else %}U:{{ m['content'] }}{% endif %}|{% endfor %}"
    )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert ChatTemplate(source).render(messages) == "U:hi|A:yo|"
