"""Materialization: idempotent, incremental by watermark, never half a row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from keel.errors import ValidationError
from keel.features import materialization
from keel.features.loader import load_definitions
from keel.features.materialization import materialize, namespace, watermarks
from keel.features.registry import apply
from keel.store.kv import MemoryKV, open_kv_store
from tests.features.conftest import make_churn_data


def test_incremental_picks_up_late_rows_by_ingestion_time(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, data = churn_project
    apply()
    store = open_kv_store("memory://inc")
    first = materialize(["usage"], store=store, end=datetime(2024, 2, 1, tzinfo=UTC))
    assert first.keys_written == 50
    mark = watermarks()["usage"]["watermark_ms"]
    assert mark == int(datetime(2024, 2, 1, tzinfo=UTC).timestamp() * 1000)
    # customer 46 has usage only in the first week; a backfill adds an old event (before the
    # watermark by event time) ingested after it: an incremental run must pick it up.
    usage = data["usage"]
    late = usage[usage.customer_id == 46].iloc[[-1]].copy()
    late["minutes"] = 12345.0
    late["event_timestamp"] = pd.Timestamp("2024-01-10", tz="UTC")
    late["created_timestamp"] = pd.Timestamp("2024-02-05", tz="UTC")
    pd.concat([usage, late]).to_parquet(root / "data" / "usage.parquet", index=False)
    inc = materialize(["usage"], store=store, incremental=True, end=datetime(2024, 2, 6, tzinfo=UTC))
    assert inc.views[0].start == datetime(2024, 2, 1, tzinfo=UTC)
    # the file was rewritten since the last run: it is read whole again (writes are idempotent)
    assert inc.views[0].reread == [str(root / "data" / "usage.parquet")]
    within = (usage.created_timestamp <= "2024-02-06") & (usage.event_timestamp <= "2024-02-06")
    assert inc.rows_read == int(within.sum()) + 1
    value = json.loads(store.get_many([(namespace(load_definitions().view("usage")), ["46"])])[0][0] or b"{}")
    assert value["minutes"] == 12345.0
    assert materialize(["usage"], store=store, incremental=True, end=datetime(2024, 2, 6, tzinfo=UTC)).keys_written == 0


def test_start_end_validation(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    apply()
    with pytest.raises(ValidationError, match="no time zone"):
        materialize(end=datetime(2024, 1, 1))
    with pytest.raises(ValidationError, match="not before end"):
        materialize(start=datetime(2024, 2, 1, tzinfo=UTC), end=datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(ValidationError, match="either start= or incremental"):
        materialize(start=datetime(2024, 1, 1, tzinfo=UTC), incremental=True)


class FailingKV(MemoryKV):
    def __init__(self, uri: str, fail_after: int) -> None:
        super().__init__(uri)
        self.calls = 0
        self.fail_after = fail_after

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes], expires_ms: Any = None) -> int:
        self.calls += 1
        if self.calls > self.fail_after:
            raise ConnectionError("store went away")
        return super().put_many(namespace, keys, versions, values, expires_ms)


def test_a_failed_run_leaves_each_key_whole_and_the_watermark_unmoved(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply()
    old = FailingKV("memory://fail", fail_after=10**9)
    materialize(["usage"], store=old, end=datetime(2024, 1, 20, tzinfo=UTC))
    before = {k: v for k, v in zip(map(str, range(1, 51)), old.get_many([(namespace(load_definitions().view("usage")), [str(i) for i in range(1, 51)])])[0], strict=True)}
    mark = watermarks()["usage"]["watermark_ms"]
    monkeypatch.setattr(materialization, "_BATCH", 7)
    failing = FailingKV("memory://fail", fail_after=2)
    with pytest.raises(ConnectionError):
        materialize(["usage"], store=failing, end=datetime(2024, 3, 1, tzinfo=UTC))
    after = failing.get_many([(namespace(load_definitions().view("usage")), [str(i) for i in range(1, 51)])])[0]
    changed = [a for a, k in zip(after, before, strict=True) if a != before[k]]
    assert len(changed) == 14  # two batches landed, whole
    for blob in after:
        row = json.loads(blob or b"{}")
        assert set(row) == {"__e", "sessions", "minutes", "support_tickets", "payment_failures", "minutes_per_session"}
    assert watermarks()["usage"]["watermark_ms"] == mark


def test_ambiguous_latest_rows_are_rejected_naming_the_key(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    root, data = churn_project
    apply()
    usage = data["usage"]
    twin = usage[usage.customer_id == 9].sort_values("event_timestamp").iloc[[-1]].copy()
    twin["minutes"] = -1.0  # same key, event time and created time, another value
    pd.concat([usage, twin]).to_parquet(root / "data" / "usage.parquet", index=False)
    with pytest.raises(ValidationError, match=r"tie as the latest value of customer_id=9 \(same event time and created time\)"):
        materialize(["usage"], store=open_kv_store("memory://dup"))


def test_a_backfill_created_before_the_watermark_is_materialized(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    """A backfill of rows whose created time is before the watermark (e.g. replayed from an
    archive with their original ingestion times) used to be skipped by incremental runs."""
    root, data = churn_project
    apply()
    store = open_kv_store("memory://backfill")
    materialize(["usage"], store=store, end=datetime(2024, 2, 1, tzinfo=UTC))
    usage = data["usage"]
    # customer 47 has usage only in the first week; its backfilled row is newer by event time
    # than anything stored, but was (by its record) created before the watermark
    late = usage[usage.customer_id == 47].iloc[[-1]].copy()
    late["minutes"] = 777.0
    late["event_timestamp"] = pd.Timestamp("2024-01-20", tz="UTC")
    late["created_timestamp"] = pd.Timestamp("2024-01-21", tz="UTC")
    pd.concat([usage, late]).to_parquet(root / "data" / "usage.parquet", index=False)
    inc = materialize(["usage"], store=store, incremental=True, end=datetime(2024, 2, 2, tzinfo=UTC))
    value = json.loads(store.get_many([(namespace(load_definitions().view("usage")), ["47"])])[0][0] or b"{}")
    assert value["minutes"] == 777.0
    assert inc.views[0].reread


def test_a_folder_source_rereads_only_the_new_files(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.features.conftest import T0, set_store_clock

    set_store_clock(monkeypatch, T0)
    (project / "data" / "events").mkdir(parents=True)
    (project / "features.py").write_text(
        "from keel.features import Entity, FeatureView, Field, Float64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "ev = FeatureView('ev', entities=[c], schema=[Field('x', Float64)],\n"
        "    source=Source('events', path='data/events', created_timestamp_field='created_timestamp'))\n"
    )

    def part(name: str, customer: int, day: int, created_day: int, x: float) -> None:
        pd.DataFrame({
            "customer_id": [customer], "x": [x],
            "event_timestamp": [pd.Timestamp(T0) + pd.Timedelta(days=day)],
            "created_timestamp": [pd.Timestamp(T0) + pd.Timedelta(days=created_day)],
        }).to_parquet(project / "data" / "events" / name, index=False)

    part("a.parquet", 1, 1, 1, 1.0)
    part("b.parquet", 2, 1, 1, 2.0)
    apply()
    store = open_kv_store("memory://folder")
    first = materialize(store=store, end=pd.Timestamp(T0 + pd.Timedelta(days=10)).to_pydatetime())
    assert first.keys_written == 2
    # files older than the last run: make a.parquet and b.parquet look old
    import os

    for name in ("a.parquet", "b.parquet"):
        os.utime(project / "data" / "events" / name, (0, 0))
    part("c.parquet", 1, 5, 2, 3.0)  # created before the watermark: a backfill
    inc = materialize(store=store, incremental=True, end=pd.Timestamp(T0 + pd.Timedelta(days=11)).to_pydatetime())
    assert inc.views[0].reread == [str(project / "data" / "events" / "c.parquet")]
    assert inc.rows_read == 1 and inc.keys_written == 1
    got = store.get_many([(namespace(load_definitions().view("ev")), ["1", "2"])])[0]
    assert [json.loads(g or b"{}")["x"] for g in got] == [3.0, 2.0]


def test_values_expire_in_the_store_at_event_time_plus_ttl(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.features.conftest import set_store_clock

    _, data = churn_project
    apply()
    store = open_kv_store(f"sqlite:///{tmp_path / 'ttl.db'}")
    materialize(["usage"], store=store)
    ns = namespace(load_definitions().view("usage"))
    last = data["usage"].groupby("customer_id").event_timestamp.max()
    # customers 46..50 have usage only in the first week: 30 days later they are gone from the store
    at = last.loc[46] + pd.Timedelta(days=30, seconds=1)
    set_store_clock(monkeypatch, at.to_pydatetime())
    got = store.get_many([(ns, [str(i) for i in range(1, 51)])])[0]
    gone = [i + 1 for i, g in enumerate(got) if g is None]
    assert gone == [c for c in range(1, 51) if last.loc[c] + pd.Timedelta(days=30) < at]
    assert gone and len(gone) < 50
    assert store.sweep() == len(gone) and store.count(ns) == 50 - len(gone)
    store.close()


def test_versions_of_a_view_keep_their_own_values_until_retired(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    import os

    import keel
    from keel.errors import ConflictError
    from keel.features.materialization import retire

    root, _ = churn_project
    make_churn_data(root, start=datetime.now(UTC) - pd.Timedelta(days=40))  # recent: within the TTL
    apply()
    store = open_kv_store("memory://versions")
    materialize(["usage"], store=store)
    v1 = keel.get_online_features(["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store)
    path = root / "features.py"
    path.write_text(path.read_text().replace("minutes / nullif(sessions, 0)", "minutes / nullif(sessions + 1, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert apply().definitions_version == 2
    defs = load_definitions()
    # the new version is empty until materialized: nothing is read from the old one
    fresh = keel.get_online_features(["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store, definitions=defs)
    assert fresh.status["minutes_per_session"] == ["missing", "missing"]
    materialize(["usage"], store=store, definitions=defs)
    v2 = keel.get_online_features(["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store, definitions=defs)
    assert v2.values != v1.values
    # a model pinned to definitions version 1 keeps reading version 1's values
    pinned = keel.get_online_features(["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store, definitions_version=1)
    assert pinned.values == v1.values
    with pytest.raises(ConflictError, match="cannot be retired"):
        retire("usage", 2, store=store)
    retire("usage", 1, store=store)
    gone = keel.get_online_features(["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store, definitions_version=1)
    assert gone.status["minutes_per_session"] == ["missing", "missing"]
    assert keel.get_online_features(
        ["usage:minutes_per_session"], {"customer_id": [1, 2]}, store=store, definitions=defs
    ).values == v2.values
