"""One conformance suite for every online store: memory, SQLite, real Redis and a real Redis Cluster.

The cluster is three ``redis-server --cluster-enabled yes`` processes on free ports
of 127.0.0.1, joined by ``redis-cli --cluster create``, started once per session
and stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import ConfigError, ValidationError
from keel.store.kv import KVStore, SQLiteKV, open_kv_store


def _free_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (so P < 55536)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-node Redis Cluster on 127.0.0.1; yields a redis+cluster:// URI of one node."""
    from tests.conftest import _unavailable

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        _unavailable("Redis Cluster", FileNotFoundError("redis-server / redis-cli not on PATH"))
    base = tmp_path_factory.mktemp("redis-cluster")
    ports = [_free_port() for _ in range(3)]
    pids: list[int] = []
    try:
        for p in ports:
            d = base / str(p)
            d.mkdir()
            subprocess.run(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--daemonize", "yes", "--dir", str(d),
                 "--pidfile", str(d / "redis.pid"), "--save", "", "--appendonly", "no"],
                check=True, capture_output=True,
            )
        for p in ports:
            pidfile = base / str(p) / "redis.pid"
            deadline = time.monotonic() + 60
            while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.05)
            pids.append(int(pidfile.read_text()))
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        import redis

        probe = redis.Redis(port=ports[0])
        for _ in range(200):
            if probe.cluster("info").get("cluster_state") == "ok":
                break
            time.sleep(0.05)
        probe.close()
        yield f"redis+cluster://127.0.0.1:{ports[0]}/0"
    finally:
        for p in ports:  # also the nodes that started when another did not
            pidfile = base / str(p) / "redis.pid"
            if pidfile.exists() and pidfile.read_text().strip():
                pids.append(int(pidfile.read_text()))
        for pid in set(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    if request.param == "memory":
        uri = f"memory://{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'online.db'}"
    elif request.param == "redis":
        uri = request.getfixturevalue("redis_url")
    else:
        uri = request.getfixturevalue("redis_cluster") + f"?prefix=keeltest:{uuid.uuid4().hex[:12]}:"
    store = open_kv_store(uri)
    yield store
    for ns in store.namespaces():
        store.drop(ns)
    store.close()


def _v(n: int) -> str:
    return f"{n:015d}{0:015d}"


def test_put_then_get_returns_values_and_none_for_absent(kv: KVStore) -> None:
    assert kv.put_many("fv:a", ["1", "2"], [_v(1), _v(1)], [b"one", b"two"]) == 2
    assert kv.get_many([("fv:a", ["2", "3", "1"])]) == [[b"two", None, b"one"]]


def test_get_many_spans_namespaces_in_order(kv: KVStore) -> None:
    kv.put_many("fv:a", ["1"], [_v(1)], [b"a1"])
    kv.put_many("fv:b", ["1"], [_v(1)], [b"b1"])
    assert kv.get_many([("fv:b", ["1", "9"]), ("fv:a", ["1"]), ("fv:c", [])]) == [[b"b1", None], [b"a1"], []]


def test_older_version_never_overwrites_newer(kv: KVStore) -> None:
    kv.put_many("fv:a", ["k"], [_v(5)], [b"new"])
    assert kv.put_many("fv:a", ["k"], [_v(4)], [b"old"]) == 0
    assert kv.get_many([("fv:a", ["k"])]) == [[b"new"]]
    assert kv.put_many("fv:a", ["k"], [_v(6)], [b"newer"]) == 1
    assert kv.get_many([("fv:a", ["k"])]) == [[b"newer"]]


def test_same_write_twice_changes_nothing_but_a_new_value_at_same_version_lands(kv: KVStore) -> None:
    assert kv.put_many("fv:a", ["k", "j"], [_v(5), _v(5)], [b"x", b"y"]) == 2
    assert kv.put_many("fv:a", ["k", "j"], [_v(5), _v(5)], [b"x", b"y"]) == 0
    assert kv.put_many("fv:a", ["k"], [_v(5)], [b"fixed"]) == 1
    assert kv.get_many([("fv:a", ["k", "j"])]) == [[b"fixed", b"y"]]


def test_values_are_binary_safe(kv: KVStore) -> None:
    blob = bytes(range(256)) + b"|x|"
    kv.put_many("fv:a", ["k|1", "ü"], [_v(1), _v(1)], [blob, b""])
    assert kv.get_many([("fv:a", ["k|1", "ü"])]) == [[blob, b""]]


def test_count_delete_and_drop(kv: KVStore) -> None:
    n = 2500  # more than one Redis chunk
    keys = [str(i) for i in range(n)]
    assert kv.put_many("fv:big", keys, [_v(1)] * n, [b"v"] * n) == n
    kv.put_many("fv:other", ["1"], [_v(1)], [b"o"])
    assert kv.count("fv:big") == n
    assert kv.delete_many("fv:big", ["1", "2", "nope"]) == 2
    assert kv.count("fv:big") == n - 2
    kv.drop("fv:big")
    assert kv.count("fv:big") == 0
    assert kv.get_many([("fv:other", ["1"])]) == [[b"o"]]


def test_mismatched_lengths_and_bad_namespace_are_rejected(kv: KVStore) -> None:
    with pytest.raises(ValidationError, match="2 keys, 1 versions"):
        kv.put_many("fv:a", ["1", "2"], [_v(1)], [b"a", b"b"])
    with pytest.raises(ValidationError, match="must not contain"):
        kv.put_many("a|b", ["1"], [_v(1)], [b"a"])
    with pytest.raises(ValidationError, match="must not contain"):
        kv.put_many("a{b}", ["1"], [_v(1)], [b"a"])
    with pytest.raises(ValidationError, match="1 expiries"):
        kv.put_many("fv:a", ["1", "2"], [_v(1)] * 2, [b"a", b"b"], expires_ms=[None])


def test_concurrent_writers_keep_the_newest(kv: KVStore) -> None:
    def writer(start: int) -> None:
        for i in range(start, 60, 3):
            kv.put_many("fv:c", ["k"], [_v(i)], [str(i).encode()])

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert kv.get_many([("fv:c", ["k"])]) == [[b"59"]]


def test_unknown_uri_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ftp://x"):
        open_kv_store("ftp://x")


def test_memory_stores_with_one_name_share_data() -> None:
    name = f"memory://{uuid.uuid4().hex}"
    open_kv_store(name).put_many("fv:a", ["1"], [_v(1)], [b"shared"])
    assert open_kv_store(name).get_many([("fv:a", ["1"])]) == [[b"shared"]]


def _ms(offset_s: float) -> int:
    return int((time.time() + offset_s) * 1000)


def test_expired_keys_are_gone_for_every_reader(kv: KVStore) -> None:
    kv.put_many("fv:t", ["a", "b", "c"], [_v(1)] * 3, [b"a", b"b", b"c"], expires_ms=[_ms(0.3), None, _ms(60)])
    assert kv.get_many([("fv:t", ["a", "b", "c"])]) == [[b"a", b"b", b"c"]]
    time.sleep(0.45)
    assert kv.get_many([("fv:t", ["a", "b", "c"])]) == [[None, b"b", b"c"]]
    assert kv.count("fv:t") == 2
    kv.sweep()
    assert kv.count("fv:t") == 2


def test_an_already_expired_value_is_not_written(kv: KVStore) -> None:
    assert kv.put_many("fv:t", ["a", "b"], [_v(1)] * 2, [b"a", b"b"], expires_ms=[_ms(-1), _ms(60)]) == 1
    assert kv.get_many([("fv:t", ["a", "b"])]) == [[None, b"b"]]


def test_an_expired_key_is_replaced_by_any_write(kv: KVStore) -> None:
    kv.put_many("fv:t", ["k"], [_v(9)], [b"new but expiring"], expires_ms=[_ms(0.2)])
    time.sleep(0.3)
    assert kv.put_many("fv:t", ["k"], [_v(1)], [b"older, alive"]) == 1
    assert kv.get_many([("fv:t", ["k"])]) == [[b"older, alive"]]


def test_namespaces_lists_each_namespace_once(kv: KVStore) -> None:
    kv.put_many("fv:a:1", ["1", "2"], [_v(1)] * 2, [b"x", b"y"])
    kv.put_many("fv:a:2", ["1"], [_v(1)], [b"z"])
    assert [ns for ns in kv.namespaces() if ns.startswith("fv:a:")] == ["fv:a:1", "fv:a:2"]
    kv.drop("fv:a:1")
    assert [ns for ns in kv.namespaces() if ns.startswith("fv:a:")] == ["fv:a:2"]


def test_sqlite_sweep_deletes_expired_rows_physically(tmp_path: Path) -> None:
    store = SQLiteKV(f"sqlite:///{tmp_path / 'o.db'}")
    store.put_many("fv:t", ["a", "b"], [_v(1)] * 2, [b"a", b"b"], expires_ms=[_ms(0.1), None])
    time.sleep(0.2)
    assert store.sweep() == 1
    assert store._conn.execute("SELECT k FROM kv").fetchall() == [("b",)]
    # a write sweeps too once SWEEP_SECONDS have passed
    store.put_many("fv:t", ["c"], [_v(1)], [b"c"], expires_ms=[_ms(0.1)])
    time.sleep(0.2)
    store.SWEEP_SECONDS = 0.0
    store.put_many("fv:t", ["d"], [_v(1)], [b"d"])
    assert sorted(r[0] for r in store._conn.execute("SELECT k FROM kv")) == ["b", "d"]
    store.close()


def test_sqlite_store_from_before_expiries_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE kv (ns TEXT NOT NULL, k TEXT NOT NULL, ver TEXT NOT NULL, v BLOB NOT NULL, PRIMARY KEY (ns, k)) WITHOUT ROWID")
    con.execute("INSERT INTO kv VALUES ('fv:a', '1', ?, x'6f6c64')", (_v(1),))
    con.commit()
    con.close()
    store = open_kv_store(f"sqlite:///{path}")
    assert store.get_many([("fv:a", ["1"])]) == [[b"old"]]
    store.close()


@pytest.mark.redis
def test_redis_keys_carry_the_entity_key_as_hash_tag(redis_url: str) -> None:
    import redis

    store = open_kv_store(redis_url)
    store.put_many("fv:a", ["42"], [_v(1)], [b"x"], expires_ms=[_ms(60)])
    prefix = redis_url.split("prefix=")[1]
    client = redis.Redis.from_url(redis_url.split("?")[0])
    key = f"{prefix}fv:a|{{42}}"
    assert client.get(key) == _v(1).encode() + b"|x"
    assert 0 < client.pttl(key) <= 60_000
    client.close()
    store.close()


def test_cluster_spreads_entities_over_nodes_and_keeps_one_entity_in_one_slot(redis_cluster: str) -> None:
    store = open_kv_store(redis_cluster + f"?prefix=keeltest:{uuid.uuid4().hex[:8]}:")
    keys = [str(i) for i in range(300)]
    store.put_many("fv:a", keys, [_v(1)] * 300, [b"a"] * 300)
    store.put_many("fv:b", keys, [_v(1)] * 300, [b"b"] * 300)
    r = store._redis  # type: ignore[attr-defined]
    assert r.keyslot(store._key("fv:a", "7")) == r.keyslot(store._key("fv:b", "7"))  # type: ignore[attr-defined]
    nodes = {r.get_node_from_key(store._key("fv:a", k)).port for k in keys}  # type: ignore[attr-defined]
    assert len(nodes) == 3
    assert store.get_many([("fv:a", keys), ("fv:b", ["7"])]) == [[b"a"] * 300, [b"b"]]
    for ns in ("fv:a", "fv:b"):
        store.drop(ns)
    assert store.count("fv:a") == 0
    store.close()


def test_a_password_in_the_uri_never_reaches_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        open_kv_store("ftp://user:hunter2@host/x")
    assert "hunter2" not in str(err.value)


def test_merge_logs_sorts_rows_drops_old_ones_expires_and_loses_none_to_concurrent_writers(kv: KVStore) -> None:
    """The row logs of windowed aggregations (merge_logs): the same rules on every store."""
    import orjson

    now_us = time.time_ns() // 1_000
    keys = [f"e{i}" for i in range(5)]  # on a cluster: several slots in one call

    def row(ago_s: int, created: int | None, tag: str) -> bytes:
        return orjson.dumps([now_us - ago_s * 1_000_000, created, tag])

    assert kv.merge_logs("fv:log", keys, [[row(5, None, f"{k}-a"), row(9, 1, f"{k}-b")] for k in keys], now_us - 60_000_000, _v(1), 3_600_000) == 5
    kv.merge_logs("fv:log", keys[:2], [[row(7, 2, "mid"), row(30, None, "gone")], [row(1, None, "new")]], now_us - 20_000_000, _v(0), 3_600_000)

    def rows(key: str) -> list[str]:
        blob = kv.get_many([("fv:log", [key])])[0][0]
        return [] if blob is None else [r[2] for r in orjson.loads(blob)]

    assert rows("e0") == ["e0-b", "mid", "e0-a"]  # sorted by event time; the row 30 s old left the window
    assert rows("e1") == ["e1-b", "e1-a", "new"]
    # every row older than low leaves; a key left empty is gone
    kv.merge_logs("fv:log", ["e4"], [[]], now_us, _v(2), 3_600_000)
    assert kv.get_many([("fv:log", ["e4"])]) == [[None]]
    # the key expires ttl after its newest row: here at once
    kv.merge_logs("fv:log", ["e3"], [[row(10, None, "x")]], 0, _v(3), 1)
    assert kv.get_many([("fv:log", ["e3"])]) == [[None]]

    def writer(w: int) -> None:
        for i in range(20):
            kv.merge_logs("fv:log", ["e2"], [[row(3, w * 100 + i, f"w{w}-{i}")]], now_us - 60_000_000, _v(4), 3_600_000)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(rows("e2")) == sorted(["e2-a", "e2-b", *(f"w{w}-{i}" for w in range(3) for i in range(20))])
    kv.drop("fv:log")
