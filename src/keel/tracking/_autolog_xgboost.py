"""XGBoost autologging: ``xgboost.train`` and the scikit-learn API (``XGBModel.fit``).

Every iteration's ``evals_log`` goes to metrics ``<eval_name>-<metric>`` with
``step`` = the iteration (0-based), through a ``TrainingCallback`` that keel
adds to the call. Also logged: params, ``best_iteration`` / ``best_score``
(with early stopping) and ``stopped_iteration``, ``features.json``,
``feature_importance.json`` (weight, gain and cover) and the model
(``model.pkl`` plus XGBoost's own ``model.json``). ``XGBModel.fit`` calls
``xgboost.train`` inside; that inner call only takes the callback.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from keel.tracking import _autolog_sklearn as _sk
from keel.tracking import autolog as _al


def patch() -> None:
    import xgboost
    import xgboost.training

    modules: list[Any] = [xgboost, xgboost.training]
    xgb_sklearn: Any
    try:
        import xgboost.sklearn as xgb_sklearn
    except ImportError:  # XGBoost without scikit-learn support
        xgb_sklearn = None
    else:
        modules.append(xgb_sklearn)
    engine_train = xgboost.training.train
    for module in modules:
        if getattr(module, "train", None) is engine_train:
            _al.patch("xgboost", module, "train", _make_train_wrapper)
    if xgb_sklearn is not None:
        for cls in [xgb_sklearn.XGBModel, *_al.iter_subclasses(xgb_sklearn.XGBModel)]:
            if cls.__module__.startswith("xgboost.") and inspect.isfunction(cls.__dict__.get("fit")):
                _al.patch("xgboost", cls, "fit", _make_fit_wrapper)


@functools.lru_cache(maxsize=1)
def _recorder_class() -> type:
    from xgboost.callback import TrainingCallback

    class Recorder(TrainingCallback):
        """Each iteration's evals_log as metrics, step = iteration."""

        def __init__(self, session: _al.Session) -> None:
            super().__init__()
            self.session = session
            self.keys: dict[tuple[str, str], str] = {}
            self.failed = False

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            run = self.session.run
            if self.failed or run is None or not evals_log:
                return False
            values: dict[str, float] = {}
            for data, by_metric in evals_log.items():
                for metric, history in by_metric.items():
                    if not history:
                        continue
                    key = self.keys.get((data, metric))
                    if key is None:
                        key = self.keys[(data, metric)] = _al.metric_key(f"{data}-{metric}")
                    last = history[-1]
                    values[key] = last[0] if isinstance(last, tuple) else last  # cv: (mean, std)
            self.session.iterations = int(epoch) + 1
            try:
                run.log_metrics(values, step=int(epoch))
            except Exception as exc:
                self.failed = True
                self.session.problems.append(f"per-iteration metrics ({type(exc).__name__}: {exc})")
            return False  # never stop training

    return Recorder


def _with_callback(original: Any, args: tuple[Any, ...], kwargs: dict[str, Any], session: _al.Session) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        bound = inspect.signature(original).bind(*args, **kwargs)
    except TypeError:
        return args, kwargs
    # first in line: XGBoost stops asking callbacks once one (early stopping) says stop
    callbacks = list(bound.arguments.get("callbacks") or [])
    bound.arguments["callbacks"] = [_recorder_class()(session), *callbacks]
    return bound.args, bound.kwargs


def _make_train_wrapper(original: Any) -> Any:
    return _al.make_train_wrapper(original, "xgboost", _with_callback, _train_start, _log_booster)


def _train_start(session: _al.Session, call_args: dict[str, Any]) -> None:
    session.tags({"estimator_class": "xgboost.core.Booster", "estimator_name": "Booster"})
    raw = call_args.get("params") or {}
    params: dict[str, Any] = {}
    if isinstance(raw, dict):
        params.update(raw)
    else:  # a list of pairs, e.g. several eval_metric entries
        for key, value in raw:
            params[key] = [*params[key], value] if isinstance(params.get(key), list) else [params[key], value] if key in params else value
    params["num_boost_round"] = call_args.get("num_boost_round", 10)
    if call_args.get("early_stopping_rounds") is not None:
        params["early_stopping_rounds"] = call_args["early_stopping_rounds"]
    session.params(params)


def _make_fit_wrapper(original: Any) -> Any:
    return _al.make_fit_wrapper(original, "xgboost", _fit_end)


def _fit_end(session: _al.Session, model: Any, call_args: dict[str, Any]) -> None:
    X, y = call_args.get("X"), call_args.get("y")
    if y is not None:
        session.metrics(session.safe("training metrics", _sk.training_metrics, model, X, y, call_args.get("sample_weight")) or {})
    _al.log_training_data(session, X, y)
    _log_booster(session, model.get_booster(), model, _al.feature_names_of(model, X), X)


def _log_booster(session: _al.Session, booster: Any, model: Any, names: list[str] | None = None, X: Any = None) -> None:
    summary: dict[str, Any] = {"stopped_iteration": session.iterations or booster.num_boosted_rounds()}
    best = _attr(booster, "best_iteration")
    if best is not None:  # only set with early stopping; 0-based, as XGBoost counts
        summary["best_iteration"] = best
        score = _attr(booster, "best_score")
        if score is not None:
            summary["best_score"] = score
    session.metrics(summary)
    if names is None and booster.feature_names is not None:
        names = [str(n) for n in booster.feature_names]
    _al.log_features(session, names, booster.num_features())
    session.safe("feature_importance.json", _log_importance, session, booster)
    _al.log_model_folder(session, model, X)


def _attr(booster: Any, name: str) -> Any:
    try:
        return getattr(booster, name)
    except (AttributeError, ValueError):
        return None


def _log_importance(session: _al.Session, booster: Any) -> None:
    importance: dict[str, dict[str, float]] = {}
    for kind in ("weight", "gain", "cover"):
        try:
            importance[kind] = {str(k): float(v) for k, v in booster.get_score(importance_type=kind).items()}
        except Exception:  # gblinear has weights only
            continue
    if importance:
        _al.log_json(session, importance, "feature_importance.json")
