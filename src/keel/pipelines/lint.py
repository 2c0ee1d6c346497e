"""Check a pipeline graph before it runs; every problem cites the step's file and line.

Checked: duplicate step names, calls with missing or unknown inputs, inputs
from unknown steps, cycles, outputs that can never be serialized (generators,
coroutines, open files, locks), unknown serializers, ``serializer="model"`` on
a step annotated to return data (a DataFrame, an array, a list, a number...),
constants that cannot be fingerprinted, and, for the process pool and Ray,
steps a worker cannot import.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from keel.errors import ValidationError
from keel.pipelines import serializers
from keel.pipelines.graph import Graph, handles_in


def _return_origin(fn: Any) -> Any:
    """The origin of ``fn``'s return annotation (``list`` for ``list[int]``), or None."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    return None if ret is None else typing.get_origin(ret) or ret


def _return_problem(fn: Any) -> str | None:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return "is a generator: its output cannot be stored"
    if inspect.iscoroutinefunction(fn):
        return "is async: steps are plain functions"
    origin = _return_origin(fn)
    if origin is None:
        return None
    name = getattr(origin, "__name__", str(origin))
    if name in serializers.UNSERIALIZABLE:
        return f"returns a {name}, which cannot be serialized"
    return None


# Return annotations that can never be a model (serializer="model" needs predict(), or a dict holding models).
_DATA_MODULES = ("pandas", "numpy", "pyarrow", "polars")
_DATA_BUILTINS = (str, bytes, bool, int, float, complex, list, tuple, set, frozenset, type(None))


def _model_return_problem(fn: Any) -> str | None:
    origin = _return_origin(fn)
    if not isinstance(origin, type) or origin is typing.Any:
        return None
    if origin in _DATA_BUILTINS or origin.__module__.split(".")[0] in _DATA_MODULES:
        return f"declares serializer='model' but returns a {'None' if origin is type(None) else origin.__name__}, which is not a model"
    return None


def problems(graph: Graph, *, engine: str = "local") -> list[str]:
    out = list(graph.problems)
    for node in graph.nodes.values():
        out.extend(node.problems)
        step = node.step
        bad = _return_problem(step.fn)
        if bad:
            out.append(f"Step {step.name} ({step.where}) {bad}; return data (a table, an array, a dict, a model).")
        if step.serializer is not None and step.serializer not in serializers.SERIALIZERS:
            out.append(f"Step {step.name} ({step.where}) names unknown serializer {step.serializer!r}; use one of {', '.join(serializers.SERIALIZERS)}.")
        if step.serializer == "model" and step.kind == "step":
            bad = _model_return_problem(step.fn)
            if bad:
                out.append(f"Step {step.name} ({step.where}) {bad}; return a fitted model (or a dict holding one), or remove serializer='model'.")
        if engine != "local" and "<locals>" in step.fn.__qualname__:
            out.append(
                f"Step {step.name} ({step.where}) is defined inside a function; the {engine} engine imports steps by name in worker processes. "
                "Define it at module level."
            )
        consts = [v for v in list(node.args) + list(node.kwargs.values()) if not handles_in(v)]
        for value in consts:
            try:
                from keel.pipelines.cache import canonical

                canonical(value)
            except Exception as exc:
                out.append(f"Step {step.name} called at {node.call_site}: input {type(value).__name__} cannot be fingerprinted ({exc}).")
    try:
        graph.order()
    except ValidationError as exc:
        out.append(exc.message)
    return out


def lint(graph: Graph, *, engine: str = "local") -> None:
    """Raise one ValidationError listing every problem of the graph."""
    found = problems(graph, engine=engine)
    if found:
        lines = "\n".join(f"  - {p}" for p in found)
        raise ValidationError(
            f"Pipeline {graph.name} has {len(found)} problem{'s' if len(found) > 1 else ''}:\n{lines}",
            hint="Fix them; nothing ran.",
            problems=found,
        )
