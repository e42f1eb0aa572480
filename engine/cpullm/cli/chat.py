"""`cpullm chat [MODEL]`: an interactive conversation, answers streamed as they are produced.

Each line typed is a user message; the whole conversation goes through the model's chat template for
every answer, so the model sees the history. ``/reset`` starts over (keeping ``--system``), ``/exit``
(or Ctrl-D at the prompt) ends. Ctrl-C while an answer streams stops that answer; at the prompt it
ends the session. Without a terminal (stdin piped) no prompt marker is printed, so the output is only
the answers, one per line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from cpullm.cli.common import (
    add_model_argument,
    add_sampling_arguments,
    add_thread_arguments,
    checked_text,
    complete,
    fail,
    keep_undecodable_stdin,
    load_llm,
    sampling_params,
    user_errors_exit_1,
)

HELP = "chat with a model interactively (streaming; /reset, /exit)"
COMMANDS = "commands: /reset (forget the conversation), /exit (or Ctrl-D), /help"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--system", default=None, help="a system message that starts the conversation")
    add_sampling_arguments(parser, max_tokens=512)
    add_thread_arguments(parser)


def _lines(interactive: bool) -> Iterator[str]:
    """The user's lines; ends on EOF, and on Ctrl-C at the prompt."""
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()
            return
        if not interactive and not line:
            return  # EOF
        yield line.rstrip("\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@user_errors_exit_1
def run(args: argparse.Namespace) -> int:
    from cpullm.model.chat_template import ChatTemplateError  # imports Jinja: not at `cpullm` start-up

    if args.system is not None:
        checked_text(args.system, "the --system message")
    params = sampling_params(args)
    interactive = sys.stdin.isatty()
    keep_undecodable_stdin()
    llm = load_llm(args)
    start = [{"role": "system", "content": args.system}] if args.system is not None else []
    messages = list(start)
    if interactive:
        print(f"cpullm chat: {llm.engine.model_file.gguf.path.name}; {COMMANDS}", file=sys.stderr)
    for line in _lines(interactive):
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(start)
            print("(conversation reset)", file=sys.stderr)
            continue
        if text == "/help":
            print(COMMANDS, file=sys.stderr)
            continue
        try:
            checked_text(line, "that line", "it was skipped; type it again as UTF-8 text")
        except ValueError as error:
            print(f"cpullm: {error}.", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": line})
        try:
            prompt_ids = llm.encode_chat(messages)
            answer = complete(llm, prompt_ids, params, on_text=_write)
        except ChatTemplateError as error:  # the model's template fails: no later message would fare better
            return fail(error)
        except ValueError as error:  # e.g. the conversation no longer fits the context
            messages.pop()
            print(f"cpullm: {error}. Type /reset to start a new conversation.", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # before the answer started: forget the message
            messages.pop()
            print("\n(answer stopped)", file=sys.stderr)
            continue
        _write("\n")
        messages.append({"role": "assistant", "content": answer.text})
        if answer.finish_reason == "interrupted":
            print("(answer stopped)", file=sys.stderr)
    return 0


COMMAND = ("chat", HELP, add_arguments, run)
