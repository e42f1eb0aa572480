"""`cpullm generate [MODEL] -p PROMPT`: complete one prompt, streaming the text to stdout.

``--chat`` sends the prompt as one user message through the model's chat template (with ``--system``
first, if given). ``--json`` prints one JSON object instead, when the completion is done:

    {"text", "finish_reason", "prompt_tokens", "completion_tokens", "model", "variant", "threads",
     "load_s", "first_token_s", "total_s", "decode_tokens_per_s"}
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cpullm.cli.common import (
    add_model_argument,
    add_sampling_arguments,
    add_thread_arguments,
    checked_text,
    complete,
    load_llm,
    plural,
    read_stdin,
    sampling_params,
    user_errors_exit_1,
    variant_name,
)

HELP = "complete a prompt (streams the text; --chat applies the model's chat template)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("-p", "--prompt", required=True, help="the prompt text; '-' reads it from stdin")
    parser.add_argument(
        "--chat", action="store_true", help="send the prompt as one user message through the chat template"
    )
    parser.add_argument("--system", default=None, help="with --chat: a system message before the prompt")
    add_sampling_arguments(parser, max_tokens=256)
    add_thread_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object when done")
    parser.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@user_errors_exit_1
def run(args: argparse.Namespace) -> int:
    if args.system is not None and not args.chat:
        raise ValueError("--system needs --chat (it is a chat message)")
    if args.prompt == "-":
        prompt = read_stdin("the prompt on stdin")
    else:
        prompt = checked_text(args.prompt, "the prompt")
    if args.system is not None:
        checked_text(args.system, "the --system message")
    for stop in args.stop:
        checked_text(stop, "the --stop text")
    params = sampling_params(args)
    start = time.perf_counter()
    llm = load_llm(args)
    load_s = time.perf_counter() - start
    if args.chat:
        messages = [{"role": "system", "content": args.system}] if args.system is not None else []
        prompt_ids = llm.encode_chat([*messages, {"role": "user", "content": prompt}])
    else:
        prompt_ids = llm.encode(prompt)
    answer = complete(llm, prompt_ids, params, on_text=None if args.json else _write)
    if args.json:
        print(
            json.dumps(
                {
                    "text": answer.text,
                    "finish_reason": answer.finish_reason,
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                    "model": str(llm.engine.model_file.gguf.path),
                    "variant": variant_name(),
                    "threads": llm.engine.threads,
                    "load_s": round(load_s, 4),
                    "first_token_s": round(answer.first_token_s, 4),
                    "total_s": round(answer.total_s, 4),
                    "decode_tokens_per_s": round(answer.decode_tokens_per_s, 2),
                },
                ensure_ascii=False,
            )
        )
    else:
        _write("\n")
    if args.verbose:
        print(
            f"cpullm: {plural(answer.prompt_tokens, 'prompt token')}, {answer.completion_tokens} generated "
            f"({answer.finish_reason}); load {load_s:.2f} s, first token {answer.first_token_s:.3f} s, "
            f"decode {answer.decode_tokens_per_s:.1f} tok/s; {plural(llm.engine.threads, 'thread')}, "
            f"variant {variant_name()}",
            file=sys.stderr,
        )
    return 130 if answer.finish_reason == "interrupted" else 0


COMMAND = ("generate", HELP, add_arguments, run)
