"""LightGBM autologging: ``lightgbm.train`` and the scikit-learn API (``LGBMModel.fit``).

Every iteration's evaluation results go to metrics ``<valid_name>-<metric>``
with ``step`` = the iteration (0-based), through a callback that keel adds to
the call. Also logged: params, ``best_iteration`` / ``stopped_iteration``,
``features.json``, ``feature_importance.json`` (split and gain) and the model
(``model.pkl`` plus LightGBM's own ``model.txt``). ``LGBMModel.fit`` calls
``lightgbm.train`` inside; that inner call only takes the callback, so nothing
is logged twice.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from keel.tracking import _autolog_sklearn as _sk
from keel.tracking import autolog as _al


def patch() -> None:
    import lightgbm
    import lightgbm.engine

    modules: list[Any] = [lightgbm, lightgbm.engine]
    lgb_sklearn: Any
    try:
        import lightgbm.sklearn as lgb_sklearn
    except ImportError:  # LightGBM without scikit-learn support
        lgb_sklearn = None
    else:
        modules.append(lgb_sklearn)
    engine_train = lightgbm.engine.train
    for module in modules:
        if getattr(module, "train", None) is engine_train:
            _al.patch("lightgbm", module, "train", _make_train_wrapper)
    if lgb_sklearn is not None:
        for cls in [lgb_sklearn.LGBMModel, *_al.iter_subclasses(lgb_sklearn.LGBMModel)]:
            if cls.__module__.startswith("lightgbm.") and inspect.isfunction(cls.__dict__.get("fit")):
                _al.patch("lightgbm", cls, "fit", _make_fit_wrapper)


class _Recorder:
    """The LightGBM callback: each iteration's evaluation results as metrics, step = iteration."""

    before_iteration = False

    def __init__(self, session: _al.Session) -> None:
        self.order = 5  # before early stopping (30), which raises at its last iteration
        self.session = session
        self.keys: dict[tuple[str, str], str] = {}
        self.failed = False

    def __call__(self, env: Any) -> None:
        run = self.session.run
        if self.failed or run is None or not env.evaluation_result_list:
            return
        values: dict[str, float] = {}
        for item in env.evaluation_result_list:
            key = self.keys.get((item[0], item[1]))
            if key is None:
                key = self.keys[(item[0], item[1])] = _al.metric_key(f"{item[0]}-{item[1]}")
            values[key] = item[2]
        self.session.iterations = int(env.iteration) + 1
        try:
            run.log_metrics(values, step=int(env.iteration))
        except Exception as exc:  # recorded once; training goes on
            self.failed = True
            self.session.problems.append(f"per-iteration metrics ({type(exc).__name__}: {exc})")


def _with_callback(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any], session: _al.Session) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        bound = inspect.signature(original).bind(*args, **kwargs)
    except TypeError:
        return args, kwargs  # the call is wrong anyway: let LightGBM say so
    callbacks = list(bound.arguments.get("callbacks") or [])  # never mutate the caller's list
    bound.arguments["callbacks"] = [*callbacks, _Recorder(session)]
    return bound.args, bound.kwargs


def _make_train_wrapper(original: Any) -> Any:
    return _al.make_train_wrapper(original, "lightgbm", _with_callback, _train_start, _log_booster)


def _train_start(session: _al.Session, call_args: dict[str, Any]) -> None:
    session.tags({"estimator_class": "lightgbm.basic.Booster", "estimator_name": "Booster"})
    params = dict(call_args.get("params") or {})
    params["num_boost_round"] = call_args.get("num_boost_round", 100)
    session.params(params)
    train_set = call_args.get("train_set")
    data = getattr(train_set, "data", None)
    if data is not None and not isinstance(data, str | Path):
        _al.log_training_data(session, data, getattr(train_set, "label", None))


def _make_fit_wrapper(original: Any) -> Any:
    return _al.make_fit_wrapper(original, "lightgbm", _fit_end)


def _fit_end(session: _al.Session, model: Any, call_args: dict[str, Any]) -> None:
    X, y = call_args.get("X"), call_args.get("y")
    if y is not None:
        session.metrics(session.safe("training metrics", _sk.training_metrics, model, X, y, call_args.get("sample_weight")) or {})
    _al.log_training_data(session, X, y)
    _log_booster(session, model.booster_, model, X)


def _log_booster(session: _al.Session, booster: Any, model: Any, X: Any = None) -> None:
    """Iteration counts, best scores, features, importance and the model of a trained Booster."""
    best = int(getattr(booster, "best_iteration", 0) or 0)
    # with early stopping the returned booster may hold only the best iterations: count what ran
    summary: dict[str, Any] = {"stopped_iteration": session.iterations or booster.current_iteration()}
    if best > 0:  # LightGBM counts from 1 here; 0 means "no early stopping"
        summary["best_iteration"] = best
        for valid, scores in (getattr(booster, "best_score", None) or {}).items():
            summary.update({f"best_{valid}-{metric}": value for metric, value in scores.items()})
    session.metrics(summary)
    names = [str(n) for n in booster.feature_name()]
    _al.log_features(session, names, len(names))
    session.safe("feature_importance.json", _log_importance, session, booster, names)
    _al.log_model_folder(session, model, X)


def _log_importance(session: _al.Session, booster: Any, names: list[str]) -> None:
    importance = {
        kind: {n: float(v) for n, v in zip(names, booster.feature_importance(importance_type=kind), strict=True)}
        for kind in ("split", "gain")
    }
    _al.log_json(session, importance, "feature_importance.json")
