"""``@keel.step``: a plain function that becomes one node of a pipeline.

Called inside a ``@keel.pipeline`` function while the graph is being built, a
step does not run: it returns a :class:`~keel.pipelines.graph.Handle`, a lazy
reference to its future output, and records the call. Called anywhere else it
is the plain function.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, overload

from keel.errors import ValidationError

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def where(fn: Callable[..., Any]) -> str:
    """``file:line`` of a function's definition."""
    fn = inspect.unwrap(fn)
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


class Step:
    """A step: the function plus its caching, retry, serializer and smoke options."""

    kind = "step"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        cache: bool = True,
        expire: float | timedelta | None = None,
        retries: int = 0,
        serializer: str | None = None,
        shrink: Mapping[str, Any] | None = None,
        sample: bool = False,
        produces: list[str] | None = None,
    ) -> None:
        if not callable(fn):
            raise ValidationError(f"@keel.step needs a function, got {fn!r}.", hint="Put @keel.step on a def.")
        self.fn = fn
        self.name = name or fn.__name__
        self.where = where(fn)
        if not self.name or not set(self.name) <= _NAME_CHARS:
            raise ValidationError(
                f"Step name {self.name!r} at {self.where} is not valid.",
                hint="Use letters, digits, '_', '-' and '.'.",
            )
        self.cache = bool(cache)
        if isinstance(expire, timedelta):
            expire = expire.total_seconds()
        if expire is not None and (not isinstance(expire, int | float) or expire <= 0):
            raise ValidationError(f"Step {self.name} at {self.where}: expire={expire!r} is not a positive number of seconds.")
        self.expire = None if expire is None else float(expire)
        if not isinstance(retries, int) or retries < 0:
            raise ValidationError(f"Step {self.name} at {self.where}: retries={retries!r} is not a non-negative integer.")
        self.retries = retries
        self.serializer = serializer
        self.shrink = dict(shrink or {})
        self.sample = bool(sample)
        self.produces = list(produces or [])
        self.signature = inspect.signature(fn)
        unknown = [k for k in self.shrink if k not in self.signature.parameters]
        if unknown:
            from keel.errors import did_you_mean

            raise ValidationError(
                f"Step {self.name} at {self.where}: shrink names {unknown[0]!r}, which is not a parameter."
                + did_you_mean(unknown[0], list(self.signature.parameters)),
            )
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<keel.step {self.name} at {self.where}>"

    @property
    def ref(self) -> str:
        """``module:qualname`` by which a worker process imports this step."""
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def options(self) -> dict[str, Any]:
        """The options that change what the step computes (part of its cache key)."""
        return {"serializer": self.serializer, "sample": self.sample}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from keel.pipelines.graph import current_builder

        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        caller = sys._getframe(1)
        return builder.add_call(self, args, kwargs, f"{caller.f_code.co_filename}:{caller.f_lineno}")

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self  # steps are plain functions, never methods


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    cache: bool = True,
    expire: float | timedelta | None = None,
    retries: int = 0,
    serializer: str | None = None,
    shrink: Mapping[str, Any] | None = None,
    sample: bool = False,
    produces: list[str] | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a pipeline step.

    Options: ``cache`` (False: always run), ``expire`` (seconds or timedelta a
    cached output stays valid), ``retries``, ``serializer`` ("parquet", "numpy",
    "json", "model", "pickle"; default: chosen by the output's type; "model"
    also packages Python objects with a predict method), ``shrink`` (param
    values used by ``--smoke`` runs, e.g. ``{"n_estimators": 10}``), ``sample``
    (a data-loading step whose output ``--smoke`` runs sample), ``produces``
    (paths or ``model:NAME`` the step writes; triggers use it to refuse loops), ``name``.

    Example::

        @keel.step(shrink={"n_estimators": 10})
        def train(df, n_estimators=300): ...
    """
    if fn is not None:
        return Step(fn, **options)
    return lambda f: Step(f, **options)
