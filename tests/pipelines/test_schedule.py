"""Schedules and triggers start runs (driven with an explicit clock); loops are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import keel
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.pipelines.schedule import Cron, add_schedule, list_schedules, remove_schedule
from keel.pipelines.triggers import run_scheduler, tick

EVENTS = '''
from pathlib import Path
import keel


@keel.step
def ingest(folder: str, event) -> int:
    return len(list(Path(folder).glob("*.csv")))


@keel.pipeline(experiment="ingest")
def ingest_flow(folder: str = "incoming", event: dict | None = None):
    return ingest(folder, event)


@keel.step(produces=["incoming"])
def export(n: int) -> int:
    Path("incoming").mkdir(exist_ok=True)
    return n


@keel.pipeline
def loops(n: int = 1, event: dict | None = None):
    return export(n)


@keel.pipeline(produces=["stage_b"])
def a_to_b(event: dict | None = None):
    return export(1)


@keel.pipeline(produces=["stage_a"])
def b_to_a(event: dict | None = None):
    return export(2)
'''

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_cron_parsing_and_next_time() -> None:
    c = Cron("0 3 * * *")
    assert c.next_after(T0) == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert Cron("*/15 * * * mon-fri").next_after(datetime(2026, 1, 3, 0, 1, tzinfo=UTC)) == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    with pytest.raises(ValidationError, match="does not have 5 fields"):
        Cron("0 3 * *")
    with pytest.raises(ValidationError, match="hour '25' is outside 0-23"):
        Cron("0 25 * * *")


def test_cron_schedule_starts_a_run_once_when_due(write_module) -> None:
    write_module("events_mod", EVENTS)
    add_schedule("nightly", "events_mod:ingest_flow", cron="0 3 * * *", now=T0)
    assert tick(T0 + timedelta(hours=1)) == []
    fired = run_scheduler(once=True, clock=lambda: T0 + timedelta(hours=15, minutes=2))
    assert [(f.schedule, f.status) for f in fired] == [("nightly", "finished")]
    info = keel.get_run(fired[0].run_id)  # type: ignore[arg-type]
    assert info.tags["keel.trigger"] == "schedule:nightly" and info.tags["keel.trigger.kind"] == "cron"
    assert tick(T0 + timedelta(hours=15, minutes=3)) == []  # not due again until tomorrow
    (s,) = list_schedules()
    assert s.last_run_id == fired[0].run_id
    with pytest.raises(ConflictError):
        add_schedule("nightly", "events_mod:ingest_flow", cron="0 3 * * *")
    with pytest.raises(NotFoundError, match="Did you mean 'nightly'"):
        remove_schedule("nightli")
    remove_schedule("nightly")
    assert list_schedules() == []


def test_new_data_in_a_source_triggers_a_run_with_the_event(write_module, project: Path) -> None:
    write_module("events_mod", EVENTS)
    (project / "incoming").mkdir()
    (project / "incoming" / "a.csv").write_text("x\n1\n")
    add_schedule("on-data", "events_mod:ingest_flow", on_source="incoming")
    assert tick() == []  # nothing new since the trigger was added
    (project / "incoming" / "b.csv").write_text("x\n2\n")
    (fired,) = tick()
    assert fired.status == "finished" and fired.event["kind"] == "source"
    from keel.pipelines.runner import run_steps

    row, _ = run_steps(fired.run_id)  # type: ignore[arg-type]
    import json

    assert json.loads(row.params)["event"]["path"] == "incoming"
    assert keel.get_run(fired.run_id).tags["keel.trigger"] == "schedule:on-data"  # type: ignore[arg-type]
    assert tick() == []


def test_model_registered_triggers_a_run(write_module) -> None:
    write_module("events_mod", EVENTS)
    from keel.store.metadata import get_metadata_store

    store = get_metadata_store()
    with store.read() as conn:
        if not sa.inspect(conn).has_table("model_events"):
            pytest.skip("the registry's model_events table is not in this schema yet")
    add_schedule("on-model", "events_mod:ingest_flow", on_model="churn")
    assert tick() == []
    with store.write() as conn:
        t = sa.Table("model_events", sa.MetaData(), autoload_with=conn)
        conn.execute(sa.insert(t).values(model_id=1, model="churn", action="register", to_version=3, outcome="applied", user="me", ts_ms=1))
    (fired,) = tick()
    assert fired.event == {"kind": "model", "model": "churn", "version": 3, "event_id": fired.event["event_id"]}
    assert tick() == []


def test_a_trigger_that_would_start_itself_is_refused(write_module) -> None:
    write_module("events_mod", EVENTS)
    with pytest.raises(ValidationError, match="would start a loop"):
        add_schedule("self", "events_mod:loops", on_source="incoming")
    add_schedule("ab", "events_mod:a_to_b", on_source="stage_a")
    with pytest.raises(ValidationError, match="would start a loop"):
        add_schedule("ba", "events_mod:b_to_a", on_source="stage_b")
    assert [s.name for s in list_schedules()] == ["ab"]


def test_bad_schedules_are_refused(write_module) -> None:
    write_module("events_mod", EVENTS)
    with pytest.raises(ValidationError, match="exactly one of"):
        add_schedule("x", "events_mod:ingest_flow")
    with pytest.raises(ValidationError, match="has no parameter 'foldr'"):
        add_schedule("x", "events_mod:ingest_flow", cron="* * * * *", params={"foldr": "a"})
    with pytest.raises(ValidationError, match="has no timezone"):
        tick(datetime(2026, 1, 1))
