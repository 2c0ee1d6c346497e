"""Metrics per task, computed for many row weightings at once.

Every metric takes a weight matrix ``W`` of shape (B, n): row b weights the n
evaluation rows. The point estimate uses one row of ones; a bootstrap uses B
rows of multinomial resampling counts, so B resamples cost a few matrix
products instead of B Python-level metric calls. The results match
scikit-learn's definitions (tests check them against sklearn.metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keel.errors import ValidationError

TASKS = ("binary", "multiclass", "regression")
PRIMARY = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
GREATER_IS_BETTER = {
    "accuracy": True, "precision": True, "recall": True, "f1": True, "roc_auc": True, "pr_auc": True,
    "log_loss": False, "ece": False, "brier": False,
    "rmse": False, "mae": False, "r2": True, "mape": False,
}
METRICS = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier", "ece"),
    "multiclass": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
EPS = 1e-15
ECE_BINS = 10


def check_task(task: str) -> str:
    if task not in TASKS:
        from keel.errors import did_you_mean

        raise ValidationError(f"Unknown task {task!r}." + did_you_mean(str(task), TASKS), hint=f"Use one of {', '.join(TASKS)}.")
    return task


def _div(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)
    return out


def _groups(score: Any) -> tuple[Any, Any]:
    """(order ascending, start index of each run of equal scores in that order)."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1))
    return order, starts


def weighted_auc(W: Any, y: Any, score: Any) -> Any:
    """ROC AUC per weighting (ties count one half), as sklearn.metrics.roc_auc_score."""
    order, starts = _groups(score)
    Ws = W[:, order]
    ys = y[order].astype(bool)
    pos = np.add.reduceat(Ws * ys, starts, axis=1)
    neg = np.add.reduceat(Ws * ~ys, starts, axis=1)
    neg_before = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_before + 0.5 * neg)).sum(axis=1)
    return _div(num, pos.sum(axis=1) * neg.sum(axis=1))


def weighted_ap(W: Any, y: Any, score: Any) -> Any:
    """Average precision (PR AUC) per weighting, as sklearn.metrics.average_precision_score."""
    order, starts = _groups(-score)  # descending scores
    Ws = W[:, order]
    ys = y[order].astype(bool)
    tp = np.cumsum(np.add.reduceat(Ws * ys, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(Ws * ~ys, starts, axis=1), axis=1)
    total = tp[:, -1:]
    precision = _div(tp, tp + fp)
    recall = _div(tp, np.broadcast_to(total, tp.shape))
    prev = np.concatenate([np.zeros((W.shape[0], 1)), recall[:, :-1]], axis=1)
    return np.nansum((recall - prev) * precision, axis=1) + np.where(total[:, 0] > 0, 0.0, np.nan)


def _ece(W: Any, correct: Any, conf: Any, total: Any) -> Any:
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    onehot = np.zeros((len(conf), ECE_BINS))
    onehot[np.arange(len(conf)), bins] = 1.0
    gap = (W * correct) @ onehot - (W * conf) @ onehot
    return np.abs(gap).sum(axis=1) / total


def binary(W: Any, y: Any, score: Any, threshold: float) -> dict[str, Any]:
    y = y.astype(bool)
    pred = score >= threshold
    total = W.sum(axis=1)
    tp, fp, fn = W @ (pred & y), W @ (pred & ~y), W @ (~pred & y)
    p = np.clip(score, EPS, 1 - EPS)
    return {
        "accuracy": W @ (pred == y) / total,
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "roc_auc": weighted_auc(W, y, score),
        "pr_auc": weighted_ap(W, y, score),
        "log_loss": W @ -(y * np.log(p) + ~y * np.log(1 - p)) / total,
        "brier": W @ (score - y) ** 2 / total,
        "ece": _ece(W, y.astype(float), score, total),
    }


def multiclass(W: Any, y_idx: Any, proba: Any) -> dict[str, Any]:
    k = proba.shape[1]
    pred = proba.argmax(axis=1)
    total = W.sum(axis=1)
    prec, rec, f1, auc = [], [], [], []
    for c in range(k):  # a loop over classes, not rows
        yc, pc = y_idx == c, pred == c
        tp, fp, fn = W @ (pc & yc), W @ (pc & ~yc), W @ (~pc & yc)
        prec.append(_div(tp, tp + fp))
        rec.append(_div(tp, tp + fn))
        f1.append(_div(2 * tp, 2 * tp + fp + fn))
        auc.append(weighted_auc(W, yc, proba[:, c]))
    picked = np.clip(proba[np.arange(len(y_idx)), y_idx], EPS, 1.0)
    conf = proba.max(axis=1)
    return {
        "accuracy": W @ (pred == y_idx) / total,
        "precision": _nanmean(prec),
        "recall": _nanmean(rec),
        "f1": _nanmean(f1),
        "roc_auc": _nanmean(auc),
        "log_loss": W @ -np.log(picked) / total,
        "ece": _ece(W, (pred == y_idx).astype(float), conf, total),
    }


def _nanmean(rows: list[Any]) -> Any:
    """Macro average over classes, skipping classes absent from a weighting (no warning)."""
    m = np.vstack(rows)
    n = (~np.isnan(m)).sum(axis=0)
    return _div(np.nansum(m, axis=0), n)


def regression(W: Any, y: Any, pred: Any) -> dict[str, Any]:
    total = W.sum(axis=1)
    err = pred - y
    mean_y = W @ y / total
    sst = (W * (y[None, :] - mean_y[:, None]) ** 2).sum(axis=1)
    sse = W @ err**2
    return {
        "rmse": np.sqrt(sse / total),
        "mae": W @ np.abs(err) / total,
        "r2": 1 - _div(sse, sst),
        "mape": W @ (np.abs(err) / np.maximum(np.abs(y), np.finfo(float).eps)) / total,
    }
