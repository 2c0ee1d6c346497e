"""scikit-learn autologging: every estimator's ``fit`` (and ``fit_transform`` / ``fit_predict``).

Logged for the outermost fit: params (``get_params(deep=False)``), tags
``estimator_class`` / ``estimator_name``, training metrics (``training_*``) for
classifiers and regressors, ``features.json``, the training dataset and the
model. Searches (GridSearchCV, RandomizedSearchCV, halving searches) add
``best_*`` params, ``best_cv_score``, ``cv_results.parquet`` and a child run per
best candidate.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any

from keel.tracking import autolog as _al

_METHODS = ("fit", "fit_transform", "fit_predict")


def patch() -> None:
    from sklearn.base import BaseEstimator

    _import_all_estimators()
    for cls in [BaseEstimator, *_al.iter_subclasses(BaseEstimator)]:
        if not cls.__module__.startswith("sklearn."):
            continue  # LightGBM/XGBoost classes have their own flavors; user classes inherit the patch
        for method in _METHODS:
            value = cls.__dict__.get(method)
            if inspect.isfunction(value):
                _al.patch("sklearn", cls, method, functools.partial(_make_wrapper, method=method))
            elif _is_available_if(value):
                # Pipeline.fit_transform and friends: wrap the function, keep the descriptor, so
                # hasattr(pipeline, "fit_transform") still answers as before
                _al.patch("sklearn", cls, method, functools.partial(_wrap_available_if, method=method))
    _patch_model_selection()


@functools.lru_cache(maxsize=1)
def _import_all_estimators() -> None:
    """Import every public sklearn module (once: it walks the package), so every estimator class exists."""
    from sklearn.utils import all_estimators

    all_estimators()


def _is_available_if(value: Any) -> bool:
    return type(value).__name__ == "_AvailableIfDescriptor" and inspect.isfunction(getattr(value, "fn", None))


def _wrap_available_if(descriptor: Any, method: str) -> Any:
    return type(descriptor)(_make_wrapper(descriptor.fn, method), descriptor.check, descriptor.attribute_name)


def _make_wrapper(original: Any, method: str) -> Any:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _al.inside_fit() or not _al.is_enabled("sklearn"):
            return original(self, *args, **kwargs)
        call_args = _al.bind_call(original, (self, *args), kwargs)
        return _al.run_logged(
            "sklearn",
            f"{type(self).__name__}.{method}",
            lambda: original(self, *args, **kwargs),
            lambda s: log_estimator_start(s, self),
            lambda s, _result: log_estimator_end(s, self, call_args, method),
        )

    return wrapper


def log_estimator_start(session: _al.Session, estimator: Any) -> None:
    session.tags(_al.estimator_tags(estimator))
    session.params(estimator.get_params(deep=False))


def log_estimator_end(session: _al.Session, estimator: Any, call_args: dict[str, Any], method: str) -> None:
    X, y = call_args.get("X"), call_args.get("y")
    if method == "fit" and y is not None:
        metrics = session.safe("training metrics", training_metrics, estimator, X, y, call_args.get("sample_weight"))
        session.metrics(metrics or {})
    if hasattr(estimator, "cv_results_"):
        log_search(session, estimator)
    names = _al.feature_names_of(estimator, X)
    _al.log_features(session, names, getattr(estimator, "n_features_in_", None))
    _al.log_training_data(session, X, y)
    _al.log_model_folder(session, estimator, X)


def training_metrics(estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> dict[str, float]:
    """``training_*`` metrics of a fitted classifier or regressor on its own training data."""
    from sklearn.base import is_classifier, is_regressor

    if not hasattr(estimator, "predict"):
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined-metric and feature-name chatter is not the user's concern here
        if is_classifier(estimator):
            proba = None
            if hasattr(estimator, "predict_proba"):
                try:
                    proba = estimator.predict_proba(X)
                except Exception:  # e.g. SVC(probability=False) exposes predict_proba but cannot use it
                    proba = None
            scores = classification_scores(y, estimator.predict(X), proba, getattr(estimator, "classes_", None), sample_weight)
        elif is_regressor(estimator):
            scores = regression_scores(y, estimator.predict(X), sample_weight)
        else:
            return {}
    return {f"training_{k}": v for k, v in scores.items()}


def classification_scores(y: Any, pred: Any, proba: Any = None, labels: Any = None, sample_weight: Any = None) -> dict[str, float]:
    """accuracy, precision, recall, f1, and log_loss/roc_auc when probabilities are given.

    The definitions are keel.evaluate's, so ``training_f1`` and an evaluation's
    ``f1`` measure the same thing: for two classes precision/recall/f1 are those
    of the positive class (the second of ``classes_``) and ROC AUC is that of its
    probability; for more classes each is the macro average over the classes
    present in ``y`` (one-vs-rest for ROC AUC), as scikit-learn's ``average="macro"``.
    """
    import numpy as np
    from sklearn import metrics as m

    w = sample_weight
    classes = np.asarray(labels) if labels is not None else np.unique(np.asarray(y))
    out: dict[str, Any] = {"accuracy": m.accuracy_score(y, pred, sample_weight=w)}
    binary = len(classes) == 2
    for name, fn in (("precision", m.precision_score), ("recall", m.recall_score), ("f1", m.f1_score)):
        if binary:
            out[name] = fn(y, pred, average="binary", pos_label=classes[1], sample_weight=w, zero_division=0)
        else:
            present = [c for c in classes if np.any(np.asarray(y) == c)]
            out[name] = fn(y, pred, average="macro", labels=present, sample_weight=w, zero_division=0)
    if proba is not None:
        out["log_loss"] = m.log_loss(y, proba, sample_weight=w, labels=labels)
        auc = macro_roc_auc(np.asarray(y), np.asarray(proba), classes, w)
        if auc is not None:
            out["roc_auc"] = auc
    return {k: float(np.asarray(v)) for k, v in out.items()}


def macro_roc_auc(y: Any, proba: Any, classes: Any, sample_weight: Any = None) -> float | None:
    """ROC AUC of the positive class (two classes) or the one-vs-rest macro average; None if undefined."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    if proba.ndim != 2 or proba.shape[1] != len(classes):
        return None
    columns = [1] if len(classes) == 2 else range(len(classes))
    aucs = []
    for j in columns:
        yc = y == classes[j]
        if yc.all() or not yc.any():  # a class absent from y (or alone in it): no AUC for it
            continue
        aucs.append(float(roc_auc_score(yc, proba[:, j], sample_weight=sample_weight)))
    return float(np.mean(aucs)) if aucs else None


def regression_scores(y: Any, pred: Any, sample_weight: Any = None) -> dict[str, float]:
    """mse, rmse, mae and r2."""
    from sklearn import metrics as m

    mse = float(m.mean_squared_error(y, pred, sample_weight=sample_weight))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(m.mean_absolute_error(y, pred, sample_weight=sample_weight)),
        "r2": float(m.r2_score(y, pred, sample_weight=sample_weight)),
    }


def log_search(session: _al.Session, search: Any) -> None:
    """Best params and score, ``cv_results.parquet``, and child runs for the best candidates."""
    best_params = getattr(search, "best_params_", None)
    if best_params:
        session.params({f"best_{k}": v for k, v in best_params.items()})
    best_score = getattr(search, "best_score_", None)
    if best_score is not None:
        session.metrics({"best_cv_score": best_score})
    best = getattr(search, "best_estimator_", None)
    if best is not None:
        session.tags({"best_estimator_class": _al.class_path(best)})
    session.safe("cv_results.parquet", _log_cv_results, search)
    session.safe("the candidates' child runs", _log_candidates, session, search)


def _cv_frame(search: Any) -> Any:
    import pandas as pd

    frame = pd.DataFrame(search.cv_results_)
    for col in frame.columns:
        if frame[col].dtype == object:  # param_* columns mix types; `params` holds dicts
            frame[col] = frame[col].map(lambda v: None if v is None or v is _masked() else str(v))
    return frame


@functools.lru_cache(maxsize=1)
def _masked() -> Any:
    import numpy as np

    return np.ma.masked


def _log_cv_results(search: Any) -> None:
    from keel.tracking.artifacts import log_table

    log_table(_cv_frame(search), "cv_results.parquet")


def _log_candidates(session: _al.Session, search: Any) -> None:
    import numpy as np

    limit = _al.config().max_tuning_runs
    if limit == 0 or session.run is None:
        return
    results = search.cv_results_
    rank_key = "rank_test_score" if "rank_test_score" in results else next((k for k in results if k.startswith("rank_test_")), None)
    order = np.argsort(results[rank_key], kind="stable") if rank_key else np.arange(len(results["params"]))
    if limit is not None:
        order = order[:limit]
    score_keys = [k for k in results if k.startswith(("mean_test_", "std_test_", "mean_train_", "rank_test_", "mean_fit_time"))]
    from keel.tracking.runs import start_run

    for i in order:
        with start_run(name=f"{session.run.name}-candidate-{int(i)}", nested=True, tags={"autolog": "sklearn", "candidate": int(i)}) as child:
            child.log_params({_al.metric_key(k): _al.param_value(v) for k, v in results["params"][i].items()})
            child.log_metrics({k: float(results[k][i]) for k in score_keys})


# -- cross-validation helpers: one run for all their fits -----------------------------

_CV_FUNCTIONS = ("cross_validate", "cross_val_predict", "learning_curve", "validation_curve", "permutation_test_score")


def _patch_model_selection() -> None:
    """Patch the helpers that fit many clones (cross_val_score goes through cross_validate)."""
    from sklearn import model_selection
    from sklearn.model_selection import _validation

    for name in _CV_FUNCTIONS:
        original = getattr(_validation, name, None)
        if original is None:
            continue
        for owner in (_validation, model_selection):
            if getattr(owner, name, None) is original:
                _al.patch("sklearn", owner, name, functools.partial(_make_cv_wrapper, name=name))


def _make_cv_wrapper(original: Any, name: str) -> Any:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _al.inside_fit() or not _al.is_enabled("sklearn"):
            return original(*args, **kwargs)
        call_args = _al.bind_call(original, args, kwargs)
        estimator = call_args.get("estimator")
        return _al.run_logged(
            "sklearn",
            f"{name}({type(estimator).__name__})",
            lambda: original(*args, **kwargs),
            lambda s: _cv_start(s, estimator, name),
            lambda s, result: _cv_end(s, name, call_args, result),
        )

    return wrapper


def _cv_start(session: _al.Session, estimator: Any, name: str) -> None:
    if estimator is None:
        return
    session.tags({**_al.estimator_tags(estimator), "sklearn_function": name})
    session.params(estimator.get_params(deep=False))


def _cv_end(session: _al.Session, name: str, call_args: dict[str, Any], result: Any) -> None:
    import numpy as np

    X, y = call_args.get("X"), call_args.get("y")
    if name == "cross_validate" and isinstance(result, dict):
        folds = {k: np.asarray(v, dtype=float) for k, v in result.items() if k.startswith(("test_", "train_")) or k.endswith("_time")}
        session.metrics({f"cv_{k}_{stat}": float(getattr(v, stat)()) for k, v in folds.items() for stat in ("mean", "std")})
        _al.log_json(session, {k: v.tolist() for k, v in folds.items()}, "cv_scores.json")
    elif name == "cross_val_predict" and y is not None and call_args.get("method", "predict") == "predict":
        session.metrics(session.safe("cross-validated metrics", _oof_scores, call_args["estimator"], y, result) or {})
    elif name == "permutation_test_score" and isinstance(result, tuple) and len(result) == 3:
        session.metrics({"permutation_score": result[0], "permutation_pvalue": result[2]})
    _al.log_training_data(session, X, y)


def _oof_scores(estimator: Any, y: Any, pred: Any) -> dict[str, float]:
    """``cv_*`` metrics of out-of-fold predictions."""
    from sklearn.base import is_classifier, is_regressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if is_classifier(estimator):
            scores = classification_scores(y, pred)
        elif is_regressor(estimator):
            scores = regression_scores(y, pred)
        else:
            return {}
    return {f"cv_{k}": v for k, v in scores.items()}
