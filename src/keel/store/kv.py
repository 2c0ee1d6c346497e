"""The online key-value store: memory, SQLite (default) and Redis behind one small protocol.

Keys live in namespaces (one per feature view). Each value carries a *version*,
a fixed-width string that sorts like time; a write lands only when its version
is newer than the stored one (or equal with a different value, so a fixed
transformation can be re-materialized), so replays and out-of-order writers never
move a key backwards, and running a materialization twice writes nothing. A value is
one blob written in one operation, so a reader sees a key's old row or its new
row, never half of one.

A write may carry an expiry (epoch milliseconds): the store itself forgets the key
then (Redis key expiry; SQLite and memory hide it from reads at once and sweep it
out), so a value past its feature view's TTL is gone even if nobody reads it.

Redis keys put the entity key in a hash tag (``<prefix><namespace>|{<key>}``), so
every view's value of one entity lives in one slot and a Redis Cluster
(``redis+cluster://host:port``) works: batch writes go one script call per slot,
batch reads split by slot.

Choose the backend by URI (``settings().online_uri``)::

    memory://[name]                      process-local, for tests
    sqlite:///path/online.db             embedded default
    redis://host:port/db?prefix=keel:    production; one round trip per batch lookup
    redis+cluster://host:port?prefix=... a Redis Cluster (any node; the others are discovered)

Every failure of SQLite or Redis (unreachable, killed mid-operation, locked, wrong
password, read-only replica, out of memory, damaged file) reaches the caller as a
:class:`~keel.errors.StoreError` naming the operation, the store's URI (password
masked) and the fix; never a raw ``sqlite3`` or ``redis`` exception.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from keel.errors import ConfigError, StoreError, ValidationError

Request = tuple[str, Sequence[str]]


class KVStore(Protocol):
    """What every online store implements."""

    uri: str

    def put_many(
        self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes],
        expires_ms: Sequence[int | None] | None = None,
    ) -> int:
        """Write each key whose version is newer than the stored one, or equal with another value;
        returns how many keys changed. ``expires_ms`` (epoch ms, None = never) makes the store
        forget a key at that time; a value already expired is not written."""
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
        """How many live (unexpired) keys a namespace holds."""
        ...

    def namespaces(self) -> list[str]:
        """Every namespace holding a key."""
        ...

    def sweep(self) -> int:
        """Physically delete expired keys now; returns how many (Redis expires keys by itself: 0)."""
        ...

    def merge_logs(
        self, namespace: str, keys: Sequence[str], rows: Sequence[Sequence[bytes]], low: int, version: str, ttl_ms: int | None
    ) -> int:
        """Merge each key's new ``rows`` into its row log in one step (Redis: one round trip); returns keys written.

        A row log is a JSON array with one row per line; each row is a JSON array whose first two
        items are its event time and created time (integers, created may be null), and the log is
        sorted by them. Rows with event time at or before ``low`` leave; a key left empty is deleted.
        The key's version becomes the newer of its own and ``version``; it expires ``ttl_ms`` after
        its newest row's event time (None = never)."""
        ...

    def close(self) -> None: ...


# -- row logs (merge_logs): the shared rules; Redis runs the same ones in _MERGE_SCRIPT ---------
_ROW = re.compile(rb'^\[(-?\d+),(-?\d+|null|"[a-z]+")[,\]]')  # created: a time, null, or a marker such as "tile"


def _log_rows(namespace: str, key: str, blob: bytes | None) -> list[bytes]:
    if blob is None or blob == b"[]":
        return []
    if not (blob.startswith(b"[[") and blob.endswith(b"]]")):
        raise StoreError(
            f"The online value of {namespace!r} key {key!r} is not a row log (written by an older keel).",
            hint="Re-materialize the feature view: keel features materialize.",
        )
    return blob[1:-1].split(b",\n")


def merge_log(namespace: str, key: str, blob: bytes | None, rows: Sequence[bytes], low: int) -> tuple[bytes | None, int]:
    """(The merged log or None when empty, its newest event time)."""
    keyed = []
    for row in [*_log_rows(namespace, key, blob), *rows]:
        m = _ROW.match(row)
        if m is None:
            raise ValidationError(f"Row {row[:60]!r} for {namespace!r} key {key!r} does not start with [event, created, ...].")
        event = int(m.group(1))
        if event > low:
            c = m.group(2)
            keyed.append((event, -1 if c == b"null" or c.startswith(b'"') else int(c), row))
    if not keyed:
        return None, 0
    keyed.sort(key=lambda r: (r[0], r[1]))
    return b"[" + b",\n".join(r[2] for r in keyed) + b"]", keyed[-1][0]


def _log_expiry(newest_us: int, ttl_ms: int | None) -> int | None:
    return None if ttl_ms is None else newest_us // 1000 + ttl_ms


def _check(
    namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes], expires_ms: Sequence[int | None] | None
) -> None:
    if not (len(keys) == len(versions) == len(values)) or (expires_ms is not None and len(expires_ms) != len(keys)):
        raise ValidationError(
            f"put_many got {len(keys)} keys, {len(versions)} versions and {len(values)} values"
            + ("" if expires_ms is None else f" and {len(expires_ms)} expiries")
            + f" for {namespace!r}.",
            hint="Pass one version and one value (and one expiry, if any) per key.",
        )
    if not namespace or any(c in namespace for c in "|{}*?[]\\"):
        raise ValidationError(f"Online namespace {namespace!r} must be non-empty and must not contain '|', braces or glob characters.")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _live(
    keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes], expires_ms: Sequence[int | None] | None
) -> tuple[Sequence[str], Sequence[str], Sequence[bytes], Sequence[int | None] | None]:
    """Drop the writes that have already expired (they would be invisible at once)."""
    if expires_ms is None:
        return keys, versions, values, None
    now = now_ms()
    if all(e is None or e > now for e in expires_ms):
        return keys, versions, values, expires_ms
    keep = [i for i, e in enumerate(expires_ms) if e is None or e > now]
    return [keys[i] for i in keep], [versions[i] for i in keep], [values[i] for i in keep], [expires_ms[i] for i in keep]


# -- memory ---------------------------------------------------------------------
_MEMORY: dict[str, dict[str, dict[str, tuple[str, bytes, int | None]]]] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryKV:
    """A process-local store; stores with the same ``memory://name`` share data."""

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        with _MEMORY_LOCK:
            self._data = _MEMORY.setdefault(uri, {})
        self._lock = threading.Lock()

    def put_many(
        self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes],
        expires_ms: Sequence[int | None] | None = None,
    ) -> int:
        _check(namespace, keys, versions, values, expires_ms)
        keys, versions, values, expires_ms = _live(keys, versions, values, expires_ms)
        exps = expires_ms if expires_ms is not None else [None] * len(keys)
        now = now_ms()
        written = 0
        with self._lock:
            space = self._data.setdefault(namespace, {})
            for key, ver, val, exp in zip(keys, versions, values, exps, strict=True):
                cur = space.get(key)
                if cur is not None and cur[2] is not None and cur[2] <= now:
                    cur = None  # expired: as if absent
                if cur is None or cur[0] < ver or (cur[0] == ver and cur[1] != val):
                    space[key] = (ver, bytes(val), exp)
                    written += 1
        return written

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        out: list[list[bytes | None]] = []
        now = now_ms()
        for namespace, keys in requests:
            space = self._data.get(namespace, {})
            row: list[bytes | None] = []
            for k in keys:
                hit = space.get(k)
                row.append(None if hit is None or (hit[2] is not None and hit[2] <= now) else hit[1])
            out.append(row)
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        with self._lock:
            space = self._data.get(namespace, {})
            return sum(1 for k in keys if space.pop(k, None) is not None)

    def drop(self, namespace: str) -> None:
        with self._lock:
            self._data.pop(namespace, None)

    def count(self, namespace: str) -> int:
        now = now_ms()
        return sum(1 for v in list(self._data.get(namespace, {}).values()) if v[2] is None or v[2] > now)

    def namespaces(self) -> list[str]:
        return sorted(ns for ns, space in self._data.items() if space)

    def sweep(self) -> int:
        now = now_ms()
        gone = 0
        with self._lock:
            for space in self._data.values():
                dead = [k for k, v in space.items() if v[2] is not None and v[2] <= now]
                for k in dead:
                    del space[k]
                gone += len(dead)
        return gone

    def merge_logs(
        self, namespace: str, keys: Sequence[str], rows: Sequence[Sequence[bytes]], low: int, version: str, ttl_ms: int | None
    ) -> int:
        now = now_ms()
        with self._lock:
            space = self._data.setdefault(namespace, {})
            for key, new in zip(keys, rows, strict=True):
                cur = space.get(key)
                if cur is not None and cur[2] is not None and cur[2] <= now:
                    cur = None
                blob, newest = merge_log(namespace, key, None if cur is None else cur[1], new, low)
                if blob is None:
                    space.pop(key, None)
                else:
                    space[key] = (max(version, cur[0]) if cur else version, blob, _log_expiry(newest, ttl_ms))
        return len(keys)

    def close(self) -> None:
        pass


# -- SQLite -----------------------------------------------------------------------
def _sqlite_hint(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "Another process holds the online store's write lock: retry, or use Redis (KEEL_ONLINE_URI=redis://...) for many writers."
    if "readonly" in text or "unable to open" in text or "permission" in text:
        return "Check that the file and its folder exist and are writable, or point KEEL_ONLINE_URI elsewhere."
    if "not a database" in text or "malformed" in text or "disk i/o" in text:
        return "The file is damaged or its disk failed: point KEEL_ONLINE_URI at a new file and run `keel features materialize`."
    if "full" in text:
        return "The disk is full: free space, or point KEEL_ONLINE_URI at another disk."
    if "closed" in text:
        return "The store was closed: open it again (keel.store.kv.get_kv_store())."
    return "Check KEEL_ONLINE_URI and the file it names."


class SQLiteKV:
    """One SQLite file, one ``WITHOUT ROWID`` table keyed by (namespace, key).

    ``exp`` holds each key's expiry (epoch ms, NULL = never): reads skip expired
    rows at once, and writes sweep them out at most every ``SWEEP_SECONDS``.
    """

    _CHUNK = 50_000
    SWEEP_SECONDS = 60.0

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
                "v BLOB NOT NULL, exp INTEGER, PRIMARY KEY (ns, k)) WITHOUT ROWID"
            )
            cols = {r[1] for r in self._conn.execute("PRAGMA table_info(kv)")}
            if "exp" not in cols:  # a store written before expiries existed
                self._conn.execute("ALTER TABLE kv ADD COLUMN exp INTEGER")
            self._conn.execute("CREATE INDEX IF NOT EXISTS kv_exp ON kv (exp) WHERE exp IS NOT NULL")
        except sqlite3.Error as exc:
            raise StoreError(f"The online store {uri} cannot be opened: {exc}", hint=_sqlite_hint(exc)) from None
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    @contextmanager
    def _locked(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection under the store's lock; a SQLite failure becomes a StoreError naming ``what``."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                try:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StoreError(f"The online store {self.uri} failed to {what}: {exc}", hint=_sqlite_hint(exc)) from None

    def put_many(
        self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes],
        expires_ms: Sequence[int | None] | None = None,
    ) -> int:
        _check(namespace, keys, versions, values, expires_ms)
        keys, versions, values, expires_ms = _live(keys, versions, values, expires_ms)
        # an expired row counts as absent: any write replaces it
        sql = (
            "INSERT INTO kv (ns, k, ver, v, exp) VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, k) DO UPDATE "
            "SET ver = excluded.ver, v = excluded.v, exp = excluded.exp "
            "WHERE excluded.ver > kv.ver OR (excluded.ver = kv.ver AND excluded.v != kv.v) "
            "OR (kv.exp IS NOT NULL AND kv.exp <= ?)"
        )
        now = now_ms()
        exps: Sequence[int | None] = expires_ms if expires_ms is not None else [None] * len(keys)
        written = 0
        with self._locked(f"write {len(keys):,} key(s) of namespace '{namespace}'"):
            if time.monotonic() - self._swept > self.SWEEP_SECONDS:
                self._sweep_locked()
            for start in range(0, len(keys), self._CHUNK):
                end = start + self._CHUNK
                n = len(keys[start:end])
                rows = zip(
                    [namespace] * n, keys[start:end], versions[start:end], values[start:end], exps[start:end], [now] * n,
                    strict=True,
                )
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
        now = now_ms()
        with self._locked(f"read {sum(len(keys) for _, keys in requests):,} key(s)"):
            for namespace, keys in requests:
                found: dict[str, bytes] = {}
                for start in range(0, len(keys), 900):
                    part = keys[start : start + 900]
                    marks = ",".join("?" * len(part))
                    cur = self._conn.execute(
                        f"SELECT k, v FROM kv WHERE ns = ? AND k IN ({marks}) AND (exp IS NULL OR exp > ?)", (namespace, *part, now)
                    )
                    found.update(cur.fetchall())
                out.append([found.get(k) for k in keys])
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        with self._locked(f"delete {len(keys):,} key(s) of namespace '{namespace}'") as conn:
            before = conn.total_changes
            conn.executemany("DELETE FROM kv WHERE ns = ? AND k = ?", [(namespace, k) for k in keys])
            return conn.total_changes - before

    def drop(self, namespace: str) -> None:
        with self._locked(f"drop namespace '{namespace}'") as conn:
            conn.execute("DELETE FROM kv WHERE ns = ?", (namespace,))

    def count(self, namespace: str) -> int:
        with self._locked(f"count namespace '{namespace}'") as conn:
            sql = "SELECT count(*) FROM kv WHERE ns = ? AND (exp IS NULL OR exp > ?)"
            return int(conn.execute(sql, (namespace, now_ms())).fetchone()[0])

    def namespaces(self) -> list[str]:
        with self._locked("list namespaces") as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT ns FROM kv ORDER BY ns")]

    def sweep(self) -> int:
        with self._locked("sweep expired keys"):
            return self._sweep_locked()

    def _sweep_locked(self) -> int:
        before = self._conn.total_changes
        self._conn.execute("DELETE FROM kv WHERE exp IS NOT NULL AND exp <= ?", (now_ms(),))
        self._swept = time.monotonic()
        return self._conn.total_changes - before

    def merge_logs(
        self, namespace: str, keys: Sequence[str], rows: Sequence[Sequence[bytes]], low: int, version: str, ttl_ms: int | None
    ) -> int:
        now = now_ms()
        with self._locked("merge online rows"):
            try:
                self._conn.execute("BEGIN IMMEDIATE")  # read and write under one lock: concurrent pushes never lose rows
                for key, new in zip(keys, rows, strict=True):
                    cur = self._conn.execute(
                        "SELECT ver, v FROM kv WHERE ns = ? AND k = ? AND (exp IS NULL OR exp > ?)", (namespace, key, now)
                    ).fetchone()
                    blob, newest = merge_log(namespace, key, None if cur is None else cur[1], new, low)
                    if blob is None:
                        self._conn.execute("DELETE FROM kv WHERE ns = ? AND k = ?", (namespace, key))
                    else:
                        self._conn.execute(
                            "INSERT OR REPLACE INTO kv (ns, k, ver, v, exp) VALUES (?, ?, ?, ?, ?)",
                            (namespace, key, max(version, cur[0]) if cur else version, blob, _log_expiry(newest, ttl_ms)),
                        )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return len(keys)

    def close(self) -> None:
        with self._locked("close"):
            self._conn.close()


# -- Redis --------------------------------------------------------------------------
# Conditional write of a batch in one server-side step: a key is set only when its
# stored version (the text before the first '|') is not newer than the new one.
# ARGV holds (version, value, expiry ms or '') per key.
_PUT_SCRIPT = """
local n = 0
for i, key in ipairs(KEYS) do
  local ver = ARGV[3 * i - 2]
  local cur = redis.call('GET', key)
  local write = true
  if cur then
    local bar = string.find(cur, '|', 1, true)
    if bar then
      local old = string.sub(cur, 1, bar - 1)
      if old > ver or (old == ver and string.sub(cur, bar + 1) == ARGV[3 * i - 1]) then write = false end
    end
  end
  if write then
    local exp = ARGV[3 * i]
    if exp == '' then
      redis.call('SET', key, ver .. '|' .. ARGV[3 * i - 1])
    else
      redis.call('SET', key, ver .. '|' .. ARGV[3 * i - 1], 'PXAT', exp)
    end
    n = n + 1
  end
end
return n
"""


# merge_logs in one server-side step, by merge_log's rules. ARGV: low, version, ttl ms or '',
# then per key the number of new rows and the rows.
_MERGE_SCRIPT = """
local low = tonumber(ARGV[1])
local function key_of(r)
  local e, c = string.match(r, '^%[(%-?%d+),([^,%]]+)')
  if not e then return nil end
  return {tonumber(e), tonumber(c) or -1, r}
end
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end
local pos = 4
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local ver = ARGV[2]
  local new = {}
  for _ = 1, n do
    local k = key_of(ARGV[pos])
    if not k then return redis.error_reply('KEEL not a row: ' .. string.sub(ARGV[pos], 1, 60)) end
    if k[1] > low then new[#new + 1] = k end
    pos = pos + 1
  end
  table.sort(new, before)
  local inner = ''
  local cur = redis.call('GET', key)
  if cur then
    local bar = string.find(cur, '|', 1, true)
    local old = string.sub(cur, 1, bar - 1)
    if old > ver then ver = old end
    local body = string.sub(cur, bar + 1)
    if string.sub(body, 1, 2) ~= '[[' or string.sub(body, -2) ~= ']]' then
      return redis.error_reply('KEEL not a row log: ' .. key)
    end
    inner = string.sub(body, 2, -2)
    -- the oldest rows leave: parse only those
    local p = 1
    while p do
      local e = string.match(inner, '^%[(%-?%d+)', p)
      if not e or tonumber(e) > low then break end
      local s = string.find(inner, ',\\n', p, true)
      p = s and s + 2
    end
    inner = p and string.sub(inner, p) or ''
  end
  local last, q = nil, 1
  if inner ~= '' then
    while true do
      local s = string.find(inner, ',\\n', q, true)
      if not s then break end
      q = s + 2
    end
    last = key_of(string.sub(inner, q))
  end
  local parts = {}
  if #new == 0 or not last or not before(new[1], last) then
    -- the usual push: every new row is at least as new as the newest stored one
    if inner ~= '' then parts[1] = inner end
    for _, k in ipairs(new) do parts[#parts + 1] = k[3] end
  else
    local all = {}
    local start = 1
    while true do
      local s, e = string.find(inner, ',\\n', start, true)
      local r = string.sub(inner, start, s and s - 1)
      local k = key_of(r)
      if not k then return redis.error_reply('KEEL not a row: ' .. string.sub(r, 1, 60)) end
      all[#all + 1] = k
      if not s then break end
      start = e + 1
    end
    for _, k in ipairs(new) do all[#all + 1] = k end
    table.sort(all, before)
    for j, k in ipairs(all) do parts[j] = k[3] end
  end
  if #parts == 0 then
    redis.call('DEL', key)
  else
    local value = ver .. '|[' .. table.concat(parts, ',\\n') .. ']'
    local newest = last
    if #new > 0 and (not newest or not before(new[#new], newest)) then newest = new[#new] end
    if ARGV[3] == '' then
      redis.call('SET', key, value)
    else
      redis.call('SET', key, value, 'PXAT', string.format('%d', math.floor(newest[1] / 1000) + tonumber(ARGV[3])))
    end
  end
end
return #KEYS
"""


class RedisKV:
    """Redis strings ``<prefix><namespace>|{<key>}`` holding ``<version>|<value>``.

    The braces make the entity key the hash tag, so on a cluster (``redis+cluster://``)
    one entity's values share a slot and a write's script touches one slot only.
    """

    _CHUNK = 2_000

    def __init__(self, uri: str) -> None:
        try:
            import redis
            import redis.cluster
        except ImportError:
            from keel.errors import missing_extra

            raise missing_extra("redis", "redis") from None
        self.uri = uri
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        self.prefix = (query.pop("prefix", ["keel:"]) or ["keel:"])[0]
        if any(c in self.prefix for c in "{}*?[]\\"):
            raise ConfigError(f"The Redis key prefix {self.prefix!r} must not contain braces or glob characters.")
        self.cluster = parts.scheme.endswith("+cluster")
        scheme = parts.scheme.removesuffix("+cluster")
        clean = urlunsplit(parts._replace(scheme=scheme, query=urlencode(query, doseq=True)))
        self._redis: Any = redis.cluster.RedisCluster.from_url(clean) if self.cluster else redis.Redis.from_url(clean)
        self._put = self._redis.register_script(_PUT_SCRIPT)
        self._merge = self._redis.register_script(_MERGE_SCRIPT)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{namespace}|{{{key}}}"

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Any Redis failure inside becomes a StoreError naming ``what``, the URI (redacted) and the fix."""
        try:
            yield
        except self._errors as exc:
            raise self._failed(what, exc) from None

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        import redis

        text = str(exc) or type(exc).__name__
        if isinstance(exc, redis.exceptions.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
            hint = "Check the user and password in KEEL_ONLINE_URI (redis://:PASSWORD@host:6379/0)."
        elif isinstance(exc, redis.exceptions.ReadOnlyError):
            hint = "This Redis is a read-only replica: point KEEL_ONLINE_URI at the primary."
        elif isinstance(exc, redis.exceptions.ResponseError) and text.startswith("OOM"):
            hint = "Redis is out of memory (maxmemory): raise it, or give the values a TTL."
        elif isinstance(exc, redis.exceptions.ResponseError) and "WRONGTYPE" in text:
            hint = f"Other data uses keel's key prefix {self.prefix!r}: choose another with ?prefix= in KEEL_ONLINE_URI."
        elif isinstance(exc, redis.exceptions.ResponseError):
            hint = "Redis refused the command: check its version (>= 6.2) and configuration."
        else:
            hint = "Check that Redis is running and reachable, and that KEEL_ONLINE_URI is right."
        return StoreError(f"The online store {_redact_uri(self.uri)} failed to {what}: {text}", hint=hint)

    def put_many(
        self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes],
        expires_ms: Sequence[int | None] | None = None,
    ) -> int:
        _check(namespace, keys, versions, values, expires_ms)
        keys, versions, values, expires_ms = _live(keys, versions, values, expires_ms)
        exps: list[Any] = ["" if e is None else str(int(e)) for e in expires_ms] if expires_ms is not None else [""] * len(keys)
        with self._failures(f"write {len(keys):,} key(s) of namespace '{namespace}'"):
            if self.cluster:
                return self._put_cluster(namespace, keys, versions, values, exps)
            if len(keys) <= self._CHUNK:  # one script call, one round trip (a pipeline adds SCRIPT EXISTS)
                full = [self._key(namespace, k) for k in keys]
                one: list[Any] = [None] * (3 * len(full))
                one[0::3], one[1::3], one[2::3] = versions, values, exps
                return int(self._put(keys=full, args=one)) if full else 0
            written = 0
            # each chunk is one atomic script call; chunks travel in pipelines of ~20
            for group in range(0, len(keys), self._CHUNK * 20):
                pipe = self._redis.pipeline(transaction=False)
                for start in range(group, min(group + self._CHUNK * 20, len(keys)), self._CHUNK):
                    end = start + self._CHUNK
                    full = [self._key(namespace, k) for k in keys[start:end]]
                    args: list[Any] = [None] * (3 * len(full))
                    args[0::3] = versions[start:end]
                    args[1::3] = values[start:end]
                    args[2::3] = exps[start:end]
                    self._put(keys=full, args=args, client=pipe)
                written += sum(int(n) for n in pipe.execute())
        return written

    def _put_cluster(
        self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes], exps: list[Any]
    ) -> int:
        """A script may touch one slot only: one call per slot (a cluster pipeline cannot carry scripts)."""
        by_slot: dict[int, list[int]] = {}
        full = [self._key(namespace, k) for k in keys]
        slot = self._redis.keyslot
        for i, k in enumerate(full):
            by_slot.setdefault(slot(k), []).append(i)
        written = 0
        for idx in by_slot.values():
            for start in range(0, len(idx), self._CHUNK):
                part = idx[start : start + self._CHUNK]
                args: list[Any] = []
                for i in part:
                    args += [versions[i], values[i], exps[i]]
                written += int(self._put(keys=[full[i] for i in part], args=args))
        return written

    def get_many(self, requests: Sequence[Request]) -> list[list[bytes | None]]:
        full = [self._key(ns, k) for ns, keys in requests for k in keys]
        if not full:
            return [[] for _ in requests]
        with self._failures(f"read {len(full):,} key(s)"):
            raw = self._redis.mget_nonatomic(full) if self.cluster else self._redis.mget(full)
        out: list[list[bytes | None]] = []
        i = 0
        for _, keys in requests:
            out.append([None if v is None else cast(bytes, v).split(b"|", 1)[1] for v in raw[i : i + len(keys)]])
            i += len(keys)
        return out

    def delete_many(self, namespace: str, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        full = [self._key(namespace, k) for k in keys]
        with self._failures(f"delete {len(keys):,} key(s) of namespace '{namespace}'"):
            if self.cluster:
                return sum(int(self._redis.delete(k)) for k in full)
            return int(self._redis.delete(*full))

    def _scan(self, match: str) -> Any:
        if self.cluster:
            return self._redis.scan_iter(match=match, count=1000, target_nodes=self._redis.PRIMARIES)
        return self._redis.scan_iter(match=match, count=1000)

    def drop(self, namespace: str) -> None:
        batch: list[bytes] = []
        with self._failures(f"drop namespace '{namespace}' (keys deleted so far stay deleted; run it again)"):
            for key in self._scan(self._key(namespace, "*")[:-1]):  # '<prefix><ns>|{*'
                batch.append(key)
                if len(batch) >= 1000:
                    self._delete(batch)
                    batch.clear()
            if batch:
                self._delete(batch)

    def _delete(self, keys: list[bytes]) -> None:
        if self.cluster:
            for k in keys:
                self._redis.delete(k)
        else:
            self._redis.delete(*keys)

    def count(self, namespace: str) -> int:
        with self._failures(f"count namespace '{namespace}'"):
            return sum(1 for _ in self._scan(self._key(namespace, "*")[:-1]))

    def namespaces(self) -> list[str]:
        found: set[str] = set()
        with self._failures("list namespaces"):
            for key in self._scan(self.prefix + "*|{*"):
                text = key.decode() if isinstance(key, bytes) else str(key)
                found.add(text[len(self.prefix) :].split("|", 1)[0])
        return sorted(found)

    def sweep(self) -> int:
        return 0  # Redis expires keys itself

    def merge_logs(
        self, namespace: str, keys: Sequence[str], rows: Sequence[Sequence[bytes]], low: int, version: str, ttl_ms: int | None
    ) -> int:
        import redis

        head: list[Any] = [str(int(low)), version, "" if ttl_ms is None else str(int(ttl_ms))]
        full = [self._key(namespace, k) for k in keys]
        by_slot: dict[int, list[int]] = {}
        if self.cluster:  # a script touches one slot only: on a cluster one call per slot
            for i, k in enumerate(full):
                by_slot.setdefault(self._redis.keyslot(k), []).append(i)
        else:
            by_slot[0] = list(range(len(full)))
        try:
            for idx in by_slot.values():
                for start in range(0, len(idx), self._CHUNK):  # each call holds Redis for a bounded time
                    part = idx[start : start + self._CHUNK]
                    args = list(head)
                    for i in part:
                        args += [len(rows[i]), *rows[i]]
                    self._merge(keys=[full[i] for i in part], args=args)
        except redis.exceptions.ResponseError as exc:
            if "KEEL not a row" in str(exc):
                raise StoreError(
                    f"An online value of {namespace!r} is not a row log (written by an older keel): {exc}",
                    hint="Re-materialize the feature view: keel features materialize.",
                ) from None
            raise self._failed("merge online rows", exc) from None
        except self._errors as exc:
            raise self._failed("merge online rows", exc) from None
        return len(keys)

    def close(self) -> None:
        with self._failures("close"):
            self._redis.close()


def _redact_uri(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_kv_store(uri: str) -> KVStore:
    """A new store for ``uri`` (memory://, sqlite:///..., redis://...)."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme == "memory":
        return MemoryKV(uri)
    if scheme == "sqlite":
        return SQLiteKV(uri)
    if scheme in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}:
        return RedisKV(uri)
    raise ConfigError(
        f"KEEL_ONLINE_URI {_redact_uri(uri)!r} names no known online store.",
        hint="Use sqlite:///path/online.db, redis://host:6379/0, redis+cluster://host:7000 or memory://.",
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
