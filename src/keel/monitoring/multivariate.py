"""Multivariate drift: PCA reconstruction error, as NannyML's data reconstruction drift.

Fitted on the reference's numeric columns (standardized; missing values set to the
column's mean): the principal components that explain 65 % of the variance. A
row's error is the Euclidean distance between it and its reconstruction from
those components. When the correlations between columns change, the current
rows leave the reference's subspace and the mean error rises, even when every
column's own distribution is unchanged. The threshold is the reference chunks'
mean error ± 4 sd, rescaled to the window's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from keel.monitoring.stats import one_blas_thread

if TYPE_CHECKING:
    from keel.monitoring.reference import Reference

VARIANCE = 0.65
SD = 4.0


def _standardize(columns: list[Any], mean: Any, std: Any, dtype: Any = np.float64) -> Any:
    """The standardized columns, missing values at the mean (0), as one (columns, rows) matrix.

    One contiguous row per column: each column is written in one sequential pass
    (a (rows, columns) matrix would be written with a stride of a row per value).
    """
    zt = np.empty((len(columns), len(columns[0])), dtype=dtype)
    for j, col in enumerate(columns):  # straight into the matrix: no stacked copy first
        np.subtract(col, mean[j], out=zt[j], casting="unsafe")
        zt[j] /= dtype(std[j])
    np.copyto(zt, 0, where=np.isnan(zt))
    return zt


FIT_ROWS = 20_000  # the components are fitted on at most this many rows, evenly spaced
APPLY_ROWS = 16_384  # rows per block when applying: a few MB whatever the window's size


def _errors(zt: Any, comps: Any) -> Any:
    """Each row's reconstruction error; ``zt`` is (columns, rows), as :func:`_standardize` gives it."""
    # the components are orthonormal: |z - z P'P|^2 = |z|^2 - |z P'|^2, no reconstruction matrix
    with one_blas_thread():
        proj = comps.astype(zt.dtype) @ zt
    return np.sqrt(np.maximum(np.einsum("ji,ji->i", zt, zt) - np.einsum("ji,ji->i", proj, proj), 0.0))


def fit_pca(ref: Reference, n_chunks: int) -> dict[str, Any] | None:
    """The fitted model as plain data (stored with a baseline), or None under two numeric columns."""
    cols = [c.name for c in ref.columns.values() if c.kind == "numeric" and c.values is not None and c.count > 0 and (c.summary.get("std") or 0) > 0]
    if len(cols) < 2 or ref.rows < n_chunks * 10:
        return None
    rows = np.arange(ref.rows) if ref.rows <= FIT_ROWS else np.linspace(0, ref.rows - 1, FIT_ROWS).astype(np.int64)
    x = [ref.columns[c].values[rows] for c in cols]
    mean = np.array([np.nanmean(v) for v in x])
    std = np.array([np.nanstd(v) for v in x])
    zt = _standardize(x, mean, std)
    centred = zt - zt.mean(axis=1, keepdims=True)
    with one_blas_thread():
        eigval, eigvec = np.linalg.eigh(centred @ centred.T)  # p x p: cheaper than an SVD of the n x p data
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
    var = eigval / max(eigval.sum(), 1e-300)
    k = int(np.searchsorted(np.cumsum(var), VARIANCE) + 1)
    comps = eigvec[:, : min(k, len(cols))].T
    err = _errors(zt, comps)
    labels = (np.arange(len(err)) * n_chunks // len(err)).astype(np.int64)
    sums = np.bincount(labels, weights=err, minlength=n_chunks)
    sizes = np.bincount(labels, minlength=n_chunks)
    chunk_means = sums / sizes
    return {
        "method": "pca_reconstruction_error", "columns": cols, "mean": mean.tolist(), "std": std.tolist(), "components": comps.tolist(),
        "error": float(err.mean()), "chunk_sd": float(chunk_means.std(ddof=1)), "chunk_rows": float(sizes.mean()),
    }


def _block(col: Any, lo: int) -> Any:
    """Rows ``lo`` to ``lo + APPLY_ROWS`` of a NumPy or (chunked) Arrow column, as floats (null as NaN)."""
    if isinstance(col, np.ndarray):
        return col[lo : lo + APPLY_ROWS]
    from keel.monitoring.reference import as_float

    return as_float(col.slice(lo, APPLY_ROWS))


def apply_pca(model: dict[str, Any], current: dict[str, Any], rows: int) -> dict[str, Any]:
    """The current window's mean reconstruction error against the fitted model's band."""
    cols = model["columns"]
    base = {"method": model["method"], "columns": cols, "reference": model["error"], "components": len(model["components"])}
    if rows == 0 or any(c not in current for c in cols):
        missing = [c for c in cols if c not in current]
        note = "the window is empty" if rows == 0 else f"columns {missing} are not in the window"
        return {**base, "statistic": None, "lower": None, "upper": None, "level": "ok", "drifted": False, "note": note}
    mean, std, comps = np.asarray(model["mean"]), np.asarray(model["std"]), np.asarray(model["components"])
    total = 0.0
    for lo in range(0, rows, APPLY_ROWS):  # blocks of rows: memory stays bounded whatever the window's size
        # float32: the error is compared with a band some 1e-3 wide, not with SciPy
        zt = _standardize([_block(current[c], lo) for c in cols], mean, std, np.float32)
        total += float(_errors(zt, comps).sum(dtype=np.float64))
    value = total / rows
    sd = model["chunk_sd"] * np.sqrt(model["chunk_rows"] / rows)
    lower, upper = model["error"] - SD * sd, model["error"] + SD * sd
    warn_lo, warn_hi = model["error"] - 3 * sd, model["error"] + 3 * sd
    level = "alert" if not lower <= value <= upper else "warn" if not warn_lo <= value <= warn_hi else "ok"
    return {**base, "statistic": value, "lower": float(lower), "upper": float(upper), "level": level, "drifted": level == "alert", "note": ""}
