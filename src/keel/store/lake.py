"""The lake: named Parquet datasets (offline features, pushed rows, prediction logs, labels).

A dataset is a folder under ``settings().lake_uri`` holding Parquet part files.
Appending writes a new part under a temporary name and renames it into place,
so a reader sees every part whole or not at all. Reads go through DuckDB.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


def sql_string(value: str) -> str:
    """A SQL string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


class Lake:
    """Parquet datasets in one folder. Use :func:`get_lake` for the project's lake."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            raise ConfigError(
                f"KEEL_LAKE_URI {text!r} is not a local folder; this keel reads the lake from a local path.",
                hint="Set KEEL_LAKE_URI to a folder, e.g. .keel/lake.",
            )
        self.root = Path(text.removeprefix("file://"))

    def path(self, name: str) -> Path:
        if not _NAME.match(name) or ".." in name.split("/"):
            raise ValidationError(
                f"Lake dataset name {name!r} is not valid.",
                hint="Use letters, digits, '_', '-', '.' and '/' between parts.",
            )
        return self.root / name

    def exists(self, name: str) -> bool:
        folder = self.path(name)
        return folder.is_dir() and any(folder.glob("*.parquet"))

    def files(self, name: str) -> list[Path]:
        folder = self.path(name)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def append(self, name: str, table: pa.Table) -> Path:
        """Write ``table`` as a new part of dataset ``name``; atomic (temp file + rename)."""
        import pyarrow.parquet as pq

        folder = self.path(name)
        folder.mkdir(parents=True, exist_ok=True)
        part = f"part-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{part}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, folder / part)
        finally:
            if tmp.exists():
                tmp.unlink()
        return folder / part

    def scan_sql(self, name: str) -> str:
        """A DuckDB table expression reading every part of dataset ``name``."""
        pattern = str(self.path(name) / "*.parquet")
        return f"read_parquet({sql_string(pattern)}, union_by_name = true)"

    def read(self, name: str, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """The whole dataset as an Arrow table (empty datasets raise NotFoundError)."""
        import duckdb

        from keel.errors import NotFoundError

        if not self.exists(name):
            raise NotFoundError(f"Lake dataset {name!r} does not exist under {self.root}.")
        con = con or duckdb.connect()
        return con.sql(f"SELECT * FROM {self.scan_sql(name)}").to_arrow_table()

    def delete(self, name: str) -> None:
        import shutil

        folder = self.path(name)
        if folder.is_dir():
            shutil.rmtree(folder)


def get_lake() -> Lake:
    """The current project's lake (``settings().lake_uri``)."""
    from keel.config import settings

    return Lake(str(settings().lake_uri))
