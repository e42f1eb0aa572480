"""``cpullm serve [MODEL]``: the OpenAI-compatible HTTP server (needs the ``server`` extra).

Every flag has a ``CPULLM_*`` environment variable (``--max-num-seqs`` -> ``CPULLM_MAX_NUM_SEQS``,
``MODEL`` -> ``CPULLM_MODEL``); the command line wins over the environment, which wins over the
defaults. The server listens at once and loads the model in the background: ``/health`` answers
503 until it is ready. A model that fails to load stops the server with exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpullm.cli.common import add_quantization_argument
from cpullm.server.settings import ServerSettings, SettingsError

_FLAGS = (
    ("--host", str, "address to listen on (default 127.0.0.1; 0.0.0.0 in containers)"),
    ("--port", int, "port to listen on (default 8000)"),
    ("--api-key", str, "require 'Authorization: Bearer KEY' on the API routes; repeat the flag to accept "
     "several keys (the env variable holds one)"),
    ("--api-key-file", str, "a file of accepted API keys, one per line (# comments and blank lines skipped)"),
    ("--ssl-certfile", str, "PEM certificate (chain) to serve HTTPS; needs --ssl-keyfile"),
    ("--ssl-keyfile", str, "PEM private key of --ssl-certfile (unencrypted)"),
    ("--allowed-origins", str, "an origin browsers may call the API from (CORS), e.g. "
     "https://app.example.com, or *; repeat for several (env: comma-separated); default none"),
    ("--served-model-name", str, "model name clients send (default: the model file's name without .gguf)"),
    ("--max-num-seqs", int, "most sequences decoded together in one step (default 16)"),
    ("--kv-cache-gb", float, "memory cap of the paged KV cache in GiB (default 1.0)"),
    ("--kv-cache-dtype", str, "KV cache element type: f16 (default), f32, or q8_0 (int8 with a scale per 32 "
     "values: 53 %% of f16's memory, for long contexts and many sequences)"),
    ("--max-model-len", int, "context length limit in tokens (default: the model's)"),
    ("--threads", int, "compute threads (default: the usable cores, cgroup quota included)"),
    ("--log-level", str, "debug, info, warning or error (default info)"),
    ("--max-request-bytes", int, "largest request body in bytes, else 413 (default {default} = 4 MiB: a "
     "128K-token context is under 1 MiB of JSON, as text or as token ids)"),
    ("--header-timeout", float, "seconds a client has to send a complete request head after it connects "
     "or after its previous answer, else the connection is closed (default {default})"),
    ("--body-timeout", float, "seconds a client has to send the request body after its head, else 408 "
     "(default {default})"),
    ("--keep-alive-timeout", float, "seconds an idle kept-alive connection stays open (default {default})"),
    ("--max-connections", int, "most connections and requests at once; more get 503 (default {default}, "
     "well under the common 1024 open-file limit)"),
)  # fmt: skip


_REPEATABLE = ("--api-key", "--allowed-origins")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="GGUF file, a folder holding one, or a Hugging Face model folder (config.json, tokenizer.json, "
        "*.safetensors) (env CPULLM_MODEL; default: the SmolLM2 default model)",
    )
    add_quantization_argument(parser, "; env CPULLM_QUANTIZATION")
    for flag, kind, help_text in _FLAGS:
        name = flag.removeprefix("--").replace("-", "_")
        help_text = help_text.format(default=getattr(ServerSettings, name, None))
        action = "append" if flag in _REPEATABLE else "store"
        parser.add_argument(
            flag, type=kind, default=None, action=action, help=f"{help_text}; env CPULLM_{name.upper()}"
        )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cpullm.server.app import create_app
        from cpullm.server.http_protocol import uvicorn_config
    except ImportError as e:
        print(
            f"cpullm serve: the server needs its extra packages ({e.name} is missing); "
            "install them with: pip install 'cpullm[server]'",
            file=sys.stderr,
        )
        return 1
    cli = {name: getattr(args, name, None) for name in ServerSettings.__dataclass_fields__}
    try:
        settings = ServerSettings.resolve(cli)
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
        )
        exit_code = 0
        server: uvicorn.Server | None = None

        def on_load_failure(error: BaseException) -> None:
            nonlocal exit_code
            exit_code = 1
            print(f"cpullm serve: the model could not be loaded: {error}", file=sys.stderr)
            if server is not None:
                server.should_exit = True

        app = create_app(settings, on_load_failure=on_load_failure)
    except (SettingsError, ValueError) as e:
        print(f"cpullm serve: {e}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()
    return exit_code


COMMAND = ("serve", "serve a model over an OpenAI-compatible HTTP API", add_arguments, run)
