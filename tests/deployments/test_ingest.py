"""keel features ingest: events from a stream through push — online, offline, contracts, dead letters, no double push."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

import keel
from keel.features.offline import build_training_set
from keel.features.registry import apply
from keel.features.stream_ingest import Ingestor
from tests.deployments.test_stream import outputs, redis_client
from tests.features.conftest import churn_project  # noqa: F401  (fixture)


def usage_event(customer: int, when: datetime, minutes: float = 10.0, sessions: int = 4) -> dict[str, Any]:
    return {"customer_id": customer, "sessions": sessions, "minutes": minutes, "support_tickets": 0, "payment_failures": 1,
            "event_timestamp": when.isoformat()}


def add(uri: str, items: list[tuple[str, bytes]]) -> None:
    client, name = redis_client(uri)
    for eid, data in items:
        client.xadd(name, {"id": eid, "data": data})
    client.close()


def test_ingested_events_are_online_and_offline_through_the_views_definition(churn_project: tuple[Path, dict[str, pd.DataFrame]],  # noqa: F811
                                                                              redis_streams: tuple[str, str]) -> None:
    from keel.store.kv import open_kv_store

    apply()
    source, _ = redis_streams
    store = open_kv_store("memory://ingest")
    now = datetime.now(UTC).replace(microsecond=0)
    add(source, [(f"u{c}", orjson.dumps(usage_event(c, now - timedelta(seconds=5), minutes=10.0 * c))) for c in range(1, 41)])
    ing = Ingestor("usage", source=source, max_events=16, store=store)
    stats = asyncio.run(ing.run(idle_exit_s=1.0))
    assert stats.events == 40 and stats.rows_pushed == 40 and stats.dead_lettered == 0 and stats.freshness_p50_s is not None
    got = keel.get_online_features(["usage:minutes_per_session"], [{"customer_id": 3}], store=store)
    assert got.values["minutes_per_session"] == [7.5]  # 30 minutes / 4 sessions: the view's transformation
    edf = pd.DataFrame({"customer_id": [3], "event_timestamp": [pd.Timestamp(datetime.now(UTC))]})
    train = build_training_set(edf, ["usage:minutes_per_session"], require_applied=False)
    assert train["minutes_per_session"].tolist() == [7.5]


def test_bad_events_go_to_the_dead_letter_stream_and_redeliveries_are_not_pushed_twice(
        churn_project: tuple[Path, dict[str, pd.DataFrame]], redis_streams: tuple[str, str]) -> None:  # noqa: F811
    from keel.store.kv import open_kv_store

    apply()
    source, _ = redis_streams
    store = open_kv_store("memory://ingest-bad")
    now = datetime.now(UTC)
    good = [(f"g{i}", orjson.dumps(usage_event(100 + i, now))) for i in range(5)]
    bad = [("not-json", b"{oops"), ("naive-time", orjson.dumps({**usage_event(9, now), "event_timestamp": "2026-01-01 10:00"})),
           ("missing-col", orjson.dumps({k: v for k, v in usage_event(9, now).items() if k != "minutes"}))]
    add(source, good + bad)
    first = Ingestor("usage", source=source, store=store)
    first.source.consumer = "w1"  # type: ignore[union-attr]

    async def die(events: Any) -> None:
        raise SystemExit

    first.source.ack = die  # type: ignore[method-assign]  # pushed, then crashed before acknowledging
    with pytest.raises(SystemExit):
        asyncio.run(first.run(idle_exit_s=1.0))
    again = Ingestor("usage", source=source, store=store)
    again.source.consumer = "w1"  # type: ignore[union-attr]
    stats = asyncio.run(again.run(idle_exit_s=1.0))
    dead = {d["id"]: d["reason"] for d in outputs(source + ".dead")}
    assert stats.redelivered == 5 and stats.rows_pushed == 0, dead  # the good ones were pushed once, by the first
    dead = {d["id"]: d["reason"] for d in outputs(source + ".dead")}
    assert set(dead) == {"not-json", "naive-time", "missing-col"}
    assert "minutes" in dead["missing-col"]


def test_cli_ingest(churn_project: tuple[Path, dict[str, pd.DataFrame]], redis_streams: tuple[str, str]) -> None:  # noqa: F811
    from keel.cli.main import app

    apply()
    source, _ = redis_streams
    add(source, [(f"c{i}", orjson.dumps(usage_event(200 + i, datetime.now(UTC)))) for i in range(10)])
    out = CliRunner().invoke(app, ["features", "ingest", "usage", "--source", source, "--stop-after", "10", "--to", "offline", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows_pushed"] == 10
    bad = CliRunner().invoke(app, ["features", "ingest", "usag", "--source", source])
    assert bad.exit_code == 1 and "usage" in bad.output and "Traceback" not in bad.output
