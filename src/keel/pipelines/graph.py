"""The pipeline graph, built from data flow.

While a ``@keel.pipeline`` function runs under a :class:`Builder`, each step
call records a :class:`Node` and returns a :class:`Handle` to its output; a
handle passed to another step becomes an edge. Handles are lazy: using one as
a value (``if handle:``, ``handle + 1``) is an error that names the call.
"""

from __future__ import annotations

import contextvars
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError

if TYPE_CHECKING:
    from keel.pipelines.step import Step

_builder: contextvars.ContextVar[Builder | None] = contextvars.ContextVar("keel_pipeline_builder", default=None)


def current_builder() -> Builder | None:
    return _builder.get()


class Handle:
    """The future output of a step call (or an item of it: ``handle["model"]``)."""

    __slots__ = ("_n", "node", "selector")

    def __init__(self, node: str, selector: tuple[Any, ...] = (), n: int | None = None) -> None:
        self.node = node
        self.selector = selector
        self._n = n

    def __repr__(self) -> str:
        sel = "".join(f"[{s!r}]" for s in self.selector)
        return f"<output of step {self.node}{sel}>"

    def __getitem__(self, key: Any) -> Handle:
        return Handle(self.node, (*self.selector, key))

    def __iter__(self) -> Iterator[Handle]:
        if self._n is None:
            raise ValidationError(
                f"Cannot unpack the output of step {self.node} while the graph is built: its length is unknown.",
                hint="Annotate the step's return type as tuple[A, B] or index it: out[0], out[1].",
            )
        return iter([self[i] for i in range(self._n)])

    def _lazy(self, *_: Any, **__: Any) -> Any:
        raise ValidationError(
            f"The output of step {self.node} is not computed yet: pipeline code only wires steps together.",
            hint="Pass it to another step and do the computation inside that step.",
        )

    __bool__ = __len__ = __add__ = __radd__ = __sub__ = __mul__ = __truediv__ = __lt__ = __gt__ = _lazy
    __le__ = __ge__ = __float__ = __int__ = __index__ = __contains__ = __call__ = _lazy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._lazy()


def handles_in(value: Any) -> list[Handle]:
    """Every handle inside a value (through lists, tuples and dicts)."""
    if isinstance(value, Handle):
        return [value]
    if isinstance(value, list | tuple):
        return [h for v in value for h in handles_in(v)]
    if isinstance(value, dict):
        return [h for v in value.values() for h in handles_in(v)]
    return []


def substitute(value: Any, resolve: typing.Callable[[Handle], Any]) -> Any:
    """The value with every handle replaced by ``resolve(handle)``."""
    if isinstance(value, Handle):
        return resolve(value)
    if isinstance(value, list):
        return [substitute(v, resolve) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, resolve) for v in value)
    if isinstance(value, dict):
        return {k: substitute(v, resolve) for k, v in value.items()}
    return value


def select(value: Any, selector: tuple[Any, ...]) -> Any:
    for key in selector:
        value = value[key]
    return value


@dataclass
class Node:
    name: str
    step: Step
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call_site: str  # file:line of the call inside the pipeline function
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.step.where

    def upstream(self) -> list[str]:
        seen: dict[str, None] = {}
        for h in handles_in(list(self.args)) + handles_in(self.kwargs):
            seen.setdefault(h.node)
        return list(seen)


@dataclass
class Graph:
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    output: Any = None
    problems: list[str] = field(default_factory=list)

    def order(self) -> list[str]:
        """Steps in a topological order (call order among independent steps); raises on a cycle."""
        state: dict[str, int] = {}
        out: list[str] = []

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*path[path.index(name):], name]
                raise ValidationError(
                    f"Pipeline {self.name} has a cycle: {' -> '.join(cycle)} (step {name} at {self.nodes[name].where}).",
                    hint="A step cannot consume its own output, directly or through other steps.",
                )
            state[name] = 1
            for up in self.nodes[name].upstream():
                if up in self.nodes:
                    visit(up, [*path, name])
            state[name] = 2
            out.append(name)

        for name in self.nodes:
            visit(name, [])
        return out

    def downstream(self, name: str) -> set[str]:
        """``name`` and every step that depends on it."""
        found = {name}
        for n in self.order():
            if any(u in found for u in self.nodes[n].upstream()):
                found.add(n)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "steps": [
                {
                    "name": n.name,
                    "function": n.step.ref,
                    "kind": n.step.kind,
                    "where": n.where,
                    "call_site": n.call_site,
                    "upstream": n.upstream(),
                }
                for n in self.nodes.values()
            ],
        }


def _tuple_len(step: Step) -> int | None:
    try:
        hints = typing.get_type_hints(step.fn)
    except Exception:
        return None
    ret = hints.get("return")
    if typing.get_origin(ret) is tuple:
        args = typing.get_args(ret)
        if args and Ellipsis not in args:
            return len(args)
    return None


class Builder:
    """Collects the step calls of one pipeline function into a :class:`Graph`."""

    def __init__(self, name: str) -> None:
        self.graph = Graph(name)
        self._token: contextvars.Token[Builder | None] | None = None

    def __enter__(self) -> Builder:
        self._token = _builder.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._token is not None
        _builder.reset(self._token)

    def add_call(self, step: Step, args: tuple[Any, ...], kwargs: dict[str, Any], call_site: str) -> Handle:
        g = self.graph
        name = step.name
        same = [n for n in g.nodes.values() if n.step.name == step.name]
        if same:
            other = [n for n in same if n.step.fn is not step.fn]
            if other:
                g.problems.append(
                    f"Duplicate step name {step.name!r}: {step.where} and {other[0].where}. "
                    "Give one of them another name with @keel.step(name=...)."
                )
            name = f"{step.name}.{len(same) + 1}"
        node = Node(name, step, tuple(args), dict(kwargs), call_site)
        try:
            step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            node.problems.append(f"Step {step.name} ({step.where}) called at {call_site}: {exc}.")
        for h in handles_in(list(args)) + handles_in(kwargs):
            if h.node not in g.nodes:
                node.problems.append(f"Step {step.name} ({step.where}) called at {call_site} takes the output of unknown step {h.node!r}.")
        g.nodes[name] = node
        return Handle(name, (), _tuple_len(step))
