"""Drift statistics, vectorized: NumPy over whole columns, many reference chunks per call.

Every function here is pure NumPy/SciPy on arrays; no Python loop runs over rows
(loops run over columns or chunks, each step a whole-array operation).
Each equals SciPy's definition on the same inputs (``tests/monitoring/test_stats.py``):

- ``ks``: two-sample Kolmogorov-Smirnov D, as ``scipy.stats.ks_2samp``; the p-value is
  Kolmogorov's limit, ``scipy.special.kolmogorov(sqrt(n m / (n + m)) D)``.
- ``wasserstein``: ``scipy.stats.wasserstein_distance`` divided by the reference's
  standard deviation (ddof 0, floored at 1e-3, as Evidently norms it).
- ``psi``: population stability index, ``entropy(q, p) + entropy(p, q)``.
- ``kl``: Kullback-Leibler divergence of the current from the reference, ``entropy(q, p)``.
- ``js``: Jensen-Shannon distance, ``scipy.spatial.distance.jensenshannon(p, q)`` (base e).
- ``chi2``: Pearson's chi-square of the 2 x K contingency table,
  ``scipy.stats.chi2_contingency(table, correction=False)``.

Binned statistics smooth a bin empty on one side to a share of 1e-4 and
renormalize, so a bin seen on one side only gives a large but finite value; bins
empty on both sides drop out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EMPTY_SHARE = 1e-4
STD_FLOOR = 1e-3
MAX_BLOCK_CELLS = 2_000_000  # rows x columns sorted at once: bounds the memory of a block

Array = Any  # numpy arrays; NumPy's own typing adds little here


_controller: Any = None


def one_blas_thread() -> Any:
    """A context in which BLAS runs on one thread.

    The products here are small; a BLAS thread pool spins more than it saves, by
    30-50x on a shared machine (a 200k-element dot product: 7 ms against 0.1 ms).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


PARALLEL_MIN_VALUES = 200_000  # below this many values a thread pool costs more than it saves


def map_columns(fn: Any, items: list[Any], values: int) -> list[Any]:
    """``[fn(i) for i in items]``, on two threads when there are ``values`` enough to share.

    NumPy releases the GIL in its sorts and ufuncs, so per-column work runs in parallel.
    """
    import os

    workers = min(2, os.cpu_count() or 1, len(items))
    if workers < 2 or values < PARALLEL_MIN_VALUES:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="keel-drift") as pool:
        return list(pool.map(fn, items))


def shares(counts: Array, keep: Array | None = None) -> Array:
    """Smoothed shares along the last axis: an empty bin gets 1e-4, then renormalized.

    Bins outside ``keep`` (empty on both sides of a comparison) get 0 and drop out.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.maximum(counts / np.where(total > 0, total, 1), EMPTY_SHARE)
    if keep is not None:
        p = np.where(keep, p, 0.0)
    return p / p.sum(axis=-1, keepdims=True)


def _pair(ref_counts: Array, cur_counts: Array) -> tuple[Array, Array, Array]:
    ref_counts, cur_counts = np.asarray(ref_counts, np.float64), np.asarray(cur_counts, np.float64)
    keep = (ref_counts + cur_counts) > 0
    return shares(ref_counts, keep), shares(cur_counts, keep), keep


def _sum(terms: Array, keep: Array) -> Array:
    return np.sum(np.where(keep, terms, 0.0), axis=-1)


def psi(ref_counts: Array, cur_counts: Array) -> Array:
    p, q, keep = _pair(ref_counts, cur_counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sum((q - p) * np.log(q / p), keep)


def kl(ref_counts: Array, cur_counts: Array) -> Array:
    p, q, keep = _pair(ref_counts, cur_counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sum(q * np.log(q / p), keep)


def js(ref_counts: Array, cur_counts: Array) -> Array:
    p, q, keep = _pair(ref_counts, cur_counts)
    m = (p + q) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        div = (_sum(p * np.log(p / m), keep) + _sum(q * np.log(q / m), keep)) / 2
    return np.sqrt(np.maximum(div, 0.0))


def chi2(ref_counts: Array, cur_counts: Array) -> tuple[Array, Array]:
    """(statistic, p-value) of the 2 x K table; categories empty on both sides are left out."""
    from scipy.special import chdtrc  # scipy.special, not scipy.stats: a tenth of the import time

    obs = np.stack([np.asarray(ref_counts, np.float64), np.asarray(cur_counts, np.float64)], axis=-2)
    col = obs.sum(axis=-2, keepdims=True)
    row = obs.sum(axis=-1, keepdims=True)
    total = row.sum(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        exp = row * col / total
        cells = np.where(exp > 0, (obs - exp) ** 2 / np.where(exp > 0, exp, 1), 0.0)
    stat = cells.sum(axis=(-2, -1))
    dof = np.maximum((col[..., 0, :] > 0).sum(axis=-1) - 1, 1)
    return stat, chdtrc(dof, stat)


def ks_pvalue(d: Array, n: Array, m: Array) -> Array:
    """Asymptotic two-sided p-value of KS D for sample sizes n and m (Kolmogorov's distribution)."""
    from scipy.special import kolmogorov

    n, m = np.asarray(n, np.float64), np.asarray(m, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        en = n * m / (n + m)
        p = kolmogorov(np.sqrt(np.where(en > 0, en, 0)) * d)
    return np.where(en > 0, np.clip(p, 0, 1), np.nan)


MERGE_BLOCK = 16_384  # values of each side merged at once: a few MB of temporaries whatever the columns' length


def ks_wasserstein_sorted(ref: Array, cur: Array, block: int = MERGE_BLOCK) -> tuple[float, float]:
    """KS and Wasserstein of two ascending arrays without NaN, equal to SciPy's.

    The two runs are merged block by block (a block ends after the last of a value
    on both sides, so ties never straddle two blocks): a stable argsort merges a
    block's two runs (timsort: linear time), the CDF difference is an exact integer
    running sum, ``+m`` per reference value and ``-n`` per current one, carried
    from block to block and divided by ``n m`` once per block.
    """
    n, m = len(ref), len(cur)
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    ks = wd = 0.0
    a = b = 0  # values of each side merged so far
    last_value = last_diff = 0.0
    while a < n or b < m:
        ends = [side[min(i + block, len(side)) - 1] for side, i in ((ref, a), (cur, b)) if i < len(side)]
        upto = min(ends)
        a2, b2 = int(np.searchsorted(ref, upto, side="right")), int(np.searchsorted(cur, upto, side="right"))
        both = np.concatenate([ref[a:a2], cur[b:b2]])
        order = np.argsort(both, kind="stable")
        merged = both[order]
        steps = (order < a2 - a).astype(np.int64)  # a reference value adds m, a current one subtracts n
        steps *= n + m
        steps -= n
        steps[0] += a * m - b * n  # the running sum so far
        diff = np.cumsum(steps, out=steps).astype(np.float64)
        diff /= n * m
        np.abs(diff, out=diff)
        tie_end = np.empty(len(merged), dtype=bool)  # the CDFs are right-continuous: read them after the last of equal values
        np.not_equal(merged[:-1], merged[1:], out=tie_end[:-1])
        tie_end[-1] = True
        ks = max(ks, float(np.max(diff, where=tie_end, initial=0.0)))
        # einsum, not np.dot: a BLAS dot spins its thread pool, 50x slower on a shared machine
        wd += float(np.einsum("i,i->", diff[:-1], np.diff(merged)))
        if a or b:
            wd += last_diff * float(merged[0] - last_value)
        last_value, last_diff = float(merged[-1]), float(diff[-1])
        a, b = a2, b2
    return ks, wd


def ks_wasserstein(ref: Array, cur: Array) -> tuple[Array, Array]:
    """(KS D, raw Wasserstein distance) per column of float matrices ``ref`` (n, k) and ``cur`` (m, k).

    Each column of ``ref`` must be sorted (``np.sort(ref, axis=0)``, NaN last); NaN is missing.
    The current matrix is sorted in blocks of columns of at most ``MAX_BLOCK_CELLS`` cells;
    each column is then merged with the reference and both CDFs found by binary search.
    """
    k = ref.shape[1]
    n_valid = (~np.isnan(ref)).sum(axis=0)
    step = max(1, MAX_BLOCK_CELLS // max(cur.shape[0], 1))
    ks, wd = np.empty(k), np.empty(k)
    for lo in range(0, k, step):  # blocks of columns
        hi = min(k, lo + step)
        block = np.sort(cur[:, lo:hi], axis=0)  # NaN last
        m_valid = (~np.isnan(block)).sum(axis=0)
        for j in range(lo, hi):  # a loop over columns, each one vectorized
            ks[j], wd[j] = ks_wasserstein_sorted(ref[: n_valid[j], j], block[: m_valid[j - lo], j - lo])
    return ks, wd


SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_BLOCK = 65_536


def mean_std(values: Array) -> tuple[float, float]:
    """Mean and standard deviation (ddof 0) of an array without NaN, as ``np.mean``/``np.std``, in cache-sized blocks."""
    mean = float(values.mean())
    squares = 0.0
    for lo in range(0, len(values), _BLOCK):  # np.std's whole-array temporaries cost more than the arithmetic
        d = values[lo : lo + _BLOCK] - mean
        squares += float(np.einsum("i,i->", d, d))
    return mean, (squares / len(values)) ** 0.5


def sorted_summary(finite: Array) -> dict[str, Any]:
    """Mean, std, min, max, median and quantiles of an ascending array without NaN."""
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "median": None, "quantiles": {}}
    mean, std = mean_std(finite)
    qs = sorted_quantiles(finite, np.array(SUMMARY_QUANTILES))
    return {"mean": mean, "std": std, "min": float(finite[0]), "max": float(finite[-1]), "median": float(qs[3]),
            "quantiles": {str(p): float(q) for p, q in zip(SUMMARY_QUANTILES, qs, strict=True)}}


def sorted_quantiles(ordered: Array, qs: Array) -> Array:
    """Quantiles of an ascending array without NaN, as ``np.quantile`` (linear) computes them, without re-sorting."""
    n = len(ordered)
    pos = np.asarray(qs, np.float64) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def quantile_edges(values: Array, bins: int, *, ordered: Array | None = None) -> Array:
    """Inner bin edges: the reference's quantiles, duplicates dropped (a constant column has none).

    ``ordered``: the same values sorted (NaN last), when the caller has them.
    """
    finite = ordered[~np.isnan(ordered)] if ordered is not None else np.sort(values[~np.isnan(values)])
    if finite.size == 0:
        return np.empty(0)
    return np.unique(sorted_quantiles(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_codes(values: Array, edges: Array) -> Array:
    """Bin index per value (0..len(edges)); NaN gets -1."""
    codes = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), -1, codes)


def sorted_counts(ordered: Array, edges: Array) -> Array:
    """Counts per bin (as ``counts(bin_codes(v, edges))``) of an ascending array without NaN, by binary search of the edges."""
    below = np.searchsorted(ordered, edges, side="left")  # values < each edge
    return np.diff(np.concatenate([[0], below, [len(ordered)]])).astype(np.float64)


def counts(codes: Array, nbins: int) -> Array:
    ok = codes >= 0
    return np.bincount(codes[ok], minlength=nbins).astype(np.float64)


def chunk_ks_wasserstein(values: Array, labels: Array, nchunks: int) -> tuple[Array, Array]:
    """KS D and raw Wasserstein of each chunk against the rest of the reference, all chunks at once.

    One sort of the column; chunk membership is a one-hot matrix (nchunks, n), cumulated along rows.
    """
    order = np.argsort(values, kind="stable")
    vs = values[order]
    valid = ~np.isnan(vs)
    onehot = (labels[order][None, :] == np.arange(nchunks)[:, None]) & valid[None, :]
    c = onehot.sum(axis=1, keepdims=True)
    cum_in = np.cumsum(onehot, axis=1, dtype=np.int32)
    cum_all = np.cumsum(valid, dtype=np.int32)[None, :]
    r = cum_all[:, -1:] - c
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = cum_in / c - (cum_all - cum_in) / r
    tie_end = valid.copy()
    tie_end[:-1] &= vs[:-1] != vs[1:]
    ks = np.max(np.where(tie_end[None, :], np.abs(diff), 0.0), axis=1)
    deltas = np.where(valid[1:], np.diff(vs), 0.0)
    wd = np.abs(diff[:, :-1]) @ deltas
    return ks, wd


def chunk_ks(values: Array, labels: Array, nchunks: int) -> Array:
    """KS D of each chunk against the rest of the reference, as :func:`chunk_ks_wasserstein`, in O(n log n).

    A chunk's CDF difference ``d = A (1/c + 1/r) - T / r`` (A: the chunk's values
    up to x, T: all values up to x) rises only at the chunk's own values and falls
    in between, so its extremes lie at each of the chunk's values and just before
    it: two evaluations per value, not one per value and chunk.
    """
    order = np.argsort(values)  # ties are grouped below, so their order does not matter (and SIMD argsort is 6x timsort's speed)
    vs = values[order]
    valid = ~np.isnan(vs)
    small = np.int8 if nchunks <= 127 else np.int16 if nchunks <= 32767 else np.int64  # a stable sort of <= 16-bit ints is a radix sort
    vs, lab = vs[valid], np.asarray(labels)[order][valid].astype(small)
    n = len(vs)
    out = np.full(nchunks, np.nan)
    if n == 0:
        return out
    starts = _run_starts(vs)
    group = np.cumsum(starts) - 1  # dense rank of each value: ties share one
    first = np.flatnonzero(starts)
    below = first[group]  # values < v
    upto = np.append(first[1:], n)[group]  # values <= v
    by_chunk = np.argsort(lab, kind="stable")  # chunk by chunk, each in value order
    key = lab[by_chunk].astype(np.int64) * (n + 1) + group[by_chunk]
    kstarts = _run_starts(key)
    kfirst = np.flatnonzero(kstarts)
    kgroup = np.cumsum(kstarts) - 1
    pos_lo = kfirst[kgroup]
    pos_hi = np.append(kfirst[1:], n)[kgroup]
    size = np.bincount(lab.astype(np.intp), minlength=nchunks).astype(np.float64)
    chunk_start = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    lab_c = lab[by_chunk]
    c, r = size[lab_c], n - size[lab_c]
    a_hi, a_lo = (pos_hi - chunk_start[lab_c]).astype(np.float64), (pos_lo - chunk_start[lab_c]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        at = np.abs(a_hi / c - (upto[by_chunk] - a_hi) / r)
        before = np.abs(a_lo / c - (below[by_chunk] - a_lo) / r)
    h = np.maximum(at, before)
    present = size > 0
    out[present] = np.maximum.reduceat(h, chunk_start[present])
    out[present & (size == n)] = np.nan  # no rest to compare with
    return out


def _run_starts(sorted_values: Array) -> Array:
    """True where a run of equal values starts."""
    starts = np.empty(len(sorted_values), dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return starts


def chunk_counts(codes: Array, labels: Array, nchunks: int, nbins: int) -> tuple[Array, Array]:
    """(counts per chunk, counts of the rest) as (nchunks, nbins) matrices."""
    ok = codes >= 0
    flat = np.bincount(labels[ok] * nbins + codes[ok], minlength=nchunks * nbins)
    per = flat.reshape(nchunks, nbins).astype(np.float64)
    return per, per.sum(axis=0, keepdims=True) - per
