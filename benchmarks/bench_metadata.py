"""Metadata store under concurrency: N processes writing at once, PostgreSQL beside SQLite, keel beside MLflow.

    python benchmarks/bench_metadata.py              # 8 processes x 1,000 writes, both backends, both tools
    python benchmarks/bench_metadata.py --quick      # 4 processes, keel only (no MLflow venv needed)

Each writer makes 1,000 writes, interleaved: 100 get-or-create experiments (half of them
shared by every writer, created at the same moment), 100 runs (created and ended), 600
metric values in them, and 200 alias moves on one shared registered model. keel runs the
conformance suite's mix (tests/conformance/_writers.py) and reads every write back; MLflow
runs the same mix through MlflowClient (get_experiment_by_name or create_experiment,
create_run, log_batch of the 6 metrics, set_terminated, set_registered_model_alias), in its
own virtualenv (benchmarks/.venvs/mlflow). Failed writes are counted on both sides, not retried.
PostgreSQL: a fresh database on KEEL_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venvs" / "mlflow"
PG = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
STEPS, SHARED, METRICS, ALIASES = 100, 50, 6, 10


# -- keel side (this interpreter) -----------------------------------------------------------------

def keel_mix(args: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    os.environ.update(KEEL_METADATA_URI=args["uri"], KEEL_HOME=args["home"], KEEL_CAPTURE_ENVIRONMENT="0")
    import numpy as np
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from tests.conformance import _writers

    import keel
    from keel.store.metadata import reset_stores

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    for strategy in ("most_frequent", "prior"):
        with keel.start_run():
            info = keel.log_model(DummyClassifier(strategy=strategy).fit(X, np.array([0, 1, 0, 1])), input_example=X)
        keel.register_model(info.uri, "conf")
    reset_stores()
    wall, results = _writers.run_writers(args["uri"], args["home"], "conf", args["processes"])
    report = _writers.check(args["uri"], "conf", args["processes"])
    writes = sum(r["writes"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    return {"seconds": wall, "writes": writes, "errors": len(errors), "error_sample": errors[:3], "lost": len(report["lost"]),
            "lost_sample": report["lost"][:3]}


# -- MLflow side (its own venv) -------------------------------------------------------------------

def mlflow_writer(uri: str, worker: int, barrier: Any, results: Any) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    errors: list[str] = []
    writes = 0
    exp_ids: dict[str, str] = {}

    def get_or_create(name: str) -> str | None:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)

    barrier.wait()
    t0 = time.perf_counter()
    for step in range(STEPS):
        name = f"shared-{step}" if step < SHARED else f"own-{worker}-{step}"
        try:
            exp_ids[name] = str(get_or_create(name))
            writes += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        try:
            eid = exp_ids.get(f"shared-{step % SHARED}") or str(get_or_create(f"shared-{step % SHARED}"))
            run = client.create_run(eid, run_name=f"w{worker}-r{step}")
            writes += 1
            ts = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(f"m{k}", worker * 1000 + step + k / 10, ts, 0) for k in range(METRICS)])
            writes += METRICS
            client.set_terminated(run.info.run_id)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        for j in range(2):
            try:
                client.set_registered_model_alias("conf", f"a{(step * 2 + j) % ALIASES}", str(1 + (worker + step + j) % 2))
                writes += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    results.put({"worker": worker, "seconds": time.perf_counter() - t0, "writes": writes, "errors": errors})


def mlflow_mix(args: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing as mp

    from mlflow import MlflowClient

    uri = args["uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # migrates the new database once, untimed
    client.create_registered_model("conf")
    setup = client.create_run(client.create_experiment("setup"))
    for _ in range(2):
        client.create_model_version("conf", f"{setup.info.artifact_uri}/model", run_id=setup.info.run_id)
    ctx = mp.get_context("spawn")
    n = args["processes"]
    barrier, results = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=mlflow_writer, args=(uri, w, barrier, results)) for w in range(n)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    t0 = time.perf_counter()
    out = [results.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
    errors = [e for r in out for e in r["errors"]]
    return {"seconds": wall, "writes": sum(r["writes"] for r in out), "errors": len(errors), "error_sample": errors[:3], "lost": None}


WORKERS = {"keel": keel_mix, "mlflow": mlflow_mix}


# -- orchestration --------------------------------------------------------------------------------

def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} and installing mlflow (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow"], check=True)
    if subprocess.run([str(py), "-c", "import psycopg2"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "psycopg2-binary"], check=True)
    return py


def call(python: Path | str, worker: str, args: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", worker, json.dumps(args)],
                         cwd=args["home"], env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(f"worker {worker} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class PgDatabase:
    """A fresh PostgreSQL database for one side, dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"keel_bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        import sqlalchemy as sa

        self._admin("CREATE DATABASE")
        return str(sa.engine.make_url(PG).set(drivername="postgresql", database=self.name).render_as_string(hide_password=False))

    def __exit__(self, *exc: Any) -> None:
        self._admin("DROP DATABASE IF EXISTS", " WITH (FORCE)")

    def _admin(self, verb: str, suffix: str = "") -> None:
        import sqlalchemy as sa

        url = sa.engine.make_url(PG).set(drivername="postgresql+psycopg")
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'{verb} "{self.name}"{suffix}'))
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 processes, keel only")
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker[0]](json.loads(a.worker[1]))))
        return
    n = a.processes or (4 if a.quick else 8)
    sides = ["keel"] + ([] if (a.quick or a.no_mlflow) else ["mlflow"])
    pythons: dict[str, Path | str] = {"keel": sys.executable}
    if "mlflow" in sides:
        pythons["mlflow"] = mlflow_python()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for backend in ("sqlite", "postgresql"):
        for side in sides:
            with tempfile.TemporaryDirectory(prefix=f"keel-bench-meta-{side}-") as home:
                print(f"  {side} on {backend}: {n} processes x 1,000 writes...", flush=True)
                if backend == "sqlite":
                    rows[(side, backend)] = call(pythons[side], side, {"uri": f"sqlite:///{home}/meta.db", "home": home, "processes": n})
                else:
                    with PgDatabase() as uri:
                        driver = "postgresql+psycopg://" if side == "keel" else "postgresql+psycopg2://"  # MLflow's venv has psycopg2
                        rows[(side, backend)] = call(pythons[side], side, {"uri": uri.replace("postgresql://", driver, 1), "home": home, "processes": n})
                r = rows[(side, backend)]
                print(f"    {r['writes'] / r['seconds']:,.0f} writes/s, {r['errors']} failed, lost {r['lost']}", flush=True)
    table = report(n, sides, rows)
    print("\n" + table)
    if not a.quick and not a.no_readme and "mlflow" in sides:
        write_readme(table)
        print(f"\nWritten to {HERE / 'README.md'}")


def write_readme(table: str) -> None:
    sys.path.insert(0, str(HERE))
    from _readme import write_section

    write_section("bench_metadata", table, append=True, intro=(
        "## Metadata store under concurrency: PostgreSQL beside SQLite (vs MLflow)\n\n"
        "`python benchmarks/bench_metadata.py` (add `--quick` for 4 processes, keel only). 8 processes start at once and each "
        "makes 1,000 writes: 100 get-or-create experiments (50 shared by all, created at the same moment), 100 runs, 600 metric "
        "values, 200 alias moves on one model. keel reads every write back (the conformance suite's check); failed writes are "
        "counted on both sides, not retried. Each full run appends its figures below."))


def report(n: int, sides: list[str], rows: dict[tuple[str, str], dict[str, Any]]) -> str:
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}; {n} processes x 1,000 writes at once.",
        "",
        "| tool | backend | writes/s | seconds | failed writes | lost (read back) |",
        "|---|---|---|---|---|---|",
    ]
    for side in sides:
        for backend in ("sqlite", "postgresql"):
            r = rows[(side, backend)]
            lost = "n/a" if r["lost"] is None else str(r["lost"])
            lines.append(f"| {side} | {backend} | {r['writes'] / r['seconds']:,.0f} | {r['seconds']:.1f} | {r['errors']} | {lost} |")
    lines.append("")
    for side in sides:
        k_pg, k_sq = rows[(side, "postgresql")], rows[(side, "sqlite")]
        lines.append(f"- {side}: PostgreSQL / SQLite writes/s = {(k_pg['writes'] / k_pg['seconds']) / (k_sq['writes'] / k_sq['seconds']):.2f}x")
    if "mlflow" in sides:
        for backend in ("sqlite", "postgresql"):
            k, m = rows[("keel", backend)], rows[("mlflow", backend)]
            lines.append(f"- {backend}: keel / MLflow writes/s = {(k['writes'] / k['seconds']) / (m['writes'] / m['seconds']):.2f}x")
    samples = [f"{side} on {backend}: `{r['error_sample'][0].splitlines()[0][:140]}`" for (side, backend), r in rows.items() if r.get("error_sample")]
    if samples:
        lines.append("\nFirst failed write: " + "; ".join(samples))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
