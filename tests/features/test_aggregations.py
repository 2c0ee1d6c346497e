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
from keel.features.aggregation_online import encode_row
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
    Aggregation("amount", "last_n", "1d", n=3),
    Aggregation("kind", "last_n", "7d", n=2, where="amount > 30", name="big_kinds_7d"),
]
# tiles: the same functions over windows cut into 1-hour tiles (and last-N), one view
TILED = [
    Aggregation("amount", f, w, aggregation_interval="1h")
    for f in ("sum", "count", "mean", "min", "max", "stddev", "stddev_pop") for w in ("6h", "1d", "7d")
] + [
    Aggregation(None, "count", "1d", aggregation_interval="1h"),
    Aggregation("kind", "count_distinct", "7d", aggregation_interval="1h"),
    Aggregation(None, "time_since_last", "1d", aggregation_interval="1h"),
    Aggregation("amount", "last_n", "1d", n=4, aggregation_interval="1h"),
    Aggregation("amount", "sum", "7d", where="kind = 'ok'", name="ok_amount_sum_7d", aggregation_interval="1h"),
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


def definitions(events: pd.DataFrame, late_events: str = "respect_created_time", aggs: list[Aggregation] = AGGS) -> Definitions:
    customer = Entity("customer", join_keys=["customer_id"])
    src = Source("payments", df=events, created_timestamp_field="created_timestamp")
    view = FeatureView(
        "payments", entities=[customer], source=src, ttl=timedelta(days=8),
        schema=[Field("amount", Float64), Field("kind", String)], aggregations=aggs, late_events=late_events,
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
        elif agg.interval is not None:  # the N tiles ending with the tile of t
            tile = agg.interval.total_seconds()
            first = datetime.fromtimestamp((t.timestamp() // tile - (agg.tiles - 1)) * tile, UTC)
            if e < first:
                continue
        elif e <= t - agg.span:
            continue
        if respect_created and r.created_timestamp.to_pydatetime() > t:
            continue
        if agg.where and not (r.kind == "ok" if "kind" in agg.where else r.amount > 30):
            continue
        rows.append(r)
    f = agg.function
    if f == "last_n":
        newest = sorted(((r.event_timestamp, r.created_timestamp, getattr(r, str(agg.column))) for r in rows
                         if not pd.isna(getattr(r, str(agg.column)))), reverse=True)
        return [v for _, _, v in newest[: agg.n]] or None
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
    if isinstance(a, list | np.ndarray) or isinstance(b, list):
        return a is not None and b is not None and list(a) == list(b)
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
@pytest.mark.parametrize(("late_events", "aggs"), [
    ("respect_created_time", AGGS), ("by_event_time", AGGS), ("respect_created_time", TILED), ("by_event_time", TILED),
], ids=["exact-respect", "exact-by_event", "tiled-respect", "tiled-by_event"])
def test_offline_values_equal_the_oracle(project: Path, late_events: str, aggs: list[Aggregation]) -> None:
    events = make_events()
    entity = entity_rows()
    edges = events.sample(20, random_state=0)[["customer_id", "event_timestamp"]]  # at event times: ties at the edge
    # at tile edges: a tile's first and last microsecond
    hours = events.event_timestamp.dt.floor("h").sample(10, random_state=1)
    tiles = pd.DataFrame({"customer_id": events.customer_id.sample(20, random_state=2).to_numpy(),
                          "event_timestamp": np.r_[hours, hours + pd.Timedelta(hours=1) - pd.Timedelta(microseconds=1)]})
    entity = pd.concat([entity, edges, tiles], ignore_index=True)
    defs = definitions(events, late_events, aggs)
    names = [str(a.name) for a in aggs]
    train = build_training_set(entity, [f"payments:{n}" for n in names], definitions=defs, require_applied=False)
    assert len(train) == len(entity) and train["customer_id"].tolist() == entity["customer_id"].tolist()
    respect = late_events == "respect_created_time"
    bad = []
    for i, row in enumerate(entity.itertuples()):
        for agg in aggs:
            want = oracle(events, row.customer_id, row.event_timestamp.to_pydatetime(), agg, respect)
            got = train[agg.name].iloc[i]
            got = got if isinstance(got, list | np.ndarray) or not pd.isna(got) else None
            if not close(got, want):
                bad.append((i, agg.name, got, want))
    assert not bad, bad[:5]
    if aggs is TILED:  # the tiles are not the exact windows: some values differ from the exact oracle
        exact = [Aggregation(a.column, a.function, a.window, where=a.where, n=a.n) for a in aggs]
        moved = sum(
            not close(None if pd.isna(train[a.name].iloc[i]) else train[a.name].iloc[i], oracle(events, row.customer_id, row.event_timestamp.to_pydatetime(), x, respect))
            for i, row in enumerate(entity.itertuples()) for a, x in zip(aggs, exact, strict=True) if a.function == "sum"
        )
        assert moved > 20
        return
    # empty windows: count is 0, sum with empty=0 is 0, the rest null
    empty = train[train["events_count_7d"] == 0]
    assert len(empty) and (empty["amount_sum_1d"] == 0).all() and empty["amount_mean_7d"].isna().all()


@pytest.mark.slow
@pytest.mark.parametrize(("path", "aggs"), [("numpy", AGGS), ("loop", AGGS), ("loop", TILED)], ids=["numpy", "loop", "tiled"])
def test_online_values_equal_offline_at_the_same_instant(
    project: Path, monkeypatch: pytest.MonkeyPatch, path: str, aggs: list[Aggregation]
) -> None:
    from keel.features import aggregation_online
    from tests.features.conftest import set_store_clock

    set_store_clock(monkeypatch, START)  # the store expires states by the clock; the data is from 2024
    # a lookup of many entities computes with NumPy, of a few in a loop: both give the same numbers
    monkeypatch.setattr(aggregation_online, "_NUMPY_FROM", 1 if path == "numpy" else 10**9)
    events = make_events(seed=3)
    defs = definitions(events, aggs=aggs)
    store = open_kv_store(f"memory://agg-online-{path}-{len(aggs)}")
    at = datetime(2024, 4, 1, 6, 30, tzinfo=UTC)  # the day after the DST change
    from keel.features.registry import apply

    apply(defs)
    materialize(definitions=defs, store=store, end=at)
    ids = list(range(1, 9))
    names = [f"payments:{a.name}" for a in aggs]
    online = lookup(defs.select(names), {"customer_id": ids}, store, now_us=int(at.timestamp() * 1_000_000))
    offline = build_training_set(
        pd.DataFrame({"customer_id": ids, "event_timestamp": [pd.Timestamp(at)] * len(ids)}), names, definitions=defs,
        require_applied=False,
    )
    for agg in aggs:
        off = [v if isinstance(v, list | np.ndarray) or not pd.isna(v) else None for v in offline[agg.name]]
        assert all(close(a, b) for a, b in zip(online.values[str(agg.name)], off, strict=True)), (agg.name, online.values[str(agg.name)], off)
    # later instants, no new events: old events leave the windows without any write
    for later in (at + timedelta(hours=5), at + timedelta(days=3)):
        online = lookup(defs.select(names), {"customer_id": ids}, store, now_us=int(later.timestamp() * 1_000_000))
        for agg in aggs:
            want = [oracle(events[events.created_timestamp <= pd.Timestamp(at)], c, later, agg, True) for c in ids]
            assert all(close(a, b) for a, b in zip(online.values[str(agg.name)], want, strict=True)), (agg.name, later)
    assert online.status[str(aggs[0].name)][-1] == "missing"  # customer 8 has no events


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
    for bad, message in [
        (Aggregation("amount", "sum", "7d", calendar=True), "calendar window needs a timezone"),
        (Aggregation("amount", "sum", "7d", calendar=True, timezone="Europe/Berlln"), r"unknown timezone 'Europe/Berlln'\. Did you mean 'Europe/Berlin'"),
        (Aggregation("amount", "avg", "7d"), "unknown function 'avg'"),
        (Aggregation("amount", "sum", "7 days"), "window '7 days' is not a duration"),
        (Aggregation("amount", "last_n", "7d"), "last_n needs n= between 1 and 1000, not None"),
        (Aggregation("amount", "sum", "7d", n=3), "n= applies to last_n only"),
        (Aggregation("amount", "sum", "7d", aggregation_interval="5h"), r"window \(7d\) is not a whole number of aggregation_interval tiles \(5h\)"),
        (Aggregation("amount", "sum", "7d", calendar=True, timezone="UTC", aggregation_interval="1h"), "calendar window cannot have an aggregation_interval"),
    ]:
        with pytest.raises(ValidationError, match=r"^FeatureView 'payments', Aggregation\('amount', .*: .*" + message):
            view(bad)
    with pytest.raises(ValidationError, match=r"aggregation 'amount_sum_7d': its aggregation_interval \(1h\) differs from 'amount_sum_1d' \(none\)"):
        view(Aggregation("amount", "sum", "1d"), Aggregation("amount", "sum", "7d", aggregation_interval="1h"))
    with pytest.raises(ValidationError, match=r"column 'amout' is not in the view's schema\. Did you mean 'amount'"):
        view(Aggregation("amout", "sum", "7d"))
    from keel.features.offline import validate_view

    with pytest.raises(ValidationError, match=r"aggregation 'amount_sum_7d': the filter 'kind = = 1' does not work"):
        validate_view(view(Aggregation("amount", "sum", "7d", where="kind = = 1")))
    with pytest.raises(ValidationError, match="filter 'nope > 1' does not work"):
        validate_view(view(Aggregation("amount", "sum", "7d", where="nope > 1")))


@pytest.mark.parametrize(("aggregation", "says"), [
    ("Aggregation('minutes', 'sum', '30d')", "aggregation 'minutes_sum_30d': its window (30d) is longer than the view's ttl"),
    ("Aggregation('minutes', 'sum', '7d', where='minutes >')", "aggregation 'minutes_sum_7d': the filter 'minutes >' does not work"),
    ("Aggregation('minutes', 'sum', '7d', calendar=True)", "Aggregation('minutes', 'sum', '7d'): a calendar window needs a timezone"),
    ("Aggregation('minutes', 'sum', '7d', calendar=True, timezone='Mars/Olympus')", "unknown timezone 'Mars/Olympus'"),
    ("Aggregation('minutes', 'count_distinct', '1d', aggregation_interval='7h')", "is not a whole number of aggregation_interval tiles"),
], ids=["ttl", "filter", "calendar", "timezone", "tiles"])
def test_apply_rejects_a_bad_aggregation_with_one_line(
    churn_project: tuple[Path, dict[str, pd.DataFrame]], aggregation: str, says: str
) -> None:
    from typer.testing import CliRunner

    from keel.cli.main import app

    root, _ = churn_project
    (root / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "u = FeatureView('usage', entities=[c], ttl=timedelta(days=7), schema=[Field('minutes', Float64)],\n"
        "    source=Source('usage', path='data/usage.parquet', created_timestamp_field='created_timestamp'),\n"
        f"    aggregations=[{aggregation}])\n"
    )
    res = CliRunner().invoke(app, ["features", "apply"])
    assert res.exit_code == 1
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "FeatureView 'usage'" in out and says in out and "Traceback" not in out, out


@pytest.mark.parametrize(("after", "changed"), [("30d'", "window_seconds"), ("7d', aggregation_interval='1h'", "interval_seconds")])
def test_changing_a_window_is_a_breaking_change(churn_project: tuple[Path, dict[str, pd.DataFrame]], after: str, changed: str) -> None:
    from keel.errors import ConflictError
    from keel.features.registry import apply

    root, _ = churn_project
    text = (
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureService, FeatureView, Field, Float64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "u = FeatureView('usage', entities=[c], ttl=timedelta(days=31), schema=[Field('minutes', Float64)],\n"
        "    source=Source('usage', path='data/usage.parquet', created_timestamp_field='created_timestamp'),\n"
        "    aggregations=[Aggregation('minutes', 'sum', 'WINDOW, name='minutes_total')])\n"
        "s = FeatureService('s', features=[u])\n"
    )
    (root / "features.py").write_text(text.replace("WINDOW", "7d'"))
    apply()
    import os

    path = root / "features.py"
    path.write_text(text.replace("WINDOW", after))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ConflictError, match=rf"usage\.minutes_total: aggregation {changed} changed"):
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
    real = store.merge_logs
    store.merge_logs = lambda ns, keys, *a: calls.append(keys) or real(ns, keys, *a)  # type: ignore[method-assign]
    res = keel.push("payments", late, definitions=defs, store=store, to="online")
    assert res.keys_written == 1 and calls == [["1"]]  # one store call, naming customer 1 only
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


def test_a_push_is_one_store_call_and_redis_merges_as_the_other_stores(redis_url: str, tmp_path: Path) -> None:
    """Redis merges a state's rows in one server-side script by the same rules as SQLite and memory."""
    import random

    from keel.errors import StoreError
    from keel.store.kv import merge_log

    rng = random.Random(4)
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    stores = [open_kv_store(redis_url), open_kv_store("memory://agg-merge"), open_kv_store(f"sqlite:///{tmp_path / 'online.db'}")]
    try:
        keys = [f"c{i}" for i in range(6)]
        for step in range(8):
            low = now_us - 10_000_000 + step * 500_000
            rows = {
                k: [
                    encode_row(now_us - rng.randrange(0, 12) * 1_000_000, rng.choice([None, now_us, now_us - 1]),
                               [rng.random(), rng.choice(["a", 'x],\n[y"', None]), rng.random() < 0.5])
                    for _ in range(rng.randrange(1, 4))
                ]
                for k in rng.sample(keys, 3)
            }
            for store in stores:
                assert store.merge_logs("aggmerge", list(rows), list(rows.values()), low, f"{step:04d}", 60_000) == len(rows)
        got = [store.get_many([("aggmerge", keys)])[0] for store in stores]

        def parsed(blob: bytes | None) -> Any:  # rows of equal (event, created) may come in any order
            import orjson

            return None if blob is None else sorted(orjson.dumps(r) for r in orjson.loads(blob))

        assert [parsed(b) for b in got[0]] == [parsed(b) for b in got[1]] == [parsed(b) for b in got[2]]
        import orjson

        for blob in (b for b in got[0] if b is not None):  # sorted by (event, created)
            order = [(r[0], -1 if r[1] is None else r[1]) for r in orjson.loads(blob)]
            assert order == sorted(order)
        assert any(b is not None for b in got[0]) and merge_log("n", "k", got[1][0], [], now_us)[0] is None
        stores[0].put_many("aggold", ["c1"], ["1"], [b'{"e": [1]}'])  # a state from an older keel
        with pytest.raises(StoreError, match=r"not a row log.*Re-materialize"):
            stores[0].merge_logs("aggold", ["c1"], [[encode_row(now_us, None, [1.0])]], 0, "2", None)
    finally:
        for store in stores:
            store.drop("aggmerge")
            store.close()


def test_redis_push_and_lookup_give_the_memory_stores_numbers(project: Path, redis_url: str) -> None:
    import keel
    from keel.features.registry import apply

    now = datetime.now(UTC)
    events = make_events(seed=5, n=200)
    shift = pd.Timestamp(now) - events.created_timestamp.max() - pd.Timedelta(minutes=1)
    events = events.assign(event_timestamp=events.event_timestamp + shift, created_timestamp=events.created_timestamp + shift)
    defs = definitions(events.iloc[:150])
    apply(defs)
    names = [f"payments:{a.name}" for a in AGGS]
    results = []
    for uri in (redis_url, "memory://agg-redis-same"):
        store = open_kv_store(uri)
        materialize(definitions=defs, store=store)
        for i in range(150, 200, 10):  # late and on-time events, pushed a few at a time
            keel.push("payments", events.iloc[i : i + 10], definitions=defs, store=store, to="online")
        at = int(now.timestamp() * 1_000_000)
        results.append(lookup(defs.select(names), {"customer_id": list(range(1, 8))}, store, now_us=at).values)
        store.close()
    for name in results[0]:
        assert all(close(a, b) for a, b in zip(results[0][name], results[1][name], strict=True)), name
    assert sum(results[0]["events_count_7d"]) > 0


@pytest.mark.parametrize("store_kind", ["memory", "redis"])
def test_a_tiled_state_keeps_one_row_per_tile_and_pushes_add_to_it(project: Path, redis_url: str, store_kind: str) -> None:
    """Materialization compacts arrived events into tile rows; pushed events join them; online == offline."""
    import orjson

    import keel
    from keel.features.materialization import namespace
    from keel.features.registry import apply

    now = datetime.now(UTC)
    events = make_events(seed=6, n=3000, customers=2)  # several events an hour
    shift = pd.Timestamp(now) - events.created_timestamp.max() - pd.Timedelta(minutes=1)
    events = events.assign(event_timestamp=events.event_timestamp + shift, created_timestamp=events.created_timestamp + shift)
    first = events[events.created_timestamp <= events.created_timestamp.quantile(0.9)]
    defs = definitions(first, aggs=TILED)
    apply(defs)
    store = open_kv_store(redis_url if store_kind == "redis" else "memory://agg-tiled")
    materialize(definitions=defs, store=store)
    state = store.get_many([(namespace(defs.view("payments")), ["1"])])[0][0]
    assert state is not None
    rows = orjson.loads(state)
    assert rows and all(r[1] == "tile" for r in rows)  # compacted: one row per tile
    assert len(rows) < len(first[(first.customer_id == 1) & (first.event_timestamp > pd.Timestamp(now) - pd.Timedelta(days=7))])
    from keel.features import FeatureService, check_skew

    with_service = Definitions([defs.view("payments"), FeatureService("tiles", features=[defs.view("payments")])])
    report = check_skew("tiles", definitions=with_service, store=store, sample=2)
    assert report.ok and all(f.compared == 2 and f.mismatches == 0 for f in report.features), report  # keel features skew
    rest = events.drop(first.index)
    for i in range(0, len(rest), 7):
        keel.push("payments", rest.iloc[i : i + 7].drop(columns=["created_timestamp"]), definitions=defs, store=store, to="online")
    names = [f"payments:{a.name}" for a in TILED]
    at = datetime.now(UTC)
    ids = list(range(1, 8))
    online = lookup(defs.select(names), {"customer_id": ids}, store, now_us=int(at.timestamp() * 1_000_000))
    # offline over every event, the pushed ones counted from their push (created = the push's time, just before `at`)
    everything = pd.concat([first, rest.assign(created_timestamp=pd.Timestamp(at) - pd.Timedelta(milliseconds=1))])
    for agg in TILED:
        want = [oracle(everything, c, at, agg, True) for c in ids]
        assert all(close(a, b) for a, b in zip(online.values[str(agg.name)], want, strict=True)), (agg.name, online.values[str(agg.name)], want)
    store.drop(namespace(defs.view("payments")))
    store.close()
