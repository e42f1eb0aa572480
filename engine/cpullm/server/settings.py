"""Server settings: command-line flag > ``CPULLM_*`` environment variable > default.

``ServerSettings.resolve(cli, environ)`` merges the two sources; ``cli`` holds ``None`` for a flag the
user did not give. A malformed environment value raises ``SettingsError`` naming the variable.
``resolve_model_path(path)`` accepts a ``.gguf`` file or a folder holding exactly one (KServe mounts
the model's storage as a folder at ``/mnt/models``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CPULLM_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names it and says what is expected."""


@dataclass(frozen=True)
class ServerSettings:
    model: str | None = None  # GGUF file or folder; None = the default SmolLM2 model
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None  # None = the model file's stem
    max_num_seqs: int = 16
    kv_cache_gb: float = 1.0
    max_model_len: int | None = None  # None = the model's context length
    threads: int | None = None  # None = the usable cores
    log_level: str = "info"
    # Request and connection limits; see cli_serve's help for why these defaults.
    max_request_bytes: int = 4 << 20
    header_timeout: float = 10.0  # seconds from connecting (or the last answer) to a complete request head
    body_timeout: float = 30.0  # seconds from the request head to the end of its body
    keep_alive_timeout: float = 5.0  # idle seconds before a kept-alive connection is closed
    max_connections: int = 512  # connections and requests in flight; more get 503

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
        if self.max_model_len is not None and self.max_model_len < 2:
            raise SettingsError(f"max_model_len must be at least 2 tokens, got {self.max_model_len}.")
        if self.threads is not None and self.threads < 1:
            raise SettingsError(f"threads must be at least 1, got {self.threads}.")
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
        if self.api_key == "":
            raise SettingsError("api_key is empty; give a non-empty key or leave it unset to disable auth.")


def _text(_: str, raw: str) -> str:
    return raw


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
    """The GGUF file to load: ``model`` itself, or the single ``.gguf`` file inside a folder."""
    path = Path(model)
    if path.is_file():
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
