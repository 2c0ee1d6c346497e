"""Materialization: idempotent, incremental by watermark, never half a row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from keel.errors import ValidationError
from keel.features import materialization
from keel.features.materialization import materialize, namespace, watermarks
from keel.features.registry import apply
from keel.store.kv import MemoryKV, open_kv_store


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
    assert inc.rows_read == int(((usage.created_timestamp > "2024-02-01") & (usage.created_timestamp <= "2024-02-06")).sum()) + 1
    value = json.loads(store.get_many([(namespace("usage"), ["46"])])[0][0] or b"{}")
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

    def put_many(self, namespace: str, keys: Sequence[str], versions: Sequence[str], values: Sequence[bytes]) -> int:
        self.calls += 1
        if self.calls > self.fail_after:
            raise ConnectionError("store went away")
        return super().put_many(namespace, keys, versions, values)


def test_a_failed_run_leaves_each_key_whole_and_the_watermark_unmoved(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], monkeypatch: pytest.MonkeyPatch
) -> None:
    apply()
    old = FailingKV("memory://fail", fail_after=10**9)
    materialize(["usage"], store=old, end=datetime(2024, 1, 20, tzinfo=UTC))
    before = {k: v for k, v in zip(map(str, range(1, 51)), old.get_many([(namespace("usage"), [str(i) for i in range(1, 51)])])[0], strict=True)}
    mark = watermarks()["usage"]["watermark_ms"]
    monkeypatch.setattr(materialization, "_BATCH", 7)
    failing = FailingKV("memory://fail", fail_after=2)
    with pytest.raises(ConnectionError):
        materialize(["usage"], store=failing, end=datetime(2024, 3, 1, tzinfo=UTC))
    after = failing.get_many([(namespace("usage"), [str(i) for i in range(1, 51)])])[0]
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
