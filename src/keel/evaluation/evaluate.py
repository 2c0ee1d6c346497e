"""``keel.evaluate``: metrics of a model on a dataset, per slice, beside the champion's.

A registered version's results are stored on the version (``model_evaluations``)
with the dataset's content fingerprint, so two versions evaluated on the same
rows can be shown side by side. With a baseline (by default the version in the
last environment, ``production``), both models are scored on the same rows and
every metric gets a paired-bootstrap interval of the difference.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import NotFoundError, ValidationError, did_you_mean
from keel.evaluation import metrics as M

BOOTSTRAP_CHUNK_CELLS = 4_000_000  # weights matrix cells per chunk (~32 MB)


@dataclass
class Predictions:
    """One model's outputs on the evaluation rows, encoded for the metrics."""

    task: str
    y: Any  # binary: 0/1; multiclass: class index; regression: float
    score: Any  # binary: P(positive); multiclass: (n, k) probabilities; regression: predictions
    classes: list[Any] = field(default_factory=list)
    y_raw: Any = None

    def labels(self, threshold: float) -> Any:
        if self.task == "binary":
            return (self.score >= threshold).astype(int)
        if self.task == "multiclass":
            return np.asarray(self.classes, dtype=object)[self.score.argmax(axis=1)]
        return self.score


@dataclass
class EvaluationResult:
    model: str
    task: str
    dataset: str
    fingerprint: str
    num_rows: int
    threshold: float
    metrics: dict[str, float]
    confusion_matrix: dict[str, Any] | None = None
    slices: list[dict[str, Any]] = field(default_factory=list)
    model_name: str | None = None
    version: int | None = None
    baseline: EvaluationResult | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    predictions: Predictions | None = field(default=None, repr=False)
    greater_is_better: dict[str, bool] = field(default_factory=dict, repr=False)
    id: int | None = None

    @property
    def primary_metric(self) -> str:
        return M.PRIMARY[self.task]

    def to_dict(self, *, with_baseline: bool = True) -> dict[str, Any]:
        out = {
            "model": self.model, "model_name": self.model_name, "version": self.version, "task": self.task,
            "dataset": self.dataset, "fingerprint": self.fingerprint, "num_rows": self.num_rows,
            "threshold": self.threshold, "metrics": self.metrics, "confusion_matrix": self.confusion_matrix,
            "slices": self.slices, "comparison": self.comparison,
        }
        if with_baseline and self.baseline is not None:
            out["baseline"] = self.baseline.to_dict(with_baseline=False)
        return out

    def table(self) -> list[dict[str, Any]]:
        """Rows of metric, this model, the baseline, the difference and its bootstrap interval."""
        if self.comparison:
            return self.comparison
        return [{"metric": k, "value": v} for k, v in self.metrics.items()]


# -- inputs ---------------------------------------------------------------------

def read_data(data: Any) -> tuple[Any, str, str]:
    """(DataFrame, name, fingerprint) of a DataFrame, Arrow table or Parquet/CSV path."""
    import pandas as pd

    from keel.tracking.datasets import fingerprint_with_lineage

    name = "dataframe"
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.exists():
            raise NotFoundError(f"Evaluation data {path} does not exist.", hint="Pass a Parquet or CSV file, or a DataFrame.")
        name = str(path)
        data = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    elif hasattr(data, "to_pandas") and hasattr(data, "schema"):
        data = data.to_pandas()
    if not isinstance(data, pd.DataFrame):
        raise ValidationError(f"Evaluation data is a {type(data).__name__}.", hint="Pass a pandas DataFrame, an Arrow table or a file path.")
    if len(data) == 0:
        raise ValidationError("Evaluation data has no rows.", hint="Pass a non-empty dataset.")
    return data, name, fingerprint_with_lineage(data)[0]


def as_model(model: Any) -> Any:
    """A keel Model from a URI, a registry version (anything with ``.uri``) or a loaded model; raw models pass."""
    from keel.models.loader import Model, load_model

    if isinstance(model, str):
        return load_model(model)
    if isinstance(model, Model):
        return model
    if not callable(getattr(model, "predict", None)) and isinstance(getattr(model, "uri", None), str):
        return load_model(model.uri)
    if callable(getattr(model, "predict", None)):
        return model
    raise ValidationError(
        f"Cannot evaluate a {type(model).__name__}.",
        hint="Pass a model URI ('models:/churn/3'), a registered version, a loaded keel model or an object with predict().",
    )


def _label(model: Any) -> tuple[str, str | None, int | None]:
    src = getattr(model, "source", None)
    if src is not None and getattr(src, "label", None):
        return str(src.label), src.model, src.version
    return type(model).__name__, None, None


def _classes(model: Any) -> list[Any] | None:
    raw = getattr(model, "model", model)
    classes = getattr(raw, "classes_", None)
    return None if classes is None else list(classes)


def predict(model: Any, frame: Any, target: str, task: str) -> Predictions:
    """Score ``frame`` (without its target) with ``model``."""
    import pandas as pd

    if target not in frame.columns:
        raise ValidationError(
            f"Target column {target!r} is not in the evaluation data." + did_you_mean(target, [str(c) for c in frame.columns]),
            hint="Pass target= the label column.",
        )
    y_raw = frame[target]
    if y_raw.isna().any():
        raise ValidationError(f"Target column {target!r} has {int(y_raw.isna().sum())} null value(s).", hint="Drop rows without a label first.")
    X = frame.drop(columns=[target])
    y_np = y_raw.to_numpy()
    if task == "regression":
        pred = np.asarray(model.predict(X), dtype="float64").reshape(-1)
        return Predictions(task, y_np.astype("float64"), pred, [], y_np)
    proba = None
    if callable(getattr(model, "predict_proba", None)) and (getattr(model, "meta", {}) or {}).get("has_predict_proba", True):
        proba = np.asarray(model.predict_proba(X), dtype="float64")
        if proba.ndim == 1:
            proba = np.column_stack([1 - proba, proba])
    classes = _classes(model)
    observed = list(pd.unique(y_raw))
    if task == "binary":
        if proba is None:
            score = np.asarray(model.predict(X), dtype="float64").reshape(-1)
            classes = classes or [0, 1]
        else:
            if proba.shape[1] != 2:
                raise ValidationError(f"Task 'binary' but the model gives {proba.shape[1]} class probabilities.", hint="Use task='multiclass'.")
            score = proba[:, 1]
            classes = classes or [0, 1]
        if len(set(observed) - set(classes)) or len(observed) > 2:
            raise ValidationError(
                f"Target {target!r} holds values {sorted(map(str, observed))[:5]}, the model's classes are {classes}.",
                hint="Use task='multiclass' for more than two classes, or encode the label as the model was trained.",
            )
        return Predictions(task, (y_np == classes[-1]).astype(int), score, classes, y_np)
    if proba is None:
        raise ValidationError("Task 'multiclass' needs predict_proba.", hint="Evaluate a classifier with predict_proba.")
    classes = classes or list(range(proba.shape[1]))
    index = {c: i for i, c in enumerate(classes)}
    unknown = [v for v in observed if v not in index]
    if unknown:
        raise ValidationError(f"Target {target!r} holds {unknown[0]!r}, which is not one of the model's classes {classes}.", hint="Evaluate on labels the model knows.")
    y_idx = pd.Series(y_np).map(index).to_numpy(dtype=int)
    return Predictions(task, y_idx, proba, classes, y_np)


# -- metrics ------------------------------------------------------------------

CustomMetric = Callable[..., float]


def _custom_args(fn: CustomMetric) -> int:
    try:
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return 2
    return max(2, min(4, len(params)))


def check_custom(custom: Mapping[str, Any] | None) -> dict[str, tuple[CustomMetric, bool]]:
    out: dict[str, tuple[CustomMetric, bool]] = {}
    for name, value in (custom or {}).items():
        fn, gib = (value if isinstance(value, tuple) else (value, bool(getattr(value, "greater_is_better", True))))
        if not callable(fn):
            raise ValidationError(f"Custom metric {name!r} is a {type(fn).__name__}, not a function.", hint="Pass {name: fn(y_true, y_pred[, proba, data])}.")
        if name in M.GREATER_IS_BETTER:
            raise ValidationError(f"Custom metric {name!r} shadows a built-in metric.", hint="Give it another name.")
        out[str(name)] = (fn, bool(gib))
    return out


def _call_custom(fn: CustomMetric, p: Predictions, idx: Any, threshold: float, data: Any) -> float:
    proba = None if p.task == "regression" else p.score[idx]
    y = p.y if p.task == "binary" else p.y_raw
    args: list[Any] = [y[idx], p.labels(threshold)[idx], proba, None if data is None else data.iloc[idx]]
    return float(fn(*args[: _custom_args(fn)]))


def compute(p: Predictions, W: Any, threshold: float) -> dict[str, Any]:
    """Every built-in metric of the task, one value per row of ``W``."""
    if p.task == "binary":
        return M.binary(W, p.y, p.score, threshold)
    if p.task == "multiclass":
        return M.multiclass(W, p.y, p.score)
    return M.regression(W, p.y, p.score)


def point_metrics(p: Predictions, threshold: float, custom: dict[str, tuple[CustomMetric, bool]], data: Any) -> dict[str, float]:
    n = len(p.y)
    out = {k: _float(v[0]) for k, v in compute(p, np.ones((1, n)), threshold).items()}
    every = np.arange(n)
    for name, (fn, _gib) in custom.items():
        out[name] = _float(_call_custom(fn, p, every, threshold, data))
    return out


def _float(v: Any) -> float:
    f = float(v)
    return f


def confusion(p: Predictions, threshold: float) -> dict[str, Any] | None:
    if p.task == "regression":
        return None
    k = len(p.classes)
    pred_idx = (p.score >= threshold).astype(int) if p.task == "binary" else p.score.argmax(axis=1)
    matrix = np.bincount(p.y.astype(int) * k + pred_idx, minlength=k * k).reshape(k, k)
    return {"labels": [str(c) for c in p.classes], "matrix": matrix.tolist(), "threshold": threshold if p.task == "binary" else None}


def paired_bootstrap(
    a: Predictions,
    b: Predictions,
    *,
    threshold: float = 0.5,
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    custom: dict[str, tuple[CustomMetric, bool]] | None = None,
    data: Any = None,
    only: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Interval of metric(b) - metric(a) with the same rows resampled for both models.

    Returns {metric: {"delta", "low", "high", "p_better"}}; ``p_better`` is the
    share of resamples where b beats a, in the metric's own direction.
    """
    rows = len(a.y)
    if len(b.y) != rows or not np.array_equal(a.y, b.y):
        raise ValidationError("Paired bootstrap needs both models scored on the same rows.", hint="Evaluate both on one dataset.")
    if not 0 < confidence < 1:
        raise ValidationError(f"Confidence {confidence!r} is not between 0 and 1.", hint="Use e.g. 0.95.")
    rng = np.random.default_rng(seed)
    custom = custom or {}
    names = list(only) if only else None
    diffs: dict[str, list[Any]] = {}
    chunk = max(1, min(n, BOOTSTRAP_CHUNK_CELLS // max(rows, 1)))
    done = 0
    while done < n:
        size = min(chunk, n - done)
        W = rng.multinomial(rows, np.full(rows, 1.0 / rows), size=size).astype("float64")
        ma, mb = compute(a, W, threshold), compute(b, W, threshold)
        for k in ma:
            if names is None or k in names:
                diffs.setdefault(k, []).append(mb[k] - ma[k])
        for k, (fn, _gib) in custom.items():
            if names is not None and k not in names:
                continue
            vals = []
            for w in W:  # custom metrics are plain functions: one call per resample
                idx = np.repeat(np.arange(rows), w.astype(int))
                vals.append(_call_custom(fn, b, idx, threshold, data) - _call_custom(fn, a, idx, threshold, data))
            diffs.setdefault(k, []).append(np.asarray(vals))
        done += size
    point_a = point_metrics(a, threshold, custom, data)
    point_b = point_metrics(b, threshold, custom, data)
    out: dict[str, dict[str, float]] = {}
    alpha = (1 - confidence) / 2
    for k, parts in diffs.items():
        d = np.concatenate(parts)
        d = d[~np.isnan(d)]
        gib = M.GREATER_IS_BETTER.get(k, custom.get(k, (None, True))[1])
        if len(d) == 0:
            out[k] = {"delta": point_b[k] - point_a[k], "low": float("nan"), "high": float("nan"), "p_better": float("nan")}
            continue
        better = (d > 0) if gib else (d < 0)
        out[k] = {
            "delta": point_b[k] - point_a[k],
            "low": float(np.quantile(d, alpha)),
            "high": float(np.quantile(d, 1 - alpha)),
            "p_better": float(better.mean()),
        }
    return out


# -- slices ---------------------------------------------------------------------

def slice_masks(frame: Any, spec: Any) -> list[tuple[str, Any]]:
    """[(label, boolean mask)] for one slice spec: a column name, or {"column", "bins"}."""
    import pandas as pd

    if isinstance(spec, str):
        column, bins = spec, None
    elif isinstance(spec, Mapping) and "column" in spec:
        column, bins = str(spec["column"]), spec.get("bins")
    else:
        raise ValidationError(f"Slice {spec!r} is not understood.", hint='Use a column name or {"column": "age", "bins": [0, 30, 60, 120]} (or "bins": 4 for quartiles).')
    if column not in frame.columns:
        raise ValidationError(f"Slice column {column!r} is not in the evaluation data." + did_you_mean(column, [str(c) for c in frame.columns]))
    col = frame[column]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if bins is None and numeric and col.nunique() > 10:
        bins = 4
    if bins is not None:
        cut = pd.qcut(col, int(bins), duplicates="drop") if isinstance(bins, int) else pd.cut(col, list(bins), include_lowest=True)
        groups = cut.astype(str).where(cut.notna(), "null")
    else:
        groups = col.astype(str).where(col.notna(), "null")
    codes, uniques = pd.factorize(groups, sort=True)
    return [(f"{column}={u}", codes == i) for i, u in enumerate(uniques)]


def slice_metrics(p: Predictions, frame: Any, specs: Sequence[Any], threshold: float, custom: dict[str, tuple[CustomMetric, bool]]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        for label, mask in slice_masks(frame, spec):
            idx = np.flatnonzero(mask)
            sub = Predictions(p.task, p.y[idx], p.score[idx], p.classes, None if p.y_raw is None else p.y_raw[idx])
            out.append({"slice": label, "num_rows": len(idx), "metrics": point_metrics(sub, threshold, custom, frame.iloc[idx])})
    return out


# -- evaluate -------------------------------------------------------------------

def _default_baseline(name: str, version: int) -> str | None:
    import sqlalchemy as sa

    from keel.config import settings
    from keel.models.loader import model_id
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.registry import model_aliases

    envs = list(settings().section("registry").get("environments") or ["staging", "production"])
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        held = dict(conn.execute(sa.select(model_aliases.c.name, model_aliases.c.version).where(model_aliases.c.model_id == mid)).all())
    for where in [envs[-1], "champion"]:
        if where in held and held[where] != version:
            return f"models:/{name}@{where}"
    return None


def store_result(result: EvaluationResult) -> int | None:
    """Record a registered version's evaluation; returns its id (None for unregistered models)."""
    if result.model_name is None or result.version is None:
        return None
    import sqlalchemy as sa

    from keel.config import settings
    from keel.models.loader import model_id
    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.registry import model_evaluations

    store = get_metadata_store()
    with store.write() as conn:
        mid = model_id(conn, result.model_name)
        rid = conn.execute(
            sa.insert(model_evaluations).values(
                model_id=mid, version=result.version, dataset=result.dataset[:255], fingerprint=result.fingerprint,
                task=result.task, num_rows=result.num_rows, result=json.dumps(result.to_dict(with_baseline=False), default=_json_default),
                created_by=settings().acting_user, created_ms=now_ms(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    result.id = int(rid)
    return result.id


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _evaluate_one(model: Any, frame: Any, name: str, fp: str, target: str, task: str, slices: Sequence[Any], custom: dict[str, tuple[CustomMetric, bool]], threshold: float) -> EvaluationResult:
    label, mname, version = _label(model)
    p = predict(model, frame, target, task)
    data = frame.drop(columns=[target])
    res = EvaluationResult(
        model=label, task=task, dataset=name, fingerprint=fp, num_rows=len(frame), threshold=threshold,
        metrics=point_metrics(p, threshold, custom, data), confusion_matrix=confusion(p, threshold),
        slices=slice_metrics(p, frame, slices, threshold, custom), model_name=mname, version=version, predictions=p,
        greater_is_better={**M.GREATER_IS_BETTER, **{k: g for k, (_f, g) in custom.items()}},
    )
    return res


def evaluate(
    model_or_version: Any,
    data: Any,
    target: str,
    task: str = "binary",
    slices: Sequence[Any] | None = None,
    custom_metrics: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    *,
    baseline: Any = "auto",
    bootstrap: int = 1000,
    confidence: float = 0.95,
    store: bool = True,
) -> EvaluationResult:
    """Evaluate a model (URI, registered version, loaded or raw model) on ``data``.

    ``slices``: column names or ``{"column": c, "bins": [edges] | n}``.
    ``custom_metrics``: ``{name: fn(y_true, y_pred[, proba[, data]])}`` (greater is
    better unless ``fn.greater_is_better = False`` or given as ``(fn, False)``).
    ``baseline``: the model to compare with on the same rows; "auto" is the
    version in the last environment (``production``) of a registered model.
    A registered version's result (and its baseline's) is stored on the version.
    """
    M.check_task(task)
    if not 0.0 < float(threshold) < 1.0:
        raise ValidationError(f"Threshold {threshold!r} is not between 0 and 1.", hint="Use e.g. threshold=0.5.")
    custom = check_custom(custom_metrics)
    frame, name, fp = read_data(data)
    model = as_model(model_or_version)
    result = _evaluate_one(model, frame, name, fp, target, task, list(slices or []), custom, float(threshold))
    if baseline == "auto":
        baseline = _default_baseline(result.model_name, result.version) if result.model_name and result.version else None
    if baseline is not None:
        base = _evaluate_one(as_model(baseline), frame, name, fp, target, task, list(slices or []), custom, float(threshold))
        result.baseline = base
        ci = paired_bootstrap(base.predictions, result.predictions, threshold=float(threshold), n=bootstrap, confidence=confidence, custom=custom, data=frame.drop(columns=[target])) if bootstrap else {}  # type: ignore[arg-type]
        result.comparison = [
            {
                "metric": k, "model": v, "baseline": base.metrics.get(k), "delta": v - base.metrics.get(k, float("nan")),
                "greater_is_better": result.greater_is_better.get(k, True),
                **({"low": ci[k]["low"], "high": ci[k]["high"], "p_better": ci[k]["p_better"]} if k in ci else {}),
            }
            for k, v in result.metrics.items()
        ]
        if store:
            store_result(base)
    if store:
        store_result(result)
    return result
