"""The online key-value store: memory, SQLite (default) and Redis behind one small protocol.

Keys live in namespaces (one per feature view). Each value carries a *version*,
a fixed-width string that sorts like time; a write lands only when its version
is newer than the stored one (or equal with a different value, so a fixed
transformation can be re-materialized), so replays and out-of-order writers never
move a key backwards, and running a materialization twice writes nothing. A value is
one blob written in one operation, so a reader sees a key's old row or its new
row, never half of one.

Choose the backend by URI (``settings().online_uri``)::

    memory://[name]                      process-local, for tests
    sqlite:///path/online.db             embedded default
    redis://host:port/db?prefix=keel:    production; one round trip per batch lookup
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from keel.errors import ConfigError, StoreError, ValidationError

Request = tuple[str, Sequence[str]]


class KVStore(Protocol):
    """What every online store implements."""

    uri: str

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> int:
        """Write each key whose version is newer than the stored one, or equal with another value;
        returns how many keys changed."""
        ...

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        """For each (namespace, keys) the values (None when absent), in one round trip."""
        ...

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        """Delete keys; returns how many existed."""
        ...

    def drop(self, namespace: str) -> None:
        """Delete every key of a namespace."""
        ...

    def count(self, namespace: str) -> int:
        """How many keys a namespace holds."""
        ...

    def close(self) -> None: ...


def _check(namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> None:
    if not (len(keys) == len(versions) == len(values)):
        raise ValidationError(
            f"put_many got {len(keys)} keys, {len(versions)} versions and {len(values)} values for {namespace!r}.",
            hint="Pass one version and one value per key.",
        )
    if "|" in namespace or not namespace:
        raise ValidationError(f"Online namespace {namespace!r} must be non-empty and must not contain '|'.")


# -- memory ---------------------------------------------------------------------
_MEMORY: dict[str, dict[str, dict[str, tuple[str, bytes]]]] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryKV:
    """A process-local store; stores with the same ``memory://name`` share data."""

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        with _MEMORY_LOCK:
            self._data = _MEMORY.setdefault(uri, {})
        self._lock = threading.Lock()

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> int:
        _check(namespace, keys, versions, values)
        written = 0
        with self._lock:
            space = self._data.setdefault(namespace, {})
            for key, ver, val in zip(keys, versions, values, strict=True):
                cur = space.get(key)
                if cur is None or cur[0] < ver or (cur[0] == ver and cur[1] != val):
                    space[key] = (ver, bytes(val))
                    written += 1
        return written

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        out: list[list[bytes | None]] = []
        for namespace, keys in requests:
            space = self._data.get(namespace, {})
            out.append([(space[k][1] if k in space else None) for k in keys])
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        with self._lock:
            space = self._data.get(namespace, {})
            return sum(1 for k in keys if space.pop(k, None) is not None)

    def drop(self, namespace: str) -> None:
        with self._lock:
            self._data.pop(namespace, None)

    def count(self, namespace: str) -> int:
        return len(self._data.get(namespace, {}))

    def close(self) -> None:
        pass


# -- SQLite -----------------------------------------------------------------------
class SQLiteKV:
    """One SQLite file, one ``WITHOUT ROWID`` table keyed by (namespace, key)."""

    _CHUNK = 50_000

    def __init__(self, uri: str) -> None:
        self.uri = uri
        path = uri.removeprefix("sqlite:///")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False, cached_statements=512)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, k TEXT NOT NULL, ver TEXT NOT NULL, "
                "v BLOB NOT NULL, PRIMARY KEY (ns, k)) WITHOUT ROWID"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"The online store {uri} cannot be opened: {exc}", hint="Check KEEL_ONLINE_URI.") from None
        self._lock = threading.Lock()

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> int:
        _check(namespace, keys, versions, values)
        sql = (
            "INSERT INTO kv (ns, k, ver, v) VALUES (?, ?, ?, ?) ON CONFLICT (ns, k) DO UPDATE "
            "SET ver = excluded.ver, v = excluded.v "
            "WHERE excluded.ver > kv.ver OR (excluded.ver = kv.ver AND excluded.v != kv.v)"
        )
        written = 0
        with self._lock:
            for start in range(0, len(keys), self._CHUNK):
                end = start + self._CHUNK
                rows = zip([namespace] * len(keys[start:end]), keys[start:end], versions[start:end], values[start:end], strict=True)
                before = self._conn.total_changes
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(sql, rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                written += self._conn.total_changes - before
        return written

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        out: list[list[bytes | None]] = []
        with self._lock:
            for namespace, keys in requests:
                found: dict[str, bytes] = {}
                for start in range(0, len(keys), 900):
                    part = keys[start : start + 900]
                    marks = ",".join("?" * len(part))
                    cur = self._conn.execute(f"SELECT k, v FROM kv WHERE ns = ? AND k IN ({marks})", (namespace, *part))
                    found.update(cur.fetchall())
                out.append([found.get(k) for k in keys])
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        with self._lock:
            before = self._conn.total_changes
            self._conn.executemany("DELETE FROM kv WHERE ns = ? AND k = ?", [(namespace, k) for k in keys])
            return self._conn.total_changes - before

    def drop(self, namespace: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM kv WHERE ns = ?", (namespace,))

    def count(self, namespace: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM kv WHERE ns = ?", (namespace,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# -- Redis --------------------------------------------------------------------------
# Conditional write of a batch in one server-side step: a key is set only when its
# stored version (the text before the first '|') is not newer than the new one.
_PUT_SCRIPT = """
local n = 0
for i, key in ipairs(KEYS) do
  local ver = ARGV[2 * i - 1]
  local cur = redis.call('GET', key)
  local write = true
  if cur then
    local bar = string.find(cur, '|', 1, true)
    if bar then
      local old = string.sub(cur, 1, bar - 1)
      if old > ver or (old == ver and string.sub(cur, bar + 1) == ARGV[2 * i]) then write = false end
    end
  end
  if write then
    redis.call('SET', key, ver .. '|' .. ARGV[2 * i])
    n = n + 1
  end
end
return n
"""


class RedisKV:
    """Redis strings ``<prefix><namespace>|<key>`` holding ``<version>|<value>``."""

    _CHUNK = 2_000

    def __init__(self, uri: str) -> None:
        try:
            import redis
        except ImportError:
            from keel.errors import missing_extra

            raise missing_extra("redis", "redis") from None
        self.uri = uri
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        self.prefix = (query.pop("prefix", ["keel:"]) or ["keel:"])[0]
        clean = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        self._redis = redis.Redis.from_url(clean)
        self._put = self._redis.register_script(_PUT_SCRIPT)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{namespace}|{key}"

    def _unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(f"The online store {self.uri} failed: {exc}", hint="Check that Redis is running and KEEL_ONLINE_URI is right.")

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> int:
        _check(namespace, keys, versions, values)
        written = 0
        try:
            # each chunk is one atomic script call; chunks travel in pipelines of ~20
            for group in range(0, len(keys), self._CHUNK * 20):
                pipe = self._redis.pipeline(transaction=False)
                for start in range(group, min(group + self._CHUNK * 20, len(keys)), self._CHUNK):
                    end = start + self._CHUNK
                    full = [self._key(namespace, k) for k in keys[start:end]]
                    args: list[Any] = [None] * (2 * len(full))
                    args[0::2] = versions[start:end]
                    args[1::2] = values[start:end]
                    self._put(keys=full, args=args, client=pipe)
                written += sum(int(n) for n in pipe.execute())
        except self._errors as exc:
            raise self._unreachable(exc) from None
        return written

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        full = [self._key(ns, k) for ns, keys in requests for k in keys]
        if not full:
            return [[] for _ in requests]
        try:
            raw = self._redis.mget(full)
        except self._errors as exc:
            raise self._unreachable(exc) from None
        out: list[list[bytes | None]] = []
        i = 0
        for _, keys in requests:
            out.append([None if v is None else cast(bytes, v).split(b"|", 1)[1] for v in raw[i : i + len(keys)]])
            i += len(keys)
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(self._redis.delete(*[self._key(namespace, k) for k in keys]))

    def drop(self, namespace: str) -> None:
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self._key(namespace, "*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._redis.delete(*batch)
                batch.clear()
        if batch:
            self._redis.delete(*batch)

    def count(self, namespace: str) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=self._key(namespace, "*"), count=1000))

    def close(self) -> None:
        self._redis.close()


def open_kv_store(uri: str) -> KVStore:
    """A new store for ``uri`` (memory://, sqlite:///..., redis://...)."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme == "memory":
        return MemoryKV(uri)
    if scheme == "sqlite":
        return SQLiteKV(uri)
    if scheme in {"redis", "rediss", "unix"}:
        return RedisKV(uri)
    raise ConfigError(
        f"KEEL_ONLINE_URI {uri!r} names no known online store.",
        hint="Use sqlite:///path/online.db, redis://host:6379/0 or memory://.",
    )


_stores: dict[str, KVStore] = {}
_stores_lock = threading.Lock()


def get_kv_store(uri: str | None = None) -> KVStore:
    """The shared store for ``uri`` (default: the project's ``online_uri``)."""
    if uri is None:
        from keel.config import settings

        uri = str(settings().online_uri)
    with _stores_lock:
        store = _stores.get(uri)
        if store is None:
            store = _stores[uri] = open_kv_store(uri)
        return store


def reset_kv_stores() -> None:
    """Close every shared store (tests, after fork)."""
    with _stores_lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
