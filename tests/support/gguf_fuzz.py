"""A seeded mutation fuzzer for GGUF model files: cpullm must load a corrupt file or refuse it clearly.

Model files are untrusted (DESIGN.md, Principles). This module mutates the tiny random models of
``tests/engine/tiny_gguf.py`` and checks that every mutant either loads (and generates a few tokens)
or is refused with one of cpullm's own errors. It is the core of both
``tests/engine/test_engine_fuzz_gguf.py`` (a few hundred cases in ``make test``) and
``benchmarks/fuzz_gguf.py`` (long runs; ``python benchmarks/fuzz_gguf.py --help``).

Cases
-----
Case ``index`` of a campaign with seed ``seed`` is rebuilt from ``random.Random(f"{seed}:{index}")``
alone (its id, ``"seed:index"``): a base model, then one to four mutations from :data:`MUTATORS` —
byte flips and overwrites (header and data), truncation, inserted or deleted bytes, copied chunks,
targeted patches of integer and float metadata (huge, zero, negative, NaN, infinities), of string and
array lengths, value types, tensor ranks, dimensions, types and offsets, and of the tokenizer arrays
(token types, scores, token and merge text, special token ids).

Runner (a fork server)
----------------------
:func:`run_campaign` must run in a fresh, single-threaded interpreter (``main`` sets the thread
variables of numpy's BLAS before anything imports it). It imports cpullm once, then forks one child
per case; the child drops stdout/stderr, sets ``RLIMIT_AS`` (memory) and ``RLIMIT_CPU``, opens the
mutant with :class:`cpullm.llm.LLM`, generates a few tokens greedily and sampled, and reports over a
pipe. The parent kills a child that runs past the wall-clock limit. Outcomes:

``ok``       loaded and generated (``loaded``: loaded, but a context this small leaves no room to)
``refused``  raised a project error: a ``ValueError`` subclass defined in cpullm (``GGUFError``,
             ``ChatTemplateError``, ...)
``signal``   died from a signal (segfault, abort, ...)
``hang``     killed at the time limit (wall clock or CPU)
``memory``   hit the memory limit (``MemoryError``)
``other``    any other exception: a traceback a user would see

The last four are failures; each is reported with its case id, which ``--repro`` reruns in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import select
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAILURES = ("signal", "hang", "memory", "other")
OUTCOMES = ("ok", "loaded", "refused", *FAILURES)

# What a child may use: generous for a tiny model on a loaded 2-core machine, small for a runaway.
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MEMORY_MB = 1024  # address space above the fork server's own
KV_CACHE_GB = 0.004
MAX_MODEL_LEN = 96
PROMPT = "Hello world, the capital of France is 42! héllo 世界 🙂"
MESSAGES = [{"role": "user", "content": "Say hello to the world."}]


# ---------------------------------------------------------------------------------------------
# The layout of a well-formed base file: where every field and string lies, for targeted patches.
# ---------------------------------------------------------------------------------------------

# GGUF value type -> struct format of one element (None: string / array).
_VALUE_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 8: None, 9: None, 10: "Q"}
_VALUE_FORMATS.update({11: "q", 12: "d"})


@dataclass(frozen=True)
class Field:
    offset: int
    fmt: str  # struct format of the field (little-endian)
    role: (
        str  # version | count | strlen | arrlen | vtype | etype | meta | elem | ndims | ne | ttype | toffset
    )
    owner: str  # the metadata key or tensor name it belongs to (elements: "key[i]")


@dataclass
class Layout:
    fields: list[Field] = field(default_factory=list)
    strings: list[tuple[int, int, str]] = field(default_factory=list)  # (offset, length, owner)
    tensor_offsets: dict[str, Field] = field(default_factory=dict)
    header_end: int = 0  # end of the tensor descriptions
    data_offset: int = 0
    alignment: int = 32

    def by_role(self, *roles: str) -> list[Field]:
        return [f for f in self.fields if f.role in roles]

    def meta(self, key: str) -> Field | None:
        return next((f for f in self.fields if f.role == "meta" and f.owner == key), None)


def scan(data: bytes) -> Layout:
    """The layout of a well-formed GGUF v3 file (the fuzzer's own parser, independent of cpullm's)."""
    lay = Layout()
    pos = 4

    def take(fmt: str, role: str, owner: str) -> int | float:
        nonlocal pos
        lay.fields.append(Field(pos, fmt, role, owner))
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string(owner: str) -> str:
        nonlocal pos
        n = int(take("Q", "strlen", owner))
        lay.strings.append((pos, n, owner))
        pos += n
        return data[pos - n : pos].decode("utf-8", errors="replace")

    take("I", "version", "version")
    n_tensors = int(take("Q", "count", "tensor count"))
    n_kv = int(take("Q", "count", "metadata count"))
    for _ in range(n_kv):
        key = string("a metadata key")
        vtype = int(take("I", "vtype", key))
        if vtype == 8:
            string(key)
        elif vtype == 9:
            etype = int(take("I", "etype", key))
            count = int(take("Q", "arrlen", key))
            fmt = _VALUE_FORMATS[etype]
            for i in range(count):
                if fmt is None:
                    string(f"{key}[{i}]")
                else:
                    take(fmt, "elem", f"{key}[{i}]")
        else:
            value = take(_VALUE_FORMATS[vtype] or "B", "meta", key)
            if key == "general.alignment":
                lay.alignment = int(value)
    for _ in range(n_tensors):
        name = string("a tensor name")
        n_dims = int(take("I", "ndims", name))
        for _ in range(n_dims):
            take("Q", "ne", name)
        take("I", "ttype", name)
        take("Q", "toffset", name)
        lay.tensor_offsets[name] = lay.fields[-1]
    lay.header_end = pos
    lay.data_offset = -(-pos // lay.alignment) * lay.alignment
    return lay


# ---------------------------------------------------------------------------------------------
# Mutations: each edits ``buf`` in place (or returns a new buffer) and says what it did.
# ---------------------------------------------------------------------------------------------

_INTERESTING_INTS = (
    0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 1024, 4096, 32767, 32768,
    65535, 65536, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40, (1 << 62),
    (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
)  # fmt: skip
_INTERESTING_FLOATS = (
    math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1.0, 0.5, 1e-45, 1e-38, 1e-7, 1e7, 1e30,
    3.4e38, -3.4e38, 1e300,
)  # fmt: skip


def pack(fmt: str, value: int | float) -> bytes:
    """``value`` in ``fmt``: integers wrap to the width (as a corrupt file would hold them)."""
    if fmt in "fd":
        try:
            return struct.pack("<" + fmt, value)
        except OverflowError:  # too big for a float32: store the matching infinity
            return struct.pack("<" + fmt, math.copysign(math.inf, value))
    width = struct.calcsize(fmt)
    return (int(value) % (1 << (8 * width))).to_bytes(width, "little")


def _read(buf: bytearray, f: Field) -> int | float:
    return struct.unpack_from("<" + f.fmt, buf, f.offset)[0]


def _new_int(rng: random.Random, old: int) -> int:
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(_INTERESTING_INTS)
    if pick < 0.8:
        return old + rng.choice((-1, 1, -2, 2, -32, 32, old, -old, -2 * old, rng.randint(-1000, 1000)))
    return old ^ (1 << rng.randrange(64))


def _new_float(rng: random.Random, old: float) -> float:
    if rng.random() < 0.7:
        return rng.choice(_INTERESTING_FLOATS)
    return old * rng.choice((-1.0, 1e-30, 1e30, 0.5, 2.0, 1e6, -1e6))


def patch(buf: bytearray, f: Field, value: int | float) -> None:
    """Write ``value`` into field ``f`` of ``buf`` (a no-op past a truncated end)."""
    if f.offset + struct.calcsize(f.fmt) <= len(buf):
        buf[f.offset : f.offset + struct.calcsize(f.fmt)] = pack(f.fmt, value)


def _patch_field(rng: random.Random, buf: bytearray, f: Field) -> str:
    old = _read(buf, f)
    if f.fmt == "?":
        value: int | float = rng.choice((0, 1, 2, 255))
    elif f.fmt in "fd":
        value = _new_float(rng, float(old))
    else:
        value = _new_int(rng, int(old))
    patch(buf, f, value)
    return f"{f.role} {f.owner} @{f.offset}: {old!r} -> {value!r}"


def m_flip(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """Random bytes overwritten or bit-flipped: in the header mostly, anywhere sometimes."""
    end = lay.header_end if rng.random() < 0.7 else len(buf)
    spots = [rng.randrange(end) for _ in range(rng.choice((1, 1, 2, 4, 8, 16)))]
    for at in spots:
        buf[at] = rng.randrange(256) if rng.random() < 0.5 else buf[at] ^ (1 << rng.randrange(8))
    return f"flip bytes at {spots}"


def m_flip_data(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    spots = [rng.randrange(lay.data_offset, len(buf)) for _ in range(rng.choice((1, 8, 64)))]
    for at in spots:
        buf[at] = rng.randrange(256)
    return f"overwrite {len(spots)} data bytes"


_INT_ROLES = (
    "version", "count", "strlen", "arrlen", "vtype", "etype", "meta", "ndims", "ne", "ttype", "toffset",
)  # fmt: skip


def m_int(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """A structural or metadata integer (counts, lengths, types, ranks, dimensions, offsets, values)."""
    fields = [f for f in lay.by_role(rng.choice(_INT_ROLES)) if f.fmt not in "fd"]
    return _patch_field(rng, buf, rng.choice(fields)) if fields else "no field"


def m_float(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    fields = [f for f in lay.by_role("meta", "elem") if f.fmt in "fd"]
    scalars = [f for f in fields if f.role == "meta"]
    pool = scalars if scalars and rng.random() < 0.7 else fields
    return _patch_field(rng, buf, rng.choice(pool)) if pool else "no field"


_KEYS = (
    "block_count", "embedding_length", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "context_length", "rope.dimension_count", "vocab_size",
    "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.scaling.factor", "attention.key_length",
)  # fmt: skip
_TOKENIZER_KEYS = (
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix", "general.alignment",
)  # fmt: skip


def m_key(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """A hyperparameter or special token id that sizes or steers the model."""
    arch_field = next(f for f in lay.strings if f[2] == "general.architecture")
    arch = bytes(buf[arch_field[0] : arch_field[0] + arch_field[1]]).decode(errors="replace")
    candidates = [lay.meta(f"{arch}.{k}") for k in _KEYS] + [lay.meta(k) for k in _TOKENIZER_KEYS]
    present = [f for f in candidates if f is not None]
    f = rng.choice(present)
    if f.owner.endswith("_token_id") and rng.random() < 0.5:  # just past the vocabulary
        n_tokens = _read(buf, next(a for a in lay.by_role("arrlen") if a.owner == "tokenizer.ggml.tokens"))
        value = int(n_tokens) + rng.choice((0, 1, 1000))
        patch(buf, f, value)
        return f"{f.owner}: -> {value}"
    return _patch_field(rng, buf, f)


def m_array_len(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    return _patch_field(rng, buf, rng.choice(lay.by_role("arrlen")))


def m_string_len(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    return _patch_field(rng, buf, rng.choice(lay.by_role("strlen")))


def m_string_text(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """Characters of one string replaced: tokens, merges (unknown parts, no space), keys, names."""
    tokenizer = [s for s in lay.strings if s[2].startswith("tokenizer.ggml.") and s[1] > 0]
    pool = tokenizer if rng.random() < 0.6 else [s for s in lay.strings if s[1] > 0]
    offset, length, owner = rng.choice(pool)
    for _ in range(rng.choice((1, 1, 2, 3))):
        at = offset + rng.randrange(length)
        buf[at] = rng.choice((0x20, 0x41, 0x7A, 0x00, 0xC3, 0xFF, rng.randrange(256)))
    return f"edit string {owner}"


def m_token_array(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """One element of the token type or score arrays."""
    elems = [
        f
        for f in lay.by_role("elem")
        if f.owner.startswith(("tokenizer.ggml.token_type", "tokenizer.ggml.scores"))
    ]
    if not elems:
        return "no tokenizer array"
    f = rng.choice(elems)
    if f.fmt in "fd":
        return _patch_field(rng, buf, f)
    value = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 100, -1, (1 << 31) - 1))
    patch(buf, f, value)
    return f"{f.owner} -> {value}"


def m_tensor(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    """A tensor's offset (overlap, misalignment, out of the file), type, rank or dimension."""
    name = rng.choice(list(lay.tensor_offsets))
    off = lay.tensor_offsets[name]
    pick = rng.random()
    if pick < 0.5:
        other = lay.tensor_offsets[rng.choice(list(lay.tensor_offsets))]
        old = int(_read(buf, off))
        value = rng.choice(
            (old + 1, old + 2, old + 16, old + lay.alignment, old - lay.alignment, int(_read(buf, other)))
        )
        patch(buf, off, value)
        return f"tensor {name} offset {old} -> {value}"
    fields = [f for f in lay.fields if f.owner == name and f.role in ("ttype", "ndims", "ne")]
    f = rng.choice(fields)
    if f.role == "ttype":
        value = rng.choice((0, 1, 2, 3, 6, 7, 8, 9, 10, 12, 13, 14, 15, 30, 31, 39, 41, 1000))
        patch(buf, f, value)
        return f"tensor {name} type -> {value}"
    return _patch_field(rng, buf, f)


def m_truncate(rng: random.Random, buf: bytearray, lay: Layout) -> bytearray:
    end = lay.header_end + 64 if rng.random() < 0.7 else len(buf)
    cut = rng.randrange(min(end, len(buf)))
    del buf[cut:]
    return buf


def m_insert_delete(rng: random.Random, buf: bytearray, lay: Layout) -> bytearray:
    at = rng.randrange(min(lay.header_end, len(buf)))
    n = rng.choice((1, 2, 4, 8, 13))
    if rng.random() < 0.5:
        buf[at:at] = bytes(rng.randrange(256) for _ in range(n))
    else:
        del buf[at : at + n]
    return buf


def m_copy_chunk(rng: random.Random, buf: bytearray, lay: Layout) -> str:
    end = min(lay.header_end, len(buf))
    n = rng.choice((4, 8, 12, 16, 32))
    src, dst = rng.randrange(end), rng.randrange(end)
    chunk = bytes(buf[src : src + n])
    buf[dst : dst + len(chunk)] = chunk
    return f"copy {n} bytes {src} -> {dst}"


# (mutator, weight). Truncation and inserted/deleted bytes shift offsets, so they run last.
MUTATORS: tuple[tuple[Callable[..., object], int], ...] = (
    (m_flip, 14),
    (m_flip_data, 4),
    (m_int, 16),
    (m_float, 8),
    (m_key, 16),
    (m_array_len, 5),
    (m_string_len, 5),
    (m_string_text, 8),
    (m_token_array, 6),
    (m_tensor, 10),
    (m_copy_chunk, 3),
    (m_truncate, 3),
    (m_insert_delete, 2),
)
_SHIFTING = (m_truncate, m_insert_delete)


def make_case(
    bases: dict[str, bytes], layouts: dict[str, Layout], case_id: str
) -> tuple[str, bytes, list[str]]:
    """(base name, mutated bytes, what was done) of case ``case_id`` (``"seed:index"``)."""
    rng = random.Random(case_id)
    name = rng.choice(sorted(bases))
    buf, lay = bytearray(bases[name]), layouts[name]
    n = rng.choice((1, 1, 1, 1, 2, 2, 3, 4))
    chosen = rng.choices([m for m, _ in MUTATORS], weights=[w for _, w in MUTATORS], k=n)
    chosen.sort(key=lambda m: m in _SHIFTING)
    done = []
    for mutate in chosen:
        out = mutate(rng, buf, lay)
        if isinstance(out, bytearray):
            buf, out = out, f"{mutate.__name__} to {len(out)} bytes"
        done.append(f"{mutate.__name__}: {out}")
    return name, bytes(buf), done


# ---------------------------------------------------------------------------------------------
# Base models and the fork server.
# ---------------------------------------------------------------------------------------------


def write_bases(folder: Path) -> dict[str, Path]:
    """The tiny models the fuzzer mutates: both tokenizers, every architecture, several tensor types."""
    if str(REPO / "tests" / "engine") not in sys.path:
        sys.path.insert(0, str(REPO / "tests" / "engine"))
    import numpy as np
    from gguf import GGMLQuantizationType as QT
    from tiny_gguf import TinySpec, write_tiny_gguf

    small = {"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128}
    specs = {
        "llama-gpt2-q8_0": TinySpec(weight_type=QT.Q8_0, **small),
        "llama-spm-f16-untied": TinySpec(
            tokenizer="llama", tied=False, weight_type=QT.F16, chat_template=None, add_bos=True, **small
        ),
        "mistral-q4_1-rope-freqs": TinySpec(
            arch="mistral",
            tied=False,
            weight_type=QT.Q4_1,
            extra_metadata={"mistral.rope.scaling.type": "linear", "mistral.rope.scaling.factor": 2.0},
            extra_tensors={"rope_freqs.weight": np.array([1, 1.5, 2, 3, 4, 5, 6, 8], dtype=np.float32)},
            **small,
        ),
        "qwen2-bias-q4_k": TinySpec(
            arch="qwen2", weight_type=QT.Q4_K, pre="qwen2", n_layers=1, d_model=256, d_ff=256, n_heads=4
        ),
        "qwen3-yarn-q8_0": TinySpec(
            arch="qwen3",
            weight_type=QT.Q8_0,
            extra_metadata={
                "qwen3.rope.scaling.type": "yarn",
                "qwen3.rope.scaling.factor": 4.0,
                "qwen3.rope.scaling.original_context_length": 32,
            },
            **small,
        ),
        "gemma3-q8_0": TinySpec(arch="gemma3", weight_type=QT.Q8_0, n_layers=3, **small),
        "qwen3moe-q8_0": TinySpec(arch="qwen3moe", weight_type=QT.Q8_0, d_ff_expert=64, **small),
        "phi3-longrope-f16": TinySpec(
            arch="phi3",
            weight_type=QT.F16,
            extra_metadata={
                "phi3.rope.scaling.original_context_length": 32,
                "phi3.rope.scaling.attn_factor": 1.2,
            },
            extra_tensors={
                name: np.linspace(1, 4, 8).astype(np.float32)
                for name in ("rope_factors_short.weight", "rope_factors_long.weight")
            },
            **small,
        ),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_tiny_gguf(folder / f"{name}.gguf", spec) for name, spec in specs.items()}


@dataclass
class CaseResult:
    case: str  # "seed:index": rebuilds the case
    base: str
    mutations: list[str]
    outcome: str
    detail: str
    seconds: float


def _exercise(path: str) -> str:
    """Load ``path`` as a user would and generate a few tokens; the outcome when nothing raised."""
    from cpullm.llm import LLM
    from cpullm.runtime.sampling import SamplingParams

    llm = LLM(path, threads=1, kv_cache_gb=KV_CACHE_GB, max_model_len=MAX_MODEL_LEN, max_num_seqs=2)
    room = llm.engine.max_model_len - 2  # a prompt must leave room for at least one new token
    if room < 1:
        return "loaded"
    text = llm.tokenizer.encode(PROMPT, parse_special=True)[:room] or [0]
    chat = llm.encode_chat(MESSAGES)[:room] or [0]
    greedy = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    sampled = SamplingParams(temperature=0.9, top_p=0.9, top_k=20, seed=7, max_tokens=3, logprobs=2)
    for out in llm.generate([text, chat], greedy) + llm.generate([text], sampled):
        llm.tokenizer.decode(out.token_ids)
    return "ok"


def _classify(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "memory"
    project = isinstance(error, ValueError) and type(error).__module__.startswith("cpullm.")
    return "refused" if project else "other"


def _describe(error: BaseException, path: str) -> str:
    text = f"{type(error).__module__}.{type(error).__qualname__}: {error}".replace(path, "<file>")
    if _classify(error) == "other":
        text += "\n" + "".join(traceback.format_tb(error.__traceback__)[-3:])
    return text[:2000]


def _child(
    path: str, exercise: Callable[[str], str], out_fd: int, timeout_s: float, memory_bytes: int
) -> None:
    """The forked child: limits, one ``exercise(path)``, the result on ``out_fd``; never returns."""
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        cpu = math.ceil(timeout_s)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            outcome, detail = exercise(path), ""
        except BaseException as e:
            outcome, detail = _classify(e), _describe(e, path)
        os.write(out_fd, json.dumps({"outcome": outcome, "detail": detail}).encode())
    except BaseException:
        code = 3
    finally:
        os._exit(code)


def run_child(
    path: str, exercise: Callable[[str], str], timeout_s: float, memory_bytes: int
) -> tuple[str, str]:
    """(outcome, detail) of ``exercise(path)`` run in a forked child under the limits."""
    start = time.monotonic()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(path, exercise, write_fd, timeout_s, memory_bytes)
    os.close(write_fd)
    try:
        payload, timed_out = _read_until(read_fd, start + timeout_s)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_fd)
    if timed_out:
        return "hang", f"killed after {timeout_s:g} s"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ("hang" if sig == signal.SIGXCPU else "signal"), f"killed by {signal.Signals(sig).name}"
    try:
        result = json.loads(payload)
        return result["outcome"], result["detail"]
    except (ValueError, KeyError, TypeError):
        return "other", f"exited with status {os.WEXITSTATUS(status)} and report {payload[:200]!r}"


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything written to ``fd`` until its writer closes it; (data, True) if the deadline came first."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _prepare(base_paths: dict[str, Path]) -> None:
    """Import and warm up what every child would otherwise redo (imports, template compiles) by running
    each base once here; then refuse to go on if that left this process with threads (fork copies one)."""
    for path in base_paths.values():
        _exercise(str(path))
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(
            f"the fuzzer forks per case and needs a single-threaded process, but this one has {threads} "
            "threads; run it through main() (a fresh interpreter), which limits numpy's BLAS threads."
        )


def run_case(
    case_id: str,
    bases: dict[str, bytes],
    layouts: dict[str, Layout],
    workdir: Path,
    timeout_s: float,
    memory_bytes: int,
) -> CaseResult:
    base, data, mutations = make_case(bases, layouts, case_id)
    path = workdir / "case.gguf"
    path.write_bytes(data)
    start = time.monotonic()
    outcome, detail = run_child(str(path), _exercise, timeout_s, memory_bytes)
    return CaseResult(case_id, base, mutations, outcome, detail, round(time.monotonic() - start, 4))


# The harness checks itself before each campaign: each of these must come out as named, or a
# failure could go unseen (a check that cannot fail).
def _crash(_: str) -> str:
    os.kill(os.getpid(), signal.SIGSEGV)
    return "ok"


def _spin(_: str) -> str:
    while True:
        pass


def _hog(_: str) -> str:
    hoard = [bytes(256 << 20) for _ in range(64)]  # 16 GiB of untouched zero pages: fast, past any limit
    return str(len(hoard))


def _bug(path: str) -> str:
    return str({}[path])


def _refuse(path: str) -> str:
    from cpullm.model.gguf_file import GGUFError

    raise GGUFError(f"{path}: refused on purpose.")


HARNESS_CHECKS: dict[str, Callable[[str], str]] = {
    "signal": _crash,
    "hang": _spin,
    "memory": _hog,
    "other": _bug,
    "refused": _refuse,
}


def check_harness(memory_bytes: int, timeout_s: float = 2.0) -> dict[str, str]:
    """Run :data:`HARNESS_CHECKS`; raise RuntimeError unless each is classified as its name says."""
    seen = {
        name: run_child("harness-check", fn, timeout_s, memory_bytes)[0]
        for name, fn in HARNESS_CHECKS.items()
    }
    wrong = {name: got for name, got in seen.items() if got != name}
    if wrong:
        raise RuntimeError(f"the fuzz harness misclassifies its own checks: {wrong}")
    return seen


def run_campaign(
    base_paths: dict[str, Path],
    case_ids: Sequence[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    progress: Callable[[int, CaseResult], None] | None = None,
) -> tuple[dict[str, str], list[CaseResult]]:
    """(the harness self-check, the result of every case): each case runs in a forked child; see the
    module docstring for the outcomes."""
    _prepare(base_paths)
    bases = {name: path.read_bytes() for name, path in base_paths.items()}
    layouts = {name: scan(data) for name, data in bases.items()}
    memory_bytes = _vm_size() + memory_mb * (1 << 20)
    harness = check_harness(memory_bytes)
    results = []
    with tempfile.TemporaryDirectory(prefix="gguf-fuzz-") as tmp:
        for i, case_id in enumerate(case_ids):
            result = run_case(case_id, bases, layouts, Path(tmp), timeout_s, memory_bytes)
            results.append(result)
            if progress is not None:
                progress(i, result)
    return harness, results


def summarize(
    harness: dict[str, str], results: Sequence[CaseResult], seconds: float, seed: int
) -> dict[str, object]:
    counts = Counter(r.outcome for r in results)
    refusals = Counter(_first_sentence(r.detail) for r in results if r.outcome == "refused")
    return {
        "seed": seed,
        "harness_check": harness,  # synthetic failures, each classified as its name says
        "cases": len(results),
        "seconds": round(seconds, 1),
        "counts": {k: counts.get(k, 0) for k in OUTCOMES},
        "failures": [asdict(r) for r in results if r.outcome in FAILURES],
        "top_refusals": refusals.most_common(25),
        # every case: [id, base, outcome, the first line of the error]
        "results": [[r.case, r.base, r.outcome, r.detail.split("\n", 1)[0][:300]] for r in results],
    }


def _first_sentence(detail: str) -> str:
    """An error's message with numbers blanked, to group refusals by kind."""
    head = detail.split(": ", 1)[-1].split(". ")[0]
    return "".join("#" if c.isdigit() else c for c in head)[:140]


def repro(case_id: str, base_paths: dict[str, Path], out: Path | None = None) -> None:
    """Rebuild case ``case_id``, print what was done, and run it in this process (tracebacks visible)."""
    bases = {name: path.read_bytes() for name, path in base_paths.items()}
    layouts = {name: scan(data) for name, data in bases.items()}
    base, data, mutations = make_case(bases, layouts, case_id)
    path = out or Path(tempfile.mkdtemp(prefix="gguf-repro-")) / f"case-{case_id.replace(':', '-')}.gguf"
    path.write_bytes(data)
    print(f"case {case_id}: base {base}, written to {path}")
    for m in mutations:
        print("  " + m)
    print("outcome:", _exercise(str(path)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here ('-': stdout)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per case")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="address space per case")
    parser.add_argument("--lib-dir", type=Path, help="cpullm native libraries (default: build them)")
    parser.add_argument("--repro", metavar="SEED:INDEX", help="rerun one case in-process, traceback visible")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    # Before numpy is imported: its BLAS would start threads, and a threaded process must not fork.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sys.path.insert(0, str(REPO / "engine"))
    if args.lib_dir is None:
        sys.path.insert(0, str(REPO / "tests"))
        from support.native_build import build_native

        args.lib_dir = build_native()
    os.environ["CPULLM_LIB_DIR"] = str(args.lib_dir)

    with tempfile.TemporaryDirectory(prefix="gguf-fuzz-bases-") as tmp:
        base_paths = write_bases(Path(tmp))
        if args.repro:
            repro(args.repro, base_paths)
            return 0
        case_ids = [f"{args.seed}:{i}" for i in range(args.cases)]
        start = time.monotonic()

        def progress(i: int, r: CaseResult) -> None:
            if r.outcome in FAILURES and not args.quiet:
                print(f"FAIL {r.case} ({r.base}): {r.outcome}: {r.detail.splitlines()[0]}", flush=True)
            if not args.quiet and (i + 1) % 500 == 0:
                print(f"{i + 1}/{len(case_ids)} cases, {time.monotonic() - start:.0f} s", flush=True)

        harness, results = run_campaign(base_paths, case_ids, args.timeout, args.memory_mb, progress)
        report = summarize(harness, results, time.monotonic() - start, args.seed)
    counts = report["counts"]
    print(
        f"{len(results)} cases in {report['seconds']} s: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )  # type: ignore[union-attr]
    for failure in report["failures"]:  # type: ignore[union-attr]
        first_line = failure["detail"].splitlines()[0]
        print(f"  reproduce: --repro {failure['case']}  ({failure['outcome']}: {first_line})")
    if args.json is not None:
        text = json.dumps(report, indent=1)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
