"""Metadata store conformance: concurrent writers on every backend lose nothing and fail nothing.

Each race below used to be a select followed by an insert, which two
PostgreSQL transactions can both pass: the loser got a raw IntegrityError (or,
for aliases, a lost revision and a wrong audit trail).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from keel.errors import ValidationError, WriteConflict
from keel.store.metadata import get_metadata_store, insert_ignore, upsert
from keel.store.schema import experiments, runs

THREADS = 8


def _race(fn: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """Run fn(i) for i < n in n threads released at the same instant; re-raises the first error."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(go, range(n)))


def test_concurrent_first_runs_in_a_new_experiment(backend: str) -> None:
    from keel.tracking.runs import start_run

    for round_ in range(4):
        name = f"new-experiment-{round_}"

        def first_run(i: int, name: str = name) -> tuple[str, int]:
            run = start_run(f"r{i}", experiment=name, activate=False)
            run.end()
            return run.id, run.experiment_id

        made = _race(first_run)
        assert len({exp for _rid, exp in made}) == 1
        with get_metadata_store().read() as conn:
            assert conn.execute(sa.select(sa.func.count()).where(experiments.c.name == name)).scalar() == 1
            got = conn.execute(sa.select(runs.c.id, runs.c.status).where(runs.c.experiment_id == made[0][1])).all()
        assert sorted(r for r, _ in got) == sorted(r for r, _ in made) and {s for _, s in got} == {"finished"}


def test_concurrent_alias_moves_each_apply_once_in_order(backend: str, two_versions: str) -> None:
    from keel.registry import history, set_alias
    from keel.store.schema.registry import model_aliases

    per_thread = 5
    _race(lambda i: [set_alias(two_versions, "champion", 1 + (i + k) % 2) for k in range(per_thread)])
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(model_aliases).where(model_aliases.c.name == "champion")).one()
    events = [e for e in history(two_versions, target="champion") if e["action"] == "alias"]
    assert row.revision == THREADS * per_thread == len(events)
    assert events[0]["from_version"] is None
    # each move names the version it really replaced: the audit trail is a chain
    assert all(b["from_version"] == a["to_version"] for a, b in itertools.pairwise(events))
    assert events[-1]["to_version"] == row.version


def test_concurrent_feature_consumer_records_and_watermarks(backend: str) -> None:
    from keel.features.registry import consumers, record_consumer
    from keel.store.schema.features import feature_materializations

    for version in range(1, 5):
        _race(lambda i, v=version: record_consumer("churn_features", v, "model", "churn@v1"))
    assert sorted(consumers()["churn_features"]) == [f"model:churn@v1 (v{v})" for v in range(1, 5)]

    def mark(i: int) -> None:
        values = {"view_version": 1, "watermark_ms": 1000 + i, "start_ms": None, "end_ms": 1000 + i, "rows_read": i, "keys_written": i, "updated_ms": i}
        with get_metadata_store().write() as conn:
            upsert(conn, feature_materializations, {"view": "orders", **values}, ["view"])

    _race(mark)
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(feature_materializations)).all()
    assert len(rows) == 1 and rows[0].watermark_ms == rows[0].end_ms == 1000 + rows[0].rows_read


def test_insert_ignore_tells_who_inserted(backend: str) -> None:
    store = get_metadata_store()
    won = _race(lambda i: store.transact(lambda conn: insert_ignore(conn, experiments, {"name": "once", "created_ms": i}, ["name"])))
    assert won.count(True) == 1


def test_a_failed_write_leaves_no_partial_row(backend: str) -> None:
    store = get_metadata_store()
    with store.write() as conn:
        conn.execute(sa.insert(experiments).values(name="taken", created_ms=1))
    with pytest.raises(WriteConflict, match="Nothing of it was written"), store.write() as conn:
        conn.execute(sa.insert(experiments).values(name="first-half", created_ms=1))
        conn.execute(sa.insert(experiments).values(name="taken", created_ms=2))
    with store.read() as conn:
        names = set(conn.execute(sa.select(experiments.c.name)).scalars())
    assert "first-half" not in names and "taken" in names


def test_a_refused_alias_move_leaves_no_row_and_no_event(backend: str, two_versions: str) -> None:
    from keel.registry import archive_version, history, set_alias
    from keel.store.schema.registry import model_aliases

    archive_version(two_versions, 2)
    with pytest.raises(ValidationError, match="archived"):
        set_alias(two_versions, "challenger", 2)
    with get_metadata_store().read() as conn:
        assert conn.execute(sa.select(model_aliases).where(model_aliases.c.name == "challenger")).first() is None
    assert [e for e in history(two_versions) if e["action"] == "alias"] == []


def test_transact_retries_lost_races(backend: str) -> None:
    store = get_metadata_store()
    calls = []

    def once(conn: sa.Connection) -> int:
        calls.append(1)
        if len(calls) == 1:
            conn.execute(sa.insert(experiments).values(name="dup", created_ms=1))
            conn.execute(sa.insert(experiments).values(name="dup", created_ms=1))  # a lost race
        return len(calls)

    assert store.transact(once) == 2
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(experiments.c.name == "dup")).scalar() == 0


@pytest.mark.parametrize("literal", ["a_b", "a%b", "a\\b", "a\\_b"])
def test_like_escape_matches_literally(backend: str, literal: str) -> None:
    from keel.store.metadata import like_escape

    names = ["a_b", "axb", "a%b", "a\\b", "a\\_b", "a\\xb", "a_b/c", "axb/c"]
    store = get_metadata_store()
    with store.write() as conn:
        conn.execute(sa.insert(experiments), [{"name": n, "created_ms": 0} for n in names])
    with store.read() as conn:
        exact = set(conn.execute(sa.select(experiments.c.name).where(experiments.c.name.like(like_escape(literal), escape="\\"))).scalars())
        prefix = set(conn.execute(sa.select(experiments.c.name).where(experiments.c.name.like(like_escape(literal) + "/%", escape="\\"))).scalars())
    assert exact == {literal}
    assert prefix == ({f"{literal}/c"} if f"{literal}/c" in names else set())


def test_an_archive_racing_an_alias_move_never_both_win(backend: str, two_versions: str) -> None:
    from keel.errors import ConflictError
    from keel.registry import archive_version, delete_alias, get_version, restore_version, set_alias

    for _ in range(6):
        outcomes = _race(lambda i: _attempt(
            (lambda: archive_version(two_versions, 2)) if i == 0 else (lambda: set_alias(two_versions, "challenger", 2)),
            (ConflictError, ValidationError),
        ), n=2)
        assert outcomes.count(True) == 1, outcomes
        mv = get_version(two_versions, 2)
        assert (mv.status == "archived") != ("challenger" in mv.aliases)
        if mv.status == "archived":
            restore_version(two_versions, 2)
        else:
            delete_alias(two_versions, "challenger")


def _attempt(fn: Callable[[], Any], refused: tuple[type[Exception], ...]) -> bool:
    try:
        fn()
    except refused:
        return False
    return True
