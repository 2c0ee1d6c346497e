"""Numeric and time columns in NumPy, for the checks a SQL aggregate cannot answer.

Uniqueness, monotonic order and KS need a column's values (in row order, or a
sample of them) rather than an aggregate. :class:`NumericColumns` fetches each
such column once, from Arrow buffers straight into NumPy, and for a path source
can do that on a second connection while the fused scan runs
(:meth:`NumericColumns.start_prefetch`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.contracts.profile import valid_expr
from keel.contracts.report import SAMPLE_SIZE
from keel.contracts.source import NO_STATISTICS, Source, fetch_arrow, q

if TYPE_CHECKING:
    import numpy as np

KS_SAMPLE = 5000
KS_SEED = 29
_INT_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")


class NumericColumns:
    """The values of the columns that uniqueness, order and KS checks need, fetched once each."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.bounds: dict[str, tuple[Any, Any]] = {}  # min/max from the pre-scan (dense keys are counted)
        self.wanted: dict[str, tuple[str, bool]] = {}  # column -> (family, unique check?)
        self.ks_columns: set[str] = set()
        self._arrays: dict[str, np.ndarray] = {}
        self._dups: dict[str, tuple[int, int, list[Any]]] = {}
        self._samples: dict[str, np.ndarray] = {}

    def want(self, col: str, fam: str, *, unique: bool = False) -> None:
        if unique or col not in self.wanted:
            self.wanted[col] = (fam, unique)

    def start_prefetch(self) -> threading.Thread | None:
        """Fetch the wanted columns (and count repeats, draw KS samples) beside the fused scan.

        On a second connection to the same database, so DuckDB's fetch and NumPy's
        counting overlap the scan. Only for paths (registered frames are local to
        the first connection); whatever fails here is simply done again later.
        """
        if self.src.kind != "path" or not (self.wanted or self.ks_columns):
            return None

        def work() -> None:
            try:
                cur = self.src.con.cursor()
                try:
                    cur.execute(NO_STATISTICS)
                    for col, (fam, unique) in self.wanted.items():
                        self.values(col, fam, cur)
                        if unique:
                            self._dups[col] = self.duplicates(col, fam)
                    if self.ks_columns:
                        self._samples.update(self.src.sample(sorted(self.ks_columns), KS_SAMPLE, seed=KS_SEED, con=cur))
                finally:
                    cur.close()
            except Exception:  # the main thread computes it again
                pass

        thread = threading.Thread(target=work, name="keel-contract-prefetch", daemon=True)
        thread.start()
        return thread

    def values(self, col: str, fam: str, con: Any = None) -> np.ndarray:
        """The non-null values of ``col`` in row order, int64 or float64 (fetched once per column)."""
        import numpy as np

        cached = self._arrays.get(col)
        if cached is not None:
            return cached
        x = f"epoch_us({q(col)})" if fam in ("timestamp", "timestamp_tz") else f"CAST({valid_expr(col, fam)} AS DOUBLE)"
        if fam == "date":
            x = f"CAST(date_diff('day', DATE '1970-01-01', {q(col)}) AS DOUBLE)"
        if fam == "int" and self.src.types[col] in _INT_TYPES:
            x = f"CAST({q(col)} AS BIGINT)"  # exact: float64 would merge ids above 2**53
        # Arrow buffers straight into NumPy: no copy per value, and no pandas import
        column = fetch_arrow(con or self.src.con, f"SELECT {x} AS x FROM t WHERE x IS NOT NULL").column(0)
        dtype = np.int64 if str(column.type) == "int64" else np.float64  # BIGINT (ids, epoch_us) or DOUBLE
        parts = [np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c), offset=c.offset * 8) for c in column.chunks if len(c)]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        if dtype is np.float64:
            values = values[~np.isnan(values)]
        self._arrays[col] = values
        return values

    def duplicates(self, col: str, fam: str) -> tuple[int, int, list[Any]]:
        """(rows whose value repeats, surplus rows, a sample of repeated values): counting or a NumPy sort."""
        import numpy as np

        if col in self._dups:
            return self._dups[col]
        values = self.values(col, fam)
        mn, mx = self.bounds.get(col, (None, None))
        if values.dtype.kind in "iu" and mn is not None and mx is not None and 0 <= int(mx) - int(mn) <= 4 * len(values):
            # Dense integer keys (ids): one counting pass instead of a sort.
            counts = np.bincount((values - int(mn)).astype(np.int64), minlength=0)
            dup_values = np.flatnonzero(counts > 1)
            failing = int(counts[dup_values].sum())
            sample = [plain(int(x) + int(mn), fam) for x in dup_values[:SAMPLE_SIZE]]
            return failing, failing - len(dup_values), sample
        values = np.sort(values)
        eq = values[1:] == values[:-1]
        dup = np.zeros(len(values), dtype=bool)
        dup[1:] |= eq
        dup[:-1] |= eq
        repeated = int(eq.sum())
        sample = [plain(x, fam) for x in np.unique(values[dup])[:SAMPLE_SIZE]] if repeated else []
        return int(dup.sum()), repeated, sample

    def sample(self, col: str) -> np.ndarray:
        """A random sample (KS_SAMPLE rows) of ``col``'s values, for the KS test."""
        if col not in self._samples:
            self._samples[col] = self.src.sample([col], KS_SAMPLE, seed=KS_SEED)[col]
        return self._samples[col]


def plain(x: float, fam: str) -> Any:
    """A value from :meth:`NumericColumns.values` back in its column's terms, for samples."""
    if fam == "int":
        return str(int(x))
    if fam == "date":
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(x))).date().isoformat()
    if fam in ("timestamp", "timestamp_tz"):
        return datetime.fromtimestamp(x / 1e6, tz=UTC).isoformat()
    return str(x)
