"""Schedules and triggers start runs (driven with an explicit clock); loops are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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
    with pytest.raises(ValidationError, match=r"Cron expression '0 25 \* \* \*' is not valid: .*out of range"):
        Cron("0 25 * * *")
    with pytest.raises(ValidationError, match="is not valid"):
        Cron("x * * * *")
    # croniter's rules: day-of-month and day-of-week restricted together match either (Vixie cron)
    assert Cron("0 0 13 * fri").next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert Cron("@daily").next_after(T0) == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert Cron("0 3 * * *").matches(datetime(2026, 1, 5, 3, 0, 30, tzinfo=UTC))


def test_the_hand_written_cron_parser_is_gone() -> None:
    import inspect

    from keel.pipelines import schedule

    assert "croniter" in inspect.getsource(schedule.Cron) and not hasattr(schedule, "_FIELDS")


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


MODEL_FLOW = """
import pandas as pd
from sklearn.linear_model import LogisticRegression

import keel


@keel.step
def train(n: int) -> LogisticRegression:
    x = pd.DataFrame({"a": [float(i) for i in range(n)]})
    return LogisticRegression().fit(x, [int(i >= n / 2) for i in range(n)])


@keel.pipeline(experiment="trained")
def fit(n: int = 20):
    return train(n)
"""


def test_model_triggers_fire_on_registration_promotion_and_alias_moves(write_module) -> None:
    write_module("events_mod", EVENTS)
    models = write_module("model_flow", MODEL_FLOW)
    uri = models.fit.run().model_uri("train")
    add_schedule("on-model", "events_mod:ingest_flow", on_model="fitted")
    add_schedule("on-prod", "events_mod:ingest_flow", on_model="fitted@production")
    assert tick() == []
    keel.register_model(uri, "fitted")
    (fired,) = tick()
    assert fired.schedule == "on-model" and fired.event["action"] == "register" and fired.event["version"] == 1
    keel.promote("fitted", 1, to="production")
    fired_all = sorted(tick(), key=lambda f: f.schedule)
    assert [(f.schedule, f.event["action"], f.event["target"]) for f in fired_all] == [
        ("on-model", "promote", "production"), ("on-prod", "promote", "production"),
    ]
    from keel.registry import set_alias

    set_alias("fitted", "champion", 1)
    (fired,) = tick()  # an alias move fires the trigger on the model, not the one on production
    assert fired.schedule == "on-model" and fired.event["action"] == "alias" and fired.event["target"] == "champion"
    assert all(f.status == "finished" for f in fired_all)
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
