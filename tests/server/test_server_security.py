"""Security options: several API keys and a key file, TLS, CORS origins. One real server on loopback
speaks HTTPS (a self-signed certificate made here with ``openssl``), accepts two keys from flags and
one from a file, and allows one browser origin; the session's default server shows the defaults (no
CORS headers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess, running_server, server_env

from cpullm.server.settings import ServerSettings, SettingsError

MODEL = "tiny-chat"
ORIGIN = "https://app.example.com"
KEYS = ("key-one", "key-two")
FILE_KEY = "key-from-file"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: no certificate for the TLS test")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(folder)
    key_file = folder / "keys.txt"
    key_file.write_text(f"# one key per line\n\n  {FILE_KEY}  \n")
    return cert, key, key_file


@pytest.fixture(scope="module")
def secure_server(native_lib_dir, tiny_server_model, tls_files, tmp_path_factory) -> Iterator[ServerProcess]:
    cert, key, key_file = tls_files
    args = [str(tiny_server_model), "--threads", "1", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
            "--api-key", KEYS[0], "--api-key", KEYS[1], "--api-key-file", str(key_file),
            "--allowed-origins", ORIGIN]  # fmt: skip
    log = tmp_path_factory.mktemp("secure_server") / "server.log"
    with running_server(native_lib_dir, args, log, tls_ca=cert) as s:
        yield s


def _client(server: ServerProcess, key: str) -> openai.OpenAI:
    http = httpx.Client(verify=server.verify, timeout=60)
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, http_client=http)


def test_https_with_every_key(secure_server):
    assert secure_server.base_url.startswith("https://")
    for key in (*KEYS, FILE_KEY):
        out = _client(secure_server, key).completions.create(model=MODEL, prompt="hello", max_tokens=2)
        assert out.usage.completion_tokens == 2
    for bad in ("key-three", KEYS[0] + "x", KEYS[0][:-1], "# one key per line"):
        with pytest.raises(openai.AuthenticationError, match="not valid"):
            _client(secure_server, bad).models.list()
    # the tokenizer routes need a key too; probes and /version do not
    tokenize = httpx.post(
        secure_server.base_url + "/tokenize", json={"prompt": "x"}, verify=secure_server.verify
    )
    assert tokenize.status_code == 401
    for path in ("/health", "/version", "/metrics"):
        assert httpx.get(secure_server.base_url + path, verify=secure_server.verify).status_code == 200


def test_plain_http_and_untrusted_certificates_fail(secure_server):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{secure_server.port}/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(secure_server.base_url + "/health", timeout=5)  # the system's CAs do not know it


def test_cors_allows_only_the_given_origin(secure_server, server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    url = secure_server.base_url + "/v1/chat/completions"
    ok = httpx.options(url, headers={"Origin": ORIGIN, **preflight}, verify=secure_server.verify)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        url, headers={"Origin": "https://evil.example", **preflight}, verify=secure_server.verify
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    models = _client(secure_server, KEYS[0]).models.with_raw_response.list(extra_headers={"Origin": ORIGIN})
    assert models.headers["access-control-allow-origin"] == ORIGIN
    # default: no origin is allowed
    default = httpx.get(server.base_url + "/v1/models", headers={"Origin": ORIGIN}, timeout=10)
    assert default.status_code == 200 and "access-control-allow-origin" not in default.headers


# ---- settings, in process ----
def test_key_settings(tmp_path):
    s = ServerSettings.resolve({"api_key": ["a", "b"]}, {"CPULLM_API_KEY": "env"})
    assert s.api_keys() == ("a", "b")  # the flag's keys replace the environment's
    assert ServerSettings.resolve({}, {"CPULLM_API_KEY": "env"}).api_keys() == ("env",)
    assert ServerSettings.resolve({}, {}).api_keys() == ()
    keys = tmp_path / "keys"
    keys.write_text("k1\n# comment\n\nk2\n")
    assert ServerSettings.resolve({"api_key": ["a"], "api_key_file": str(keys)}, {}).api_keys() == (
        "a",
        "k1",
        "k2",
    )
    origins = ServerSettings.resolve({}, {"CPULLM_ALLOWED_ORIGINS": f"{ORIGIN}, http://localhost:3000"})
    assert origins.allowed_origins == (ORIGIN, "http://localhost:3000")


@pytest.mark.parametrize(
    ("cli", "file_text", "words"),
    [
        ({"api_key": [""]}, None, "empty"),
        ({"api_key": ["two words"]}, None, "printable ASCII"),
        ({"api_key": ["caf\u00e9"]}, None, "printable ASCII"),
        ({}, "# only a comment\n\n", "holds no key"),
        ({}, b"\xff\xfe", "not UTF-8"),
        ({"api_key_file": "/nonexistent/keys"}, None, "cannot be read"),
        ({"allowed_origins": ["app.example.com"]}, None, "allowed_origins"),
        ({"ssl_certfile": "cert.pem"}, None, "both ssl_certfile and ssl_keyfile"),
    ],
)
def test_bad_security_settings_are_named(tmp_path, cli, file_text, words):
    if file_text is not None:
        path = tmp_path / "keys"
        path.write_bytes(file_text if isinstance(file_text, bytes) else file_text.encode())
        cli = {**cli, "api_key_file": str(path)}
    with pytest.raises(SettingsError, match=words):
        ServerSettings.resolve(cli, {})


def test_cli_refuses_a_key_that_does_not_match_the_certificate(native_lib_dir, tiny_server_model, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = _self_signed(tmp_path / "a")
    _, other_key = _self_signed(tmp_path / "b")
    cmd = [sys.executable, "-m", "cpullm", "serve", str(tiny_server_model), "--port", "0",
           "--ssl-certfile", str(cert), "--ssl-keyfile", str(other_key)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=server_env(native_lib_dir), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "could not be loaded" in done.stderr and "Traceback" not in done.stderr
