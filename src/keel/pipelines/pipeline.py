"""``@keel.pipeline``: a function that wires steps together by passing their outputs.

Its arguments are the pipeline's parameters (``--param k=v`` on the command
line, coerced to the annotated type). Calling the pipeline runs it and returns
a :class:`~keel.pipelines.runner.PipelineResult`; ``.graph(**params)`` only builds
the graph, and ``.lint(**params)`` checks it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError, ValidationError, did_you_mean
from keel.pipelines.graph import Builder, Graph
from keel.pipelines.step import where

if TYPE_CHECKING:
    from keel.pipelines.runner import PipelineResult


class Pipeline:
    """A pipeline definition: a function of parameters that calls steps."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, experiment: str | None = None, produces: list[str] | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.experiment = experiment or self.name
        self.produces = list(produces or [])
        self.where = where(fn)
        self.signature = inspect.signature(fn)
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<keel.pipeline {self.name} at {self.where}>"

    # -- parameters -------------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.signature.parameters.items() if p.default is not inspect.Parameter.empty}

    def bind(self, params: Mapping[str, Any] | None = None, *, coerce: bool = False) -> dict[str, Any]:
        """The full parameter set; unknown or missing names and wrong types raise before anything runs."""
        params = dict(params or {})
        names = list(self.signature.parameters)
        for k in params:
            if k not in self.signature.parameters:
                raise ValidationError(
                    f"Pipeline {self.name} has no parameter {k!r}." + did_you_mean(k, names),
                    hint=f"Its parameters: {', '.join(names) or 'none'}.",
                )
        hints = _hints(self.fn)
        out: dict[str, Any] = {}
        for k, p in self.signature.parameters.items():
            if k in params:
                out[k] = coerce_value(self.name, k, params[k], hints.get(k), from_text=coerce)
            elif p.default is not inspect.Parameter.empty:
                out[k] = p.default
            else:
                raise ValidationError(f"Pipeline {self.name} needs parameter {k!r}.", hint=f"Pass --param {k}=VALUE.")
        return out

    # -- graph ------------------------------------------------------------------
    def graph(self, **params: Any) -> Graph:
        """Build the graph for these parameters without running anything."""
        bound = self.bind(params)
        with Builder(self.name) as b:
            b.graph.output = self.fn(**bound)
        return b.graph

    def lint(self, **params: Any) -> Graph:
        from keel.pipelines.lint import lint

        g = self.graph(**params)
        lint(g)
        return g

    def __call__(self, **params: Any) -> PipelineResult:
        from keel.pipelines.runner import run

        return run(self, params)

    def run(self, params: Mapping[str, Any] | None = None, **options: Any) -> PipelineResult:
        """Run with options: smoke, refresh, engine, experiment, tags, trigger."""
        from keel.pipelines.runner import run

        return run(self, params, **options)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def coerce_value(pipeline: str, key: str, value: Any, hint: Any, *, from_text: bool) -> Any:
    """Check (and, from the command line, convert) one parameter against its annotation."""
    if hint is None or hint is Any:
        if from_text and isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    errors = []
    for t in options:
        if t is type(None):
            continue
        base = typing.get_origin(t) or t
        try:
            return _coerce_one(value, base, from_text)
        except (TypeError, ValueError) as exc:
            errors.append(str(exc))
    tname = getattr(hint, "__name__", str(hint))
    raise ValidationError(
        f"Pipeline {pipeline} parameter {key!r} = {value!r} is not a valid {tname}.",
        hint=f"Pass a value of type {tname}: --param {key}=VALUE.",
    )


def _coerce_one(value: Any, t: Any, from_text: bool) -> Any:
    from keel.pipelines.cache import FileRef

    if t is FileRef:
        return value if isinstance(value, FileRef) else FileRef(value)
    if t is Path or (isinstance(t, type) and issubclass(t, Path)):
        if isinstance(value, str | Path):
            return Path(value)
        raise TypeError("not a path")
    if t is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise TypeError("not a bool")
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            return int(value)
        raise TypeError("not an int")
    if t is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            return float(value)
        raise TypeError("not a float")
    if t is str:
        if isinstance(value, str):
            return value
        raise TypeError("not a str")
    if t in (list, dict):
        if from_text and isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, t):
            return value
        raise TypeError(f"not a {t.__name__}")
    if isinstance(t, type) and not isinstance(value, t):
        raise TypeError(f"not a {t.__name__}")
    return value


def pipeline(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a pipeline: its body calls steps, passing outputs along.

    Options: ``name``, ``experiment`` (default: the pipeline's name; smoke runs
    go to ``<experiment>-smoke``), ``produces`` (paths or ``model:NAME`` it writes).

    Example::

        @keel.pipeline
        def training(data: FileRef, n_estimators: int = 300):
            df = load(data)
            model = train(df, n_estimators=n_estimators)
            return evaluate(model, df)
    """
    if fn is not None:
        return Pipeline(fn, **options)
    return lambda f: Pipeline(f, **options)


def load_pipeline(ref: str) -> Pipeline:
    """Import ``module:attribute`` (or ``path/to/file.py:attribute``); clear errors when it is missing."""
    if not isinstance(ref, str) or ":" not in ref:
        raise ValidationError(f"Pipeline reference {ref!r} is not MODULE:NAME.", hint="Write e.g. `pipelines:training` or `flows/train.py:training`.")
    module_name, _, attr = ref.rpartition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise NotFoundError(f"Pipeline file {module_name!r} does not exist.", hint="Give a path relative to the working directory.")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = path.stem
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotFoundError(f"No module named {module_name!r} (from pipeline reference {ref!r}).", hint="Run from the project folder, or give the file path: path/to/file.py:NAME.") from None
        raise
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            names = [k for k, v in vars(module).items() if isinstance(v, Pipeline)]
            raise NotFoundError(f"Module {module_name!r} has no pipeline {attr!r}." + did_you_mean(attr, names), hint=f"Pipelines there: {', '.join(names) or 'none'}.")
    if not isinstance(obj, Pipeline):
        raise ValidationError(f"{ref!r} is a {type(obj).__name__}, not a @keel.pipeline.", hint="Decorate the function with @keel.pipeline.")
    return obj


def project_modules() -> list[str]:
    """The modules holding the project's pipelines: keel.yaml ``pipelines: {modules: [...]}``,
    else ``pipelines`` when the project has ``pipelines.py`` or a ``pipelines/`` package."""
    from keel.config import settings

    s = settings()
    given = s.section("pipelines").get("modules")
    if given is not None:
        if isinstance(given, str):
            given = [given]
        if not isinstance(given, list) or not all(isinstance(m, str) and m for m in given):
            raise ValidationError(f"keel.yaml pipelines.modules is {given!r}, not a list of module names.", hint="Write e.g. pipelines: {modules: [pipelines, flows.nightly]}.")
        return list(given)
    root = s.root
    return ["pipelines"] if (root / "pipelines.py").is_file() or (root / "pipelines" / "__init__.py").is_file() else []


def project_pipelines() -> dict[str, Pipeline]:
    """Every ``@keel.pipeline`` of the project (see :func:`project_modules`), by name."""
    from keel.config import settings

    root = str(settings().root)
    if root not in sys.path:
        sys.path.insert(0, root)
    out: dict[str, Pipeline] = {}
    for name in project_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                raise NotFoundError(f"Pipeline module {name!r} (keel.yaml pipelines.modules) does not exist under {root}.",
                                    hint="Name modules importable from the project folder.") from None
            raise
        for value in vars(module).values():
            if isinstance(value, Pipeline) and value.name not in out:
                out[value.name] = value
    return out


def project_pipeline(name_or_ref: str) -> Pipeline:
    """One of the project's pipelines, by name or ``module:name`` reference; nothing else is imported."""
    found = project_pipelines()
    if name_or_ref in found:
        return found[name_or_ref]
    for pipe in found.values():
        if pipe.ref == name_or_ref:
            return pipe
    raise NotFoundError(
        f"The project has no pipeline {name_or_ref!r}." + did_you_mean(name_or_ref, found),
        hint=f"Its pipelines: {', '.join(sorted(found)) or 'none (add pipelines.py, or keel.yaml pipelines: {modules: [...]})'}.",
    )


def describe(pipe: Pipeline) -> dict[str, Any]:
    """A pipeline's name, reference, parameters (with defaults and types) and docstring, JSON-ready."""
    hints = _hints(pipe.fn)
    params = []
    for k, p in pipe.signature.parameters.items():
        hint = hints.get(k)
        default = None if p.default is inspect.Parameter.empty else p.default
        params.append({
            "name": k, "type": None if hint is None else getattr(hint, "__name__", str(hint)),
            "required": p.default is inspect.Parameter.empty,
            "default": default if isinstance(default, str | int | float | bool) or default is None else str(default),
        })
    return {"name": pipe.name, "ref": pipe.ref, "experiment": pipe.experiment, "where": pipe.where,
            "description": (pipe.__doc__ or "").strip() or None, "parameters": params, "produces": list(pipe.produces)}
