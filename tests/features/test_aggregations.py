"""Windowed aggregations: one definition, the same numbers offline, online and in a brute-force oracle."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from keel.errors import ValidationError
from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source, String
from keel.features.loader import Definitions
from keel.features.materialization import materialize
from keel.features.offline import build_training_set
from keel.features.online import lookup
from keel.store.kv import open_kv_store

BERLIN = ZoneInfo("Europe/Berlin")
# around the spring daylight-saving change in Berlin (2024-03-31 02:00 local)
START = datetime(2024, 3, 20, tzinfo=UTC)
END = datetime(2024, 4, 10, tzinfo=UTC)

AGGS = [
    Aggregation("amount", "sum", "1h"),
    Aggregation("amount", "sum", "1d", empty=0),
    Aggregation("amount", "mean", "7d"),
    Aggregation("amount", "min", "1d"),
    Aggregation("amount", "max", "7d"),
    Aggregation("amount", "stddev", "7d"),
    Aggregation("amount", "stddev_pop", "1d"),
    Aggregation("amount", "count", "1d"),
    Aggregation(None, "count", "7d"),
    Aggregation("kind", "count_distinct", "7d"),
    Aggregation(None, "time_since_last", "7d"),
    Aggregation("amount", "sum", "7d", calendar=True, timezone="Europe/Berlin"),
    Aggregation("amount", "count", "2d", calendar=True, timezone="Europe/Berlin", name="amount_count_2d_local"),
    Aggregation("amount", "sum", "7d", where="kind = 'ok'", name="ok_amount_sum_7d"),
]


def make_events(seed: int = 1, customers: int = 6, n: int = 900) -> pd.DataFrame:
    """Events with ties (equal event times), late arrivals, gaps (empty windows) and the DST change."""
    rng = np.random.default_rng(seed)
    span = int((END - START).total_seconds())
    seconds = rng.integers(0, span, n)
    seconds[::10] = seconds[1::10][: len(seconds[::10])]  # ties: every 10th event at another's time
    cid = rng.integers(1, customers + 1, n).astype(np.int64)
    cid[::10] = cid[1::10][: len(cid[::10])]
    event = pd.Timestamp(START) + pd.to_timedelta(seconds, unit="s")
    delay = np.where(rng.random(n) < 0.15, rng.integers(3600, 5 * 86400, n), rng.integers(0, 120, n))  # 15% late
    frame = pd.DataFrame(
        {
            "customer_id": cid,
            "amount": np.round(rng.gamma(2.0, 20.0, n), 3),
            "kind": rng.choice(["ok", "refund", "chargeback"], n, p=[0.7, 0.2, 0.1]),
            "event_timestamp": event,
            "created_timestamp": event + pd.to_timedelta(delay, unit="s"),
        }
    )
    # customer 6 is silent for a week: empty windows
    quiet = (frame.customer_id == 6) & (frame.event_timestamp > pd.Timestamp("2024-03-27", tz="UTC"))
    frame.loc[frame.customer_id == 6, "amount"] = frame.loc[frame.customer_id == 6, "amount"].where(~quiet)
    return frame[~quiet | frame.amount.notna()].reset_index(drop=True)


def definitions(events: pd.DataFrame, late_events: str = "respect_created_time") -> Definitions:
    customer = Entity("customer", join_keys=["customer_id"])
    src = Source("payments", df=events, created_timestamp_field="created_timestamp")
    view = FeatureView(
        "payments", entities=[customer], source=src, ttl=timedelta(days=8),
        schema=[Field("amount", Float64), Field("kind", String)], aggregations=AGGS, late_events=late_events,
    )
    return Definitions([view])


def _calendar_start(t: datetime, days: int) -> datetime:
    local = t.astimezone(BERLIN)
    return datetime.combine(local.date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=BERLIN)


_grouped: dict[int, tuple[pd.DataFrame, dict[int, list[Any]]]] = {}


def _by_customer(events: pd.DataFrame) -> dict[int, list[Any]]:
    hit = _grouped.get(id(events))
    if hit is None or hit[0] is not events:
        groups: dict[int, list[Any]] = {}
        for r in events.itertuples():
            groups.setdefault(r.customer_id, []).append(r)
        hit = _grouped[id(events)] = (events, groups)
    return hit[1]


def oracle(events: pd.DataFrame, key: int, t: datetime, agg: Aggregation, respect_created: bool) -> Any:
    """The aggregate by its definition, one event at a time."""
    rows = []
    for r in _by_customer(events).get(key, []):
        if r.event_timestamp.to_pydatetime() > t:
            continue
        e = r.event_timestamp.to_pydatetime()
        if agg.calendar:
            if e < _calendar_start(t, agg.days):
                continue
        elif e <= t - agg.span:
            continue
        if respect_created and r.created_timestamp.to_pydatetime() > t:
            continue
        if agg.where and r.kind != "ok":
            continue
        rows.append(r)
    f = agg.function
    if f == "time_since_last":
        return (t - max(r.event_timestamp for r in rows).to_pydatetime()).total_seconds() if rows else None
    if agg.column is None:
        return len(rows)
    values = [getattr(r, agg.column) for r in rows if not pd.isna(getattr(r, agg.column))]
    if f == "count":
        return len(values)
    if f == "count_distinct":
        return len(set(values))
    if not values:
        return agg.empty
    if f == "sum":
        return sum(values)
    if f == "min":
        return min(values)
    if f == "max":
        return max(values)
    mean = sum(values) / len(values)
    if f == "mean":
        return mean
    dof = len(values) - (1 if f == "stddev" else 0)
    return None if dof <= 0 else math.sqrt(sum((x - mean) ** 2 for x in values) / dof)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def entity_rows(seed: int = 2, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    span = int((END - START).total_seconds()) + 3 * 86400
    when = pd.Timestamp(START) + pd.to_timedelta(rng.integers(0, span, n), unit="s")
    # rows exactly at local midnights on both sides of the DST change, and at event times
    extra = pd.to_datetime(["2024-03-30 23:00", "2024-03-31 22:00", "2024-03-31 00:30", "2024-04-01 21:59:59"], utc=True, format="ISO8601")
    return pd.DataFrame(
        {"customer_id": np.r_[rng.integers(1, 8, n), [1, 2, 3, 7]].astype(np.int64), "event_timestamp": np.r_[when, extra]}
    )


@pytest.mark.slow
@pytest.mark.parametrize("late_events", ["respect_created_time", "by_event_time"])
def test_offline_values_equal_the_oracle(project: Path, late_events: str) -> None:
    events = make_events()
    entity = entity_rows()
    edges = events.sample(20, random_state=0)[["customer_id", "event_timestamp"]]  # at event times: ties at the edge
    entity = pd.concat([entity, edges], ignore_index=True)
    defs = definitions(events, late_events)
    names = [str(a.name) for a in AGGS]
    train = build_training_set(entity, [f"payments:{n}" for n in names], definitions=defs, require_applied=False)
    assert len(train) == len(entity) and train["customer_id"].tolist() == entity["customer_id"].tolist()
    respect = late_events == "respect_created_time"
    bad = []
    for i, row in enumerate(entity.itertuples()):
        for agg in AGGS:
            want = oracle(events, row.customer_id, row.event_timestamp.to_pydatetime(), agg, respect)
            got = train[agg.name].iloc[i]
            got = None if pd.isna(got) else got
            if not close(got, want):
                bad.append((i, agg.name, got, want))
    assert not bad, bad[:5]
    # empty windows: count is 0, sum with empty=0 is 0, the rest null
    empty = train[train["events_count_7d"] == 0]
    assert len(empty) and (empty["amount_sum_1d"] == 0).all() and empty["amount_mean_7d"].isna().all()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["numpy", "loop"])
def test_online_values_equal_offline_at_the_same_instant(project: Path, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    from keel.features import aggregation_online
    from tests.features.conftest import set_store_clock

    set_store_clock(monkeypatch, START)  # the store expires states by the clock; the data is from 2024
    # a lookup of many entities computes with NumPy, of a few in a loop: both give the same numbers
    monkeypatch.setattr(aggregation_online, "_NUMPY_FROM", 1 if path == "numpy" else 10**9)
    events = make_events(seed=3)
    defs = definitions(events)
    store = open_kv_store("memory://agg-online")
    at = datetime(2024, 4, 1, 6, 30, tzinfo=UTC)  # the day after the DST change
    from keel.features.registry import apply

    apply(defs)
    materialize(definitions=defs, store=store, end=at)
    ids = list(range(1, 9))
    names = [f"payments:{a.name}" for a in AGGS]
    online = lookup(defs.select(names), {"customer_id": ids}, store, now_us=int(at.timestamp() * 1_000_000))
    offline = build_training_set(
        pd.DataFrame({"customer_id": ids, "event_timestamp": [pd.Timestamp(at)] * len(ids)}), names, definitions=defs,
        require_applied=False,
    )
    for agg in AGGS:
        off = [None if pd.isna(v) else v for v in offline[agg.name]]
        assert all(close(a, b) for a, b in zip(online.values[str(agg.name)], off, strict=True)), (agg.name, online.values[str(agg.name)], off)
    # later instants, no new events: old events leave the windows without any write
    for later in (at + timedelta(hours=5), at + timedelta(days=3)):
        online = lookup(defs.select(names), {"customer_id": ids}, store, now_us=int(later.timestamp() * 1_000_000))
        for agg in AGGS:
            want = [oracle(events[events.created_timestamp <= pd.Timestamp(at)], c, later, agg, True) for c in ids]
            assert all(close(a, b) for a, b in zip(online.values[str(agg.name)], want, strict=True)), (agg.name, later)
    assert online.status["amount_sum_1h"][-1] == "missing"  # customer 8 has no events


def test_bad_definitions_name_the_view_the_aggregation_and_the_fix(project: Path) -> None:
    customer = Entity("customer", join_keys=["customer_id"])
    src = Source("payments", df=make_events(), created_timestamp_field="created_timestamp")

    def view(*aggs: Aggregation, ttl: timedelta | None = timedelta(days=30), schema: list[Field] | None = None) -> FeatureView:
        return FeatureView("payments", entities=[customer], source=src, ttl=ttl,
                           schema=schema or [Field("amount", Float64), Field("kind", String)], aggregations=list(aggs))

    with pytest.raises(ValidationError, match=r"'payments', aggregation 'amount_sum_60d'.*longer than the view's ttl.*Raise ttl="):
        view(Aggregation("amount", "sum", "60d"))
    with pytest.raises(ValidationError, match=r"aggregation 'kind_mean_7d': mean does not fit column 'kind' of type string"):
        view(Aggregation("kind", "mean", "7d"))
    with pytest.raises(ValidationError, match="calendar window needs a timezone"):
        Aggregation("amount", "sum", "7d", calendar=True)
    with pytest.raises(ValidationError, match=r"unknown timezone 'Europe/Berlln'\. Did you mean 'Europe/Berlin'"):
        Aggregation("amount", "sum", "7d", calendar=True, timezone="Europe/Berlln")
    with pytest.raises(ValidationError, match="unknown function 'avg'"):
        Aggregation("amount", "avg", "7d")
    with pytest.raises(ValidationError, match="window '7 days' is not a duration"):
        Aggregation("amount", "sum", "7 days")
    with pytest.raises(ValidationError, match=r"column 'amout' is not in the view's schema\. Did you mean 'amount'"):
        view(Aggregation("amout", "sum", "7d"))
    from keel.features.offline import validate_view

    with pytest.raises(ValidationError, match=r"aggregation 'amount_sum_7d': the filter 'kind = = 1' does not work"):
        validate_view(view(Aggregation("amount", "sum", "7d", where="kind = = 1")))
    with pytest.raises(ValidationError, match="filter 'nope > 1' does not work"):
        validate_view(view(Aggregation("amount", "sum", "7d", where="nope > 1")))


def test_apply_rejects_a_bad_aggregation_with_one_line(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    from typer.testing import CliRunner

    from keel.cli.main import app

    root, _ = churn_project
    (root / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "u = FeatureView('usage', entities=[c], ttl=timedelta(days=7), schema=[Field('minutes', Float64)],\n"
        "    source=Source('usage', path='data/usage.parquet', created_timestamp_field='created_timestamp'),\n"
        "    aggregations=[Aggregation('minutes', 'sum', '30d')])\n"
    )
    res = CliRunner().invoke(app, ["features", "apply"])
    assert res.exit_code == 1
    assert "aggregation 'minutes_sum_30d'" in res.output and "ttl" in res.output and "Traceback" not in res.output


def test_changing_a_window_is_a_breaking_change(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    from keel.errors import ConflictError
    from keel.features.registry import apply

    root, _ = churn_project
    text = (
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureService, FeatureView, Field, Float64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "u = FeatureView('usage', entities=[c], ttl=timedelta(days=31), schema=[Field('minutes', Float64)],\n"
        "    source=Source('usage', path='data/usage.parquet', created_timestamp_field='created_timestamp'),\n"
        "    aggregations=[Aggregation('minutes', 'sum', 'WINDOW', name='minutes_total')])\n"
        "s = FeatureService('s', features=[u])\n"
    )
    (root / "features.py").write_text(text.replace("WINDOW", "7d"))
    apply()
    import os

    path = root / "features.py"
    path.write_text(text.replace("WINDOW", "30d"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ConflictError, match=r"usage\.minutes_total: aggregation window_seconds changed"):
        apply()


def test_push_updates_the_aggregates_without_rescanning(project: Path) -> None:
    import keel
    from keel.features.registry import apply

    now = datetime.now(UTC)
    events = pd.DataFrame(
        {
            "customer_id": np.array([1, 1, 2], dtype=np.int64), "amount": [10.0, 20.0, 5.0],
            "event_timestamp": [pd.Timestamp(now - timedelta(days=3)), pd.Timestamp(now - timedelta(hours=2)), pd.Timestamp(now - timedelta(hours=20))],
        }
    )
    events["created_timestamp"] = events["event_timestamp"]
    defs = definitions(events.assign(kind="ok"))
    apply(defs)
    store = open_kv_store("memory://agg-push")
    materialize(definitions=defs, store=store)
    refs = ["payments:amount_sum_1d", "payments:events_count_7d", "payments:amount_max_7d"]
    before = keel.get_online_features(refs, {"customer_id": [1, 2, 3]}, definitions=defs, store=store).values
    assert before == {"amount_sum_1d": [20.0, 5.0, 0], "events_count_7d": [2, 1, 0], "amount_max_7d": [20.0, 5.0, None]}
    # a late event (3 hours old) arrives: it counts from now on, and a push reads only customer 1's state
    late = pd.DataFrame({"customer_id": [1], "amount": [7.5], "kind": ["ok"], "event_timestamp": [pd.Timestamp(now - timedelta(hours=3))]})
    calls: list[Any] = []
    real = store.get_many
    store.get_many = lambda reqs: calls.append(reqs) or real(reqs)  # type: ignore[method-assign]
    res = keel.push("payments", late, definitions=defs, store=store, to="online")
    assert res.keys_written == 1 and calls == [[(calls[0][0][0], ["1"])]]
    after = keel.get_online_features(refs, {"customer_id": [1, 2, 3]}, definitions=defs, store=store).values
    assert after == {"amount_sum_1d": [27.5, 5.0, 0], "events_count_7d": [3, 1, 0], "amount_max_7d": [20.0, 5.0, None]}


def test_push_through_a_sql_transformation_updates_the_same_state(project: Path) -> None:
    """A view with a SQL transformation pushes through DuckDB (push_events): same state, same numbers."""
    import keel
    from keel.features.registry import apply

    now = datetime.now(UTC)
    events = pd.DataFrame({
        "customer_id": np.array([1, 2], dtype=np.int64), "cents": [1000, 500],
        "event_timestamp": [pd.Timestamp(now - timedelta(hours=5)), pd.Timestamp(now - timedelta(hours=3))],
    })
    customer = Entity("customer", join_keys=["customer_id"])
    view = FeatureView(
        "spend", entities=[customer], source=Source("spend", df=events), ttl=timedelta(days=2),
        transformation="SELECT *, cents / 100.0 AS amount FROM source", schema=[Field("amount", Float64)],
        aggregations=[Aggregation("amount", "sum", "1d", empty=0), Aggregation(None, "count", "1d")],
    )
    defs = Definitions([view])
    apply(defs)
    store = open_kv_store("memory://agg-sql-push")
    materialize(definitions=defs, store=store)
    keel.push("spend", pd.DataFrame({"customer_id": [1, 1], "cents": [250, 250],
                                     "event_timestamp": [pd.Timestamp(now - timedelta(hours=1))] * 2}),
              definitions=defs, store=store, to="online")  # a tie: both count
    got = keel.get_online_features(["spend:amount_sum_1d", "spend:events_count_1d"], {"customer_id": [1, 2, 3]}, definitions=defs, store=store)
    assert got.values == {"amount_sum_1d": [15.0, 5.0, 0], "events_count_1d": [3, 1, 0]}
