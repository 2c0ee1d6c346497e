"""One conformance suite for every online store: memory, SQLite and real Redis."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import ConfigError, ValidationError
from keel.store.kv import KVStore, open_kv_store


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    if request.param == "memory":
        uri = f"memory://{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'online.db'}"
    else:
        uri = request.getfixturevalue("redis_url")
    store = open_kv_store(uri)
    yield store
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
