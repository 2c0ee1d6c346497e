"""Tracking benchmark: keel beside MLflow, same machine, same data, one run.

    python benchmarks/bench_tracking.py            # full sizes (~15 min the first time)
    python benchmarks/bench_tracking.py --quick    # small sizes, a fast check

Figures (the performance section of issue 3):
  1. log_metric throughput: keel, 100,000 calls in one run, timed to the end of the run
     (the buffer flushed); every value is read back and checked afterwards. MLflow's
     per-call cost is measured on a few hundred synchronous calls and extrapolated.
  2. MLflow log_batch (1,000 values per call, 100,000 values) vs keel's 100,000 log_metric calls.
  3. search_runs over 10,000 runs (10 params, 10 metrics, 1 tag each) with a three-clause
     filter: median of 20 calls; keel on SQLite and on PostgreSQL, MLflow on SQLite.
  4. import time and `--help` wall time.

MLflow runs in its own virtualenv (benchmarks/.venvs/mlflow, created on first use) with its
default SQLite backend; keel runs in a subprocess of this interpreter. Each side runs in a
fresh process. The populated search stores are cached in benchmarks/.data/ (keyed by size,
seed, schema and MLflow version), since filling them takes minutes and is not measured.
A full run appends its figures to benchmarks/README.md (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _readme import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venvs" / "mlflow"
CACHE = HERE / ".data" / "tracking"
README = HERE / "README.md"
PG_ADMIN = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

SEED = 7
FILTER = "metrics.auc > 0.8 and params.model = 'lgbm' and tags.team = 'risk'"
MODELS = ["lgbm", "xgb", "rf", "linear"]
TEAMS = ["risk", "growth", "ops"]
SIZES = {
    "full": {"log_n": 100_000, "mlflow_log_n": 300, "batch_values": 100_000, "batch_size": 1000, "runs": 10_000, "repeats": 20, "startup_repeats": 5},
    "quick": {"log_n": 10_000, "mlflow_log_n": 50, "batch_values": 10_000, "batch_size": 1000, "runs": 500, "repeats": 5, "startup_repeats": 3},
}
START, END = "<!-- bench_tracking:start -->", "<!-- bench_tracking:end -->"


# -- the data both sides get ---------------------------------------------------

def run_data(n: int) -> dict[str, Any]:
    """n runs: params model + p1..p9 (text of floats), metrics auc + m1..m9, tag team."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    return {
        "p": rng.random((n, 9)),
        "m": rng.random((n, 10)),
        "model": rng.integers(0, len(MODELS), n),
        "team": rng.integers(0, len(TEAMS), n),
    }


def run_record(d: dict[str, Any], i: int) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    params = {"model": MODELS[int(d["model"][i])], **{f"p{j + 1}": f"{d['p'][i, j]:.6f}" for j in range(9)}}
    metrics = {"auc": float(d["m"][i, 0]), **{f"m{j}": float(d["m"][i, j]) for j in range(1, 10)}}
    return params, metrics, {"team": TEAMS[int(d["team"][i])]}


def expected_matches(n: int) -> int:
    d = run_data(n)
    return int(((d["m"][:, 0] > 0.8) & (d["model"] == 0) & (d["team"] == 0)).sum())


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# -- keel workers (this interpreter) ------------------------------------------

def keel_project(folder: Path, uri: str | None = None) -> None:
    for key in [k for k in os.environ if k.startswith("KEEL_")]:
        del os.environ[key]
    os.chdir(folder)
    if uri:
        os.environ["KEEL_METADATA_URI"] = uri
    from keel import config

    config.init_project(folder)
    config.reset()


def worker_keel_log(a: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import keel

    keel_project(Path(a["dir"]))
    n = a["n"]
    values = np.random.default_rng(SEED).random(n).tolist()
    run = keel.start_run(name="log-metric-bench")  # environment capture happens here, untimed
    log_metric = keel.log_metric
    t = time.perf_counter()
    for i in range(n):
        log_metric("loss", values[i], step=i)
    keel.end_run()
    elapsed = time.perf_counter() - t
    hist = keel.get_metric_history(run.id, "loss")
    ok = len(hist) == n and bool(np.array_equal(hist["step"].to_numpy(), np.arange(n))) and bool(
        np.allclose(hist["value"].to_numpy(), values)
    )
    return {"seconds": elapsed, "n": n, "verified": ok, "read_back": len(hist)}


def keel_schema_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([ROOT / "src/keel/store/schema/tracking.py", *(ROOT / "src/keel/store/migrations/versions").glob("*.py")]):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def worker_keel_populate(a: dict[str, Any]) -> dict[str, Any]:
    """Fill a keel SQLite store with the search data through the public API."""
    import keel

    os.environ["KEEL_CAPTURE_ENVIRONMENT"] = "false"
    keel_project(Path(a["dir"]), f"sqlite:///{a['db']}")
    os.environ["KEEL_CAPTURE_ENVIRONMENT"] = "false"
    from keel import config

    config.reset()
    n = a["runs"]
    d = run_data(n)
    keel.set_experiment("bench")
    t = time.perf_counter()
    for i in range(n):
        params, metrics, tags = run_record(d, i)
        with keel.start_run(name=f"run-{i}"):
            keel.log_params(params)
            keel.log_metrics(metrics)
            keel.set_tags(tags)
        if a.get("progress") and (i + 1) % 1000 == 0:
            print(f"  keel: {i + 1}/{n} runs", file=sys.stderr, flush=True)
    from keel.store.metadata import get_metadata_store

    store = get_metadata_store()
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    return {"seconds": time.perf_counter() - t}


def worker_keel_populate_bulk(a: dict[str, Any]) -> dict[str, Any]:
    """Fill a keel store with the search data in bulk: the rows the API writes, in one transaction."""
    import math

    import keel
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import metric_history, metrics, params, runs, tags

    os.environ["KEEL_CAPTURE_ENVIRONMENT"] = "false"
    keel_project(Path(a["dir"]), f"sqlite:///{a['db']}")
    n = a["runs"]
    d = run_data(n)
    exp = keel.set_experiment("bench")
    now = int(time.time() * 1000)
    t = time.perf_counter()
    R, P, M, H, T = [], [], [], [], []
    for i in range(n):
        rid = uuid.UUID(int=(SEED << 64) + i).hex
        start = now - (n - i) * 1000
        R.append((rid, exp, f"run-{i}", None, "finished", start, start + 500, start + 500, "bench", "localhost", None, "{}"))
        p, m, tg = run_record(d, i)
        for k, v in p.items():
            f = float(v) if k != "model" else None
            P.append((rid, k, v, f if f is not None and math.isfinite(f) else None))
        for k, v in m.items():
            M.append((rid, k, v, 0, start + 100))
            H.append((rid, k, 0, start + 100, v))
        T.extend((rid, k, v) for k, v in tg.items())
    from keel.tracking._writer import HISTORY_COLUMNS, encode_chunks

    chunks, _ = encode_chunks(H)  # the rows the writer stores: one history chunk per run and key
    store = get_metadata_store()
    with store.write() as conn:
        for table, rows in ((runs, R), (params, P), (metrics, M), (tags, T)):
            store.insert_many(conn, table, rows)
        store.insert_many(conn, metric_history, chunks, HISTORY_COLUMNS)
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    return {"seconds": time.perf_counter() - t}


def worker_keel_search(a: dict[str, Any]) -> dict[str, Any]:
    import keel

    keel_project(Path(a["dir"]), a["uri"])
    if a.get("copy_from"):
        copy_store(f"sqlite:///{a['copy_from']}", a["uri"])
    keel.search_runs("bench", FILTER)  # warm-up: imports, connection, schema check
    last: list[Any] = []

    def once() -> None:
        last[:] = [keel.search_runs("bench", FILTER)]

    times = timed(once, a["repeats"])
    df = last[0]
    return {"median": statistics.median(times), "min": min(times), "rows": len(df), "columns": len(df.columns)}


def copy_store(src_uri: str, dst_uri: str) -> None:
    """Bulk-copy every tracking table from one keel store to another (COPY on PostgreSQL)."""
    import sqlalchemy as sa

    from keel.store.metadata import MetadataStore
    from keel.store.schema import tracking

    src, dst = MetadataStore(src_uri), MetadataStore(dst_uri)
    tables = [tracking.experiments, tracking.runs, tracking.params, tracking.tags, tracking.metrics, tracking.metric_history]
    with src.read() as sconn, dst.write() as dconn:
        for table in tables:
            rows = [tuple(r) for r in sconn.execute(sa.select(table))]
            dst.insert_many(dconn, table, rows)
    with dst.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")  # what autovacuum does after a bulk load
    src.dispose()
    dst.dispose()


# -- MLflow workers (its own virtualenv) ---------------------------------------

def worker_mlflow_log(a: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(f"sqlite:///{a['dir']}/mlflow.db")
    mlflow.set_experiment("log-bench")
    n = a["n"]
    values = np.random.default_rng(SEED).random(n).tolist()
    with mlflow.start_run():
        mlflow.log_metric("warmup", 0.0)
        t = time.perf_counter()
        for i in range(n):
            mlflow.log_metric("loss", values[i], step=i)
        elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "n": n, "per_call": elapsed / n}


def worker_mlflow_batch(a: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{a['dir']}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("batch-bench")
    run = client.create_run(exp)
    n, size = a["n"], a["batch_size"]
    values = np.random.default_rng(SEED).random(n).tolist()
    ts = int(time.time() * 1000)
    batches = [[Metric("loss", values[i], ts, i) for i in range(s, min(n, s + size))] for s in range(0, n, size)]
    t = time.perf_counter()
    for batch in batches:
        client.log_batch(run.info.run_id, metrics=batch)
    client.set_terminated(run.info.run_id)
    elapsed = time.perf_counter() - t
    read = len(client.get_metric_history(run.info.run_id, "loss"))
    return {"seconds": elapsed, "n": n, "calls": len(batches), "read_back": read}


def worker_mlflow_populate(a: dict[str, Any]) -> dict[str, Any]:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{a['db']}")
    exp = client.create_experiment("bench", artifact_location=str(Path(a["db"]).parent / "mlartifacts"))
    n = a["runs"]
    d = run_data(n)
    t = time.perf_counter()
    for i in range(n):
        params, metrics, tags = run_record(d, i)
        run = client.create_run(exp, run_name=f"run-{i}")
        ts = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.set_terminated(run.info.run_id)
        if a.get("progress") and (i + 1) % 1000 == 0:
            print(f"  MLflow: {i + 1}/{n} runs", file=sys.stderr, flush=True)
    return {"seconds": time.perf_counter() - t}


def worker_mlflow_populate_bulk(a: dict[str, Any]) -> dict[str, Any]:
    """Fill MLflow's own SQLite schema with the rows its create_run + log_batch would write."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    art = Path(a["db"]).parent / "mlartifacts"
    client = MlflowClient(tracking_uri=f"sqlite:///{a['db']}")  # creates the schema
    exp = int(client.create_experiment("bench", artifact_location=str(art)))
    n = a["runs"]
    d = run_data(n)
    now = int(time.time() * 1000)
    t = time.perf_counter()
    R, P, M, L, T = [], [], [], [], []
    for i in range(n):
        rid = uuid.UUID(int=(SEED << 64) + i).hex
        start = now - (n - i) * 1000
        R.append((rid, f"run-{i}", "UNKNOWN", "", "", "bench", "FINISHED", start, start + 500, "", "active", f"{art}/{rid}/artifacts", exp, None))
        p, m, tg = run_record(d, i)
        P.extend((k, v, rid) for k, v in p.items())
        M.extend((k, v, start + 100, rid, 0, 0) for k, v in m.items())
        L.extend((k, v, start + 100, 0, 0, rid) for k, v in m.items())
        T.extend((k, v, rid) for k, v in [("mlflow.runName", f"run-{i}"), *tg.items()])
    conn = sqlite3.connect(a["db"])
    with conn:
        conn.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", R)
        conn.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?,?,?)', P)
        conn.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)', M)
        conn.executemany('INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)', L)
        conn.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)', T)
    conn.close()
    return {"seconds": time.perf_counter() - t}


def worker_mlflow_search(a: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(a["uri"])
    exp = mlflow.get_experiment_by_name("bench")
    ids = [exp.experiment_id]
    mlflow.search_runs(experiment_ids=ids, filter_string=FILTER, max_results=1000)
    last: list[Any] = []

    def once() -> None:
        last[:] = [mlflow.search_runs(experiment_ids=ids, filter_string=FILTER, max_results=1000)]

    times = timed(once, a["repeats"])
    df = last[0]
    return {"median": statistics.median(times), "min": min(times), "rows": len(df), "columns": len(df.columns)}


WORKERS = {
    "keel_log": worker_keel_log,
    "keel_populate": worker_keel_populate,
    "keel_search": worker_keel_search,
    "mlflow_log": worker_mlflow_log,
    "mlflow_batch": worker_mlflow_batch,
    "mlflow_populate": worker_mlflow_populate,
    "mlflow_populate_bulk": worker_mlflow_populate_bulk,
    "keel_populate_bulk": worker_keel_populate_bulk,
    "mlflow_search": worker_mlflow_search,
}


# -- orchestration -------------------------------------------------------------

def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} and installing mlflow (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow"], check=True)
    return py


def call(python: Path | str, worker: str, args: dict[str, Any], timeout: float = 7200) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env["PYTHONWARNINGS"] = "ignore"
    env["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", worker, json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def call_progress(python: Path | str, worker: str, args: dict[str, Any]) -> dict[str, Any]:
    """Like call(), with the worker's stderr (its progress) shown as it goes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", worker, json.dumps({**args, "progress": True})],
        stdout=subprocess.PIPE, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker} failed (see its output above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cached(name: str, build: Any) -> Path:
    """A populated store file under benchmarks/.data, built once into a temp file then renamed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / name
    if not path.exists():
        tmp = CACHE / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            build(tmp)
            os.replace(tmp, path)
        finally:
            for p in CACHE.glob(f".{name}.*"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    return path


def wall(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    def once() -> None:
        subprocess.run(cmd, check=True, capture_output=True, env=env)

    once()  # warm the file cache
    return statistics.median(timed(once, repeats))


def pg_database() -> tuple[str, Any] | None:
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
        name = f"keel_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL unavailable, skipping it: {str(exc).splitlines()[0]}")
        return None
    url = sa.engine.make_url(PG_ADMIN).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False), (admin, name)


def drop_pg(handle: Any) -> None:
    admin, name = handle
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a fast check (figures not written to README)")
    ap.add_argument("--no-postgres", action="store_true", help="skip keel on PostgreSQL")
    ap.add_argument("--only", choices=["logging", "search", "startup"], action="append", help="run only these parts (repeatable)")
    ap.add_argument("--no-readme", action="store_true", help="do not append the figures to benchmarks/README.md")
    ap.add_argument(
        "--populate", choices=["bulk", "api"], default="bulk",
        help="fill the search stores with bulk inserts of the rows each API writes (default), or through the "
        "APIs one run at a time (MLflow: create_run + log_batch; ~50 ms a run, much more on a busy machine)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.worker:
        print(json.dumps(WORKERS[opts.worker](json.loads(opts.args))))
        return

    size = SIZES["quick" if opts.quick else "full"]
    load = os.getloadavg()[0]
    mpy = mlflow_python()
    mlflow_version = subprocess.run([str(mpy), "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True, check=True).stdout.strip()
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    try:
        parts = set(opts.only or ["logging", "search", "startup"])
        if "logging" in parts:
            run_logging(size, mpy, rows, notes)
        if "search" in parts:
            run_search(size, mpy, rows, notes, work, mlflow_version, opts)
        if "startup" in parts:
            run_startup(size, mpy, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    machine = (
        f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, MLflow {mlflow_version}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    title = machine + (" (--quick)" if opts.quick else "") + (f" (only {', '.join(sorted(parts))})" if opts.only else "")
    table = render(rows, notes, title)
    print()
    print(table)
    if not opts.quick and not opts.no_readme:
        write_readme(table)
        print(f"\nAppended to {README}")


def run_logging(size: dict[str, Any], mpy: Path, rows: list[tuple[str, str, str, str]], notes: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_tracking_log_"))
    try:
        print("1-2. log_metric / log_batch ...", flush=True)
        (work / "klog").mkdir()
        k = call(sys.executable, "keel_log", {"dir": str(work / "klog"), "n": size["log_n"]})
        (work / "mlog").mkdir()
        m = call(mpy, "mlflow_log", {"dir": str(work / "mlog"), "n": size["mlflow_log_n"]})
        (work / "mbatch").mkdir()
        b = call(mpy, "mlflow_batch", {"dir": str(work / "mbatch"), "n": size["batch_values"], "batch_size": size["batch_size"]})
        n = size["log_n"]
        k_rate = n / k["seconds"]
        m_rate = 1 / m["per_call"]
        b_rate = b["n"] / b["seconds"]
        if not k["verified"]:
            notes.append(f"keel read back {k['read_back']} of {n} values or they differ: FAILED CHECK")
        rows.append((
            f"log_metric, {n:,} calls in one run (values/s)",
            f"{k_rate:,.0f} ({k['seconds']:.2f} s incl. end of run; all {k['read_back']:,} read back{'' if k['verified'] else ' MISMATCH'})",
            f"{m_rate:,.0f} ({m['per_call'] * 1000:.2f} ms/call over {m['n']} calls; {n:,} calls ~ {m['per_call'] * n:,.0f} s, extrapolated)",
            f"{k_rate / m_rate:,.0f}x",
        ))
        rows.append((
            f"{n:,} values: keel log_metric vs MLflow log_batch ({size['batch_size']:,}/call) (values/s)",
            f"{k_rate:,.0f}",
            f"{b_rate:,.0f} ({b['seconds']:.2f} s for {b['calls']} calls; {b['read_back']:,} read back)",
            f"{k_rate / b_rate:,.1f}x",
        ))

    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_search(
    size: dict[str, Any], mpy: Path, rows: list[tuple[str, str, str, str]], notes: list[str],
    work: Path, mlflow_version: str, opts: argparse.Namespace,
) -> None:
    # 3: search
    print(f"3. search_runs over {size['runs']:,} runs (populating the stores once; cached in {CACHE}) ...", flush=True)
    nruns = size["runs"]

    api = opts.populate == "api"

    def build_keel(tmp: Path) -> None:
        pdir = work / "kpop"
        pdir.mkdir(exist_ok=True)
        r = call_progress(sys.executable, "keel_populate" if api else "keel_populate_bulk", {"dir": str(pdir), "db": str(tmp), "runs": nruns})
        print(f"  keel populated in {r['seconds']:.0f} s ({'API, one run at a time' if api else 'bulk insert'})", flush=True)

    def build_mlflow(tmp: Path) -> None:
        r = call_progress(mpy, "mlflow_populate" if api else "mlflow_populate_bulk", {"db": str(tmp), "runs": nruns})
        print(f"  MLflow populated in {r['seconds']:.0f} s ({'create_run + log_batch per run' if api else 'bulk insert into its schema'})", flush=True)

    kdb = cached(f"keel-{nruns}-seed{SEED}-{opts.populate}-{keel_schema_hash()}.db", build_keel)
    mdb = cached(f"mlflow-{nruns}-seed{SEED}-{opts.populate}-mlflow{mlflow_version}.db", build_mlflow)
    notes.append(
        "Search stores filled " + ("through each API, one run at a time." if api else
        "in bulk with the rows each API writes (keel: MetadataStore.insert_many; MLflow: INSERTs into the "
        "schema MLflow created; `--populate api` uses create_run + log_batch instead), not timed.")
    )
    (work / "ks").mkdir()
    shutil.copy(kdb, work / "ks" / "keel.db")
    shutil.copy(mdb, work / "mlflow.db")
    ks = call(sys.executable, "keel_search", {"dir": str(work / "ks"), "uri": f"sqlite:///{work / 'ks' / 'keel.db'}", "repeats": size["repeats"]})
    ms = call(mpy, "mlflow_search", {"uri": f"sqlite:///{work / 'mlflow.db'}", "repeats": size["repeats"]})
    expected = expected_matches(nruns)
    for name, res in (("keel", ks), ("MLflow", ms)):
        if res["rows"] != expected:
            notes.append(f"{name} search returned {res['rows']} rows, expected {expected}: CHECK")
    label = f"search_runs, {nruns:,} runs, 3-clause filter, median of {size['repeats']} (ms)"
    rows.append((
        label + " - SQLite",
        f"{ks['median'] * 1000:.1f} (min {ks['min'] * 1000:.1f}; {ks['rows']} rows x {ks['columns']} cols)",
        f"{ms['median'] * 1000:.1f} (min {ms['min'] * 1000:.1f}; {ms['rows']} rows x {ms['columns']} cols)",
        f"{ms['median'] / ks['median']:,.1f}x",
    ))
    if not opts.no_postgres:
        pg = pg_database()
        if pg is not None:
            uri, handle = pg
            try:
                (work / "kpg").mkdir()
                kp = call(sys.executable, "keel_search", {"dir": str(work / "kpg"), "uri": uri, "copy_from": str(kdb), "repeats": size["repeats"]})
            finally:
                drop_pg(handle)
            rows.append((
                label + " - keel on PostgreSQL",
                f"{kp['median'] * 1000:.1f} (min {kp['min'] * 1000:.1f}; {kp['rows']} rows)",
                f"{ms['median'] * 1000:.1f} (MLflow on SQLite)",
                f"{ms['median'] / kp['median']:,.1f}x",
            ))
            notes.append("keel's PostgreSQL store: a fresh database holding a bulk copy (COPY) of the SQLite store above, then ANALYZE.")
    notes.append(f"Filter: {FILTER}; max_results=1000; both return every param, metric and tag of the matches.")



def run_startup(size: dict[str, Any], mpy: Path, rows: list[tuple[str, str, str, str]]) -> None:
    # 4: start-up
    print("4. import and --help ...", flush=True)
    reps = size["startup_repeats"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    imp = "import time; t = time.perf_counter(); import {m}; print(time.perf_counter() - t)"

    def import_time(py: Path | str, module: str) -> float:
        return statistics.median(
            float(subprocess.run([str(py), "-c", imp.format(m=module)], capture_output=True, text=True, check=True, env=env).stdout)
            for _ in range(reps + 1)
        )

    keel_cli = shutil.which("keel") or ""
    rows.append(("import (s, in-process)", f"{import_time(sys.executable, 'keel'):.3f}", f"{import_time(mpy, 'mlflow'):.3f}", ""))
    rows[-1] = (*rows[-1][:3], f"{float(rows[-1][2]) / float(rows[-1][1]):.1f}x")
    k_help = wall([keel_cli, "--help"] if keel_cli else [sys.executable, "-m", "keel.cli.main", "--help"], reps, env)
    m_help = wall([str(VENV / "bin" / "mlflow"), "--help"], reps, env)
    rows.append(("--help (s, wall, whole process)", f"{k_help:.3f}", f"{m_help:.3f}", f"{m_help / k_help:.1f}x"))


def render(rows: list[tuple[str, str, str, str]], notes: list[str], title: str) -> str:
    lines = [
        f"#### {title}",
        "",
        "| figure | keel | MLflow | keel's advantage |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


def write_readme(table: str) -> None:
    write_section("bench_tracking", table, append=True,
                  intro="## Tracking (vs MLflow)\n\n`python benchmarks/bench_tracking.py` (add `--quick` for a fast check). Each full run appends its figures below.")


if __name__ == "__main__":
    main()
