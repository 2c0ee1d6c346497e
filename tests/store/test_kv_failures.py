"""Every Redis or SQLite failure of the online store is a StoreError naming the URI (redacted) and the fix.

The Redis tests run a private redis-server on a free port, with a password, and kill
it (SIGKILL, by pid) before or in the middle of an operation.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.errors import StoreError
from keel.store.kv import RedisKV, SQLiteKV, open_kv_store

PASSWORD = "s3cret-pw"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", PASSWORD, "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def uri(self, password: str = PASSWORD) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0?prefix=keeltest:"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.kill()


def _fill(store: Any, n: int, ns: str = "fv:a") -> None:
    keys = [str(i) for i in range(n)]
    store.put_many(ns, keys, ["0001"] * n, [b"v"] * n)


def _assert_store_error(err: pytest.ExceptionInfo[StoreError], what: str, uri_part: str) -> None:
    text = f"{err.value} {err.value.hint}"
    assert what in text and uri_part in text, text
    assert PASSWORD not in text and "***" in str(err.value), text
    assert err.value.hint, "a StoreError names the fix"


OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "count namespace 'fv:a'": lambda s: s.count("fv:a"),
    "drop namespace 'fv:a'": lambda s: s.drop("fv:a"),
    "delete 2 key(s) of namespace 'fv:a'": lambda s: s.delete_many("fv:a", ["1", "2"]),
    "read 1 key(s)": lambda s: s.get_many([("fv:a", ["1"])]),
    "write 1 key(s) of namespace 'fv:a'": lambda s: s.put_many("fv:a", ["1"], ["0002"], [b"w"]),
    "list namespaces": lambda s: s.namespaces(),
}


@pytest.mark.parametrize("what", list(OPERATIONS))
def test_every_redis_operation_on_a_dead_server_is_a_store_error(server: Server, what: str) -> None:
    store = RedisKV(server.uri())
    _fill(store, 10)
    server.kill()
    with pytest.raises(StoreError) as err:
        OPERATIONS[what](store)
    _assert_store_error(err, what, f"127.0.0.1:{server.port}")
    assert "running and reachable" in (err.value.hint or "")


def test_redis_killed_in_the_middle_of_a_drop_or_count(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisKV(server.uri())
    _fill(store, 5_000)
    calls = {"n": 0}
    delete = store._delete

    def delete_then_die(keys: list[bytes]) -> None:  # the first batch goes, then the server dies
        delete(keys)
        calls["n"] += 1
        server.kill()

    monkeypatch.setattr(store, "_delete", delete_then_die)
    with pytest.raises(StoreError) as err:
        store.drop("fv:a")
    assert calls["n"] == 1
    _assert_store_error(err, "drop namespace 'fv:a'", f"127.0.0.1:{server.port}")
    assert "run it again" in str(err.value)


def test_redis_killed_while_a_count_scans(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisKV(server.uri())
    _fill(store, 5_000)
    scan = store._scan

    def scan_then_die(match: str) -> Iterator[Any]:
        for i, key in enumerate(scan(match)):
            if i == 10:
                server.kill()
            yield key

    monkeypatch.setattr(store, "_scan", scan_then_die)
    with pytest.raises(StoreError) as err:
        store.count("fv:a")
    _assert_store_error(err, "count namespace 'fv:a'", f"127.0.0.1:{server.port}")


def test_a_wrong_redis_password_says_so(server: Server) -> None:
    store = open_kv_store(server.uri("not-the-password"))
    for what, op in OPERATIONS.items():
        with pytest.raises(StoreError) as err:
            op(store)
        assert what in str(err.value) and "password" in (err.value.hint or ""), (what, str(err.value), err.value.hint)
        assert "not-the-password" not in f"{err.value} {err.value.hint}"


def test_a_foreign_key_under_keels_prefix_is_named(server: Server) -> None:
    import redis

    store = RedisKV(server.uri())
    redis.Redis(port=server.port, password=PASSWORD).rpush("keeltest:fv:a|{1}", "not keel's")
    with pytest.raises(StoreError) as err:
        store.put_many("fv:a", ["1"], ["0002"], [b"w"])
    assert "WRONGTYPE" in str(err.value) and "prefix" in (err.value.hint or "")


# -- SQLite --------------------------------------------------------------------------------------
SQLITE_WRITES = {
    "drop namespace 'fv:a'": lambda s: s.drop("fv:a"),
    "delete 2 key(s) of namespace 'fv:a'": lambda s: s.delete_many("fv:a", ["1", "2"]),
    "write 1 key(s) of namespace 'fv:a'": lambda s: s.put_many("fv:a", ["1"], ["0002"], [b"w"]),
    "sweep expired keys": lambda s: s.sweep(),
}


@pytest.mark.parametrize("what", list(SQLITE_WRITES))
def test_a_locked_sqlite_store_is_a_store_error_and_keeps_its_rows(tmp_path: Path, what: str) -> None:
    uri = f"sqlite:///{tmp_path / 'online.db'}"
    store = SQLiteKV(uri)
    _fill(store, 10)
    store._conn.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "online.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        with pytest.raises(StoreError) as err:
            SQLITE_WRITES[what](store)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert what in str(err.value) and uri in str(err.value)
    assert "write lock" in (err.value.hint or "")
    assert store.count("fv:a") == 10  # nothing half-written; the store still works
    store.close()


def test_a_damaged_sqlite_file_is_a_store_error_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        SQLiteKV(f"sqlite:///{path}")
    assert str(path) in str(err.value) and "materialize" in (err.value.hint or "")


def test_a_closed_sqlite_store_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteKV(f"sqlite:///{tmp_path / 'online.db'}")
    _fill(store, 3)
    store._conn.close()  # e.g. closed by another thread's reset
    for what, op in OPERATIONS.items():
        with pytest.raises(StoreError) as err:
            op(store)
        assert what in str(err.value) and "open it again" in (err.value.hint or ""), what
