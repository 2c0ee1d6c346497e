"""Autologging: ``keel.autolog()`` records scikit-learn, LightGBM and XGBoost training.

Calling :func:`autolog` replaces the training entry points of the installed
libraries (every scikit-learn estimator's ``fit``, ``lightgbm.train`` and
``LGBMModel.fit``, ``xgboost.train`` and ``XGBModel.fit``) with thin wrappers.
A wrapped call logs into the active run, or opens a run for itself and ends it
afterwards (failed, with the traceback, if the fit raises). Only the outermost
wrapped call logs: a Pipeline's or a grid search's inner fits stay quiet.

A library that is not imported yet is patched when it is first imported (a
post-import hook), so ``autolog()`` never imports LightGBM or XGBoost itself.

Logging never breaks training: a failure inside keel is caught, the fit's
result is returned, and one :class:`AutologWarning` per fit says what was not
recorded. The model artifact format (``model/``) is described in
``docs/models.md`` (it is the package ``keel.log_model`` writes) and in
:func:`log_model_folder`.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from keel.tracking.runs import Run

__all__ = ["AutologWarning", "autolog"]

FLAVORS = ("sklearn", "lightgbm", "xgboost")
_MODULE_OF = {"sklearn": "sklearn", "lightgbm": "lightgbm", "xgboost": "xgboost"}
_log = logging.getLogger("keel.autolog")


class AutologWarning(UserWarning):
    """Something keel.autolog could not record; the training itself went on."""


# -- configuration -------------------------------------------------------------


@dataclass
class _Config:
    log_models: bool = True
    log_datasets: bool = True
    silent: bool = False
    max_tuning_runs: int | None = 5


_config = _Config()
_enabled: dict[str, bool] = dict.fromkeys(FLAVORS, False)
_lock = threading.RLock()


def autolog(
    sklearn: bool = True,
    lightgbm: bool = True,
    xgboost: bool = True,
    log_models: bool = True,
    disable: bool = False,
    silent: bool = False,
    *,
    log_datasets: bool = True,
    max_tuning_runs: int | None = 5,
) -> None:
    """Record params, per-iteration metrics, feature names and the fitted model of every fit.

    Each call sets the state of every library: ``autolog()`` turns all three
    on, ``autolog(xgboost=False)`` turns XGBoost off, ``autolog(disable=True)``
    turns everything off and restores the original functions. Calling it twice
    is harmless. Libraries that are not installed are skipped; libraries not
    imported yet are patched when they are imported.

    ``log_models=False`` skips the model artifact; ``log_datasets=False`` skips
    the training set's fingerprint; ``max_tuning_runs`` caps the child runs a
    grid/randomized search records (best candidates first; 0 for none, None
    for all); ``silent=True`` turns the warnings into debug log lines.

    Example:
        >>> keel.autolog()
        >>> LogisticRegression().fit(X, y)   # a run with params, training_* metrics, model/
    """
    wanted = {"sklearn": sklearn, "lightgbm": lightgbm, "xgboost": xgboost}
    with _lock:
        _config.log_models = bool(log_models)
        _config.log_datasets = bool(log_datasets)
        _config.silent = bool(silent)
        _config.max_tuning_runs = max_tuning_runs
        for flavor in FLAVORS:
            on = bool(wanted[flavor]) and not disable
            if on:
                _enable(flavor)
            else:
                _disable(flavor)


def enabled_flavors() -> list[str]:
    """The libraries autologging is on for (patched, or waiting for their import)."""
    return [f for f in FLAVORS if _enabled[f]]


def _enable(flavor: str) -> None:
    if _enabled[flavor]:
        return
    module = _MODULE_OF[flavor]
    if module not in sys.modules and importlib.util.find_spec(module) is None:
        return  # not installed: nothing to patch
    _enabled[flavor] = True
    if module in sys.modules:
        _apply(flavor)
    else:
        _import_hook.add(module, flavor)


def _disable(flavor: str) -> None:
    _enabled[flavor] = False
    _import_hook.discard(_MODULE_OF[flavor])
    _unpatch_all(flavor)


def _apply(flavor: str) -> None:
    """Patch ``flavor``'s entry points (the library is imported by now)."""
    try:
        _flavor_module(flavor).patch()
    except Exception as exc:  # a library version we do not understand must not break the user's import
        _unpatch_all(flavor)
        _enabled[flavor] = False
        _report(f"keel.autolog could not patch {flavor}; it is not autologged: {type(exc).__name__}: {exc}")


def _flavor_module(flavor: str) -> Any:
    return importlib.import_module(f"keel.tracking._autolog_{flavor}")


# -- patching ------------------------------------------------------------------

_patches: dict[str, list[tuple[Any, str, Any, Any]]] = {f: [] for f in FLAVORS}


def patch(flavor: str, owner: Any, name: str, make_wrapper: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` by ``make_wrapper(original)``; :func:`_unpatch_all` puts it back."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    if getattr(original, "__keel_autolog__", False):
        return
    wrapper = make_wrapper(original)
    wrapper.__keel_autolog__ = True
    setattr(owner, name, wrapper)
    _patches[flavor].append((owner, name, original, wrapper))


def _unpatch_all(flavor: str) -> None:
    while _patches[flavor]:
        owner, name, original, wrapper = _patches[flavor].pop()
        current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if current is wrapper:  # someone else re-patched it since: leave theirs alone
            setattr(owner, name, original)


def is_patched(owner: Any, name: str) -> bool:
    value = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    return bool(getattr(value, "__keel_autolog__", False))


class _HookLoader(importlib.abc.Loader):
    """Wraps a module's loader to run a callback once the module has executed."""

    def __init__(self, loader: Any, on_loaded: Callable[[str], None]) -> None:
        self._loader = loader
        self._on_loaded = on_loaded

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # the module keeps its real loader (importlib.resources and friends ask it for files)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        self._on_loaded(module.__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _ImportHook(importlib.abc.MetaPathFinder):
    """Patches a library right after its first import (as wrapt's post-import hooks do)."""

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}
        self._busy: set[str] = set()

    def add(self, module: str, flavor: str) -> None:
        self._pending[module] = flavor
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def discard(self, module: str) -> None:
        self._pending.pop(module, None)
        if not self._pending and self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._pending or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _HookLoader(spec.loader, self._loaded)
        return spec

    def _loaded(self, module: str) -> None:
        with _lock:
            flavor = self._pending.get(module)
            self.discard(module)
            if flavor is not None and _enabled[flavor]:
                _apply(flavor)


_import_hook = _ImportHook()


# -- one logged fit ------------------------------------------------------------


@dataclass
class Session:
    """The outermost autologged fit in progress: its run and what went wrong while logging."""

    flavor: str
    what: str
    run: Run | None = None
    started: bool = False
    problems: list[str] = field(default_factory=list)
    wants_iterations: bool = False  # a sklearn-API fit asks the inner train() to take our callback
    iterations: int | None = None  # how many iterations the callback saw (early stopping may trim the model)

    def safe(self, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one logging step; a failure is noted for the warning, never raised."""
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.problems.append(f"{step} ({type(exc).__name__}: {exc})")
            return None

    # logging helpers, all through the session's run
    def params(self, values: Mapping[str, Any]) -> None:
        self.safe("params", _log_params, self, values)

    def metrics(self, values: Mapping[str, Any], step: int | None = None) -> None:
        if values and self.run is not None:
            self.safe("metrics", self.run.log_metrics, {metric_key(k): v for k, v in values.items()}, step)

    def tags(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.safe("tags", self.run.set_tags, {k: _clip(str(v)) for k, v in values.items()})


_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("keel_autolog_session", default=None)
_open_sessions = 0  # across threads: worker threads do not inherit the context variable


def current_session() -> Session | None:
    """The autologged fit this code runs inside, if any (in this thread or task)."""
    return _current.get()


def inside_fit() -> bool:
    """True inside any autologged fit, including in worker threads it started.

    Runs are process-wide in keel (one active-run stack), so a fit in another
    thread while an autologged fit is open belongs to it, like joblib's
    threading-backend workers of a grid search.
    """
    return _open_sessions > 0 or _current.get() is not None


def is_enabled(flavor: str) -> bool:
    return _enabled[flavor]


def run_logged(
    flavor: str,
    what: str,
    call: Callable[[], Any],
    before: Callable[[Session], None],
    after: Callable[[Session, Any], None],
    *,
    wants_iterations: bool = False,
) -> Any:
    """Run ``call`` as the outermost logged fit: open (or reuse) a run, log around it.

    ``before`` and ``after`` log; their failures end up in one warning. The
    result of ``call`` is returned and its exceptions re-raised untouched.
    """
    global _open_sessions
    session = Session(flavor, what, wants_iterations=wants_iterations)
    try:
        from keel.tracking.runs import active_run, start_run

        session.run = active_run()
        if session.run is None:
            session.run = start_run(tags={"autolog": flavor})
            session.started = True
    except Exception as exc:
        session.run = None
        session.problems.append(f"the run ({type(exc).__name__}: {exc})")
    with _lock:
        _open_sessions += 1
    token = _current.set(session)
    try:
        session.safe("params and tags", before, session)
        try:
            result = call()
            session.safe(what, after, session, result)
        except BaseException as exc:  # the fit failed (or was interrupted): so did our run
            if session.started and session.run is not None:
                session.safe("ending the run", session.run.__exit__, type(exc), exc, exc.__traceback__)
            raise
        if session.started and session.run is not None:
            session.safe("ending the run", session.run.__exit__, None, None, None)
        return result
    finally:
        _current.reset(token)
        with _lock:
            _open_sessions -= 1
        if session.problems:
            _report(f"keel.autolog could not record everything for {what} (the training was not affected): " + "; ".join(session.problems))


def _report(message: str) -> None:
    if _config.silent:
        _log.debug(message)
    else:
        warnings.warn(message, AutologWarning, stacklevel=4)


def config() -> _Config:
    return _config


# -- values --------------------------------------------------------------------

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./: ]")


def metric_key(name: str) -> str:
    """A library's metric name as a valid keel key: ``ndcg@5`` -> ``ndcg_5``."""
    key = _BAD_KEY_CHARS.sub("_", str(name)).strip()[:250]
    return key.replace("//", "/") or "_"


def _clip(text: str) -> str:
    from keel.config import settings

    limit = int(settings().max_value_length)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def param_value(value: Any) -> str:
    """A param as text: classes and functions by name, everything else by ``str``."""
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if callable(value) and hasattr(value, "__qualname__") and not hasattr(value, "get_params"):
        return str(value.__qualname__)
    return _clip(str(value))


def _log_params(session: Session, values: Mapping[str, Any]) -> None:
    if session.run is not None and values:
        session.run.log_params({metric_key(k): param_value(v) for k, v in values.items()})


def class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def estimator_tags(model: Any) -> dict[str, str]:
    return {"estimator_class": class_path(model), "estimator_name": type(model).__name__}


def bind_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call by parameter name (defaults left out)."""
    import inspect

    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return dict(kwargs)
    out = dict(bound.arguments)
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is param.VAR_KEYWORD and name in out:
            out.update(out.pop(name))
    return out


# -- artifacts -----------------------------------------------------------------


def log_json(session: Session, data: Any, name: str) -> None:
    from keel.tracking.artifacts import log_dict

    session.safe(name, log_dict, data, name)


def log_features(session: Session, names: Sequence[str] | None, n_features: int | None) -> None:
    """``features.json`` ({"feature_names": [...] or null, "n_features": n}) and an ``n_features`` tag."""
    if names is None and n_features is None:
        return
    n = len(names) if names is not None else n_features
    log_json(session, {"feature_names": list(names) if names is not None else None, "n_features": n}, "features.json")
    if n is not None:
        session.tags({"n_features": n})


def log_training_data(session: Session, X: Any, y: Any = None) -> None:
    """Record the training set's fingerprint, schema and size (``keel.log_dataset``)."""
    if not _config.log_datasets or X is None:
        return

    def _log() -> None:
        import numpy as np
        import pandas as pd

        from keel.tracking.datasets import log_dataset

        if isinstance(X, pd.DataFrame):
            frame = X
        else:
            arr = np.asarray(X)
            if arr.ndim != 2 or arr.dtype == object:
                return
            frame = pd.DataFrame(arr, columns=[f"f{i}" for i in range(arr.shape[1])], copy=False)
        if y is not None:
            target = np.asarray(y)
            if target.ndim == 1 and len(target) == len(frame) and "target" not in frame.columns:
                frame = frame.assign(target=target)  # no copy of X under pandas' copy-on-write
        log_dataset(frame, name="train", context="training")

    session.safe("the training dataset", _log)


PackageWriter = Callable[[Any, Path, Any, str], Any]  # (model, folder, training data, run id)
_package_writer: PackageWriter | None = None


def register_package_writer(writer: PackageWriter) -> None:
    """Set the function that writes an autologged model's package.

    ``keel.models.package`` registers its writer (the one ``keel.log_model``
    uses) when it is imported, so every model package has one format; this
    layer cannot import it (tracking sits below models).
    """
    global _package_writer
    _package_writer = writer


def log_model_folder(session: Session, model: Any, training_data: Any = None) -> None:
    """Log the fitted model as the artifact folder ``model/``: the package ``keel.log_model`` writes.

    ``model/model.pkl`` (the pickled model), ``model/model.txt`` (LightGBM) or
    ``model/model.json`` (XGBoost) in the library's own format,
    ``model/input_example.parquet`` (the first training rows, for a DataFrame
    fit) and ``model/keel-model.json`` (flavor, class, python, packages,
    signature with types, feature names, training-set fingerprint), so
    ``keel.load_model("runs:/<id>/model")`` serves it like a logged model.
    """
    if not _config.log_models:
        return

    def _log() -> None:
        from keel.tracking.artifacts import log_artifact

        writer = _package_writer
        if writer is None:
            raise RuntimeError("no model package writer is registered; enable autologging with keel.autolog()")
        assert session.run is not None
        with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
            folder = Path(tmp) / "model"
            writer(model, folder, training_data, session.run.id)
            log_artifact(folder, name="model")

    session.safe("the model", _log)


def feature_names_of(model: Any, X: Any) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        columns = getattr(X, "columns", None)
        names = list(columns) if columns is not None else None
    return [str(n) for n in names] if names is not None else None


def iter_subclasses(base: type) -> Iterator[type]:
    seen: set[type] = set()
    todo: list[type] = [base]
    while todo:
        cls = todo.pop()
        sub: type
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
                yield sub


def make_train_wrapper(
    original: Any,
    flavor: str,
    with_callback: Callable[[Any, tuple[Any, ...], dict[str, Any], Session], tuple[tuple[Any, ...], dict[str, Any]]],
    train_start: Callable[[Session, dict[str, Any]], None],
    log_booster: Callable[[Session, Any, Any], None],
) -> Any:
    """A library's native ``train`` function, logged: inside an estimator's fit it only adds the
    per-iteration callback (once); called directly it is a fit of its own."""

    @functools.wraps(original)
    def train(*args: Any, **kwargs: Any) -> Any:
        session = current_session()
        if session is not None:
            if session.flavor == flavor and session.wants_iterations and session.run is not None:
                session.wants_iterations = False
                args, kwargs = with_callback(original, args, kwargs, session)
            return original(*args, **kwargs)
        if inside_fit() or not is_enabled(flavor):
            return original(*args, **kwargs)
        call_args = bind_call(original, args, kwargs)

        def call() -> Any:
            session = current_session()
            if session is not None and session.run is not None:
                a, k = with_callback(original, args, kwargs, session)
                return original(*a, **k)
            return original(*args, **kwargs)

        return run_logged(
            flavor, f"{flavor}.train", call,
            lambda s: train_start(s, call_args),
            lambda s, booster: log_booster(s, booster, booster),
        )

    return train


def make_fit_wrapper(original: Any, flavor: str, fit_end: Callable[[Session, Any, dict[str, Any]], None]) -> Any:
    """A library's scikit-learn-style ``fit``, logged as one run (its native train adds the iterations)."""
    from keel.tracking import _autolog_sklearn as _sk

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        if inside_fit() or not is_enabled(flavor):
            return original(self, *args, **kwargs)
        call_args = bind_call(original, (self, *args), kwargs)
        return run_logged(
            flavor, f"{type(self).__name__}.fit",
            lambda: original(self, *args, **kwargs),
            lambda s: _sk.log_estimator_start(s, self),
            lambda s, _result: fit_end(s, self, call_args),
            wants_iterations=True,
        )

    return fit
