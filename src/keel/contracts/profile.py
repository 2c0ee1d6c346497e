"""Profiles: the compact summary of a batch that relative checks compare against.

A profile holds the row count and, per column, the null count, mean, standard
deviation, min/max, deciles, histogram bins (edges and counts, for PSI), the
category counts of low-cardinality columns, and a bounded random sample of
numeric values (for the KS test). It is stored as a JSON blob, so a reference
costs a few kilobytes whatever the size of the batch.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from keel.contracts.source import Source

NUMERIC = frozenset({"int", "float", "decimal"})
CATEGORICAL = frozenset({"string", "bool"})
MAX_CATEGORIES = 1000
SAMPLE_SIZE = 5000
QUANTILES = [i / 10 for i in range(1, 10)]


@dataclass
class ColumnProfile:
    family: str
    count: int  # non-null values
    nulls: int
    mean: float | None = None
    std: float | None = None
    min: Any = None
    max: Any = None
    quantiles: list[float] | None = None  # deciles 0.1..0.9
    bin_edges: list[float] | None = None  # inner edges; bins are (-inf,e0), [e0,e1), ..., [ek,inf)
    bin_counts: list[int] | None = None
    categories: dict[str, int] | None = None  # None when too many distinct values
    distinct: int | None = None
    sample: list[float] | None = None

    @property
    def null_rate(self) -> float:
        total = self.count + self.nulls
        return self.nulls / total if total else 0.0


@dataclass
class Profile:
    num_rows: int
    columns: dict[str, ColumnProfile] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({"num_rows": self.num_rows, "columns": {k: asdict(v) for k, v in self.columns.items()}}, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Profile:
        import orjson

        raw = orjson.loads(data)
        return cls(raw["num_rows"], {k: ColumnProfile(**v) for k, v in raw["columns"].items()})


def compute_profile(src: Source, columns: list[str] | None = None, *, sample_size: int = SAMPLE_SIZE) -> Profile:
    """Profile ``columns`` (default: all) of ``src`` in two aggregate scans plus a sample."""
    from keel.contracts.source import isnan_sql, q

    cols = [c for c in (columns if columns is not None else list(src.types)) if c in src.types]
    fam = src.families
    exprs = ["count(*)"]
    for c in cols:
        qc = q(c)
        if fam[c] == "float":
            exprs.append(f"count_if({qc} IS NULL OR {isnan_sql(qc)})")
            valid = f"CASE WHEN {isnan_sql(qc)} THEN NULL ELSE {qc} END"
        else:
            exprs.append(f"count_if({qc} IS NULL)")
            valid = qc
        if fam[c] in NUMERIC:
            v = f"CAST({valid} AS DOUBLE)"
            exprs += [f"avg({v})", f"stddev_samp({v})", f"min({v})", f"max({v})", f"approx_quantile({v}, {QUANTILES})", f"approx_count_distinct({valid})"]
        elif fam[c] in CATEGORICAL:
            exprs += [f"approx_count_distinct({qc})", f"CAST(min({qc}) AS VARCHAR)", f"CAST(max({qc}) AS VARCHAR)"]
        else:
            exprs += [f"CAST(min({qc}) AS VARCHAR)", f"CAST(max({qc}) AS VARCHAR)"]
    row = src.con.execute(f"SELECT {', '.join(exprs)} FROM t").fetchall()[0]
    assert row is not None
    n = int(row[0])
    profile = Profile(n)
    i = 1
    for c in cols:
        nulls = int(row[i])
        i += 1
        cp = ColumnProfile(fam[c], n - nulls, nulls)
        if fam[c] in NUMERIC:
            cp.mean, cp.std, cp.min, cp.max, qs, cp.distinct = row[i : i + 6]
            i += 6
            cp.quantiles = [float(x) for x in qs] if qs else None
            cp.bin_edges = sorted(set(cp.quantiles)) if cp.quantiles else []
        elif fam[c] in CATEGORICAL:
            cp.distinct, cp.min, cp.max = row[i : i + 3]
            i += 3
        else:
            cp.min, cp.max = row[i : i + 2]
            i += 2
        profile.columns[c] = cp
    # Second scan: bin counts over the deciles, category counts of small columns.
    exprs2: list[str] = []
    parts: list[tuple[str, str, int]] = []
    for c, cp in profile.columns.items():
        if cp.bin_edges is not None and cp.count:
            e = bin_count_exprs(c, fam[c], cp.bin_edges)
            exprs2 += e
            parts.append((c, "bins", len(e)))
        elif cp.family in CATEGORICAL and cp.distinct is not None and cp.distinct <= MAX_CATEGORIES * 1.1:
            exprs2.append(f"histogram({q(c)})")
            parts.append((c, "hist", 1))
    if exprs2:
        row2 = src.con.execute(f"SELECT {', '.join(exprs2)} FROM t").fetchall()[0]
        assert row2 is not None
        j = 0
        for c, kind, k in parts:
            cp = profile.columns[c]
            if kind == "bins":
                cp.bin_counts = bin_counts(row2[j : j + k])
            else:
                hist = {str(key): int(val) for key, val in (row2[j] or {}).items()}
                cp.categories = hist if len(hist) <= MAX_CATEGORIES else None
                cp.distinct = len(hist)
            j += k
    numeric = [c for c, cp in profile.columns.items() if cp.family in NUMERIC and cp.count]
    for c, values in src.sample(numeric, sample_size, seed=17).items():
        profile.columns[c].sample = [float(x) for x in values]
    return profile


def valid_expr(column: str, family: str) -> str:
    """The column with NaN turned into NULL (keel treats NaN as missing)."""
    from keel.contracts.source import isnan_sql, q

    qc = q(column)
    return f"CASE WHEN {isnan_sql(qc)} THEN NULL ELSE {qc} END" if family == "float" else qc


def bin_count_exprs(column: str, family: str, edges: list[float]) -> list[str]:
    """Aggregates from which :func:`bin_counts` gives the non-null values in each bin of ``edges``.

    One comparison per row and edge: the values below each edge, then the
    number of values. NaN, which DuckDB sorts above every number, is below no
    edge and is not counted as a value.
    """
    from keel.contracts.source import lit, q

    x = q(column)
    return [f"count_if({x} < {lit(e)})" for e in edges] + [f"count({valid_expr(column, family)})"]


def bin_counts(values: Sequence[Any]) -> list[int]:
    """Counts per bin (below the first edge, between edges, from the last edge) from :func:`bin_count_exprs`."""
    cum = [int(v) for v in values]
    return [cum[0], *(b - a for a, b in itertools.pairwise(cum))]


def psi(expected: list[int], actual: list[int], eps: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins."""
    te, ta = sum(expected), sum(actual)
    if not te or not ta:
        return math.nan
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, eps), max(a / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (SciPy's; NaNs left out)."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return math.nan, math.nan
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)
