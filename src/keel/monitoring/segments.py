"""The segments driving a drifted feature's shift.

A segment is a value of a categorical column or a bin of a numeric one (the
drifted feature's own bins included). Its contribution is how far the feature's
statistic falls when the segment's share of the current window is reset to its
share of the reference (the segment's rows reweighted by ``ref_share / cur_share``,
the others by ``(1 - ref_share) / (1 - cur_share)``). Every segment of a column is
evaluated at once on the joint (segment x feature-bin) counts; the statistic is
computed on the feature's bins (20 reference quantiles for KS and Wasserstein),
so contributions are approximate and labelled so.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.monitoring import stats as S
from keel.monitoring.reference import as_float, as_strings, encode

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.monitoring.reference import ColumnReference, Reference

FEATURE_BINS = 20
SEGMENT_BINS = 4
TOP_CATEGORIES = 12


def _binned_stat(method: str, ref_counts: Any, cur_counts: Any) -> Any:
    if method in ("ks", "wasserstein"):
        p, q = S.shares(ref_counts), S.shares(cur_counts)
        return np.max(np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)), axis=-1)
    if method == "chi2":
        return S.chi2(ref_counts, cur_counts)[0]
    return {"psi": S.psi, "kl": S.kl, "js": S.js}[method](ref_counts, cur_counts)


def _feature_codes(r: ColumnReference, ref_table: pa.Table, cur: pa.Table) -> tuple[Any, Any, int]:
    if r.kind == "numeric":
        edges = S.quantile_edges(r.values, FEATURE_BINS)
        return S.bin_codes(r.values, edges), S.bin_codes(as_float(cur[r.name]), edges), len(edges) + 1
    cats = r.categories
    return encode(as_strings(ref_table[r.name]), cats), encode(as_strings(cur[r.name]), cats), len(cats) + 1


def _segment_codes(name: str, kind: str, ref_table: pa.Table, cur: pa.Table, ref_col: ColumnReference | None) -> tuple[Any, Any, list[str]]:
    if kind == "numeric":
        rv = ref_col.values if ref_col is not None and ref_col.values is not None else as_float(ref_table[name])
        edges = S.quantile_edges(rv, SEGMENT_BINS) if ref_col is None or ref_col.name != name else S.quantile_edges(rv, 8)
        bounds = [-np.inf, *edges.tolist(), np.inf]
        labels = [f"{name} in [{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(bounds)]
        return S.bin_codes(rv, edges), S.bin_codes(as_float(cur[name]), edges), labels
    cats = ref_col.categories[:TOP_CATEGORIES] if ref_col is not None else []
    labels = [f"{name} = {c}" for c in cats] + [f"{name} = (other)"]
    rc = encode(as_strings(ref_table[name]), cats)
    cc = encode(as_strings(cur[name]), cats)
    return rc, cc, labels


def _fmt(v: float) -> str:
    return "-inf" if v == -np.inf else "inf" if v == np.inf else f"{v:.4g}"


def top_segments(
    reference: Reference,
    current: pa.Table,
    feature: str,
    method: str,
    *,
    by: list[str] | None = None,
    top: int = 3,
) -> list[dict[str, Any]]:
    """The ``top`` segments by contribution to ``feature``'s drift: segment, contribution, shares, rows."""
    ref_table = reference.sample
    r = reference.columns.get(feature)
    if r is None or ref_table is None or feature not in current.column_names or current.num_rows == 0:
        return []
    fr, fc, nb = _feature_codes(r, ref_table, current)
    okr, okc = fr >= 0, fc >= 0
    ref_counts, cur_counts = S.counts(fr, nb), S.counts(fc, nb)
    before = float(_binned_stat(method, ref_counts, cur_counts))
    names = list(by) if by else [c for c, col in reference.columns.items() if col.kind == "categorical" and c not in ("prediction",)]
    if feature not in names:
        names.append(feature)
    found: list[dict[str, Any]] = []
    for name in names:  # a loop over segment columns; all segments of one column at once
        if name not in current.column_names or name not in ref_table.column_names:
            continue
        col = reference.columns.get(name)
        kind = col.kind if col is not None else "categorical"
        sr, sc, labels = _segment_codes(name, kind, ref_table, current, col)
        k = len(labels)
        sr, sc = np.where(sr < 0, k - 1, np.minimum(sr, k - 1)), np.where(sc < 0, k - 1, np.minimum(sc, k - 1))
        rj = np.bincount(sr[okr] * nb + fr[okr], minlength=k * nb).reshape(k, nb).astype(float)
        cj = np.bincount(sc[okc] * nb + fc[okc], minlength=k * nb).reshape(k, nb).astype(float)
        ref_share = rj.sum(axis=1) / max(rj.sum(), 1)
        cur_share = cj.sum(axis=1) / max(cj.sum(), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            w_in = np.where(cur_share > 0, ref_share / cur_share, 0.0)
            w_out = np.where(cur_share < 1, (1 - ref_share) / (1 - cur_share), 0.0)
        reset = w_in[:, None] * cj + w_out[:, None] * (cur_counts[None, :] - cj)
        after = _binned_stat(method, np.broadcast_to(ref_counts, reset.shape), reset)
        for i in range(k):
            if cur_share[i] == 0 and ref_share[i] == 0:
                continue
            found.append({"segment": labels[i], "column": name, "contribution": before - float(after[i]), "statistic_after": float(after[i]),
                          "statistic_binned": before, "current_share": float(cur_share[i]), "reference_share": float(ref_share[i]),
                          "rows": int(cj[i].sum()), "approximate": True})
    found.sort(key=lambda s: -s["contribution"])
    return [s for s in found if s["contribution"] > 0][:top]
