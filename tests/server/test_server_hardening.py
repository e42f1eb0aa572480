"""Regression tests of the red team's findings (issue 10): every byte of a request is untrusted.

- a 10 MB body is a 413 at once (from Content-Length, or while a chunked body streams in), and
  ``/health`` keeps answering meanwhile; a prompt far over the context is refused unread;
- lone UTF-16 surrogates anywhere in the JSON, and bodies that are not UTF-8, are 400s;
- OpenAI's parameter types (strict booleans and numbers) and ranges;
- slow or idle clients are closed (request-head and body deadlines), connections are capped;
- a chat template that raises is a 400.

Most tests use the session's default server; the deadline and template tests use one more server
with short deadlines, a connection cap and a template that raises.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from gguf import GGMLQuantizationType as QT
from server_process import TINY_CONTEXT, ServerProcess, running_server
from tiny_gguf import CHATML_WITH_SYSTEM, TinySpec, write_tiny_gguf

from cpullm.model.gguf_file import GGUFFile
from cpullm.model.tokenizer import Tokenizer
from cpullm.server.errors import APIError
from cpullm.server.openai_api import _max_tokens
from cpullm.server.prompt_limits import ContextBoundTokenizer, max_bytes_per_token
from cpullm.server.request_guard import MAX_JSON_VALUES, count_json_values

MODEL = "tiny-chat"
MAX_REQUEST_BYTES = 4 << 20  # the default
TEN_MB = 10 << 20
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
RAISING_TEMPLATE = "{% if messages[0]['role'] == 'boom' %}{{ raise_exception('boom is no role') }}{% endif %}"


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _raw(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 answer with a Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


class HealthProbe:
    """Polls /health from a thread while a test runs; ``worst`` is the slowest answer in seconds
    (infinite if one failed or none came)."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.base_url + "/health"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - start if ok else float("inf"))
                time.sleep(0.02)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("inf"))

    def __enter__(self) -> HealthProbe:
        # Wait for a first answer: on a loaded machine the client's first connection alone can take
        # longer than a fast test body, which would leave no sample at all.
        self._thread.start()
        self._wait_for_samples(1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._wait_for_samples(len(self.latencies) + 1)  # one more answer, asked after the test's work
        self._stop.set()
        self._thread.join(15)

    def _wait_for_samples(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.latencies) < count and time.monotonic() < deadline:
            time.sleep(0.01)


# ---- D1: body size, and prompts far over the context ----
def test_content_length_over_the_limit_is_413_before_the_body(server):
    with HealthProbe(server) as probe, _raw(server) as sock:
        start = time.perf_counter()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % TEN_MB)  # fmt: skip
        status, body = _read_response(sock)
        elapsed = time.perf_counter() - start
    assert status == 413 and elapsed < 1.0
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and str(MAX_REQUEST_BYTES) in error["message"]
    assert "--max-request-bytes" in error["message"]
    assert probe.worst < 1.0, probe.latencies


def test_chunked_body_is_cut_off_at_the_limit(server):
    """The 413 comes while the body streams in, once the count passes the limit: not after 10 MB."""
    chunk = b"x" * 65536
    sent = 0
    with HealthProbe(server) as probe, _raw(server) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        start = time.perf_counter()
        answered = False
        while sent < TEN_MB and not answered:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            wait = 0.0 if sent < MAX_REQUEST_BYTES else 0.05
            answered = bool(select.select([sock], [], [], wait)[0])
        elapsed = time.perf_counter() - start
        assert answered, "no answer to a 10 MB chunked body"
        status, body = _read_response(sock)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert sent < MAX_REQUEST_BYTES + (2 << 20), f"the server read {sent} bytes before it answered"
    assert elapsed < 3.0
    assert probe.worst < 1.0, probe.latencies


def test_client_that_writes_the_whole_body_first_still_reads_the_413(http):
    error = _error(
        http.post("/v1/completions", content=b" " * TEN_MB, headers={"content-type": "application/json"}), 413
    )
    assert error["code"] == "request_too_large"
    assert http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 1}).status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/completions", {"prompt": "hello world " * 250_000}, "prompt"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hello world " * 250_000}]},
            "messages",
        ),
    ],
)
def test_prompt_far_over_the_context_is_refused_without_tokenizing(server, http, route, body, param):
    """3 MB of text: tokenizing it would take seconds; the length alone shows it cannot fit."""
    with HealthProbe(server) as probe:
        start = time.perf_counter()
        error = _error(http.post(route, json=body), 400)
        elapsed = time.perf_counter() - start
    assert error["code"] == "context_length_exceeded" and error["param"] == param
    assert (
        f"maximum context length is {TINY_CONTEXT} tokens" in error["message"]
        and "at least" in error["message"]
    )
    assert elapsed < 1.0
    assert probe.worst < 1.0, probe.latencies


def test_bodies_of_many_small_values_are_refused_before_they_are_parsed(server, http):
    """The body is parsed and validated on the event loop, at a cost per value: 4 MB of ``[],`` is 1.4
    million lists. Such bodies are refused from a count of their commas, brackets and braces; text
    full of them is one value and passes on (here to the context check)."""
    many = [
        ("/v1/completions", {"prompt": [7] * 690_000}, "too_many_values"),
        ("/v1/completions", {"prompt": [[7]] * 300_000}, "too_many_values"),
        ("/v1/completions", {"prompt": "x", "user": [[]] * 1_000_000}, "too_many_values"),
        ("/v1/completions", {"prompt": "[a, {b}], " * 200_000}, "context_length_exceeded"),
        ("/v1/completions", {"prompt": [7] * 100_000}, "context_length_exceeded"),
        ("/v1/completions", {"prompt": [[7]] * 300}, "invalid_request"),  # over MAX_CHOICES
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}] * 20_000},
            "invalid_request",
        ),
    ]
    with HealthProbe(server) as probe:
        for route, body, code in many:
            error = _error(http.post(route, json=body), 400)
            assert error["code"] == code, error
            if code == "too_many_values":
                assert "JSON values" in error["message"] and str(MAX_JSON_VALUES) in error["message"]
    assert probe.worst < 1.0, probe.latencies


def test_json_values_are_counted_outside_strings_only():
    assert count_json_values(b'{"a": [1, 2, 3], "b": {"c": null}}') == 6
    text = json.dumps({"prompt": ',[{"\\' * (MAX_JSON_VALUES // 2), "n": [1, 2]}).encode()
    assert count_json_values(text) == 4  # the object's two members, the list's two items
    ids = json.dumps({"prompt": [1] * (MAX_JSON_VALUES + 5)}).encode()
    assert count_json_values(ids) == MAX_JSON_VALUES + 5 + 1
    strings = json.dumps([""] * (4 * MAX_JSON_VALUES + 8)).encode()
    assert count_json_values(strings) > MAX_JSON_VALUES


def test_the_length_bound_never_exceeds_the_real_token_count(tiny_server_model):
    tokenizer = Tokenizer.from_gguf(GGUFFile.open(tiny_server_model))
    per_token = max_bytes_per_token(tokenizer, "default")
    assert per_token == max(len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size))
    texts = ["<|im_start|>" * 50, "hello world " * 40, " " * 700, "日本語のテキスト" * 30, "capital\n" * 60]
    for text in texts:
        n_bytes = len(text.encode())
        assert len(tokenizer.encode(text, add_special=False, parse_special=True)) >= -(-n_bytes // per_token)
    bounded = ContextBoundTokenizer(tokenizer, 100, per_token)
    assert bounded.encode("a" * (99 * per_token)) == tokenizer.encode("a" * (99 * per_token))  # may fit
    with pytest.raises(APIError, match="at least 100 tokens") as info:
        bounded.encode("a" * (99 * per_token + 1))
    assert info.value.status == 400


def test_prompt_length_message_counts_one_token_as_singular():
    with pytest.raises(APIError, match="the prompt has 1 token;"):
        _max_tokens(None, 1, 1, None)
    with pytest.raises(APIError, match="the prompt has 3 tokens;"):
        _max_tokens(None, 3, 2, None)


# ---- D2: lone surrogates and invalid UTF-8 ----
LONE = "\ud800"
SURROGATE_FIELDS = [
    # (route, body with LONE somewhere, the param the error names)
    ("/v1/completions", {"prompt": LONE}, "prompt"),
    ("/v1/completions", {"prompt": ["ok", "a\udc00b"]}, "prompt.1"),
    ("/v1/completions", {"prompt": "x", "model": LONE}, "model"),
    ("/v1/completions", {"prompt": "x", "stop": LONE}, "stop"),
    ("/v1/completions", {"prompt": "x", "stop": ["a", "\ude00\ud83d"]}, "stop.1"),
    ("/v1/completions", {"prompt": "x", "user": LONE}, "user"),
    ("/v1/completions", {"prompt": "x", "suffix": LONE}, "suffix"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONE}]}, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": LONE, "content": "x"}]}, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "name": LONE}]},
     "messages.0.name"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
     "messages.0.content.0.text"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {"name": LONE}}]},
     "tools.0.function.name"),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": LONE}}, "response_format.type"),
    ("/v1/chat/completions", {**CHAT, "an_unknown_field": {"deep": [1, LONE]}}, "an_unknown_field.deep.1"),
    ("/v1/chat/completions", {**CHAT, LONE: 1}, "\\ud800"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "param"), SURROGATE_FIELDS)
def test_lone_surrogate_anywhere_is_400_naming_the_field(http, route, body, param):
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as a \\uXXXX escape
    response = http.post(route, content=raw, headers={"content-type": "application/json"})
    error = _error(response, 400)
    assert error["param"] == param and error["code"] == "invalid_unicode"
    assert f"'{param}'" in error["message"] and "surrogate" in error["message"]


def test_surrogate_pairs_and_upper_case_escapes_are_read_correctly(http):
    pair = json.dumps({"prompt": "smile \U0001f600", "max_tokens": 1}).encode()
    assert b"\\ud83d\\ude00" in pair
    assert (
        http.post("/v1/completions", content=pair, headers={"content-type": "application/json"}).status_code
        == 200
    )
    upper = b'{"prompt": "x\\uD800", "max_tokens": 1}'
    response = http.post("/v1/completions", content=upper, headers={"content-type": "application/json"})
    assert _error(response, 400)["param"] == "prompt"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": "\xff"}',
        b'{"prompt": "\xed\xa0\x80"}',
        b'{"prompt": "\xc0\xaf"}',
        b'{"prompt": "ab\xe6\x97"}',
    ],
    ids=["0xff", "encoded-surrogate", "overlong", "truncated"],
)
def test_body_that_is_not_utf8_is_400(http, raw):
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    error = _error(response, 400)
    assert error["code"] == "invalid_encoding" and "UTF-8" in error["message"]


def test_no_bad_body_made_a_500(server, http):
    assert http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 1}).status_code == 200
    metrics = server.metrics()
    assert not [k for k in metrics if k.startswith("cpullm_requests_total") and 'status="5' in k]
    assert "Traceback" not in server.log()


# ---- D11: types and ranges ----
BAD_PARAMETERS = [
    ("temperature", 99), ("temperature", 1e308), ("temperature", 2.01), ("temperature", "0.5"),
    ("top_p", 1.5), ("top_p", 0), ("presence_penalty", -2.5), ("frequency_penalty", 3),
    ("max_tokens", 0), ("max_tokens", "5"), ("max_tokens", 5.0), ("max_tokens", 10**30),
    ("max_completion_tokens", 0), ("top_logprobs", 21), ("seed", 2**64), ("n", 0), ("n", True),
    ("stream", "yes"), ("stream", 1), ("stream", "true"), ("logprobs", "true"), ("ignore_eos", 1),
    ("add_generation_prompt", "no"), ("skip_special_tokens", 0), ("stream_options", {"include_usage": "yes"}),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BAD_PARAMETERS)
def test_parameters_out_of_openai_types_and_ranges_are_400(http, field, value):
    body = {**CHAT, "stream": True, field: value} if field == "stream_options" else {**CHAT, field: value}
    error = _error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] is not None and error["param"].split(".")[0] == field, error


def test_json_nested_too_deeply_is_400_saying_so(http):
    raw = b'{"prompt": "x", "user": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert "too deeply" in _error(response, 400)["message"]


def test_non_finite_numbers_are_400(http):
    raw = b'{"prompt": "x", "temperature": NaN}'
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert _error(response, 400)["param"] == "temperature"


def test_edges_of_the_ranges_are_accepted(http):
    edges = [
        {"temperature": 2, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2, "seed": 2**63 - 1},
        {"temperature": 0, "top_logprobs": 20, "logprobs": True, "seed": -(2**63)},
    ]
    for extra in edges:
        assert http.post("/v1/chat/completions", json={**CHAT, **extra}).status_code == 200


def test_stop_rules_are_the_same_for_a_string_and_a_list(http):
    for stop in ("", [""]):
        error = _error(http.post("/v1/completions", json={"prompt": "x", "stop": stop}), 400)
        assert error["param"] == "stop" and "non-empty" in error["message"]
    for stop in ("x", ["x"], []):
        assert (
            http.post("/v1/completions", json={"prompt": "x", "max_tokens": 1, "stop": stop}).status_code
            == 200
        )


def test_too_many_prompts_or_messages_in_one_request_is_400(http):
    error = _error(http.post("/v1/completions", json={"prompt": ["x"] * 129}), 400)
    assert error["param"] == "prompt" and "at most 128 prompts" in error["message"]
    error = _error(http.post("/v1/chat/completions", json={"messages": [{"role": "user"}] * 8193}), 400)
    assert error["param"] == "messages" and "at most 8192 messages" in error["message"]


@pytest.mark.parametrize(
    ("prompt", "words"),
    [([1, "a"], "item 1: Input should be a valid integer"), (["a", 1], "item 1: Input should be a valid "
     "string"), ([[1], [True]], "item 1.0"), (True, "send a string"), ([None], "send a string")],
)  # fmt: skip
def test_prompt_of_mixed_forms_is_400_naming_the_item(http, prompt, words):
    error = _error(http.post("/v1/completions", json={"prompt": prompt}), 400)
    assert error["param"] == "prompt" and words in error["message"]


# ---- D7: deadlines and the connection cap; template errors ----
@pytest.fixture(scope="module")
def strict_server(native_lib_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """Deadlines of 1 s, at most 6 connections, a chat template that raises for role 'boom'."""
    folder = tmp_path_factory.mktemp("strict_server")
    template = RAISING_TEMPLATE + CHATML_WITH_SYSTEM
    model = write_tiny_gguf(
        folder / "tiny-strict.gguf", TinySpec(weight_type=QT.Q8_0, chat_template=template)
    )
    args = [str(model), "--threads", "1", "--header-timeout", "1", "--body-timeout", "1"]
    env = {"CPULLM_MAX_CONNECTIONS": "6", "CPULLM_KEEP_ALIVE_TIMEOUT": "1"}
    with running_server(native_lib_dir, args, folder / "server.log", env) as s:
        yield s


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (BlockingIOError, TimeoutError):
        return False


def test_slow_header_clients_are_closed(strict_server):
    """20 clients sending one header byte every 0.3 s: all closed about 1 s after they connected."""
    socks = [_raw(strict_server) for _ in range(20)]
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    start = time.monotonic()
    closed = [False] * len(socks)
    for i in range(len(head)):
        if all(closed) or time.monotonic() - start > 5:
            break
        for n, sock in enumerate(socks):
            if closed[n]:
                continue
            try:
                sock.send(head[i : i + 1])
            except OSError:
                closed[n] = True
                continue
            sock.settimeout(0.0)
            closed[n] = _closed_by_server(sock)
        time.sleep(0.3)
    elapsed = time.monotonic() - start
    for sock in socks:
        sock.close()
    assert all(closed), f"{closed.count(False)} slow clients still connected after {elapsed:.1f} s"
    assert elapsed < 3.0


def test_idle_connection_is_closed_and_a_prompt_client_is_served(strict_server):
    with _raw(strict_server) as idle, _raw(strict_server) as quick:
        quick.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(quick)[0] == 200
        idle.settimeout(3.0)
        start = time.monotonic()
        assert idle.recv(1) == b"" and time.monotonic() - start < 2.5


def test_slow_body_is_408(strict_server):
    with _raw(strict_server) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")  # fmt: skip
        start = time.monotonic()
        status, body = _read_response(sock, timeout=5)
        assert status == 408 and time.monotonic() - start < 3.0
        assert json.loads(body)["error"]["code"] == "request_timeout"
        sock.settimeout(3.0)
        assert sock.recv(1) == b""  # and the connection is closed


def test_connections_over_the_cap_get_503(strict_server):
    idle = [_raw(strict_server) for _ in range(6)]
    try:
        response = httpx.get(strict_server.base_url + "/health", timeout=5)
        assert response.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(strict_server.base_url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover after the idle clients left"
        time.sleep(0.1)


def test_chat_template_error_is_400(strict_server):
    url = strict_server.base_url + "/v1/chat/completions"
    response = httpx.post(url, json={"messages": [{"role": "boom", "content": "x"}]}, timeout=30)
    error = _error(response, 400)
    assert error["param"] == "messages" and "boom is no role" in error["message"]
    assert httpx.post(url, json=CHAT, timeout=30).status_code == 200
    assert "Traceback" not in strict_server.log()


def test_limit_settings_are_checked():
    from cpullm.server.settings import ServerSettings, SettingsError

    s = ServerSettings.resolve(
        {"header_timeout": 3.0}, {"CPULLM_MAX_REQUEST_BYTES": "2048", "CPULLM_HEADER_TIMEOUT": "9"}
    )
    assert (s.header_timeout, s.max_request_bytes, s.body_timeout) == (3.0, 2048, 30.0)
    bad = (
        ("HEADER_TIMEOUT", "0"),
        ("BODY_TIMEOUT", "nan"),
        ("MAX_REQUEST_BYTES", "10"),
        ("MAX_CONNECTIONS", "0"),
    )
    for name, value in bad:
        with pytest.raises(SettingsError, match=name.lower()):
            ServerSettings.resolve({}, {f"CPULLM_{name}": value})
