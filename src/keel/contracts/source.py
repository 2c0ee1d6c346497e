"""The data being validated, registered in DuckDB without copying or changing it.

A pandas DataFrame or a pyarrow Table is registered as a DuckDB view (DuckDB
scans the caller's buffers in place and never writes to them); a Parquet or CSV
path (a file, a folder of Parquet files, or a glob) becomes a view over
``read_parquet`` / ``read_csv``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.contracts.rules import duckdb_family
from keel.errors import NotFoundError, ValidationError
from keel.store.sql import quote_ident, sql_string

if TYPE_CHECKING:
    import duckdb
    import numpy as np

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt")
NO_STATISTICS = "SET disabled_optimizers = 'statistics_propagation'"


q = quote_ident  # quote an identifier for DuckDB


def isnan_sql(expr: str) -> str:
    """``isnan(expr)``; correct because :class:`Source` connections run without statistics propagation.

    DuckDB trusts Parquet min/max statistics, which writers compute without NaN,
    and with statistics propagation on it folds ``isnan(x)`` (and ``x <> x``)
    to false on such columns, so NaN values would be missed.
    """
    return f"isnan({expr})"


def lit(value: Any) -> str:
    """A SQL literal for a scalar from a contract."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if value != value:
            return "'NaN'::DOUBLE"
        if value in (float("inf"), float("-inf")):
            return f"'{value}'::DOUBLE"
        return repr(value)
    return sql_string(str(value))


def fetch_arrow(con: Any, sql: str) -> Any:
    """The result of a DuckDB query as a pyarrow Table (DuckDB 1.x and 2.x spell it differently)."""
    rel = con.sql(sql)
    fn = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fn()


def is_path(data: Any) -> bool:
    return isinstance(data, str | Path)


class Source:
    """One batch of data as DuckDB view ``t`` on a private connection."""

    def __init__(self, data: Any) -> None:
        import duckdb

        self.data = data
        self.parquet = False  # Parquet files: statistics and zone maps let filtered queries skip row groups
        self.con: duckdb.DuckDBPyConnection = duckdb.connect()
        self.con.execute("SET preserve_insertion_order = true")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute(NO_STATISTICS)  # see isnan_sql
        self.con.execute("SET parquet_metadata_cache = true")  # a contract runs several queries over the same files
        self.kind, self.label = self._register(data)
        rows = self.con.execute("DESCRIBE t").fetchall()
        self.types: dict[str, str] = {r[0]: str(r[1]) for r in rows}
        self.families: dict[str, str] = {k: duckdb_family(v) for k, v in self.types.items()}

    def _register(self, data: Any) -> tuple[str, str]:
        if is_path(data):
            path = str(data)
            p = Path(path)
            if not any(ch in path for ch in "*?[") and not p.exists():
                raise NotFoundError(f"No data at {path!r}.", hint="Give a Parquet or CSV file, a folder of Parquet files, or a glob.")
            lower = path.lower()
            if p.is_dir():
                reader = f"read_parquet({lit(str(p / '**' / '*.parquet'))}, hive_partitioning = true)"
                self.parquet = True
            elif lower.endswith(PARQUET_SUFFIXES):
                reader = f"read_parquet({lit(path)})"
                self.parquet = True
            elif lower.endswith(CSV_SUFFIXES):
                reader = f"read_csv({lit(path)}, auto_detect = true)"
            else:
                raise ValidationError(
                    f"Cannot tell the format of {path!r}.",
                    hint=f"Use a file ending in {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}.",
                )
            try:
                self.con.execute(f"CREATE VIEW t AS SELECT * FROM {reader}")
            except Exception as exc:
                raise ValidationError(f"Cannot read {path!r}: {str(exc).splitlines()[0]}") from None
            return "path", path
        mod = type(data).__module__.split(".")[0]
        if mod == "pandas" and type(data).__name__ == "DataFrame":
            if not all(isinstance(c, str) for c in data.columns):
                raise ValidationError(
                    "The DataFrame has non-string column names: "
                    f"{[c for c in data.columns if not isinstance(c, str)][:5]}.",
                    hint="Rename them, e.g. df.columns = df.columns.map(str).",
                )
            self.con.register("t", data)
            return "pandas", f"DataFrame[{len(data):,} rows]"
        if mod == "pyarrow" and type(data).__name__ in {"Table", "RecordBatch", "Dataset", "FileSystemDataset"}:
            self.con.register("t", data)
            return "arrow", f"{type(data).__name__}[{getattr(data, 'num_rows', '?')} rows]"
        if mod == "polars" and type(data).__name__ == "DataFrame":
            self.con.register("t", data)
            return "polars", f"polars.DataFrame[{data.height:,} rows]"
        raise ValidationError(
            f"Cannot validate a {type(data).__name__}.",
            hint="Pass a pandas DataFrame, a pyarrow Table, or a Parquet/CSV path.",
        )

    def sample(self, columns: list[str], k: int, seed: int = 0, con: Any = None) -> dict[str, np.ndarray]:
        """Up to ``k`` random rows of the numeric ``columns`` as float arrays (nulls dropped).

        ``con``: another connection to this source's database (a path source's view is shared).
        """
        import numpy as np

        if not columns:
            return {}
        out: dict[str, np.ndarray] = {}
        if self.kind in ("pandas", "arrow"):
            n = len(self.data) if self.kind == "pandas" else self.data.num_rows
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(n, size=min(k, n), replace=False)) if n else np.zeros(0, dtype=np.int64)
            for c in columns:
                if self.kind == "pandas":
                    values = self.data[c].iloc[idx].to_numpy(dtype="float64", na_value=np.nan)
                else:
                    import pyarrow as pa

                    taken = self.data.column(c).take(pa.array(idx))
                    values = taken.cast(pa.float64()).to_numpy(zero_copy_only=False)
                    values = np.asarray(values, dtype="float64")
                out[c] = values[~np.isnan(values)]
            return out
        cols = ", ".join(f"CAST({q(c)} AS DOUBLE) AS {q(c)}" for c in columns)
        sql = f"SELECT {cols} FROM t USING SAMPLE reservoir({int(k)} ROWS) REPEATABLE ({int(seed)})"
        table = (con or self.con).execute(sql).fetchnumpy()
        for c in columns:
            values = np.ma.filled(np.ma.asarray(table[c]).astype("float64"), np.nan)
            out[c] = values[~np.isnan(values)]
        return out

    @contextmanager
    def statistics(self) -> Iterator[None]:
        """Let DuckDB answer from column statistics (Parquet metadata) inside the block.

        Only for count, min and max, which statistics give exactly (min and max
        without NaN); never for queries that look for NaN.
        """
        self.con.execute("RESET disabled_optimizers")
        try:
            yield
        finally:
            self.con.execute(NO_STATISTICS)

    def close(self) -> None:
        try:
            self.con.unregister("t")
        except Exception:
            pass
        self.con.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
