"""The `cpullm` command (argparse: the engine wheel stays free of CLI frameworks).

Subcommands register themselves in `SUBCOMMANDS`: (name, help, add_arguments, run(args) -> exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cpullm import __version__, env
from cpullm.cli import bench, chat, generate, serve
from cpullm.cli.common import stdout_closed
from cpullm.native import eager
from cpullm.server import settings as server_settings


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--selftest", action="store_true", help="also run the variant's kernel self-test")


def _info(args: argparse.Namespace) -> int:
    from cpullm.cli import info

    return info.main(as_json=args.json, selftest=args.selftest)


Subcommand = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
# Commands that can explain a refused variant; every other command needs a loaded variant.
EXPLAINS_REFUSAL = {"info"}
SUBCOMMANDS: list[Subcommand] = [
    ("info", "show the native variant loaded, why, and this CPU's usable features", _info_arguments, _info),
    generate.COMMAND,
    chat.COMMAND,
    bench.COMMAND,
    serve.COMMAND,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpullm", description="CPU inference engine for GGUF models")
    parser.add_argument("--version", action="version", version=f"cpullm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, run in SUBCOMMANDS:
        child = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(child)
        child.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed stdout is handled below
        return status
    except BrokenPipeError:  # stdout closed early (`cpullm info --json | head -c 10`): stop quietly
        return stdout_closed()


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:  # --help, --version, a usage error: argparse has printed what it had to
        sys.stdout.flush()
        raise
    for warning in env.unknown(also_known=server_settings.env_names()):
        print(f"cpullm: warning: {warning}", file=sys.stderr)
    if eager.import_error is not None and args.command not in EXPLAINS_REFUSAL:
        print(f"cpullm: {eager.import_error}", file=sys.stderr)
        return 1
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
