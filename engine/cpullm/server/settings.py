"""Server settings: command-line flag > ``CPULLM_*`` environment variable > default.

``ServerSettings.resolve(cli, environ)`` merges the two sources; ``cli`` holds ``None`` for a flag the
user did not give. A malformed environment value raises ``SettingsError`` naming the variable.

Security settings: ``api_key`` is several keys (``--api-key`` given several times; the environment's
``CPULLM_API_KEY`` is one key), and ``api_key_file`` a file of more, one per line (blank lines and
``#`` comments skipped); a request may use any of them. ``ssl_certfile`` and ``ssl_keyfile`` (PEM)
turn on TLS; both are loaded once at startup, so a wrong path or a key that does not match the
certificate is refused with a sentence before the model loads. ``allowed_origins`` lists the
origins browsers may call the API from (CORS); none by default, ``*`` for any
(``CPULLM_ALLOWED_ORIGINS`` is comma-separated).
``resolve_model_path(path)`` accepts a ``.gguf`` file, a folder holding exactly one (KServe mounts
the model's storage as a folder at ``/mnt/models``), or a Hugging Face model folder (one with a
``config.json``; ``quantization`` then picks the type its weights are converted to at load).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cpullm.runtime.kv_dtypes import DEFAULT_KV_DTYPE, KV_DTYPES

ENV_PREFIX = "CPULLM_"
MAX_KEY_FILE_BYTES = 1 << 20
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names it and says what is expected."""


@dataclass(frozen=True)
class ServerSettings:
    model: str | None = None  # GGUF file or folder; None = the default SmolLM2 model
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: tuple[str, ...] = ()  # a str is taken as one key
    api_key_file: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    allowed_origins: tuple[str, ...] = ()  # CORS; a str is taken as one origin
    served_model_name: str | None = None  # None = the model file's stem
    max_num_seqs: int = 16
    kv_cache_gb: float = 1.0
    kv_cache_dtype: str = DEFAULT_KV_DTYPE  # f16, f32 or q8_0 (runtime/kv_dtypes.py)
    max_model_len: int | None = None  # None = the model's context length
    threads: int | None = None  # None = the usable cores
    quantization: str | None = None  # a Hugging Face folder's weights at load; None = hf_folder's default
    log_level: str = "info"
    # Request and connection limits; see cli_serve's help for why these defaults.
    max_request_bytes: int = 4 << 20
    header_timeout: float = 10.0  # seconds from connecting (or the last answer) to a complete request head
    body_timeout: float = 30.0  # seconds from the request head to the end of its body
    keep_alive_timeout: float = 5.0  # idle seconds before a kept-alive connection is closed
    max_connections: int = 512  # connections and requests in flight; more get 503

    def __post_init__(self) -> None:
        for name in ("api_key", "allowed_origins"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))

    @classmethod
    def resolve(cls, cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServerSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if cli.get(f.name) is not None:
                values[f.name] = cli[f.name]
                continue
            env_name = ENV_PREFIX + f.name.upper()
            raw = environ.get(env_name)
            if raw is not None and raw != "":
                values[f.name] = _PARSERS.get(f.name, _text)(env_name, raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be from 0 to 65535, got {self.port}.")
        if self.max_num_seqs < 1:
            raise SettingsError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}.")
        if self.kv_cache_gb <= 0:
            raise SettingsError(f"kv_cache_gb must be a positive number of GiB, got {self.kv_cache_gb}.")
        if self.kv_cache_dtype not in KV_DTYPES:
            raise SettingsError(
                f"kv_cache_dtype must be one of {', '.join(KV_DTYPES)}; got {self.kv_cache_dtype!r}."
            )
        if self.max_model_len is not None and self.max_model_len < 2:
            raise SettingsError(f"max_model_len must be at least 2 tokens, got {self.max_model_len}.")
        if self.threads is not None and self.threads < 1:
            raise SettingsError(f"threads must be at least 1, got {self.threads}.")
        if self.quantization is not None:
            from cpullm.model.quantizations import QUANTIZATION_TYPES as QUANTIZATIONS

            if self.quantization.lower() not in QUANTIZATIONS:
                raise SettingsError(
                    f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {self.quantization!r}."
                )
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}.")
        if self.max_request_bytes < 1024:
            raise SettingsError(
                f"max_request_bytes must be at least 1024 bytes, got {self.max_request_bytes}."
            )
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise SettingsError(f"{name} must be a number of seconds in (0, 3600], got {value}.")
        if self.max_connections < 1:
            raise SettingsError(f"max_connections must be at least 1, got {self.max_connections}.")
        self.api_keys()
        self.check_tls()
        for origin in self.allowed_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise SettingsError(
                    f"allowed_origins holds {origin!r}; give origins such as https://app.example.com, or *."
                )

    def api_keys(self) -> tuple[str, ...]:
        """Every accepted key: ``api_key`` and the lines of ``api_key_file``; () = no auth."""
        keys = list(self.api_key)
        if self.api_key_file is not None:
            keys += _read_key_file(Path(self.api_key_file))
        for key in keys:
            if not key:
                raise SettingsError("an API key is empty; give non-empty keys, or none to disable auth.")
            if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
                raise SettingsError(
                    "an API key holds a space or a character that is not printable ASCII; clients send it "
                    "in an HTTP header, so use letters, digits and punctuation only."
                )
        return tuple(keys)

    def check_tls(self) -> None:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise SettingsError("TLS needs both ssl_certfile and ssl_keyfile; give the two or neither.")
        if self.ssl_certfile is None:
            return
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as e:
            raise SettingsError(
                f"the TLS certificate {self.ssl_certfile} and key {self.ssl_keyfile} could not be loaded "
                f"({e}); give a PEM certificate and its matching private key (unencrypted)."
            ) from None


def _text(_: str, raw: str) -> str:
    return raw


def _one(_: str, raw: str) -> tuple[str, ...]:
    return (raw,)


def _comma_list(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _read_key_file(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        message = f"the API key file {path} cannot be read ({e.strerror}); check its path."
        raise SettingsError(message) from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise SettingsError(f"the API key file {path} is over 1 MiB; it should hold one key per line.")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SettingsError(f"the API key file {path} is not UTF-8 text; write one key per line.") from None
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise SettingsError(f"the API key file {path} holds no key; write one key per line.")
    return keys


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to a whole number.") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. 1.5.") from None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "api_key": _one,
    "allowed_origins": _comma_list,
    "port": _int,
    "max_num_seqs": _int,
    "max_model_len": _int,
    "threads": _int,
    "kv_cache_gb": _float,
    "max_request_bytes": _int,
    "header_timeout": _float,
    "body_timeout": _float,
    "keep_alive_timeout": _float,
    "max_connections": _int,
}


def env_names() -> list[str]:
    """The server's environment variables: one per setting, ``CPULLM_<FIELD>``."""
    return [ENV_PREFIX + f.name.upper() for f in fields(ServerSettings)]


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """The model to load: ``model`` itself (a file, or a Hugging Face folder), or the single ``.gguf``
    file inside another folder."""
    path = Path(model)
    if path.is_file() or (path / "config.json").is_file():  # a GGUF file or a Hugging Face folder
        return path
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.gguf") if p.is_file())
        if len(found) == 1:
            return found[0]
        if not found:
            raise SettingsError(f"the model folder {path} holds no .gguf file; put the model there.")
        names = ", ".join(str(p.relative_to(path)) for p in found[:5])
        raise SettingsError(f"the model folder {path} holds several .gguf files ({names}); name one of them.")
    raise SettingsError(f"the model {path} does not exist; give the path of a .gguf file or its folder.")


def default_served_name(model_path: Path) -> str:
    name = model_path.name
    return name[: -len(".gguf")] if name.endswith(".gguf") else name
