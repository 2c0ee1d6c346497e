"""Feature store benchmark: keel beside Feast, same machine, same data, one run.

    python benchmarks/bench_features.py                 # default size (a few minutes on 2 cores)
    python benchmarks/bench_features.py --quick         # small, a fast check
    python benchmarks/bench_features.py --rows 10000000 --entity-rows 1000000   # the issue's full size

Figures (the performance section of issue 4):
  1. Point-in-time join of ENTITY_ROWS entity rows against a ROWS-row feature view with 10
     features (30-day TTL): wall time and peak RSS of keel's get_training_set, Feast's default
     (dask) file offline store, Feast's DuckDB offline store, and a hand-written DuckDB
     ASOF JOIN. Each in its own fresh process; peak RSS is that process's ru_maxrss.
     Feast's default store is skipped above --feast-default-max rows (it needs minutes and
     many GB there); the script says so.
  2. Value equality: keel's training set against Feast's get_historical_features (and the
     hand-written ASOF JOIN), row by row, every feature, exact.
  3. Materialization keys/second into SQLite (keel, Feast) and Redis (keel).
  4. Online lookup p50/p99 for 1 and 100 entities, 10 features, in-process: keel on SQLite
     and Redis, Feast get_online_features on SQLite.

Feast runs in its own virtualenv (benchmarks/.venvs/feast, created on first use with
`pip install 'feast[duckdb]'`). Data is generated with NumPy into benchmarks/.data/features/.
The figures go into benchmarks/README.md between the bench_features markers (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venvs" / "feast"
DATA = HERE / ".data" / "features"
README = HERE / "README.md"
START, END = "<!-- bench_features:start -->", "<!-- bench_features:end -->"
FEATURES = [f"f{i}" for i in range(10)]
TTL_DAYS = 30
YEAR_S = 365 * 24 * 3600
# The data's year ends today: the online stores expire values past the TTL by the clock,
# so data from a fixed past year would materialize nothing.
BASE = (datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=365)).isoformat()
REDIS = os.environ.get("KEEL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
LOAD = os.getloadavg()


# -- data ---------------------------------------------------------------------------------
def generate(folder: Path, rows: int, entity_rows: int, entities: int, seed: int = 7) -> None:
    """features.parquet (entity_id, event_timestamp, f0..f9) and entities.parquet (row_id, entity_id, event_timestamp)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = pd.Timestamp(BASE)
    # globally unique event times: no (entity, event time) duplicates, so every engine agrees on ties
    offsets = rng.permutation(rows).astype(np.int64) * (YEAR_S * 1_000_000 // rows)
    table = {
        "entity_id": rng.integers(0, entities, rows, dtype=np.int64),
        "event_timestamp": pa.array(base.value // 1000 + offsets, type=pa.timestamp("us", tz="UTC")),
    }
    for f in FEATURES:
        table[f] = np.round(rng.standard_normal(rows), 6)
    pq.write_table(pa.table(table), folder / "features.parquet", row_group_size=1_000_000)
    ent = {
        "row_id": np.arange(entity_rows, dtype=np.int64),
        "entity_id": rng.integers(0, int(entities * 1.05) + 1, entity_rows, dtype=np.int64),  # ~5% unknown
        "event_timestamp": pa.array(base.value // 1000 + rng.integers(0, YEAR_S * 1_000_000, entity_rows), type=pa.timestamp("us", tz="UTC")),
    }
    pq.write_table(pa.table(ent), folder / "entities.parquet")
    (folder / "done").write_text("ok")


# -- workers (each runs in a fresh process and prints one JSON line) ----------------------
def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


KEEL_FEATURES = """
from datetime import timedelta
from keel.features import Entity, FeatureService, FeatureView, Field, Float64, Source

entity = Entity("entity", join_keys=["entity_id"])
src = Source("bench", path={path!r})
bench = FeatureView("bench", entities=[entity], source=src, ttl=timedelta(days={ttl}),
                    schema=[Field(f"f{{i}}", Float64) for i in range(10)])
svc = FeatureService("bench_svc", features=[bench])
"""


def _keel_project(data: Path, online_uri: str | None = None) -> Path:
    proj = data / "keel_project"
    proj.mkdir(exist_ok=True)
    (proj / "keel.yaml").write_text("features_module: features.py\n" + (f"online_uri: {json.dumps(online_uri)}\n" if online_uri else ""))
    (proj / "features.py").write_text(KEEL_FEATURES.format(path=str(data / "features.parquet"), ttl=TTL_DAYS))
    os.chdir(proj)
    for key in [k for k in os.environ if k.startswith("KEEL_")]:
        del os.environ[key]
    return proj


def worker_keel_pit(data: Path) -> dict[str, Any]:
    import pandas as pd

    _keel_project(data)
    import keel
    from keel.features.registry import apply

    apply(validate=False)
    import keel.features.offline  # imports are not part of the figure

    edf = pd.read_parquet(data / "entities.parquet")
    t0 = time.perf_counter()
    out = keel.get_training_set(edf, "bench_svc")
    seconds = time.perf_counter() - t0
    out[["row_id", *FEATURES]].to_parquet(data / "out_keel.parquet")
    return {"seconds": seconds, "peak_mb": _peak_mb(), "rows": len(out)}


def worker_duckdb_asof(data: Path) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    feats = ", ".join(f"CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL {TTL_DAYS} DAY THEN f.{c} END AS {c}" for c in FEATURES)
    t0 = time.perf_counter()
    out = con.sql(
        f"""SELECT e.row_id, e.entity_id, e.event_timestamp, {feats}
        FROM read_parquet('{data / "entities.parquet"}') e
        ASOF LEFT JOIN read_parquet('{data / "features.parquet"}') f
          ON e.entity_id = f.entity_id AND e.event_timestamp >= f.event_timestamp
        ORDER BY e.row_id"""
    ).to_arrow_table().to_pandas()
    seconds = time.perf_counter() - t0
    out[["row_id", *FEATURES]].to_parquet(data / "out_asof.parquet")
    return {"seconds": seconds, "peak_mb": _peak_mb(), "rows": len(out)}


FEAST_YAML = """project: bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: {offline}
entity_key_serialization_version: 3
"""


def _feast_store(data: Path, offline: str) -> Any:
    import warnings

    warnings.filterwarnings("ignore")
    from datetime import timedelta

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    repo = data / f"feast_{offline}"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(FEAST_YAML.format(repo=repo, offline=offline))
    store = FeatureStore(repo_path=str(repo))
    entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    src = FileSource(path=str(data / "features.parquet"), timestamp_field="event_timestamp")
    fv = FeatureView(
        name="bench", entities=[entity], ttl=timedelta(days=TTL_DAYS), source=src, online=True,
        schema=[Field(name=f, dtype=Float64) for f in FEATURES],
    )
    store.apply([entity, fv])
    return store


def _feast_pit(data: Path, offline: str) -> dict[str, Any]:
    import pandas as pd

    store = _feast_store(data, offline)
    edf = pd.read_parquet(data / "entities.parquet")
    t0 = time.perf_counter()
    out = store.get_historical_features(entity_df=edf, features=[f"bench:{f}" for f in FEATURES]).to_df()
    seconds = time.perf_counter() - t0
    out[["row_id", *FEATURES]].to_parquet(data / f"out_feast_{offline}.parquet")
    return {"seconds": seconds, "peak_mb": _peak_mb(), "rows": len(out)}


def worker_feast_file(data: Path) -> dict[str, Any]:
    return _feast_pit(data, "file")


def worker_feast_duckdb(data: Path) -> dict[str, Any]:
    return _feast_pit(data, "duckdb")


def _latencies(fn: Any, batches: list[Any], repeats: int) -> dict[str, float]:
    for b in batches[:20]:
        fn(b)  # warm up
    times = []
    for i in range(repeats):
        b = batches[i % len(batches)]
        t0 = time.perf_counter_ns()
        fn(b)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


def _batches(entities: int, size: int, count: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(3)
    return [rng.integers(0, entities, size).tolist() for _ in range(count)]


def worker_keel_online(data: Path, online_uri: str, entities: int, repeats: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    _keel_project(data, online_uri)
    import keel
    from keel.features.registry import apply
    from keel.store.kv import get_kv_store

    apply(validate=False)
    store = get_kv_store()
    import keel.features.materialization  # imports are not part of the figure
    from keel.features.loader import load_definitions as _defs

    store.drop(keel.features.materialization.namespace(_defs().view("bench")))
    # the data's year ends today; values older than the TTL are not written (they would expire at once)
    end = datetime.now(UTC)
    t0 = time.perf_counter()
    res = keel.materialize(end=end)
    mat_s = time.perf_counter() - t0
    from keel.features.loader import load_definitions
    from keel.features.online import lookup

    defs = load_definitions()
    sel = defs.select("bench_svc")
    now_us = int(end.timestamp() * 1_000_000)
    # the full public call (definitions lookup included) ...
    one = _latencies(lambda ids: keel.get_online_features("bench_svc", {"entity_id": ids}), _batches(entities, 1, 200), repeats)
    hundred = _latencies(lambda ids: keel.get_online_features("bench_svc", {"entity_id": ids}), _batches(entities, 100, 200), repeats // 5)
    # ... and, as of the end of the data (values within the TTL), the lookup alone
    present = lookup(sel, {"entity_id": list(range(100))}, store, now_us=now_us)
    return {
        "materialize_s": mat_s, "keys": res.keys_written, "keys_per_s": res.keys_written / mat_s,
        "one": one, "hundred": hundred, "present_of_100": present.status["f0"].count("present"),
    }


def worker_feast_online(data: Path, entities: int, repeats: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    store = _feast_store(data, "file")
    t0 = time.perf_counter()
    store.materialize(datetime.fromisoformat(BASE) - timedelta(days=31), datetime.now(UTC) + timedelta(days=1))
    mat_s = time.perf_counter() - t0
    refs = [f"bench:{f}" for f in FEATURES]
    one = _latencies(lambda ids: store.get_online_features(features=refs, entity_rows=[{"entity_id": i} for i in ids]).to_dict(), _batches(entities, 1, 200), repeats)
    hundred = _latencies(lambda ids: store.get_online_features(features=refs, entity_rows=[{"entity_id": i} for i in ids]).to_dict(), _batches(entities, 100, 200), repeats // 5)
    import sqlite3

    con = sqlite3.connect(str(data / "feast_file" / "online.db"))
    name = con.execute("SELECT name FROM sqlite_master WHERE type='table' LIMIT 1").fetchone()[0]
    keys = con.execute(f"SELECT count(DISTINCT entity_key) FROM {name}").fetchone()[0]
    return {"materialize_s": mat_s, "keys": keys, "keys_per_s": keys / mat_s, "one": one, "hundred": hundred}


# -- orchestration --------------------------------------------------------------------------
def ensure_feast() -> Path | None:
    py = VENV / "bin" / "python"
    if not py.exists():
        print("creating", VENV, "(pip install 'feast[duckdb]') ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run([str(py), "-m", "pip", "install", "-q", "feast[duckdb]"], capture_output=True, text=True)
        if done.returncode:
            print("Feast could not be installed:\n" + done.stderr[-2000:])
            return None
    return py


def run_worker(python: Path | str, name: str, data: Path, *extra: str, timeout: int = 1800) -> dict[str, Any]:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", name, "--data", str(data), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") if "feast" not in name else "")
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": time.perf_counter() - t0}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(data: Path, a: str, b: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    x = pd.read_parquet(data / f"out_{a}.parquet").sort_values("row_id").reset_index(drop=True)
    y = pd.read_parquet(data / f"out_{b}.parquet").sort_values("row_id").reset_index(drop=True)
    out: dict[str, Any] = {"rows_a": len(x), "rows_b": len(y)}
    common = x.merge(y, on="row_id", suffixes=("_a", "_b"))
    out["rows_compared"] = len(common)
    bad = 0
    for f in FEATURES:
        va = common[f"{f}_a"].astype("float64").to_numpy()
        vb = common[f"{f}_b"].astype("float64").to_numpy()
        same = (np.isnan(va) & np.isnan(vb)) | (va == vb)
        bad += int((~same).sum())
    out["values_differing"] = bad
    out["identical"] = bad == 0 and len(x) == len(y) == len(common)
    return out


def fmt_s(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000, help="feature view rows (issue: 10,000,000)")
    ap.add_argument("--entity-rows", type=int, default=200_000, help="entity rows (issue: 1,000,000)")
    ap.add_argument("--entities", type=int, default=None, help="distinct entity keys (default rows / 20)")
    ap.add_argument("--quick", action="store_true", help="200k feature rows, 20k entity rows")
    ap.add_argument("--feast-default-max", type=int, default=3_000_000, help="skip Feast's default store above this many rows")
    ap.add_argument("--repeats", type=int, default=2000, help="online lookups per measurement (1 entity; 100 entities: a fifth)")
    ap.add_argument("--skip-feast", action="store_true")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--online-uri", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        data = Path(args.data)
        entities = args.entities or 1
        fn = {
            "keel_pit": lambda: worker_keel_pit(data),
            "duckdb_asof": lambda: worker_duckdb_asof(data),
            "feast_file": lambda: worker_feast_file(data),
            "feast_duckdb": lambda: worker_feast_duckdb(data),
            "keel_online": lambda: worker_keel_online(data, args.online_uri, entities, args.repeats),
            "feast_online": lambda: worker_feast_online(data, entities, args.repeats),
        }[args.worker]
        print(json.dumps(fn()))
        return

    if args.quick:
        args.rows, args.entity_rows, args.repeats = 200_000, 20_000, 1000
    entities = args.entities or max(1, args.rows // 20)
    data = DATA / f"r{args.rows}_e{args.entity_rows}_k{entities}_{BASE[:10]}"
    print(f"data: {args.rows:,} feature rows x 10 features, {args.entity_rows:,} entity rows, {entities:,} entities -> {data}", flush=True)
    generate(data, args.rows, args.entity_rows, entities)
    feast_py = None if args.skip_feast else ensure_feast()
    feast_version = None
    if feast_py:
        feast_version = subprocess.run([str(feast_py), "-c", "import feast; print(feast.__version__)"], capture_output=True, text=True).stdout.strip()

    pit: dict[str, dict[str, Any]] = {}
    pit["keel"] = run_worker(sys.executable, "keel_pit", data)
    print("keel get_training_set:", pit["keel"], flush=True)
    pit["duckdb_asof"] = run_worker(sys.executable, "duckdb_asof", data)
    print("hand-written ASOF JOIN:", pit["duckdb_asof"], flush=True)
    notes = []
    if feast_py:
        pit["feast_duckdb"] = run_worker(feast_py, "feast_duckdb", data)
        print("Feast DuckDB offline store:", pit["feast_duckdb"], flush=True)
        if args.rows <= args.feast_default_max:
            pit["feast_file"] = run_worker(feast_py, "feast_file", data)
            print("Feast default (dask) offline store:", pit["feast_file"], flush=True)
        else:
            notes.append(f"Feast's default store skipped: {args.rows:,} rows > --feast-default-max {args.feast_default_max:,} (it would take far more than 10 minutes).")
            print(notes[-1])
    equality = {"keel vs ASOF JOIN": compare(data, "keel", "asof")}
    for name, key in (("feast_file", "keel vs Feast default store"), ("feast_duckdb", "keel vs Feast DuckDB store")):
        if name in pit and "error" not in pit[name]:
            equality[key] = compare(data, "keel", name)
    for k, v in equality.items():
        print("equality", k, v, flush=True)

    online: dict[str, dict[str, Any]] = {}
    online["keel_sqlite"] = run_worker(sys.executable, "keel_online", data, "--online-uri", f"sqlite:///{data / 'keel_online.db'}", "--entities", str(entities), "--repeats", str(args.repeats))
    print("keel online SQLite:", online["keel_sqlite"], flush=True)
    online["keel_redis"] = run_worker(sys.executable, "keel_online", data, "--online-uri", f"{REDIS}?prefix=keelbench:", "--entities", str(entities), "--repeats", str(args.repeats))
    print("keel online Redis:", online["keel_redis"], flush=True)
    if feast_py:
        online["feast_sqlite"] = run_worker(feast_py, "feast_online", data, "--entities", str(entities), "--repeats", str(args.repeats))
        print("Feast online SQLite:", online["feast_sqlite"], flush=True)
    _cleanup_redis()

    report = render(args, entities, feast_version, pit, equality, online, notes)
    print(report)
    if not args.no_readme:
        write_readme(report)


def _cleanup_redis() -> None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match="keelbench:*", count=10000))
        for i in range(0, len(keys), 10000):
            client.delete(*keys[i : i + 10000])
    except Exception:
        pass


def _ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}x"
    except (TypeError, ZeroDivisionError):
        return "-"


def render(args: Any, entities: int, feast_version: str | None, pit: dict[str, Any], equality: dict[str, Any],
           online: dict[str, Any], notes: list[str]) -> str:
    cpu = os.cpu_count()
    lines = [
        START,
        "## Feature store (`bench_features.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {cpu} cores, Python {platform.python_version()}, "
        f"Feast {feast_version or 'not installed'}. Size: {args.rows:,} feature rows x 10 features, {args.entity_rows:,} entity rows, "
        f"{entities:,} entities, 30-day TTL. Each engine in a fresh process; peak memory is that process's max RSS. "
        f"Load average during the run (other jobs shared the machine): {LOAD[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        "latency tails (p99) are sensitive to it.",
        "",
        "**Point-in-time join**",
        "",
        "| engine | wall time | peak RSS | rows out | engine time / keel time |",
        "|---|---|---|---|---|",
    ]
    k = pit.get("keel", {})
    names = {"keel": "keel get_training_set", "duckdb_asof": "hand-written DuckDB ASOF JOIN",
             "feast_duckdb": "Feast DuckDB offline store", "feast_file": "Feast default (dask) offline store"}
    for key, label in names.items():
        r = pit.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {label} | {fmt_s(r['seconds'])} | {r['peak_mb']:.0f} MB | {r['rows']:,} | "
                     f"{'-' if key == 'keel' else _ratio(r['seconds'], k.get('seconds'))} |")
    if "seconds" in k and "seconds" in pit.get("duckdb_asof", {}):
        lines.append("")
        lines.append(f"keel / hand-written ASOF JOIN: {_ratio(k['seconds'], pit['duckdb_asof']['seconds'])} (target <= 1.3x).")
        ff, asof = pit.get("feast_file", {}), pit["duckdb_asof"]
        if "seconds" in ff:
            lines.append(
                f"Against Feast's default store keel is {ff['seconds'] / k['seconds']:.1f}x faster at {k['peak_mb'] / ff['peak_mb']:.0%} of its "
                f"peak memory (issue target: 20x at <= 20%); the hand-written ASOF JOIN alone is {ff['seconds'] / asof['seconds']:.1f}x "
                f"at {asof['peak_mb'] / ff['peak_mb']:.0%}, so on this machine the target is beyond the engine both build on."
            )
    lines += ["", "**Same values** (row by row, every feature, exact):", ""]
    for name, e in equality.items():
        lines.append(f"- {name}: {'identical' if e['identical'] else 'DIFFERENT'} "
                     f"({e['rows_compared']:,} rows compared; rows {e['rows_a']:,} vs {e['rows_b']:,}; {e['values_differing']} values differ)")
    lines += ["", "**Online store** (10 features, in-process; p50 / p99)", "",
              "| store | materialize keys/s | 1 entity | 100 entities |", "|---|---|---|---|"]
    labels = {"keel_sqlite": "keel, SQLite", "keel_redis": "keel, Redis", "feast_sqlite": "Feast, SQLite"}
    for key, label in labels.items():
        r = online.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | |")
            continue
        lines.append(f"| {label} | {r['keys_per_s']:,.0f} ({r['keys']:,} keys) | {r['one']['p50_ms']:.3f} / {r['one']['p99_ms']:.3f} ms | "
                     f"{r['hundred']['p50_ms']:.3f} / {r['hundred']['p99_ms']:.3f} ms |")
    fs = online.get("feast_sqlite", {})
    ks = online.get("keel_sqlite", {})
    if "keys_per_s" in fs and "keys_per_s" in ks:
        lines.append("")
        lines.append(f"Materialization into SQLite, keel / Feast: {_ratio(ks['keys_per_s'], fs['keys_per_s'])}; "
                     f"100-entity p99, Feast / keel: {_ratio(fs['hundred']['p99_ms'], ks['hundred']['p99_ms'])}.")
    for n in notes:
        lines += ["", n]
    lines.append(END)
    return "\n".join(lines)


def write_readme(section: str) -> None:
    write_section("bench_features", section.replace(START, "").replace(END, ""))


if __name__ == "__main__":
    main()
