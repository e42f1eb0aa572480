"""A Jinja sandbox whose renders are bounded in time and memory, for untrusted chat templates.

Jinja's own sandbox keeps a template away from Python internals, but not from looping for ever or
building a string of many gigabytes. :class:`BoundedSandbox` compiles templates so that every loop
element, call, filter, operator, attribute access, literal, ``~`` and output write reports to the
render's :class:`~cpullm.model.template_budget.Budget` (the limits and what counts are described there), and
:func:`render` gives each render a fresh budget and caps the rendered text at
:data:`~cpullm.model.template_budget.RENDER_MAX_CHARS`.

Public API
----------
``BoundedSandbox(**jinja_environment_options)``
    An ``ImmutableSandboxedEnvironment`` (no constant folding, no ``lipsum``) whose templates render
    only through :func:`render`; filters added to ``filters`` are bounded too.
``render(template, variables, should_stop=None) -> str``
    ``should_stop`` is any ``() -> bool`` (e.g. ``threading.Event().is_set``, or a check that the client
    is still connected), called from the rendering thread before the render and every
    :data:`~cpullm.model.template_budget.STOP_CHECK_EVERY` steps. Raises
    :class:`~cpullm.model.template_budget.RenderStopped` (or its subclass ``RenderCancelled``) when a limit is
    hit; errors the template itself raises propagate as they are.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from functools import update_wrapper
from typing import Any

import jinja2.nodes as nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import _PassArg, pass_context
from markupsafe import Markup

from cpullm.model import template_budget
from cpullm.model.template_budget import (
    SPEC_NUMBER,
    Budget,
    Counted,
    RenderCancelled,
    RenderStopped,
    active,
    check_power,
    check_repeat,
    current,
    field_width,
    filter_estimate,
    joined_texts,
    percent_estimate,
    str_method_args,
)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop, literal, ``~`` and output write reporting to the budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: set[int] = set()

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Jinja allows no custom node types, so the iterables of `for` loops are marked by id
        self._loop_iterables = {id(loop.iter) for loop in node.find_all(nodes.For)}
        super().visit_Template(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self.write("environment._cpullm_loop(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def _literal(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment._cpullm_new(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._literal(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._literal(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._literal(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment._cpullm_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment._cpullm_write({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment._cpullm_write(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def start_write(self, frame: Frame, node: nodes.Node | None = None) -> None:
        super().start_write(frame, node)
        self.write("environment._cpullm_write(")

    def end_write(self, frame: Frame) -> None:
        self.write(")")
        super().end_write(frame)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    current().textable(value)  # before `{{ value }}` turns it into text
    return value


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` that refuses huge field widths and counts its output field by field."""

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        budget = current()
        budget.textable(value)
        if conversion in ("r", "a"):
            budget.check(budget.size(value) * 10, "a formatted field")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current()
        budget.tick()
        widest = max((field_width(d, budget) for d in SPEC_NUMBER.findall(format_spec)), default=0)
        budget.check(budget.size(value) + widest, "a formatted field")
        text = super().format_field(value, format_spec)
        budget.spend(len(text))
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    pass


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = _PassArg.from_obj(func)

    def bounded(context: Context, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.tick()
        args = budget.arguments(args, kwargs)
        if name == "join":
            return budget.new(_join(budget, context, *args, **kwargs))
        start = args[2] if len(args) > 2 else kwargs.get("start", 0)
        if name == "sum" and not isinstance(start, int | float):  # sum(lists) copies quadratically
            raise RenderStopped("summed non-numbers with the sum filter (it adds numbers only)")
        estimate = filter_estimate(budget, name, args, kwargs)
        if estimate is not None:
            budget.check(estimate, f"the result of the {name!r} filter")
        if pass_arg is _PassArg.context:
            result = func(context, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, *args, **kwargs)
        else:
            result = func(*args, **kwargs)
        return budget.new(result)

    bounded.__name__ = bounded.__qualname__ = f"bounded_{name}"
    bounded._cpullm_bounded = True  # type: ignore[attr-defined]
    # pass_context also keeps Jinja from running the filter at compile time, outside any budget
    return pass_context(bounded)


def _join(budget: Budget, context: Context, value: Any, d: str = "", attribute: Any = None) -> str:
    """The ``join`` filter (autoescape is off), building the parts first so their size is known."""
    from jinja2.filters import make_attrgetter

    if attribute is not None:
        value = map(make_attrgetter(context.environment, attribute), value)
    sep = str(d)
    return sep.join(joined_texts(budget, sep, value, "a joined string"))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are bounded; render its templates with :func:`render`."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        # no constant folding: it would run filters and operators at compile time, outside any budget
        super().__init__(optimized=False, finalize=_finalize, **options)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no chat template uses it

        self._bound_filters()

    def _bound_filters(self) -> None:
        """Wrap every filter not yet wrapped (also those added to ``filters`` after construction)."""
        for name, func in list(self.filters.items()):
            if not getattr(func, "_cpullm_bounded", False):
                self.filters[name] = _bounded_filter(name, func)

    def from_string(self, source: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._bound_filters()
        return super().from_string(source, *args, **kwargs)

    # ---- hooks called by the compiled code ----
    def _cpullm_loop(self, iterable: Any) -> Counted:
        return Counted(iterable, current(), charge=False)

    def _cpullm_new(self, value: Any) -> Any:
        budget = current()
        budget.tick()
        return budget.new(value)

    def _cpullm_write(self, text: Any) -> Any:
        budget = current()
        budget.tick()
        budget.spend(len(text) if isinstance(text, str) else 16)
        return text

    def _cpullm_concat(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        budget = current()
        budget.tick()
        budget.check(sum(budget.size(p) for p in parts), "a string joined with ~")
        return budget.new(join(parts))

    # ---- sandbox hooks ----
    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        budget.tick()
        if operator == "*":
            check_repeat(budget, left, right)
        elif operator == "**":
            check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            budget.check(percent_estimate(budget, left, right), "a %-formatted string")
        elif operator == "+" and not isinstance(left, int | float):
            budget.check(budget.size(left) + budget.size(right), "a concatenation")
        result = self.binop_table[operator](left, right)
        if type(result) in (list, tuple) and operator in ("+", "*"):  # measured from the operands
            parts = (left, right) if operator == "+" else (left if isinstance(left, list | tuple) else right,)
            times = 1 if operator == "+" else len(result) // max(len(parts[0]), 1)
            size = sum(budget.size(p) - 2 for p in parts) * times + 2
            budget.remember(result, size, max(budget.height(p) for p in parts))
        return budget.new(result)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.tick()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop: count them
            args = (Counted(args[0], budget, charge=False), *args[1:])
        elif __obj is not __self.globals.get("range"):  # range has its own length limit
            args = budget.arguments(args, kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = str_method_args(budget, owner, getattr(__obj, "__name__", ""), args)
        return budget.new(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        current().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = current()
        budget.tick()
        value = super().getitem(obj, argument)
        return budget.new(value) if isinstance(argument, slice) else value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's ``str.format`` sandboxing, with :class:`_BoundedFormatter`."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        f_self = value.__self__
        formatter: string.Formatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping argument")
                kwargs, args = args[0], ()
            return type(f_self)(formatter.vformat(f_self, args, kwargs))

        return update_wrapper(bounded_format, value)


def render(template: Any, variables: Mapping[str, Any], should_stop: Callable[[], bool] | None = None) -> str:
    """Render ``template`` (from a :class:`BoundedSandbox`) within the limits; see the module docstring."""
    if should_stop is not None and should_stop():
        raise RenderCancelled("was cancelled")
    with active(Budget(should_stop)):
        stream = template.generate(variables)
        try:
            chunks, length = [], 0
            for chunk in stream:
                length += len(chunk)
                if length > template_budget.RENDER_MAX_CHARS:
                    raise RenderStopped(f"rendered more than {template_budget.RENDER_MAX_CHARS:,} characters")
                chunks.append(chunk)
            return "".join(chunks)
        finally:
            stream.close()
