"""Dataset inputs of runs: a content fingerprint, schema, row count and source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError
from keel.store.fingerprint import frame_fingerprint, path_fingerprint
from keel.store.metadata import now_ms
from keel.store.schema import datasets
from keel.store.sql import sql_string
from keel.tracking.runs import _require_run


def fingerprint_frame(df: Any) -> str:
    """The content fingerprint of a DataFrame or Arrow table (:func:`keel.store.fingerprint.frame_fingerprint`)."""
    return frame_fingerprint(df)


def _describe(data: Any) -> tuple[str, int | None, dict[str, str], str | None, dict[str, Any]]:
    """(fingerprint, rows, schema, source, extra) of a DataFrame, Arrow table or file/folder path."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.exists():
            raise NotFoundError(f"Dataset path {path} does not exist.", hint="Pass an existing Parquet/CSV file or folder, or a DataFrame.")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        rows, schema = None, {}
        import duckdb

        suffix = files[0].suffix.lower() if files else ""
        reader = {".parquet": "read_parquet", ".csv": "read_csv_auto"}.get(suffix)
        if reader:
            pattern = sql_string(str(path / f"**/*{suffix}") if path.is_dir() else str(path))
            con = duckdb.connect()
            rel = con.sql(f"SELECT * FROM {reader}({pattern})")
            schema = {c: str(t) for c, t in zip(rel.columns, rel.dtypes, strict=True)}
            count = con.execute(f"SELECT count(*) FROM {reader}({pattern})").fetchone()
            rows = int(count[0]) if count else 0
            con.close()
        if path.is_file() and reader:
            # a table file counts by its rows, as the same data passed as a DataFrame or to
            # keel.evaluate (read the same way) does; folders and other files by their bytes
            import pandas as pd

            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
            return frame_fingerprint(frame), rows, schema, str(path.resolve()), {}
        return path_fingerprint(path), rows, schema, str(path.resolve()), {}
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
    fp, meta = fingerprint_with_lineage(data)
    return fp, len(data), {str(c): str(t) for c, t in data.dtypes.items()}, None, meta


def fingerprint_with_lineage(data: Any) -> tuple[str, dict[str, Any]]:
    """(fingerprint of the frame as it is now, the lineage it carries in ``attrs["keel"]``).

    pandas carries ``attrs`` through most operations, so a frame derived from a
    training set (a column dropped, rows filtered) still holds the training
    set's fingerprint there. The fingerprint is always computed from the data;
    the recorded one is kept as ``derived_from`` when the data changed.
    """
    meta = dict(data.attrs.get("keel", {})) if isinstance(data.attrs.get("keel"), dict) else {}
    fp = fingerprint_frame(data)
    recorded = meta.pop("fingerprint", None)
    if recorded and recorded != fp:
        meta["derived_from"] = recorded
    return fp, meta


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
    remote = getattr(run, "remote", None)
    if remote is not None:  # a run on a keel server
        remote.post_json(f"/v1/runs/{run.id}/datasets", {"name": name, "context": context, "fingerprint": fp, "num_rows": rows,
                                                         "schema": schema, "source": values["source"], "extra": extra or None})
    else:
        write_dataset(run.store, values)
    return fp


def write_dataset(store: Any, values: dict[str, Any]) -> None:
    """Store one dataset input row, replacing the run's earlier one of the same name and context."""
    with store.write() as conn:
        conn.execute(sa.delete(datasets).where(
            datasets.c.run_id == values["run_id"], datasets.c.name == values["name"], datasets.c.context == values["context"]))
        conn.execute(sa.insert(datasets).values(**values))
