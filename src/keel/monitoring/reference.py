"""A fitted reference: what drift needs from the reference, computed once.

``fit_reference(table)`` prepares every column the way NannyML's calculators are
fitted: the sample itself (so KS and Wasserstein are exact), quantile bin edges,
the categories with their counts, summary figures, and the *null samples* of
every statistic: the reference is split, in its order, into ``n_chunks`` chunks
and each chunk is compared with the rest. Those values measure the
chunk-to-chunk spread a stable population shows; thresholds are learned from
them (:mod:`keel.monitoring.thresholds`). A stored baseline is a fitted
reference plus the model version's context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ValidationError
from keel.monitoring import stats as S

if TYPE_CHECKING:
    import pyarrow as pa

NUMERIC_METHODS = ("ks", "wasserstein", "psi", "kl", "js")
CATEGORICAL_METHODS = ("chi2", "psi", "kl", "js")
MIN_CHUNK_ROWS = 50
LOW_CARDINALITY = 10  # an integer column with at most this many values is categorical
MAX_CATEGORIES = 1000
LEARN_ROWS = 20_000  # thresholds are learned on at most this many reference rows, evenly spaced


def column_kind(dtype: pa.DataType) -> str:
    """'numeric', 'categorical' or 'unsupported' for an Arrow type."""
    import pyarrow as pa

    if pa.types.is_boolean(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype):
        return "categorical"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    return "unsupported"


def as_float(col: Any) -> Any:
    """A float64 NumPy array of a numeric Arrow column, null as NaN.

    A float64 column without nulls in one chunk is a read-only view of Arrow's
    buffer, not a copy (a DataFrame's float column converted by :func:`keel.monitoring.drift.as_table` is one).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pc.cast(col, pa.float64()) if col.type != pa.float64() else col
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=True)
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def as_strings(col: Any) -> Any:
    """A string Arrow array of a categorical column (booleans and integers as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return col


@dataclass
class ColumnReference:
    """One column of a fitted reference."""

    name: str
    kind: str
    dtype: str
    rows: int
    count: int  # non-null values
    summary: dict[str, Any]
    edges: Any = None  # numeric: inner quantile edges
    categories: list[str] = field(default_factory=list)  # categorical, most frequent first
    counts: Any = None  # per bin (numeric) or per category (+1 "new" bin)
    null_samples: dict[str, list[float]] = field(default_factory=dict)
    chunk_neff: float = 0.0
    values: Any = None  # numeric sample (float64 with NaN; often a view of the caller's data), not serialized
    sorted_values: Any = None  # the same, sorted (NaN last)

    @property
    def null_rate(self) -> float:
        return 1.0 - self.count / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "kind", "dtype", "rows", "count", "summary", "categories", "null_samples", "chunk_neff")}
        out["edges"] = None if self.edges is None else [float(e) for e in self.edges]
        out["counts"] = None if self.counts is None else [float(c) for c in self.counts]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnReference:
        ref = cls(**{k: d[k] for k in ("name", "kind", "dtype", "rows", "count", "summary", "categories", "null_samples", "chunk_neff")})
        ref.edges = None if d.get("edges") is None else np.asarray(d["edges"], np.float64)
        ref.counts = None if d.get("counts") is None else np.asarray(d["counts"], np.float64)
        return ref


@dataclass
class Reference:
    """The fitted reference of a drift comparison (or a baseline's)."""

    columns: dict[str, ColumnReference]
    rows: int
    n_chunks: int
    bins: int
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why
    multivariate: dict[str, Any] | None = None
    sample: Any = None  # the pyarrow sample table the values came from

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "n_chunks": self.n_chunks, "bins": self.bins, "skipped": self.skipped,
            "multivariate": self.multivariate, "columns": {k: c.to_dict() for k, c in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], sample: pa.Table | None = None) -> Reference:
        ref = cls(
            columns={k: ColumnReference.from_dict(c) for k, c in d["columns"].items()}, rows=int(d["rows"]),
            n_chunks=int(d["n_chunks"]), bins=int(d["bins"]), skipped=dict(d.get("skipped") or {}), multivariate=d.get("multivariate"),
            sample=sample,
        )
        if sample is not None:
            for name, col in ref.columns.items():
                if col.kind == "numeric" and name in sample.column_names:
                    col.values = as_float(sample[name])  # sorted when compared, on the comparison's threads
        return ref


def _learnable(count: int, n_chunks: int) -> bool:
    return count >= n_chunks * MIN_CHUNK_ROWS


def _fit_numeric(name: str, dtype: str, v: Any, n_chunks: int, bins: int, methods: tuple[str, ...]) -> ColumnReference:
    ordered = np.sort(v)  # NaN last
    count = int(len(v) - np.count_nonzero(np.isnan(v)))
    finite = ordered[:count]
    edges = S.quantile_edges(v, bins, ordered=finite)
    summary = S.sorted_summary(finite)
    ref = ColumnReference(name, "numeric", dtype, len(v), count, summary, edges=edges,
                          counts=S.sorted_counts(finite, edges), values=v, sorted_values=ordered)
    ref.summary["std_norm"] = max(summary["std"] or 0.0, S.STD_FLOOR)  # Wasserstein's norm, as Evidently's
    if _learnable(count, n_chunks) and methods:
        rows = _learn_rows(len(v))
        sub = v[rows]
        codes = S.bin_codes(sub, edges)
        labels = _labels(len(sub), n_chunks)
        samples: dict[str, Any] = {}
        if "wasserstein" in methods:  # the chunks' Wasserstein needs every chunk's whole CDF: only when asked for
            samples["ks"], wd = S.chunk_ks_wasserstein(sub, labels, n_chunks)
            samples["wasserstein"] = wd / ref.summary["std_norm"]
        elif "ks" in methods:
            samples["ks"] = S.chunk_ks(sub, labels, n_chunks)
        if {"psi", "kl", "js"} & set(methods):
            per, rest = S.chunk_counts(codes, labels, n_chunks, len(edges) + 1)
            samples.update(psi=S.psi(rest, per), kl=S.kl(rest, per), js=S.js(rest, per))
        ref.null_samples = {k: np.asarray(x).tolist() for k, x in samples.items() if k in methods}
        ref.chunk_neff = _chunk_neff(codes >= 0, labels, n_chunks)
    return ref


def _fit_categorical(name: str, dtype: str, col: Any, n_chunks: int, methods: tuple[str, ...]) -> ColumnReference:
    values, cnts = category_counts(col)
    text = col
    order = np.argsort(-cnts, kind="stable")[:MAX_CATEGORIES]
    categories = [str(values[i]) for i in order]
    count = int(len(text) - text.null_count)
    counts = np.append(cnts[order], cnts.sum() - cnts[order].sum())  # the last bin: values not among the categories
    total = max(count, 1)
    summary = {"top": [[c, float(n / total)] for c, n in zip(categories[:10], counts[:10], strict=False)], "distinct": len(values)}
    ref = ColumnReference(name, "categorical", dtype, len(text), count, summary, categories=categories, counts=counts)
    if _learnable(count, n_chunks) and methods:
        codes = encode(text, categories)[_learn_rows(len(text))]
        labels = _labels(len(codes), n_chunks)
        per, rest = S.chunk_counts(codes, labels, n_chunks, len(categories) + 1)
        stat, _ = S.chi2(rest, per)
        samples = {"chi2": stat, "psi": S.psi(rest, per), "kl": S.kl(rest, per), "js": S.js(rest, per)}
        ref.null_samples = {k: x.tolist() for k, x in samples.items() if k in methods}
        ref.chunk_neff = _chunk_neff(codes >= 0, labels, n_chunks)
    return ref


def encode(text: Any, categories: list[str]) -> Any:
    """Code per value: its category's index, len(categories) for a value never seen, -1 for null.

    A dictionary-encoded column (a pandas category) is mapped through its dictionary, not per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    if pa.types.is_dictionary(text.type):
        mapped = encode(as_strings(text.dictionary), categories)
        idx_arr = text.indices
        codes = mapped[idx_arr.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)] if len(mapped) else np.full(len(text), len(categories))
        codes[idx_arr.is_null().to_numpy(zero_copy_only=False)] = -1
        return codes
    if not pa.types.is_string(text.type):  # integers, booleans: hash the values, then name the few distinct ones
        return encode(pc.dictionary_encode(text), categories)
    idx = pc.index_in(text, value_set=pa.array(categories, pa.string()))
    codes = idx.fill_null(len(categories)).to_numpy(zero_copy_only=False).astype(np.int64)
    nulls = text.is_null().to_numpy(zero_copy_only=False)
    codes[nulls] = -1
    return codes


def category_counts(col: Any) -> tuple[list[str], Any]:
    """(distinct values as text, their counts) of a categorical column, nulls left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):  # count the codes, then name them
        idx = col.indices.drop_null().to_numpy(zero_copy_only=False)
        cnts = np.bincount(idx.astype(np.int64), minlength=len(col.dictionary)).astype(np.float64)
        names = as_strings(col.dictionary).to_pylist()
        keep = cnts > 0
        return [str(v) for v, k in zip(names, keep, strict=True) if k], cnts[keep]
    text = as_strings(col).drop_null()
    if len(text) == 0:
        return [], np.empty(0)
    vc = pc.value_counts(text)
    return [str(v) for v in vc.field("values").to_pylist()], np.asarray(vc.field("counts").to_numpy(zero_copy_only=False), np.float64)


def _learn_rows(n: int) -> Any:
    """Evenly spaced rows (in order) to learn thresholds on; the null spread is rescaled by size anyway."""
    return np.arange(n) if n <= LEARN_ROWS else np.linspace(0, n - 1, LEARN_ROWS).astype(np.int64)


def _labels(n: int, n_chunks: int) -> Any:
    """Contiguous chunks in the reference's order (time order, when it has one)."""
    return (np.arange(n) * n_chunks // max(n, 1)).astype(np.int64)


def _chunk_neff(valid: Any, labels: Any, n_chunks: int) -> float:
    c = np.bincount(labels[valid], minlength=n_chunks).astype(np.float64)
    n = c.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        neff = 1.0 / (1.0 / c + 1.0 / (n - c))
    return float(np.nanmean(neff))


def check_fit_args(n_chunks: int, bins: int) -> None:
    if n_chunks < 2:
        raise ValidationError(f"n_chunks={n_chunks} is too small.", hint="Use at least 2 reference chunks (default 20).")
    if bins < 2:
        raise ValidationError(f"bins={bins} is too small.", hint="Use at least 2 bins (default 10).")


def column_kinds(table: pa.Table, columns: list[str] | None = None, categorical: list[str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """({column: 'numeric' or 'categorical'}, {skipped column: why}) for ``columns`` of ``table`` (default: all)."""
    names = list(columns) if columns is not None else list(table.column_names)
    missing = [c for c in names if c not in table.column_names]
    if missing:
        from keel.errors import did_you_mean

        raise ValidationError(f"Column {missing[0]!r} is not in the reference." + did_you_mean(missing[0], table.column_names),
                              hint=f"The reference has {table.column_names}.")
    forced = set(categorical or [])
    kinds: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in names:
        col = table[name]
        kind = "categorical" if name in forced else column_kind(col.type)
        if kind == "numeric" and _low_cardinality_int(col):
            kind = "categorical"
        if kind == "unsupported":
            skipped[name] = f"type {col.type} is neither numeric nor categorical"
        else:
            kinds[name] = kind
    return kinds, skipped


def fit_column(table: pa.Table, name: str, kind: str, n_chunks: int, bins: int, learn: tuple[str, ...]) -> ColumnReference:
    """One column of a reference, vectorized; ``learn``: the methods whose null samples to compute."""
    col = table[name]
    if kind == "numeric":
        return _fit_numeric(name, str(col.type), as_float(col), n_chunks, bins, learn)
    return _fit_categorical(name, str(col.type), col, n_chunks, learn)


def fit_reference(
    table: pa.Table,
    columns: list[str] | None = None,
    *,
    categorical: list[str] | None = None,
    n_chunks: int = 20,
    bins: int = 10,
    multivariate: bool = True,
    methods: dict[str, tuple[str, ...]] | None = None,
) -> Reference:
    """Fit every column of ``table`` (or ``columns``) once; see the module docstring.

    ``methods`` ({column or kind: methods}) limits the null samples learned for a column
    to the methods whose thresholds will be asked for (default: every method, as a
    stored baseline needs).
    """
    check_fit_args(n_chunks, bins)
    kinds, skipped = column_kinds(table, columns, categorical)

    def fit(name: str) -> ColumnReference:
        kind = kinds[name]
        every = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        return fit_column(table, name, kind, n_chunks, bins, every if methods is None else methods.get(name, methods.get(kind, ())))

    names = list(kinds)
    with S.one_blas_thread():
        out = dict(zip(names, S.map_columns(fit, names, table.num_rows * len(names)), strict=True))
        ref = Reference(out, table.num_rows, n_chunks, bins, skipped=skipped, sample=table)
        if multivariate:
            from keel.monitoring.multivariate import fit_pca

            ref.multivariate = fit_pca(ref, n_chunks)
    return ref


def _low_cardinality_int(col: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_integer(col.type):
        return False
    return bool(pc.count_distinct(col).as_py() <= LOW_CARDINALITY)
