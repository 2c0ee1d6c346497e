"""The lake: named Parquet datasets (offline features, pushed rows, prediction logs, labels).

A dataset is a folder of Parquet part files under ``settings().lake_uri``: a local
folder (the default, ``.keel/lake``), ``file:///path`` or ``s3://bucket/prefix`` on
S3-compatible object storage (endpoint from ``KEEL_S3_ENDPOINT_URL``). Parts are
immutable and uniquely named, and appending adds one whole part: a local part is
written under a temporary name and renamed into place, an S3 part is one PUT, so a
reader sees every part whole or not at all.

Reads go through DuckDB's ``read_parquet`` over a local folder. On S3 that folder
is a cache (``.keel/cache/lake/<bucket>/<prefix>/<dataset>/``): each read lists the
dataset's parts, downloads the ones not cached yet and drops cached parts that are
gone, so DuckDB needs no network access (no httpfs extension).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, NotFoundError, ValidationError
from keel.store.sql import sql_string

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_DOWNLOADERS = 8


class _S3Parts:
    """The part files of lake datasets under ``s3://bucket/prefix``."""

    def __init__(self, uri: str, endpoint_url: str) -> None:
        from keel.store.blobs import s3_client, split_s3_uri

        self.bucket, self.prefix = split_s3_uri(uri, what="Lake URI (KEEL_LAKE_URI)")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint_url = endpoint_url
        self.client = s3_client(endpoint_url)

    def _folder(self, name: str) -> str:
        return f"{self.prefix}/{name}/" if self.prefix else f"{name}/"

    def _errors(self) -> Any:
        from keel.store.blobs import s3_errors

        return s3_errors(self.bucket, self.uri, self.endpoint_url, "KEEL_LAKE_URI", "The lake")

    def parts(self, name: str) -> dict[str, int]:
        """{part file name: size} of dataset ``name`` (its own parts, not nested datasets')."""
        folder = self._folder(name)
        found: dict[str, int] = {}
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    part = obj["Key"][len(folder) :]
                    if part.endswith(".parquet"):
                        found[part] = int(obj["Size"])
        return found

    def put(self, name: str, part: str, path: Path) -> str:
        key = self._folder(name) + part
        with self._errors(), open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return f"s3://{self.bucket}/{key}"

    def get(self, name: str, part: str, dest: Path) -> None:
        """Download one part to ``dest`` atomically; a part deleted meanwhile is skipped."""
        from botocore.exceptions import ClientError

        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with self._errors():
                try:
                    self.client.download_file(self.bucket, self._folder(name) + part, str(tmp))
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                        return
                    raise
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def datasets(self, name: str) -> list[str]:
        """Names of the datasets nested under ``name`` (``name`` too) that hold parts."""
        folder = self._folder(name)
        found: set[str] = set()
        with self._errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(folder) :]
                    if key.endswith(".parquet"):
                        found.add(f"{name}/{key.rsplit('/', 1)[0]}" if "/" in key else name)
        return sorted(found)

    def delete(self, name: str) -> None:
        """Every object under dataset ``name``, nested datasets included (as a local rmtree)."""
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._folder(name))
            for page in pages:
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:  # a page holds at most 1000 keys, delete_objects' limit
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})


class Lake:
    """Parquet datasets in a folder or an S3 prefix. Use :func:`get_lake` for the project's lake.

    ``root`` is the local folder DuckDB reads: the lake itself, or for ``s3://`` the
    cache (default ``<project>/.keel/cache/lake/<bucket>/<prefix>``). The S3 endpoint
    defaults to the ``s3_endpoint_url`` setting, as for the artifact store.
    """

    def __init__(self, root: str | Path, *, endpoint_url: str | None = None, cache: str | Path | None = None) -> None:
        text = str(root)
        self.remote: _S3Parts | None = None
        if text.startswith("s3://"):
            from keel.config import settings

            if endpoint_url is None:
                endpoint_url = str(settings().s3_endpoint_url or "")
            self.remote = _S3Parts(text, endpoint_url)
            if cache is None:
                cache = settings().state_dir / "cache" / "lake" / self.remote.bucket / self.remote.prefix
            self.root = Path(cache)
            self.uri = self.remote.uri
        elif "://" in text and not text.startswith("file://"):
            raise ConfigError(
                f"KEEL_LAKE_URI {text!r} is not a folder, file:// or s3:// location; "
                f"the lake cannot be stored on {text.split('://', 1)[0]}://.",
                hint="Set KEEL_LAKE_URI to a folder (e.g. .keel/lake), file:///path or s3://bucket/prefix.",
            )
        else:
            self.root = Path(text.removeprefix("file://"))
            self.uri = str(self.root)

    def location(self, name: str) -> str:
        """Where dataset ``name`` lives, as users name it: its folder, or its s3:// URI (not the local cache)."""
        return f"{self.uri.rstrip('/')}/{name}" if self.remote is not None else str(self.path(name))

    def path(self, name: str) -> Path:
        """The local folder of dataset ``name`` (on S3: its cache folder)."""
        if not _NAME.match(name) or ".." in name.split("/"):
            raise ValidationError(
                f"Lake dataset name {name!r} is not valid.",
                hint="Use letters, digits, '_', '-', '.' and '/' between parts.",
            )
        return self.root / name

    def exists(self, name: str) -> bool:
        if self.remote is not None:
            self.path(name)
            return bool(self.remote.parts(name))
        folder = self.path(name)
        return folder.is_dir() and any(folder.glob("*.parquet"))

    def files(self, name: str) -> list[Path]:
        """The dataset's part files, local (on S3: cached, after fetching new parts)."""
        folder = self._sync(name) if self.remote is not None else self.path(name)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def append(self, name: str, table: pa.Table, *, part: str | None = None, options: dict[str, Any] | None = None) -> str:
        """Write ``table`` as a new part of dataset ``name``; returns where it landed (path or s3:// URI).

        Atomic: a local part is written to a temp file and renamed, an S3 part is one PUT
        (and then kept in the cache, so this process reads it without downloading it).
        ``part`` names the file (``part-<part>.parquet``): writing the same name again
        replaces it whole, which makes a retried write idempotent. ``options`` go to
        ``pyarrow.parquet.write_table`` (e.g. the prediction log's dictionary columns).
        """
        import pyarrow.parquet as pq

        folder = self.path(name)
        folder.mkdir(parents=True, exist_ok=True)
        if part is not None and not re.match(r"^[A-Za-z0-9_.\-]+$", part):
            raise ValidationError(f"Lake part name {part!r} is not valid.", hint="Use letters, digits, '_', '-' and '.'.")
        part = f"part-{part}.parquet" if part is not None else f"part-{os.getpid()}-{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{part}.tmp"
        try:
            pq.write_table(table, tmp, **(options or {}))
            where = self.remote.put(name, part, tmp) if self.remote is not None else str(folder / part)
            os.replace(tmp, folder / part)
        finally:
            tmp.unlink(missing_ok=True)
        return where

    def datasets(self, name: str) -> list[str]:
        """Names of the datasets at or under ``name`` that hold parts (partitions of a partitioned dataset)."""
        if self.remote is not None:
            self.path(name)
            return self.remote.datasets(name)
        folder = self.path(name)
        if not folder.is_dir():
            return []
        return sorted({p.parent.relative_to(self.root).as_posix() for p in folder.rglob("*.parquet")})

    def scan_sql(self, name: str) -> str:
        """A DuckDB table expression reading every part of dataset ``name`` (on S3: synced first)."""
        folder = self._sync(name) if self.remote is not None else self.path(name)
        return _read_parquet(folder)

    def read(self, name: str, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
        """The whole dataset as an Arrow table (empty datasets raise NotFoundError)."""
        import duckdb

        if not self.files(name):
            raise NotFoundError(f"Lake dataset {name!r} does not exist under {self.uri}.")
        con = con or duckdb.connect()
        return con.sql(f"SELECT * FROM {_read_parquet(self.path(name))}").to_arrow_table()

    def delete(self, name: str) -> None:
        folder = self.path(name)
        if self.remote is not None:
            self.remote.delete(name)
        if folder.is_dir():
            shutil.rmtree(folder)

    def _sync(self, name: str) -> Path:
        """Make the cache folder of an S3 dataset hold exactly its listed parts."""
        assert self.remote is not None
        remote = self.remote
        folder = self.path(name)
        listed = remote.parts(name)
        folder.mkdir(parents=True, exist_ok=True)
        for cached in folder.glob("*.parquet"):
            if cached.name not in listed:
                cached.unlink(missing_ok=True)
        # parts are immutable: a cached file of the listed size is that part
        fetch = [part for part, size in listed.items() if not _has_size(folder / part, size)]
        if len(fetch) == 1:
            remote.get(name, fetch[0], folder / fetch[0])
        elif fetch:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(_DOWNLOADERS, len(fetch))) as pool:
                list(pool.map(lambda part: remote.get(name, part, folder / part), fetch))
        return folder


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _read_parquet(folder: Path) -> str:
    return f"read_parquet({sql_string(str(folder / '*.parquet'))}, union_by_name = true)"


_lakes: dict[tuple[str, str, str], Lake] = {}


def get_lake() -> Lake:
    """The current project's lake (``settings().lake_uri``, endpoint ``s3_endpoint_url``)."""
    from keel.config import settings

    s = settings()
    uri, endpoint = str(s.lake_uri), str(s.s3_endpoint_url or "")
    if not uri.startswith("s3://"):
        return Lake(uri)
    key = (uri, endpoint, str(s.state_dir))
    if key not in _lakes:  # one S3 client per lake: creating one takes tens of milliseconds
        _lakes[key] = Lake(uri, endpoint_url=endpoint)
    return _lakes[key]

