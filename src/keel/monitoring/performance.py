"""Performance per window: realized once labels arrive, estimated before (CBPE), and business metrics.

- ``realized``: the registry's metrics for the task (keel.evaluation.metrics) over
  the window's labelled predictions, with the label coverage.
- ``estimate_cbpe``: confidence-based performance estimation, as NannyML's CBPE,
  for binary classifiers: with calibrated scores p, each prediction is a true
  positive with probability p when predicted positive, and so on; the expected
  confusion matrix gives accuracy, precision, recall and F1, and the expected ROC
  curve the AUC. Scores are calibrated on the baseline's labelled sample (isotonic
  regression) when it has one.
- ``business``: user functions ``fn(frame) -> float`` over the window's predictions
  and labels (``prediction``, ``score``, ``label_value``, inputs), e.g.
  :func:`precision_at_top`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ValidationError

if TYPE_CHECKING:
    import pyarrow as pa

ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _float_col(table: pa.Table, name: str) -> Any:
    from keel.monitoring.reference import as_float

    return as_float(table[name]) if name in table.column_names else np.full(table.num_rows, np.nan)


def realized(window: pa.Table, task: str | None, *, threshold: float = 0.5) -> dict[str, Any]:
    """{"coverage", "labelled", "rows", "metrics"} over the rows that have a label."""
    from keel.evaluation import metrics as M

    rows = window.num_rows
    y = _float_col(window, "label_value")
    has = ~np.isnan(y)
    out: dict[str, Any] = {"rows": rows, "labelled": int(has.sum()), "coverage": float(has.mean()) if rows else 0.0, "metrics": {}}
    if not has.any() or task is None:
        return out
    W = np.ones((1, int(has.sum())))
    if task == "binary":
        score = _float_col(window, "score")[has]
        if np.isnan(score).any():
            score = _float_col(window, "prediction")[has]
        values = M.binary(W, y[has], score, threshold)
    elif task == "regression":
        values = M.regression(W, y[has], _float_col(window, "prediction")[has])
    else:
        pred = window["prediction"].to_numpy(zero_copy_only=False)[has]
        labels = window["label"].to_numpy(zero_copy_only=False)[has]
        return {**out, "metrics": {"accuracy": float(np.mean(pred.astype(str) == labels.astype(str)))}}
    out["metrics"] = {k: float(v[0]) for k, v in values.items() if np.isfinite(v[0])}
    return out


class Calibrator:
    """Isotonic calibration of scores against the baseline's labels (identity without them)."""

    def __init__(self, sample: tuple[Any, Any] | None) -> None:
        self.model: Any = None
        if sample is not None:
            score, label = sample
            ok = ~np.isnan(score) & ~np.isnan(label)
            if ok.sum() >= 100 and len(np.unique(label[ok])) == 2:
                from sklearn.isotonic import IsotonicRegression

                self.model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(score[ok], label[ok])

    def __call__(self, score: Any) -> Any:
        if self.model is None:
            return score
        # the fitted step function read directly, as predict() reads it (linear between thresholds, clipped at the ends),
        # without scipy's interp1d setup and checks on each of a window's million scores
        return np.interp(score, self.model.X_thresholds_, self.model.y_thresholds_)


def estimate_cbpe(score: Any, calibrator: Calibrator | None = None, *, threshold: float = 0.5) -> dict[str, float]:
    """Expected accuracy, precision, recall, F1 and ROC AUC of a binary classifier from its scores alone."""
    score = np.asarray(score, np.float64)
    score = score[~np.isnan(score)]
    if score.size == 0:
        return {}
    p = np.clip(calibrator(score) if calibrator is not None else score, 0.0, 1.0)
    pos = score >= threshold
    tp, fp = p[pos].sum(), (1 - p[pos]).sum()
    fn, tn = p[~pos].sum(), (1 - p[~pos]).sum()
    n = len(p)
    out = {"accuracy": float((tp + tn) / n)}
    out["precision"] = float(tp / (tp + fp)) if tp + fp > 0 else float("nan")
    out["recall"] = float(tp / (tp + fn)) if tp + fn > 0 else float("nan")
    out["f1"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else float("nan")
    # the calibration is monotone (isotonic, or none), so p in descending order of score is p sorted, descending: no argsort
    # and gather; equal scores calibrate to equal p, so the points within a tie lie on one line and their order leaves the area as it is
    ps = np.sort(p)[::-1]
    tpr = np.concatenate([[0.0], np.cumsum(ps) / max(ps.sum(), 1e-12)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - ps) / max((1 - ps).sum(), 1e-12)])
    out["roc_auc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return {k: v for k, v in out.items() if v == v}


def precision_at_top(fraction: float) -> Callable[[Any], float]:
    """A business metric: precision among the ``fraction`` of rows with the highest scores (labelled rows only)."""
    if not 0 < fraction <= 1:
        raise ValidationError(f"fraction={fraction} is not in (0, 1].", hint="Use e.g. 0.05 for the top 5 %.")

    def metric(frame: Any) -> float:
        lab = frame[frame["label_value"].notna()]
        if lab.empty:
            return float("nan")
        k = max(1, round(len(lab) * fraction))
        return float(lab.nlargest(k, "score")["label_value"].mean())

    metric.__name__ = f"precision_at_top_{fraction:g}"
    return metric


def resolve_metric(ref: Any) -> Callable[[Any], float]:
    """A callable, or 'module:function', or 'precision_at_top:0.05'."""
    if callable(ref):
        return ref
    text = str(ref)
    if text.startswith("precision_at_top:"):
        return precision_at_top(float(text.split(":", 1)[1]))
    mod, sep, attr = text.partition(":")
    if not sep:
        raise ValidationError(f"Business metric {text!r} is not 'module:function'.", hint="Write e.g. metrics:expected_revenue or precision_at_top:0.05.")
    import importlib

    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(f"Business metric {text!r} cannot be loaded: {exc}", hint="Check the module is importable from the project.") from None
    if not callable(fn):
        raise ValidationError(f"Business metric {text!r} is not a function.", hint="Point at a function fn(frame) -> float.")
    return fn


def business(window: pa.Table, metrics: dict[str, Any]) -> dict[str, float | None]:
    """Each user metric over the window's frame; a metric that fails gives None and its error is logged."""
    import logging

    if not metrics:
        return {}
    frame = window.to_pandas()
    out: dict[str, float | None] = {}
    for name, ref in metrics.items():
        fn = resolve_metric(ref)
        try:
            value = float(fn(frame))
            out[name] = value if value == value else None
        except Exception:
            logging.getLogger("keel.monitoring").exception("business metric %r failed", name)
            out[name] = None
    return out
