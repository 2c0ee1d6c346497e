"""Dataset inputs of runs: a content fingerprint, schema, row count and source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError
from keel.store.blobs import sha256_file
from keel.store.metadata import now_ms
from keel.store.schema import datasets
from keel.tracking.runs import _require_run


def fingerprint_frame(df: Any) -> str:
    """sha256 over the column names, dtypes and a vectorized hash of every row."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _describe(data: Any) -> tuple[str, int | None, dict[str, str], str | None, dict[str, Any]]:
    """(fingerprint, rows, schema, source, extra) of a DataFrame, Arrow table or file/folder path."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.exists():
            raise NotFoundError(f"Dataset path {path} does not exist.", hint="Pass an existing Parquet/CSV file or folder, or a DataFrame.")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            h.update(sha256_file(f).encode())
        rows, schema = None, {}
        import duckdb

        suffix = files[0].suffix.lower() if files else ""
        reader = {".parquet": "read_parquet", ".csv": "read_csv_auto"}.get(suffix)
        if reader:
            pattern = (str(path / f"**/*{suffix}") if path.is_dir() else str(path)).replace("'", "''")
            con = duckdb.connect()
            rel = con.sql(f"SELECT * FROM {reader}('{pattern}')")
            schema = {c: str(t) for c, t in zip(rel.columns, rel.dtypes, strict=True)}
            count = con.execute(f"SELECT count(*) FROM {reader}('{pattern}')").fetchone()
            rows = int(count[0]) if count else 0
            con.close()
        return h.hexdigest(), rows, schema, str(path.resolve()), {}
    import pandas as pd

    try:
        import pyarrow as pa

        if isinstance(data, pa.Table):
            data = data.to_pandas()
    except ImportError:
        pass
    if not isinstance(data, pd.DataFrame):
        raise ValidationError(
            f"log_dataset got a {type(data).__name__}.", hint="Pass a pandas DataFrame, a pyarrow Table or a file/folder path."
        )
    meta = dict(data.attrs.get("keel", {})) if isinstance(data.attrs.get("keel"), dict) else {}
    fp = meta.get("fingerprint") or fingerprint_frame(data)
    return str(fp), len(data), {str(c): str(t) for c, t in data.dtypes.items()}, None, meta


def log_dataset(data: Any, name: str = "dataset", context: str = "training", source: str | None = None) -> str:
    """Record a dataset input of the active run; returns its content fingerprint.

    A training set from ``keel.get_training_set`` also records its feature
    service and definitions version.
    """
    run = _require_run()
    fp, rows, schema, path_source, extra = _describe(data)
    from keel.contracts import enforce  # contracts attached to `name` run before it is recorded

    enforce(name, data, stage="log_dataset", run_id=run.id)
    values = {
        "run_id": run.id, "name": name, "context": context, "fingerprint": fp, "num_rows": rows,
        "schema": json.dumps(schema), "source": source or path_source, "extra": json.dumps(extra, default=str) if extra else None,
        "created_ms": now_ms(),
    }
    with run.store.write() as conn:
        conn.execute(sa.delete(datasets).where(datasets.c.run_id == run.id, datasets.c.name == name, datasets.c.context == context))
        conn.execute(sa.insert(datasets).values(**values))
    return fp
