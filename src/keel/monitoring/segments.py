"""The segments driving a drifted feature's shift.

A segment is a value of a categorical column or a bin of a numeric one: the
drifted feature's own deciles (its 20 quantile bins two by two), quartiles of
another numeric column. Its contribution is how far the feature's statistic
falls when the segment is reset to the reference: its rows in the current window
replaced by the reference's rows of the segment, at the reference's share (the
other rows reweighted by ``(1 - ref_share) / (1 - cur_share)``), less the part
its share of traffic alone accounts for (a shift spread over every row falls with
any segment in proportion to its size). A bin of the feature itself can only
have its share reset. So a segment whose share moved and a segment whose values
moved (basic-plan customers' usage halved, the plan's share unchanged) both show,
and a shift of every row is traced to the feature's bins, not to the largest plan. Every segment of a column is
evaluated at once on the joint (segment x feature-bin) counts; the statistic is
computed on the feature's bins (20 reference quantiles for KS and Wasserstein),
so contributions are approximate and labelled so.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.monitoring import stats as S
from keel.monitoring.reference import as_float, encode

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


def _feature_codes(r: ColumnReference, ref_table: pa.Table, cur: pa.Table) -> tuple[Any, Any, int, Any]:
    """(reference codes, current codes, number of bins, inner edges or None) of the drifted feature's own bins."""
    if r.kind == "numeric":
        rv = r.values if r.values is not None else as_float(ref_table[r.name])
        edges = S.quantile_edges(rv, FEATURE_BINS, ordered=r.sorted_values[: r.count] if r.sorted_values is not None else None)
        return S.bin_codes(rv, edges), S.bin_codes(as_float(cur[r.name]), edges), len(edges) + 1, edges
    cats = r.categories
    return encode(ref_table[r.name], cats), encode(cur[r.name], cats), len(cats) + 1, None


def _labels(name: str, edges: Any) -> list[str]:
    bounds = [-np.inf, *edges.tolist(), np.inf]
    return [f"{name} in [{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(bounds)]


def _segment_codes(name: str, kind: str, ref_table: pa.Table, cur: pa.Table, ref_col: ColumnReference | None) -> tuple[Any, Any, list[str]]:
    if kind == "numeric":
        rv = ref_col.values if ref_col is not None and ref_col.values is not None else as_float(ref_table[name])
        edges = S.quantile_edges(rv, SEGMENT_BINS)
        return S.bin_codes(rv, edges), S.bin_codes(as_float(cur[name]), edges), _labels(name, edges)
    cats = ref_col.categories[:TOP_CATEGORIES] if ref_col is not None else []
    labels = [f"{name} = {c}" for c in cats] + [f"{name} = (other)"]
    return encode(ref_table[name], cats), encode(cur[name], cats), labels


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
    cache: dict[Any, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``top`` segments by contribution to ``feature``'s drift: segment, contribution, shares, rows.

    ``cache`` (a report's) keeps each column's codes, so the segments of several
    drifted features encode each segment column once.
    """
    ref_table = reference.sample
    r = reference.columns.get(feature)
    if r is None or ref_table is None or feature not in current.column_names or current.num_rows == 0:
        return []
    memo: dict[Any, Any] = {} if cache is None else cache
    key = ("feature", feature)
    if key not in memo:
        memo[key] = _feature_codes(r, ref_table, current)
    fr, fc, nb, edges = memo[key]
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
        if name == feature and edges is not None:  # the feature's own bins, two by two: the joint counts are its counts, no pass over the window
            labels = _labels(name, edges[1::2])
            k = len(labels)
            segment_of_bin = np.minimum(np.arange(nb) // 2, k - 1)
            rj, cj = np.zeros((k, nb)), np.zeros((k, nb))
            rj[segment_of_bin, np.arange(nb)], cj[segment_of_bin, np.arange(nb)] = ref_counts, cur_counts
        else:
            if ("segment", name) not in memo:
                memo[("segment", name)] = _segment_codes(name, kind, ref_table, current, col)
            sr, sc, labels = memo[("segment", name)]
            k = len(labels)
            sr, sc = np.where(sr < 0, k - 1, np.minimum(sr, k - 1)), np.where(sc < 0, k - 1, np.minimum(sc, k - 1))
            rj = np.bincount(sr[okr] * nb + fr[okr], minlength=k * nb).reshape(k, nb).astype(float)
            cj = np.bincount(sc[okc] * nb + fc[okc], minlength=k * nb).reshape(k, nb).astype(float)
        ref_share = rj.sum(axis=1) / max(rj.sum(), 1)
        cur_share = cj.sum(axis=1) / max(cj.sum(), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            w_in = np.where(cur_share > 0, ref_share / cur_share, 0.0)
            w_out = np.where(cur_share < 1, (1 - ref_share) / (1 - cur_share), 0.0)
        own = name == feature
        if own:  # a bin of the feature: only its share can move
            reset = w_in[:, None] * cj + w_out[:, None] * (cur_counts[None, :] - cj)
        else:  # the segment's rows replaced by the reference's (its share and its distribution of the feature), the others rescaled
            reset = rj * (cj.sum() / max(rj.sum(), 1)) + w_out[:, None] * (cur_counts[None, :] - cj)
        after = _binned_stat(method, np.broadcast_to(ref_counts, reset.shape), reset)
        # a shift spread over all rows falls with any segment in proportion to its traffic: only the excess is the segment's
        expected = np.zeros(k) if own else cur_share * before
        for i in range(k):
            if cur_share[i] == 0 and ref_share[i] == 0:
                continue
            found.append({"segment": labels[i], "column": name, "contribution": before - float(after[i]) - float(expected[i]),
                          "statistic_after": float(after[i]),
                          "statistic_binned": before, "current_share": float(cur_share[i]), "reference_share": float(ref_share[i]),
                          "rows": int(cj[i].sum()), "approximate": True})
    found.sort(key=lambda s: -s["contribution"])
    return [s for s in found if s["contribution"] > 0][:top]
