"""The drift engine: ``keel.drift(reference, current, columns=...)`` and what a monitor run calls.

Defaults, by type and size (docs/monitoring.md explains them):

- numeric columns: **KS** D, threshold learned from the reference's chunks;
- categorical columns (strings, booleans, integers with at most 10 values):
  **Jensen-Shannon** distance, threshold learned the same way;
- a reference too small to learn from (under ``n_chunks x 50`` values): the KS
  or chi-square test, alert at p < 0.01;
- a window with fewer than ``min_rows`` values: no verdict, said so.

Every statistic of the column's type is computed in the same pass and reported
(``to_frame()`` has a column per statistic); ``method=`` picks the one flagged,
``thresholds=`` fixes its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import ValidationError, did_you_mean
from keel.monitoring import stats as S
from keel.monitoring import thresholds as T
from keel.monitoring.reference import (
    CATEGORICAL_METHODS,
    NUMERIC_METHODS,
    ColumnReference,
    Reference,
    as_float,
    as_strings,
    check_fit_args,
    encode,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MIN_ROWS = 30
DEFAULT_METHOD = {"numeric": "ks", "categorical": "js"}


def as_table(data: Any, what: str) -> pa.Table:
    """An Arrow table from a DataFrame, Arrow table or Parquet/CSV path."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.exists():
            raise ValidationError(f"The {what} {str(path)!r} does not exist.", hint="Pass a DataFrame, an Arrow table or a Parquet/CSV path.")
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if hasattr(data, "columns") and hasattr(data, "dtypes"):
        return _from_pandas(data)
    raise ValidationError(f"The {what} is a {type(data).__name__}.", hint="Pass a pandas DataFrame, an Arrow table or a Parquet/CSV path.")


def _from_pandas(frame: pd.DataFrame) -> pa.Table:
    """An Arrow view of a DataFrame, sharing its memory where the types allow.

    NumPy-backed numeric columns are wrapped, not copied (a float NaN stays a NaN
    value, which every statistic here reads as missing); a categorical column
    becomes a dictionary array over its codes. Other columns convert as pandas
    converts them.
    """
    import pandas as pd
    import pyarrow as pa

    arrays, names = [], []
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            codes = series.cat.codes.to_numpy()
            mask = codes < 0
            indices = pa.array(codes, mask=mask) if mask.any() else pa.array(codes)
            arr: Any = pa.DictionaryArray.from_arrays(indices, pa.array(series.cat.categories.to_numpy(), from_pandas=True))
        elif isinstance(dtype, np.dtype) and dtype.kind in "fiu":
            arr = pa.array(series.to_numpy())
        else:
            arr = pa.array(series, from_pandas=True)
        arrays.append(arr)
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def _num(v: float) -> str:
    """A figure as a person writes it: 64.8, 1234.5, 0.0123."""
    return f"{v:.1f}" if 1 <= abs(v) < 1e6 else f"{v:.3g}"


@dataclass
class ColumnDrift:
    """The drift of one column: the flagged method's statistic against its threshold, and every other statistic."""

    column: str
    kind: str
    method: str
    statistic: float | None
    threshold: float | None
    warn_threshold: float | None
    threshold_kind: str
    level: str  # ok | warn | alert | insufficient | missing
    statistics: dict[str, float] = field(default_factory=dict)
    p_value: float | None = None
    n_reference: int = 0
    n_current: int = 0
    null_rate_reference: float = 0.0
    null_rate_current: float = 0.0
    reference_summary: dict[str, Any] = field(default_factory=dict)
    current_summary: dict[str, Any] = field(default_factory=dict)
    new_categories: dict[str, int] = field(default_factory=dict)
    missing_categories: list[str] = field(default_factory=list)
    out_of_range_share: float = 0.0
    note: str = ""

    @property
    def drifted(self) -> bool:
        return self.level == "alert"

    @property
    def approximate(self) -> bool:
        """Whether the flagged statistic was computed from bins rather than the samples."""
        return self.kind == "numeric" and self.method in ("psi", "kl", "js")

    def shift(self) -> str:
        """The shift in the column's own units, e.g. ``mean 64.8 → 84.9 (+31 %)``."""
        r, c = self.reference_summary, self.current_summary
        if self.kind == "numeric" and r.get("mean") is not None and c.get("mean") is not None:
            base, now = float(r["mean"]), float(c["mean"])
            rel = f" ({(now - base) / abs(base) * 100:+.0f} %)" if base else ""
            return f"mean {_num(base)} → {_num(now)}{rel}"
        if self.kind == "categorical" and r.get("shares") is not None and c.get("shares") is not None:
            rs, cs = r["shares"], c["shares"]
            keys = set(rs) | set(cs)
            top = max(keys, key=lambda k: abs(cs.get(k, 0.0) - rs.get(k, 0.0)), default=None)
            if top is not None:
                return f"'{top}' {rs.get(top, 0.0) * 100:.1f} % → {cs.get(top, 0.0) * 100:.1f} % of rows"
        return ""

    def describe(self) -> str:
        """One line: ``col: mean 64.8 → 84.9 (+31 %), ks 0.42 > 0.05``."""
        if self.statistic is None:
            return f"{self.column}: {self.note or self.level}"
        op = ">" if self.drifted else "<="
        thr = "" if self.threshold is None else f" {op} {self.threshold:.3g}"
        shift = self.shift()
        return f"{self.column}: {shift + ', ' if shift else ''}{self.method} {self.statistic:.3g}{thr}"

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["drifted"] = self.drifted
        out["approximate"] = self.approximate
        out["shift"] = self.shift()
        return out


@dataclass
class DriftReport:
    """The result of :func:`drift`: one :class:`ColumnDrift` per column, plus multivariate, quality and schema."""

    columns: list[ColumnDrift]
    n_reference: int
    n_current: int
    multivariate: dict[str, Any] | None = None
    schema: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference: Reference | None = field(default=None, repr=False)
    current: Any = field(default=None, repr=False)  # the current Arrow table, for plots and segments
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # histograms and segment codes, computed once

    @property
    def drifted(self) -> list[str]:
        """Names of the columns at level alert."""
        return [c.column for c in self.columns if c.drifted]

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    def to_frame(self) -> pd.DataFrame:
        """One row per column: column, kind, method, statistic, threshold, level, drifted, every statistic, note."""
        import pandas as pd

        stat_names = [*NUMERIC_METHODS, *[m for m in CATEGORICAL_METHODS if m not in NUMERIC_METHODS]]
        rows = []
        for c in self.columns:
            rows.append({
                "column": c.column, "kind": c.kind, "method": c.method, "statistic": c.statistic, "threshold": c.threshold,
                "warn_threshold": c.warn_threshold, "threshold_kind": c.threshold_kind, "level": c.level, "drifted": c.drifted,
                "approximate": c.approximate, "p_value": c.p_value, "shift": c.shift(),
                **{s: c.statistics.get(s) for s in stat_names},
                "null_rate_reference": c.null_rate_reference, "null_rate_current": c.null_rate_current,
                "out_of_range_share": c.out_of_range_share, "new_categories": len(c.new_categories), "note": c.note,
            })
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference, "n_current": self.n_current, "drifted": self.drifted, "schema": self.schema,
            "notes": self.notes, "multivariate": self.multivariate, "columns": [c.to_dict() for c in self.columns],
        }

    def to_html(self, title: str = "Drift report") -> str:
        """A self-contained HTML page: the table and a distribution comparison per column (inline SVG)."""
        from keel.monitoring.html import drift_html

        return drift_html(self, title)

    def plot(self, column: str) -> Any:
        """A matplotlib figure comparing the column's reference and current distributions."""
        from keel.monitoring.html import plot_column

        return plot_column(self, column)

    def histogram(self, column: str, bins: int = 30) -> dict[str, Any]:
        """Reference and current shares per bin (numeric) or category, as numbers."""
        from keel.monitoring.html import histogram

        if ("histogram", column, bins) not in self.cache:
            self.cache[("histogram", column, bins)] = histogram(self, column, bins)
        return dict(self.cache[("histogram", column, bins)])

    def top_segments(self, column: str, *, by: list[str] | None = None, top: int = 3) -> list[dict[str, Any]]:
        """The segments driving ``column``'s shift (:func:`keel.monitoring.segments.top_segments`)."""
        from keel.monitoring.segments import top_segments

        c = self[column]
        if self.reference is None or self.current is None:
            return []
        return top_segments(self.reference, self.current, column, c.method, by=by, top=top, cache=self.cache)


def _check_methods(method: Any, kinds: dict[str, str]) -> dict[str, str]:
    """{column: method} from None, one method name, or a {column or kind: method} mapping."""
    out: dict[str, str] = {}
    for name, kind in kinds.items():
        choice = None
        if isinstance(method, str):
            choice = method
        elif isinstance(method, dict):
            choice = method.get(name, method.get(kind))
        elif method is not None:
            raise ValidationError(f"method={method!r} is not a name or a mapping.", hint="Use e.g. method='psi' or method={'age': 'wasserstein'}.")
        if choice is None:
            continue
        allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        if choice not in allowed:
            if isinstance(method, str) and choice in (*NUMERIC_METHODS, *CATEGORICAL_METHODS):
                continue  # a single name applies to the columns whose type has it
            raise ValidationError(f"Drift method {choice!r} does not apply to {kind} column {name!r}." + did_you_mean(choice, allowed),
                                  hint=f"Use one of {', '.join(allowed)}.")
        out[name] = choice
    return out


def _threshold(ref: ColumnReference, method: str, override: Any, n: int, m: int) -> T.Threshold:
    if override is not None:
        return T.fixed(override, method)
    samples = ref.null_samples.get(method)
    if samples:
        bins = len(ref.categories) + 1 if ref.kind == "categorical" else len(ref.edges) + 1
        return T.learned(samples, ref.chunk_neff, T.neff(n, m), method, bins)
    if method in ("ks", "chi2"):
        return T.test_threshold(method, n, m, len(ref.categories) + 1)
    return T.default_fixed(method)


def _pick_override(thresholds: Any, column: str, kind: str, method: str) -> Any:
    if thresholds is None:
        return None
    if isinstance(thresholds, dict):
        for key in (column, method, kind):
            if key in thresholds:
                return thresholds[key]
        return None
    return thresholds


def compare(
    ref: Reference,
    current: pa.Table,
    *,
    method: Any = None,
    thresholds: Any = None,
    min_rows: int = MIN_ROWS,
    added: list[str] | None = None,
) -> DriftReport:
    """Apply a fitted reference to the current table: every statistic of every column, once.

    ``added``: the columns new since the reference, when ``current`` holds only the
    reference's columns (a monitor reads no others); by default the columns of
    ``current`` that the reference lacks.
    """
    with S.one_blas_thread():
        comparison = _Comparison({c: r.kind for c, r in ref.columns.items()}, current, method, thresholds, min_rows)
        names = list(ref.columns)
        done = S.map_columns(lambda c: comparison.column(ref.columns[c]), names, current.num_rows * len(names))
        return comparison.report(ref, dict(zip(names, done, strict=True)), added)


class _Comparison:
    """One comparison of a current table with a reference, column by column (in any order, on any thread)."""

    def __init__(self, kinds: dict[str, str], current: pa.Table, method: Any, thresholds: Any, min_rows: int) -> None:
        self.kinds, self.current, self.thresholds, self.min_rows = kinds, current, thresholds, min_rows
        self.methods = _check_methods(method, kinds)
        self.rows = current.num_rows
        self.names = set(current.column_names)
        self.type_changed: dict[str, str] = {}
        self.floats: dict[str, Any] = {}  # current numeric columns (Arrow), for the multivariate signal

    def column(self, r: ColumnReference) -> ColumnDrift:
        import pyarrow as pa

        method = self.methods.get(r.name, DEFAULT_METHOD[r.kind])
        if r.name not in self.names:
            return ColumnDrift(r.name, r.kind, method, None, None, None, "", "missing", n_reference=r.count,
                               note="column is missing from the current data")
        col = self.current[r.name]
        if r.kind == "categorical":
            return _categorical_result(r, col, self.methods, self.thresholds, self.min_rows)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type) or pa.types.is_null(col.type)):
            change = self.type_changed[r.name] = f"{r.dtype} → {col.type}"
            return ColumnDrift(r.name, r.kind, method, None, None, None, "", "missing", n_reference=r.count, note=f"type changed: {change}")
        self.floats[r.name] = col  # read block by block by the multivariate signal, in the rows' order
        if pa.types.is_null(col.type):
            return _numeric_result(r, np.full(self.rows, np.nan), self.methods, self.thresholds, self.min_rows, owned=True)
        if isinstance(col, pa.ChunkedArray) and col.num_chunks > 1:  # a window read from the log: one copy, then sorted in place
            return _numeric_result(r, np.concatenate([as_float(c) for c in col.chunks]), self.methods, self.thresholds, self.min_rows, owned=True)
        return _numeric_result(r, as_float(col), self.methods, self.thresholds, self.min_rows)  # often a view of the caller's data

    def report(self, ref: Reference, results: dict[str, ColumnDrift], added: list[str] | None = None) -> DriftReport:
        notes: list[str] = []
        if self.rows == 0:
            notes.append("The current window is empty: no statistic was computed.")
        schema: dict[str, Any] = {
            "dropped": [c for c in ref.columns if c not in self.names],
            "added": sorted(self.names - set(ref.columns) - set(ref.skipped)) if added is None else list(added),
            "type_changed": dict(self.type_changed),
            "skipped": dict(ref.skipped),
        }
        if schema["added"]:
            notes.append(f"Columns not in the reference (not compared): {', '.join(schema['added'])}.")
        if schema["dropped"]:
            notes.append(f"Columns of the reference missing from the current data: {', '.join(schema['dropped'])}.")
        multi = None
        if ref.multivariate:
            from keel.monitoring.multivariate import apply_pca

            multi = apply_pca(ref.multivariate, self.floats, self.rows)
        ordered = [results[c] for c in ref.columns if c in results]
        return DriftReport(ordered, ref.rows, self.rows, multi, schema, notes, ref, self.current)


def _numeric_result(r: ColumnReference, cur: Any, methods: dict[str, str], thresholds: Any, min_rows: int, *, owned: bool = False) -> ColumnDrift:
    """``owned``: ``cur`` is this call's own copy, sorted in place (else it is left as it is and sorted into a copy)."""
    if owned:
        cur.sort()  # one sort serves KS, Wasserstein, the bins, the summary and the range check
    ordered = cur if owned else np.sort(cur)
    m = int(len(cur) - np.count_nonzero(np.isnan(cur)))
    ordered = ordered[:m]
    method = methods.get(r.name, DEFAULT_METHOD["numeric"])
    out = ColumnDrift(r.name, "numeric", method, None, None, None, "", "ok", n_reference=r.count, n_current=m,
                      null_rate_reference=r.null_rate, null_rate_current=1 - m / len(cur) if len(cur) else 0.0,
                      reference_summary=r.summary, current_summary=S.sorted_summary(ordered))
    lo, hi = r.summary.get("min"), r.summary.get("max")
    if m and lo is not None and hi is not None:
        below, upto = int(ordered.searchsorted(lo, side="left")), int(ordered.searchsorted(hi, side="right"))
        out.out_of_range_share = float((below + m - upto) / m)
    if r.count == 0:
        out.level, out.note = "insufficient", "the reference column is all null"
        return out
    if m < min_rows:
        out.level = "insufficient"
        out.note = "the current column is all null" if m == 0 and len(cur) else f"only {m} current values (at least {min_rows} needed)"
        return out
    ref_sorted = r.sorted_values if r.sorted_values is not None else np.sort(r.values)  # a one-off comparison sorts once, not twice
    ks, wd = S.ks_wasserstein_sorted(ref_sorted[: r.count], ordered)
    cur_counts = S.sorted_counts(ordered, r.edges)
    stats = {"ks": ks, "wasserstein": wd / r.summary["std_norm"], "psi": float(S.psi(r.counts, cur_counts)),
             "kl": float(S.kl(r.counts, cur_counts)), "js": float(S.js(r.counts, cur_counts))}
    out.statistics = stats
    out.p_value = float(S.ks_pvalue(ks, r.count, m))
    thr = _threshold(r, method, _pick_override(thresholds, r.name, "numeric", method), r.count, m)
    out.statistic, out.threshold, out.warn_threshold, out.threshold_kind = stats[method], thr.alert, thr.warn, thr.how
    out.level = thr.level(stats[method])
    if (r.summary.get("std") or 0.0) == 0.0:
        out.note = "the reference column is constant"
    return out


def _categorical_result(r: ColumnReference, col: Any, methods: dict[str, str], thresholds: Any, min_rows: int) -> ColumnDrift:
    import pyarrow.compute as pc

    codes = encode(col, r.categories)
    m = int((codes >= 0).sum())
    method = methods.get(r.name, DEFAULT_METHOD["categorical"])
    cur_counts = S.counts(codes, len(r.categories) + 1)
    total_r, total_c = max(r.count, 1), max(m, 1)
    out = ColumnDrift(r.name, "categorical", method, None, None, None, "", "ok", n_reference=r.count, n_current=m,
                      null_rate_reference=r.null_rate, null_rate_current=1 - m / len(codes) if len(codes) else 0.0)
    top = np.argsort(-(r.counts[:-1] + cur_counts[:-1]), kind="stable")[:20]
    out.reference_summary = {"shares": {r.categories[i]: float(r.counts[i] / total_r) for i in top}}
    out.current_summary = {"shares": {r.categories[i]: float(cur_counts[i] / total_c) for i in top}}
    new_mask = codes == len(r.categories)
    if new_mask.any():
        vc = pc.value_counts(pc.filter(as_strings(col), new_mask))
        pairs = sorted(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True), key=lambda p: -p[1])
        out.new_categories = {str(k): int(v) for k, v in pairs[:50]}
        out.out_of_range_share = float(new_mask.sum() / total_c)
        out.current_summary["shares"]["(new)"] = float(new_mask.sum() / total_c)
    out.missing_categories = [r.categories[i] for i in np.flatnonzero((cur_counts[:-1] == 0) & (r.counts[:-1] > 0))[:50]] if m else []
    if r.count == 0:
        out.level, out.note = "insufficient", "the reference column is all null"
        return out
    if m < min_rows:
        out.level = "insufficient"
        out.note = "the current column is all null" if m == 0 and len(codes) else f"only {m} current values (at least {min_rows} needed)"
        return out
    chi, p = S.chi2(r.counts, cur_counts)
    stats = {"chi2": float(chi), "psi": float(S.psi(r.counts, cur_counts)), "kl": float(S.kl(r.counts, cur_counts)), "js": float(S.js(r.counts, cur_counts))}
    out.statistics, out.p_value = stats, float(p)
    thr = _threshold(r, method, _pick_override(thresholds, r.name, "categorical", method), r.count, m)
    out.statistic, out.threshold, out.warn_threshold, out.threshold_kind = stats[method], thr.alert, thr.warn, thr.how
    out.level = thr.level(stats[method])
    if out.new_categories:
        out.note = f"{len(out.new_categories)} new categories ({out.out_of_range_share * 100:.1f} % of rows)"
    return out


def drift(
    reference: Any,
    current: Any,
    columns: list[str] | None = None,
    *,
    categorical: list[str] | None = None,
    method: Any = None,
    thresholds: Any = None,
    n_chunks: int = 20,
    bins: int = 10,
    multivariate: bool = True,
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """Compare ``current`` with ``reference``, column by column; returns a :class:`DriftReport`.

    ``reference`` and ``current`` are DataFrames, Arrow tables, Parquet/CSV paths or
    (reference) a stored :class:`~keel.monitoring.baselines.Baseline`. ``columns``
    defaults to the reference's columns. ``method`` is one method name or a
    ``{column or kind: method}`` mapping (numeric: ks, wasserstein, psi, kl, js;
    categorical: chi2, psi, kl, js); ``thresholds`` a number, a (warn, alert) pair or
    a ``{column, method or kind: value}`` mapping; without it thresholds are
    learned from ``n_chunks`` reference chunks.

    >>> report = keel.drift(train_df, last_week_df, columns=["age", "plan"])
    >>> report.to_frame()[["column", "method", "statistic", "threshold", "drifted"]]
    """
    cur = as_table(current, "current data")
    fitted = getattr(reference, "reference", None)
    if isinstance(fitted, Reference):
        ref = fitted
        if columns is not None:
            unknown = [c for c in columns if c not in ref.columns]
            if unknown:
                raise ValidationError(f"Column {unknown[0]!r} is not in the baseline." + did_you_mean(unknown[0], ref.columns),
                                      hint=f"The baseline has {sorted(ref.columns)}.")
            ref = Reference({c: ref.columns[c] for c in columns}, ref.rows, ref.n_chunks, ref.bins, {}, ref.multivariate, ref.sample)
    elif isinstance(reference, Reference):
        ref = reference
    else:
        return _fit_and_compare(as_table(reference, "reference data"), cur, columns, categorical=categorical, method=method,
                                thresholds=thresholds, n_chunks=n_chunks, bins=bins, multivariate=multivariate, min_rows=min_rows)
    return compare(ref, cur, method=method, thresholds=thresholds, min_rows=min_rows)


def _fit_and_compare(table: pa.Table, cur: pa.Table, columns: list[str] | None, *, categorical: list[str] | None, method: Any,
                     thresholds: Any, n_chunks: int, bins: int, multivariate: bool, min_rows: int) -> DriftReport:
    """Fit each reference column and compare it at once: a column's sorted copies live only while it is compared."""
    from keel.monitoring.multivariate import fit_pca
    from keel.monitoring.reference import column_kinds, fit_column

    check_fit_args(n_chunks, bins)
    kinds, skipped = column_kinds(table, columns, categorical)
    learn = _flagged_methods(method)
    with S.one_blas_thread():
        comparison = _Comparison(kinds, cur, method, thresholds, min_rows)

        def one(name: str) -> tuple[ColumnReference, ColumnDrift]:
            r = fit_column(table, name, kinds[name], n_chunks, bins, learn.get(name, learn.get(kinds[name], ())))
            result = comparison.column(r)
            r.sorted_values = None  # not every column's sorted copy at once; compare() sorts again when it needs one
            return r, result

        names = list(kinds)
        pairs = S.map_columns(one, names, (table.num_rows + cur.num_rows) * len(names))
        ref = Reference({n: p[0] for n, p in zip(names, pairs, strict=True)}, table.num_rows, n_chunks, bins, skipped=skipped, sample=table)
        if multivariate:
            ref.multivariate = fit_pca(ref, n_chunks)
        return comparison.report(ref, {n: p[1] for n, p in zip(names, pairs, strict=True)})


def _flagged_methods(method: Any) -> dict[str, tuple[str, ...]]:
    """{column or kind: the method flagged}: a one-off comparison learns only the thresholds it uses."""
    out: dict[str, tuple[str, ...]] = {kind: (m,) for kind, m in DEFAULT_METHOD.items()}
    if isinstance(method, str):
        out.update({kind: (method,) for kind, allowed in (("numeric", NUMERIC_METHODS), ("categorical", CATEGORICAL_METHODS))
                    if method in allowed})
    elif isinstance(method, dict):
        out.update({str(k): (str(v),) for k, v in method.items()})
    return out
