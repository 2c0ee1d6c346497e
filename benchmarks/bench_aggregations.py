"""Windowed aggregations benchmark: keel beside hand-written DuckDB and pandas, same data, one run.

    python benchmarks/bench_aggregations.py                       # default size (minutes on 2 cores)
    python benchmarks/bench_aggregations.py --quick               # small, a fast check
    python benchmarks/bench_aggregations.py --events 10000000 --entity-rows 1000000   # the issue's full size

Figures (the performance section of issue 12):
  1. Training set: ENTITY_ROWS entity rows against EVENTS events, 4 windows (1h, 1d, 7d, 30d)
     x 3 functions (sum, count, mean) of one column, point in time (event time <= t and
     > t - window). Wall time and peak RSS (ru_maxrss) of each, each in its own process:
       keel           keel.get_training_set over an Aggregation feature view
       duckdb-range   the fastest hand-written DuckDB range join (one join, FILTER per window)
       duckdb-window  hand-written DuckDB window functions (RANGE frames over events + entity rows)
       pandas         groupby().rolling() over events + entity rows (a time-based rolling
                      window; merge_asof onto the events alone would keep events that left
                      the window after an entity's last event, so the rows are rolled with them)
     and the ratio of each to keel. Every result is compared with keel's, value by value
     (floats within 1e-9 relative).
  2. Online, in one process per store: p50/p99 of keel.push of one event (the entity's
     12 aggregates updated), and of get_online_features for 100 entities x 12 aggregates,
     on SQLite and Redis.
  3. Push by view kind, in one process per store (SQLite, Redis): p50/p99 of keel.push of
     one row to a view without a transformation, to one whose SQL transformation the
     push path compiles to Arrow kernels (the quickstart's `minutes / nullif(sessions, 0)`),
     to one whose SQL stays in DuckDB (outside the compiled subset: `sessions * 1.5`), and,
     beside them, the same compiled view through the DuckDB path every push took before
     (what a push larger than the hot path's 1,000 rows still takes), with the ratio.

Data is generated with NumPy into benchmarks/.data/aggregations/. The figures go into
benchmarks/README.md between the bench_aggregations markers (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / ".data" / "aggregations"
REDIS = os.environ.get("KEEL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WINDOWS = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
FUNCTIONS = ("sum", "count", "mean")
YEAR_S = 365 * 86400
BASE_US = 1_704_067_200_000_000  # 2024-01-01 UTC


def generate(folder: Path, events: int, entity_rows: int, entities: int, seed: int = 7) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ts = BASE_US + rng.integers(0, YEAR_S, events) * 1_000_000
    ev = pa.table({
        "entity_id": pa.array(rng.integers(0, entities, events), pa.int64()),
        "amount": pa.array(np.round(rng.gamma(2.0, 25.0, events), 2)),
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(ev, folder / "events.parquet", row_group_size=1_000_000)
    et = BASE_US + rng.integers(30 * 86400, YEAR_S, entity_rows) * 1_000_000
    pq.write_table(pa.table({
        "entity_id": pa.array(rng.integers(0, entities, entity_rows), pa.int64()),
        "event_timestamp": pa.array(et, pa.timestamp("us", tz="UTC")),
    }), folder / "entities.parquet")


def names() -> list[str]:
    return [f"amount_{f}_{w}" for w in WINDOWS for f in FUNCTIONS]


# -- workers: each runs in its own process ---------------------------------------------------
def worker_keel(folder: Path, out: Path) -> None:
    import pandas as pd

    import keel
    from keel import config

    project = folder / "keel-project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    os.chdir(project)
    config.init_project(project)
    config.reset()
    aggs = ", ".join(f"Aggregation('amount', '{f}', '{w}')" for w in WINDOWS for f in FUNCTIONS)
    (project / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source\n"
        "e = Entity('entity', join_keys=['entity_id'])\n"
        f"src = Source('events', path={str(folder / 'events.parquet')!r})\n"
        "payments = FeatureView('payments', entities=[e], source=src, ttl=timedelta(days=31),\n"
        f"    schema=[Field('amount', Float64)], aggregations=[{aggs}])\n"
    )
    import keel.features

    keel.features.apply(validate=False)
    entity = pd.read_parquet(folder / "entities.parquet")
    t0 = time.perf_counter()
    train = keel.get_training_set(entity, [f"payments:{n}" for n in names()])
    seconds = time.perf_counter() - t0
    train[names()].to_parquet(out)
    _report(seconds)


def _range_sql(folder: Path) -> str:
    sel = []
    for w, s in WINDOWS.items():
        cond = f"ev.event_timestamp > e.event_timestamp - to_microseconds({s * 1_000_000})"
        sel += [f"sum(ev.amount) FILTER (WHERE {cond}) AS amount_sum_{w}",
                f"count(ev.amount) FILTER (WHERE {cond}) AS amount_count_{w}",
                f"avg(ev.amount) FILTER (WHERE {cond}) AS amount_mean_{w}"]
    return f"""
        WITH e AS (SELECT row_number() OVER () - 1 AS r, * FROM read_parquet('{folder / "entities.parquet"}'))
        SELECT e.r, {', '.join(sel)}
        FROM e LEFT JOIN read_parquet('{folder / "events.parquet"}') ev
          ON ev.entity_id = e.entity_id AND ev.event_timestamp <= e.event_timestamp
         AND ev.event_timestamp > e.event_timestamp - to_microseconds({max(WINDOWS.values()) * 1_000_000})
        GROUP BY e.r ORDER BY e.r
    """


def worker_duckdb_range(folder: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    t0 = time.perf_counter()
    table = con.sql(_range_sql(folder)).to_arrow_table()
    seconds = time.perf_counter() - t0
    _save(table.drop(["r"]), out)
    _report(seconds)


def worker_duckdb_window(folder: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sel = []
    for w, s in WINDOWS.items():
        # RANGE frames include their lower edge: one microsecond less makes (t - w, t]
        frame = f"(PARTITION BY entity_id ORDER BY event_timestamp RANGE BETWEEN INTERVAL {s * 1_000_000 - 1} MICROSECONDS PRECEDING AND CURRENT ROW)"
        sel += [f"sum(amount) OVER {frame} AS amount_sum_{w}", f"count(amount) OVER {frame} AS amount_count_{w}",
                f"avg(amount) OVER {frame} AS amount_mean_{w}"]
    sql = f"""
        WITH e AS (SELECT row_number() OVER () - 1 AS r, entity_id, event_timestamp, NULL::DOUBLE AS amount
                   FROM read_parquet('{folder / "entities.parquet"}')),
             u AS (SELECT NULL::BIGINT AS r, entity_id, event_timestamp, amount FROM read_parquet('{folder / "events.parquet"}')
                   UNION ALL SELECT * FROM e)
        SELECT r, {', '.join(sel)} FROM u QUALIFY r IS NOT NULL ORDER BY r
    """
    t0 = time.perf_counter()
    table = con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - t0
    _save(table.drop(["r"]), out)
    _report(seconds)


def worker_pandas(folder: Path, out: Path) -> None:
    import numpy as np
    import pandas as pd

    t0 = time.perf_counter()
    ev = pd.read_parquet(folder / "events.parquet")
    ent = pd.read_parquet(folder / "entities.parquet")
    ent["r"] = np.arange(len(ent))
    ev["r"] = -1
    both = pd.concat([ev, ent.assign(amount=np.nan)], ignore_index=True)
    # events before entity rows at the same instant, so an entity row's frame holds them
    both["is_row"] = both["r"] >= 0
    both = both.sort_values(["entity_id", "event_timestamp", "is_row"], kind="stable").reset_index(drop=True)
    result = pd.DataFrame({"r": both["r"].to_numpy()})
    grouped = both.set_index("event_timestamp").groupby("entity_id", sort=False)["amount"]
    for w, s in WINDOWS.items():
        roll = grouped.rolling(f"{s}s", closed="right")
        result[f"amount_sum_{w}"] = roll.sum().to_numpy()
        result[f"amount_count_{w}"] = roll.count().to_numpy()
        result[f"amount_mean_{w}"] = roll.mean().to_numpy()
    result = result[result["r"] >= 0].sort_values("r")
    for w in WINDOWS:  # sum of no events: null, as in SQL
        result.loc[result[f"amount_count_{w}"] == 0, f"amount_sum_{w}"] = np.nan
    seconds = time.perf_counter() - t0
    result.drop(columns="r").reset_index(drop=True).to_parquet(out)
    _report(seconds)


def _save(table: Any, out: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, out)


def _report(seconds: float) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss}))


def worker_online(folder: Path, uri: str) -> None:
    """Push and lookup latencies in one process, against ``uri``."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import pandas as pd

    import keel
    from keel import config
    from keel.store.kv import open_kv_store

    project = folder / f"keel-online-{uri.split(':', 1)[0]}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    os.chdir(project)
    config.init_project(project)
    config.reset()
    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    n, entities = 200_000, 10_000
    pd.DataFrame({
        "entity_id": rng.integers(0, entities, n).astype("int64"), "amount": np.round(rng.gamma(2.0, 25.0, n), 2),
        "event_timestamp": pd.Timestamp(now) - pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
    }).to_parquet(project / "events.parquet")
    aggs = ", ".join(f"Aggregation('amount', '{f}', '{w}')" for w in WINDOWS for f in FUNCTIONS)
    (project / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source\n"
        "e = Entity('entity', join_keys=['entity_id'])\n"
        "payments = FeatureView('payments', entities=[e], source=Source('events', path='events.parquet'),\n"
        f"    ttl=timedelta(days=31), schema=[Field('amount', Float64)], aggregations=[{aggs}])\n"
    )
    import keel.features
    import keel.features.materialization

    keel.features.apply()
    store = open_kv_store(uri)
    keel.materialize(store=store)
    refs = [f"payments:{x}" for x in names()]
    if os.environ.get("KEEL_BENCH_PROFILE"):
        import cProfile

        cProfile.runctx(
            "for i in range(300): keel.push('payments', {'entity_id': [i], 'amount': [1.0], 'event_timestamp': [datetime.now(UTC)]}, store=store, to='online')\n"
            "for i in range(100): keel.get_online_features(refs, {'entity_id': list(range(100))}, store=store)",
            globals(), locals(), str(folder / "online.prof"),
        )
    push_t, look_t = [], []
    for i in range(2_000):
        row = {"entity_id": [int(i % entities)], "amount": [float(i % 97)], "event_timestamp": [datetime.now(UTC) - timedelta(seconds=1)]}
        t0 = time.perf_counter()
        keel.push("payments", row, store=store, to="online")
        push_t.append(time.perf_counter() - t0)
    for _ in range(500):
        ids = [int(x) for x in rng.integers(0, entities, 100)]
        t0 = time.perf_counter()
        keel.get_online_features(refs, {"entity_id": ids}, store=store)
        look_t.append(time.perf_counter() - t0)
    ns = keel.features.materialization.namespace(keel.features.load_definitions().view("payments"))
    store.drop(ns)
    store.close()
    print(json.dumps({"push": _pct(push_t), "lookup": _pct(look_t)}))


def worker_tiles(folder: Path, uri: str) -> None:
    """Online cost of exact windows beside 1-day tiles on dense entities (1,000 events each in 30 days):
    state bytes per entity and lookup p50/p99 of 100 entities x 9 aggregates, one store."""
    from datetime import UTC, datetime

    import numpy as np
    import pandas as pd

    import keel
    from keel import config
    from keel.features.materialization import namespace
    from keel.store.kv import open_kv_store

    project = folder / f"keel-tiles-{uri.split(':', 1)[0]}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    os.chdir(project)
    config.init_project(project)
    config.reset()
    rng = np.random.default_rng(5)
    now = datetime.now(UTC)
    entities, n = 300, 300_000
    pd.DataFrame({
        "entity_id": rng.integers(0, entities, n).astype("int64"), "amount": np.round(rng.gamma(2.0, 25.0, n), 2),
        "event_timestamp": pd.Timestamp(now) - pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
    }).to_parquet(project / "events.parquet")
    windows = ("1d", "7d", "30d")

    def aggs(extra: str) -> str:
        return ", ".join(f"Aggregation('amount', '{f}', '{w}'{extra})" for w in windows for f in FUNCTIONS)

    tiled = aggs(", aggregation_interval='1d'")
    (project / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Aggregation, Entity, FeatureView, Field, Float64, Source\n"
        "e = Entity('entity', join_keys=['entity_id'])\n"
        "src = Source('events', path='events.parquet')\n"
        f"exact = FeatureView('exact', entities=[e], source=src, ttl=timedelta(days=31), schema=[Field('amount', Float64)], aggregations=[{aggs('')}])\n"
        f"tiled = FeatureView('tiled', entities=[e], source=src, ttl=timedelta(days=31), schema=[Field('amount', Float64)], aggregations=[{tiled}])\n"
    )
    import keel.features

    keel.features.apply()
    store = open_kv_store(uri)
    keel.materialize(store=store)
    defs = keel.features.load_definitions()
    out: dict[str, Any] = {}
    for view in ("exact", "tiled"):
        ns = namespace(defs.view(view))
        blobs = store.get_many([(ns, [str(i) for i in range(entities)])])[0]
        refs = [f"{view}:amount_{f}_{w}" for w in windows for f in FUNCTIONS]
        times = []
        for _ in range(100):
            ids = [int(x) for x in rng.integers(0, entities, 100)]
            t0 = time.perf_counter()
            keel.get_online_features(refs, {"entity_id": ids}, store=store)
            times.append(time.perf_counter() - t0)
        out[view] = {"state_bytes": sum(len(b) for b in blobs if b) / entities, **_pct(times)}
        store.drop(ns)
    store.close()
    print(json.dumps(out))


PUSH_VIEWS = {
    "no transformation": None,
    "SQL, compiled to Arrow": "SELECT *, minutes / nullif(sessions, 0) AS per_session FROM source",
    "SQL, kept DuckDB connection": "SELECT *, minutes / nullif(sessions, 0) AS per_session, sessions * 1.5 AS weighted FROM source",
}


def worker_push(folder: Path, uri: str) -> None:
    """p50/p99 of one-row pushes to views of each kind against ``uri``, in one process."""
    from datetime import UTC, datetime

    import numpy as np
    import pandas as pd

    import keel
    from keel import config
    from keel.features import fast_push, push_sql
    from keel.store.kv import open_kv_store

    project = folder / f"keel-push-{uri.split(':', 1)[0]}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    os.chdir(project)
    config.init_project(project)
    config.reset()
    rng = np.random.default_rng(5)
    n = 10_000
    pd.DataFrame({
        "customer_id": rng.integers(0, 1_000, n).astype("int64"), "sessions": rng.integers(0, 10, n).astype("int64"),
        "minutes": np.round(rng.gamma(2.0, 10.0, n), 2),
        "event_timestamp": pd.Timestamp(datetime.now(UTC)) - pd.to_timedelta(rng.integers(0, 86400, n), unit="s"),
    }).to_parquet(project / "usage.parquet")
    views = []
    for i, (label, sql) in enumerate(PUSH_VIEWS.items()):
        extra = ", Field('per_session', Float64)" + (", Field('weighted', Float64)" if sql and "weighted" in sql else "")
        views.append(
            f"v{i} = FeatureView('v{i}', entities=[c], source=src, ttl=timedelta(days=2), "
            f"schema=[Field('sessions', Int64), Field('minutes', Float64){extra if sql else ''}]"
            + (f", transformation={sql!r}" if sql else "") + f")  # {label}"
        )
    (project / "features.py").write_text(
        "from datetime import timedelta\n"
        "from keel.features import Entity, FeatureView, Field, Float64, Int64, Source\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "src = Source('usage', path='usage.parquet')\n" + "\n".join(views) + "\n"
    )
    keel.features.apply()
    store = open_kv_store(uri)

    def run(view: str, times: int) -> list[float]:
        out = []
        for i in range(times):
            row = {"customer_id": [i % 1_000], "sessions": [i % 7], "minutes": [float(i % 97)], "event_timestamp": [datetime.now(UTC)]}
            t0 = time.perf_counter()
            keel.push(view, row, store=store, to="online")
            out.append(time.perf_counter() - t0)
        return out

    result: dict[str, Any] = {}
    for i, label in enumerate(PUSH_VIEWS):
        result[label] = _pct(run(f"v{i}", 2_000))
        plan = next((p for k, p in push_sql._plans.items() if k[0] == f"FeatureView 'v{i}'"), None)
        result[label]["way"] = "-" if plan is None else plan.way
    eligible = fast_push.eligible
    fast_push.eligible = lambda view, rows: False  # type: ignore[assignment]  # the DuckDB path, as before
    result["SQL, through the DuckDB path (before)"] = _pct(run("v1", 300))
    fast_push.eligible = eligible  # type: ignore[assignment]
    for i in range(len(PUSH_VIEWS)):
        store.drop(keel.features.materialization.namespace(keel.features.load_definitions().view(f"v{i}")))
    store.close()
    print(json.dumps(result))


def _pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs[len(xs) // 20 :])  # the first 5% (in time) warm caches up
    return {"p50_ms": xs[len(xs) // 2] * 1e3, "p99_ms": xs[int(len(xs) * 0.99)] * 1e3}


# -- the driver ---------------------------------------------------------------------------------
def run_worker(kind: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def compare(a: Path, b: Path) -> str:
    import numpy as np
    import pandas as pd

    x, y = pd.read_parquet(a), pd.read_parquet(b)
    worst = 0.0
    for c in names():
        u, v = x[c].to_numpy(dtype="float64", na_value=np.nan), y[c].to_numpy(dtype="float64", na_value=np.nan)
        if not np.array_equal(np.isnan(u), np.isnan(v)):
            return f"nulls differ in {c}"
        m = ~np.isnan(u)
        rel = np.abs(u[m] - v[m]) / np.maximum(np.abs(u[m]), 1e-12)
        worst = max(worst, float(rel.max()) if rel.size else 0.0)
    return "equal" if worst <= 1e-9 else f"max rel diff {worst:.2e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--entity-rows", type=int, default=200_000)
    ap.add_argument("--entities", type=int, default=None, help="distinct entity ids (default events / 100)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated methods to skip (keel, duckdb-range, duckdb-window, pandas, online, push, tiles)")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.worker:
        folder = Path(opts.args[0]).resolve()
        if opts.worker == "online":
            worker_online(folder, opts.args[1])
        elif opts.worker == "push":
            worker_push(folder, opts.args[1])
        elif opts.worker == "tiles":
            worker_tiles(folder, opts.args[1])
        else:
            globals()["worker_" + opts.worker.replace("-", "_")](folder, Path(opts.args[1]))
        return
    if opts.quick:
        opts.events, opts.entity_rows = 200_000, 20_000
    entities = opts.entities or max(opts.events // 100, 1)
    folder = DATA / f"{opts.events}x{opts.entity_rows}x{entities}"
    if not (folder / "events.parquet").exists():
        print(f"generating {opts.events:,} events, {opts.entity_rows:,} entity rows, {entities:,} entities ...", flush=True)
        generate(folder, opts.events, opts.entity_rows, entities)
    skip = set(filter(None, opts.skip.split(",")))
    results: dict[str, dict[str, Any]] = {}
    for method in ("keel", "duckdb-range", "duckdb-window", "pandas"):
        if method in skip:
            continue
        print(f"{method} ...", flush=True)
        results[method] = run_worker(method, str(folder), str(folder / f"out-{method}.parquet"))
        print("   ", results[method], flush=True)
    lines = [
        f"{opts.entity_rows:,} entity rows x {opts.events:,} events ({entities:,} entities), 4 windows x 3 functions; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start.",
        "",
        "| method | seconds | peak RSS MB | vs keel | values vs keel |",
        "|---|---|---|---|---|",
    ]
    base = results.get("keel", {}).get("seconds")
    for method, r in results.items():
        if "error" in r:
            lines.append(f"| {method} | failed: {r['error']} | | | |")
            continue
        ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
        same = "-" if method == "keel" or "keel" not in results else compare(folder / "out-keel.parquet", folder / f"out-{method}.parquet")
        lines.append(f"| {method} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {ratio} | {same} |")
    if "online" not in skip:
        lines += ["", "| online store | push 1 event p50 / p99 ms | lookup 100 x 12 p50 / p99 ms |", "|---|---|---|"]
        for label, uri in (("SQLite", f"sqlite:///{folder / 'online.db'}"), ("Redis", REDIS + "?prefix=keelbench:agg:")):
            print(f"online {label} ...", flush=True)
            r = run_worker("online", str(folder), uri)
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | |")
                continue
            lines.append(
                f"| {label} | {r['push']['p50_ms']:.3f} / {r['push']['p99_ms']:.3f} | {r['lookup']['p50_ms']:.3f} / {r['lookup']['p99_ms']:.3f} |"
            )
    if "push" not in skip:
        push: dict[str, dict[str, Any]] = {}
        for label, uri in (("SQLite", f"sqlite:///{folder / 'push.db'}"), ("Redis", REDIS + "?prefix=keelbench:push:")):
            print(f"push {label} ...", flush=True)
            push[label] = run_worker("push", str(folder), uri)
        lines += [
            "", f"Push of one row by view kind (load {os.getloadavg()[0]:.1f}):", "",
            "| view | SQLite p50 / p99 ms | Redis p50 / p99 ms |", "|---|---|---|",
        ]
        kinds = [*PUSH_VIEWS, "SQL, through the DuckDB path (before)"]
        for kind in kinds:
            cells = []
            for label in ("SQLite", "Redis"):
                r = push[label]
                cells.append(f"failed: {r['error']}" if "error" in r else f"{r[kind]['p50_ms']:.3f} / {r[kind]['p99_ms']:.3f}")
            lines.append(f"| {kind} | {cells[0]} | {cells[1]} |")
        for label in ("SQLite", "Redis"):
            r = push[label]
            if "error" not in r:
                before, now = r["SQL, through the DuckDB path (before)"]["p50_ms"], r["SQL, compiled to Arrow"]["p50_ms"]
                lines.append(f"\n{label}: a push through the compiled SQL is {before / now:.0f}x faster than through DuckDB (p50).")
    if "tiles" not in skip:
        lines += ["", "Tiles (`aggregation_interval='1d'`) beside exact windows, 300 entities x 1,000 events in 30 days, "
                  "lookup of 100 entities x 9 aggregates (1d/7d/30d x sum/count/mean):", "",
                  "| store | view | state bytes / entity | lookup p50 / p99 ms |", "|---|---|---|---|"]
        for label, uri in (("SQLite", f"sqlite:///{folder / 'tiles.db'}"), ("Redis", REDIS + "?prefix=keelbench:tiles:")):
            print(f"tiles {label} ...", flush=True)
            r = run_worker("tiles", str(folder), uri)
            if "error" in r:
                lines.append(f"| {label} | failed: {r['error']} | | |")
                continue
            for view in ("exact", "tiled"):
                v = r[view]
                lines.append(f"| {label} | {view} | {v['state_bytes']:,.0f} | {v['p50_ms']:.2f} / {v['p99_ms']:.2f} |")
    body = "\n".join(lines)
    print("\n" + body)
    if not opts.no_readme:
        write_section("bench_aggregations", "## Windowed aggregations (`bench_aggregations.py`)\n\n" + body)


if __name__ == "__main__":
    main()
