"""The budget of one template render: steps, time, and the size of what it builds.

:mod:`cpullm.model.template_sandbox` compiles templates so that they report every step and every value they
build to the :class:`Budget` of the render in progress (one per render, found through a context
variable, so concurrent renders in several threads do not mix):

* **Steps**: every element a ``{% for %}`` loop (or a recursive ``loop(...)``) draws, every call,
  filter, operator, attribute or item access and output write is one step. More than
  :data:`RENDER_MAX_STEPS` steps, more than :data:`RENDER_MAX_SECONDS`, or ``should_stop()`` returning
  true (asked every :data:`STOP_CHECK_EVERY` steps) ends the render.
* **Size**: no string, list or dict the template builds may exceed :data:`RENDER_MAX_CHARS` (lists and
  dicts counted deep, as their text would be, nested at most :data:`RENDER_MAX_DEPTH` levels), and all
  it builds or writes, summed over the render, may not exceed :data:`RENDER_MAX_WORK` (a list entry
  counts :data:`ELEMENT_UNITS`). Operations whose result can be much larger than their inputs (``*``,
  ``**``, ``%``, ``str.format``, ``join``, ``replace``, ``indent``, ``wordwrap``, ``expandtabs``,
  ``translate``, ``pprint``, ``urlize``, number arguments such as a ``center`` width) are estimated
  before they run, so memory never runs far past the limits; the rest is measured as it comes back.

A limit hit raises :class:`RenderStopped` (``RenderCancelled`` for ``should_stop``). It is a
``BaseException``, so no ``except Exception`` inside Jinja or a filter can swallow it.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from jinja2.runtime import LoopContext
from jinja2.utils import Namespace

RENDER_MAX_CHARS = 4_000_000  # the rendered prompt, and any one value (a real prompt: < 1 M)
RENDER_MAX_WORK = 64_000_000  # everything built or written in one render, summed
RENDER_MAX_STEPS = 2_000_000  # a real chat template takes a few thousand
RENDER_MAX_SECONDS = 2.0  # a real chat template takes well under 10 ms
RENDER_MAX_DEPTH = 64  # nesting of lists and dicts
RENDER_MAX_INT_BITS = 65_536
STOP_CHECK_EVERY = 64  # steps between calls of should_stop
WORDWRAP_MAX_COPIES = 200_000_000  # characters textwrap may copy breaking long words (~0.1 s)
ELEMENT_UNITS = 64  # what one list or dict entry costs, in characters of the budget (a pointer and an object)


class RenderStopped(BaseException):
    """A render exceeded a limit; the message says which (it completes "the template ...")."""


class RenderCancelled(RenderStopped):
    """``should_stop`` asked the render to stop."""


_CURRENT: ContextVar[Budget | None] = ContextVar("cpullm_template_budget", default=None)
_DICT_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_CONTAINERS = (list, tuple, dict, set, frozenset, Namespace, *_DICT_VIEWS)  # what is measured deep
_CONTAINER_TYPES = frozenset(_CONTAINERS)  # a quicker test for the exact types


class Budget:
    """What one render may still spend; see the module docstring."""

    def __init__(self, should_stop: Callable[[], bool] | None = None) -> None:
        self.steps = 0
        self.work = 0
        self.deadline = time.monotonic() + RENDER_MAX_SECONDS
        self.should_stop = should_stop
        # deep size and height of each container measured, by id; the object is kept so its id stays
        # unique (the sandbox cannot mutate lists or dicts, so a measure stays valid for the render)
        self._measured: dict[int, tuple[object, int, int]] = {}

    # ---- time ----
    def tick(self) -> None:
        self.steps += 1
        if self.steps > RENDER_MAX_STEPS:
            raise RenderStopped(f"ran more than {RENDER_MAX_STEPS:,} steps (loop iterations and operations)")
        if time.monotonic() > self.deadline:
            raise RenderStopped(f"ran longer than {RENDER_MAX_SECONDS:g} s")
        if self.should_stop is not None and self.steps % STOP_CHECK_EVERY == 0 and self.should_stop():
            raise RenderCancelled("was cancelled")

    # ---- size ----
    def room(self) -> int:
        """The largest value the template may build now."""
        return min(RENDER_MAX_CHARS, RENDER_MAX_WORK - self.work)

    def check(self, estimate: int, what: str) -> None:
        """Refuse an operation whose result would be ``estimate`` characters, before it runs."""
        if estimate > self.room():
            if estimate > RENDER_MAX_CHARS:
                raise RenderStopped(
                    f"would build {what} of about {estimate:,} characters (the limit is {RENDER_MAX_CHARS:,})"
                )
            raise RenderStopped(f"built more than {RENDER_MAX_WORK:,} characters of text and lists in all")

    def spend(self, units: int) -> None:
        self.work += units
        if self.work > RENDER_MAX_WORK:
            raise RenderStopped(f"built more than {RENDER_MAX_WORK:,} characters of text and lists in all")

    def size(self, value: Any) -> int:
        """About how many characters ``value`` becomes as text (lists and dicts deep)."""
        kind = type(value)
        if kind is str:
            return len(value)
        if kind in _CONTAINER_TYPES or isinstance(value, _CONTAINERS):
            return self._measure(value, 0)[0]
        if isinstance(value, str | bytes):
            return len(value)
        if kind is int:
            return value.bit_length() // 3 + 1
        return 16  # None, a bool, a float, a function, Undefined, ...: a short repr

    def height(self, value: Any) -> int:
        """How deep lists and dicts nest in ``value`` (0: not a list or dict)."""
        return self._measure(value, 0)[1] if isinstance(value, _CONTAINERS) else 0

    def remember(self, value: Any, size: int, height: int) -> None:
        """Record the measure of a new container computed from its parts (``a + b``, ``a * n``)."""
        if size > RENDER_MAX_CHARS:
            raise RenderStopped(f"would build a list of more than {RENDER_MAX_CHARS:,} characters as text")
        self._measured[id(value)] = (value, size, height)

    def _measure(self, value: Any, depth: int) -> tuple[int, int]:
        if depth > RENDER_MAX_DEPTH:
            raise RenderStopped(f"nested lists or dicts more than {RENDER_MAX_DEPTH} levels deep")
        known = self._measured.get(id(value))
        if known is not None:
            return known[1], known[2]
        remember = True
        items: Iterable[Any] = value
        if isinstance(value, Namespace):  # mutable (its dict too): measured every time, never remembered
            attrs = object.__getattribute__(value, "_Namespace__attrs")
            items, remember = itertools.chain.from_iterable(attrs.items()), False
        elif isinstance(value, _DICT_VIEWS):  # a new object at each .items(): measure the dict instead
            items, remember = [value.mapping], False  # type: ignore[attr-defined]
        elif isinstance(value, dict):
            items = itertools.chain.from_iterable(value.items())
        total, height = 2, 1
        for item in items:
            kind = type(item)
            if kind is str:
                total += len(item) + 2
            elif kind in _CONTAINER_TYPES or isinstance(item, _CONTAINERS):
                size, inner = self._measure(item, depth + 1)
                total += size + 2
                height = max(height, inner + 1)
            else:
                total += self.size(item) + 2
            if total > RENDER_MAX_CHARS:
                raise RenderStopped(
                    f"would build a list or dict of more than {RENDER_MAX_CHARS:,} characters as text"
                )
        if remember:
            self._measured[id(value)] = (value, total, height)
        return total, height

    def textable(self, value: Any) -> None:
        """Refuse to turn ``value`` into text when the text would not fit."""
        if not isinstance(value, str):
            self.check(self.size(value), "text")

    def new(self, value: Any) -> Any:
        """Account for a value an operation built (refusing one that is too large) and return it."""
        if isinstance(value, str | bytes):
            if len(value) > RENDER_MAX_CHARS:
                raise RenderStopped(
                    f"built a string of {len(value):,} characters (the limit is {RENDER_MAX_CHARS:,})"
                )
            self.spend(len(value))
        elif isinstance(value, int) and value.bit_length() > RENDER_MAX_INT_BITS:
            raise RenderStopped(f"computed an integer of more than {RENDER_MAX_INT_BITS:,} bits")
        elif isinstance(value, _CONTAINERS):
            self.size(value)  # refuses one too large or too deep
            self.spend(ELEMENT_UNITS * _shallow_len(value))
        return value

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Check a call's arguments; iterators come back wrapped so that consuming them is counted."""
        wrap = False
        for value in args:
            if type(value) is not str:
                wrap = self._argument(value) or wrap
        for key, value in kwargs.items():
            if type(value) is not str and key[:1] != "_" and key != "caller":  # not Jinja's own
                if self._argument(value):
                    kwargs[key] = Counted(value, self, charge=True)
        if wrap:
            args = tuple(Counted(v, self, charge=True) if is_iterator(v) else v for v in args)
        return args

    def _argument(self, value: Any) -> bool:
        """Check one argument; true for an iterator."""
        if type(value) is int:
            if abs(value) > RENDER_MAX_CHARS:  # a width, a count, an indent: results grow with it
                raise RenderStopped(
                    f"passed the number {_short_int(value)} to a function (at most {RENDER_MAX_CHARS:,})"
                )
            self.check(abs(value), "a value sized by a number argument")
        elif isinstance(value, _CONTAINERS):
            self.size(value)
        else:
            return is_iterator(value)
        return False


def current() -> Budget:
    budget = _CURRENT.get()
    if budget is None:
        raise RuntimeError("templates of a BoundedSandbox render only through template_sandbox.render()")
    return budget


@contextmanager
def active(budget: Budget) -> Iterator[Budget]:
    """Make ``budget`` the one the compiled template code in this thread (or task) reports to."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


def collect(pieces: Iterable[str], what: str) -> str:
    """Join ``pieces`` as they come, refusing the text once it outgrows what the render may build."""
    budget = current()
    texts, total = [], 0
    for piece in pieces:
        total += len(piece)
        budget.check(total, what)
        texts.append(piece)
    return "".join(texts)


# ---- helpers ----
def is_iterator(value: Any) -> bool:
    return hasattr(type(value), "__next__") and not isinstance(value, Counted | LoopContext)


def _shallow_len(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


def _short_int(value: int) -> str:
    return f"{value:,}" if value.bit_length() < 64 else f"of {value.bit_length():,} bits"


class Counted:
    """An iterator that spends a step per element (and, for consumers that keep them, element units)."""

    __slots__ = ("_budget", "_charge", "_iterator", "_source")

    def __init__(self, source: Iterable[Any], budget: Budget, charge: bool) -> None:
        self._source = source
        self._iterator = iter(source)
        self._budget = budget
        self._charge = charge

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Any:
        self._budget.tick()
        if self._charge:
            self._budget.spend(ELEMENT_UNITS)
        return next(self._iterator)

    def __len__(self) -> int:  # loop.length and loop.last without consuming a list
        return len(self._source)  # type: ignore[arg-type]

    def __bool__(self) -> bool:  # as the source: an iterator is true, a list true when not empty
        try:
            return len(self._source) > 0  # type: ignore[arg-type]
        except TypeError:
            return True


# ---- estimates for operations whose result can be much larger than their inputs ----
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
SPEC_NUMBER = re.compile(r"\d+")


def field_width(digits: str, budget: Budget) -> int:
    if len(digits) > 12 or int(digits) > budget.room():
        raise RenderStopped(f"asked for a field {digits[:20]} characters wide (at most {budget.room():,})")
    return int(digits)


def percent_estimate(budget: Budget, fmt: str, args: Any) -> int:
    """An upper bound of ``len(fmt % args)``."""
    if isinstance(args, Mapping):
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    fields, widest, star, expands = 0, 0, False, 1
    for match in _PERCENT_FIELD.finditer(fmt):
        fields += 1
        for group in match.group(1, 2):
            if group == "*":
                star = True
            elif group:
                widest = max(widest, field_width(group, budget))
        if match.group(3) in "ra":
            expands = 10  # repr escapes a character as up to \U0001f600
    if star:
        widest = max([widest] + [abs(v) for v in values if isinstance(v, int)])
    largest = max((budget.size(v) for v in values), default=0)
    return len(fmt) + fields * (largest * expands + widest)


def joined_texts(
    budget: Budget, sep: str, items: Iterable[Any], what: str, convert: bool = True
) -> list[Any]:
    """The items to join, gathered one by one and refused once the joined text would not fit; turned
    into text with ``str`` when ``convert`` (the ``join`` filter), else left for ``str.join`` to check."""
    texts = []
    total = 0
    for item in items:
        budget.tick()
        if convert and not isinstance(item, str):
            budget.textable(item)
            item = str(item)
        total += (len(item) if isinstance(item, str) else 0) + len(sep)
        budget.check(total, what)
        texts.append(item)
    return texts


def _replace_estimate(budget: Budget, s: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return budget.size(s) + budget.size(new)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


def _per_line_estimate(s: Any, extra: int) -> int:
    text = s if isinstance(s, str) else ""
    return len(text) + (text.count("\n") + 1) * extra


def str_method_args(budget: Budget, owner: str, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Check (and for ``join``, gather) the arguments of a ``str`` method that can amplify its input."""
    if name == "join" and args:
        return (joined_texts(budget, owner, args[0], "a joined string", convert=False), *args[1:])
    if name == "replace" and len(args) >= 2:
        budget.check(_replace_estimate(budget, owner, *args[:3]), "a replaced string")
    elif name == "expandtabs":
        tabsize = args[0] if args and isinstance(args[0], int) else 8
        budget.check(len(owner) + owner.count("\t") * max(tabsize, 0), "an expanded string")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        widest = max((budget.size(v) for v in args[0].values()), default=1)
        budget.check(len(owner) * max(widest, 1), "a translated string")
    return args


def filter_estimate(budget: Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """An upper bound of a built-in filter's result where it can exceed its inputs by a factor."""
    value = args[0] if args else None

    def arg(i: int, key: str, default: Any) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    if name == "replace":
        return _replace_estimate(budget, value, arg(1, "old", ""), arg(2, "new", ""), arg(3, "count", -1))
    if name == "indent":
        width = arg(1, "width", 4)
        return _per_line_estimate(value, len(width) if isinstance(width, str) else max(int(width), 0))
    if name == "wordwrap":
        width = max(int(arg(1, "width", 79)), 1)
        wrap = arg(3, "wrapstring", None)
        text = value if isinstance(value, str) else ""
        # textwrap copies the rest of a long word for every line it breaks off: time ~ len(word)^2 / width
        copies = sum(len(word) ** 2 for word in text.split() if len(word) > width) // width
        if copies > WORDWRAP_MAX_COPIES:
            raise RenderStopped(f"wrapped words too long for the wordwrap filter (width {width})")
        return len(text) + (len(text) // width + text.count("\n") + 1) * (len(wrap) if wrap else 1)
    if name == "format" and isinstance(value, str):
        return percent_estimate(budget, value, kwargs or args[1:])
    if name == "pprint":
        return budget.size(value) * (budget.height(value) + 2)
    if name == "urlize":
        extra = sum(len(x) for x in (arg(3, "target", None), arg(4, "rel", None)) if isinstance(x, str))
        return budget.size(value) * (40 + extra)
    return None


def check_repeat(budget: Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > RENDER_MAX_INT_BITS:
            raise RenderStopped(f"computed an integer of more than {RENDER_MAX_INT_BITS:,} bits")
        return
    seq, times = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(times, int) and isinstance(seq, str | list | tuple):
        if times > RENDER_MAX_CHARS:
            raise RenderStopped(f"repeated a value {_short_int(times)} times")
        budget.check(budget.size(seq) * max(times, 0), "a repeated string or list")


def check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent > RENDER_MAX_INT_BITS or base.bit_length() * exponent > RENDER_MAX_INT_BITS:
            raise RenderStopped(f"computed an integer of more than {RENDER_MAX_INT_BITS:,} bits")
