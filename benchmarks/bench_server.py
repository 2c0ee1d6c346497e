"""The same MLflow client workload against ``mlflow server`` 3.17 and ``keel server``, one worker each.

    python benchmarks/bench_server.py [--runs 1000] [--points 100000] [--backends sqlite,postgres]

Workload (the official mlflow client, in its own venv and process, the load generator):
1,000 runs, each created, given 10 params and 10 metrics in one ``log_batch`` and
ended; then ``search_runs`` with a 3-clause filter (median of 5); then a run whose
metric gets 100,000 points (``log_batch``, 1,000 per call) and one
``get_metric_history`` of all of them, every value checked. Each server gets a
fresh store: SQLite files, or a PostgreSQL database created and dropped for it
(PostgreSQL at KEEL_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/test).

mlflow lives in benchmarks/.venvs/mlflow-3.17 (created on first use, git-ignored).
Prints each phase for both servers and the ratio mlflow / keel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venvs" / "mlflow-3.17"
PG = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
KEEL = [sys.executable, "-c", "from keel.cli.main import main; main()"]
FILTER = "metrics.m0 > 0.5 and params.p1 = '3' and attributes.status = 'FINISHED'"


# -- the load generator (runs inside the mlflow venv) -------------------------------------------

def worker(url: str, n_runs: int, n_points: int) -> dict[str, Any]:
    import random

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=url)
    exp = client.create_experiment(f"bench-{uuid.uuid4().hex[:8]}")
    rng = random.Random(7)
    t0 = time.perf_counter()
    for i in range(n_runs):
        run = client.create_run(exp, run_name=f"run-{i}")
        rid = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            rid,
            metrics=[Metric(f"m{j}", rng.random(), now, 0) for j in range(10)],
            params=[Param(f"p{j}", str((i + j) % 10)) for j in range(10)],
        )
        client.set_terminated(rid)
    log_s = time.perf_counter() - t0

    searches = []
    found = 0
    for _ in range(5):
        t = time.perf_counter()
        found = len(client.search_runs([exp], filter_string=FILTER, max_results=1000))
        searches.append(time.perf_counter() - t)
    search_s = sorted(searches)[2]

    run = client.create_run(exp, run_name="history")
    rid = run.info.run_id
    t = time.perf_counter()
    now = int(time.time() * 1000)
    for start in range(0, n_points, 1000):
        client.log_batch(rid, metrics=[Metric("loss", 1.0 / (s + 1), now + s, s) for s in range(start, min(start + 1000, n_points))])
    write_points_s = time.perf_counter() - t
    t = time.perf_counter()
    history = client.get_metric_history(rid, "loss")
    history_s = time.perf_counter() - t
    ok = len(history) == n_points and all(m.value == 1.0 / (m.step + 1) for m in history)
    return {"log_s": log_s, "search_s": search_s, "found": found, "write_points_s": write_points_s, "history_s": history_s,
            "points": len(history), "history_ok": ok}


# -- orchestration ------------------------------------------------------------------------------

def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not (VENV / ".complete").exists():
        print(f"Creating {VENV} with mlflow 3.17 (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow==3.17.*", "psycopg[binary]"], check=True)
        (VENV / ".complete").write_text("mlflow==3.17.*\n")
    return py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server did not come up: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pg_database(name: str, drop: bool = False) -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if drop else f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(PG.replace("postgresql://", "postgresql+psycopg://", 1)).set(database=name)
    return url.render_as_string(hide_password=False)


def serve(tool: str, backend: str, work: Path) -> tuple[subprocess.Popen[bytes], str, str | None]:
    port = free_port()
    log = work / f"{tool}-{backend}.log"
    dbname = f"bench_{tool}_{uuid.uuid4().hex[:8]}" if backend == "postgres" else None
    env = clean_env()
    if tool == "mlflow":
        store = pg_database(dbname) if dbname else f"sqlite:///{work / 'mlflow.db'}"
        cmd = [str(mlflow_python().parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", store, "--artifacts-destination", str(work / "mlflow-artifacts")]
    else:
        project = work / "keel-project"
        project.mkdir(exist_ok=True)
        env["PYTHONPATH"] = str(ROOT / "src")
        env["KEEL_METADATA_URI"] = pg_database(dbname) if dbname else f"sqlite:///{project / 'keel.db'}"
        env["KEEL_ARTIFACTS_URI"] = str(project / "artifacts")
        cmd = [*KEEL, "server", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc, log)
    return proc, url, dbname


def measure(tool: str, backend: str, n_runs: int, n_points: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-server-{tool}-"))
    proc, url, dbname = serve(tool, backend, work)
    try:
        env = {**clean_env(), "PYTHONWARNINGS": "ignore", "MLFLOW_ENABLE_ASYNC_LOGGING": "false"}
        res = subprocess.run([str(mlflow_python()), __file__, "--worker", url, str(n_runs), str(n_points)],
                             capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} workload failed:\n{res.stderr[-4000:]}")
        return dict(json.loads(res.stdout.strip().splitlines()[-1]))
    finally:
        stop(proc)
        if dbname:
            pg_database(dbname, drop=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    phases = [("log", "log_s"), ("search", "search_s"), ("write 100k points", "write_points_s"), ("history", "history_s")]
    for backend in args.backends.split(","):
        results = {tool: measure(tool, backend, args.runs, args.points) for tool in ("mlflow", "keel")}
        m, k = results["mlflow"], results["keel"]
        assert m["found"] == k["found"], (m["found"], k["found"])
        assert k["history_ok"] and m["history_ok"], "a history did not read back whole"
        print(f"\n{backend}: {args.runs} runs x (10 params + 10 metrics, log_batch); search -> {k['found']} runs; history {k['points']} points")
        print(f"{'phase':<20}{'mlflow s':>12}{'keel s':>12}{'ratio':>9}")
        for label, key in phases:
            print(f"{label:<20}{m[key]:>12.3f}{k[key]:>12.3f}{m[key] / k[key]:>8.1f}x")
        total_m, total_k = sum(m[key] for _l, key in phases), sum(k[key] for _l, key in phases)
        print(f"{'end to end':<20}{total_m:>12.3f}{total_k:>12.3f}{total_m / total_k:>8.1f}x  (target {'5' if backend == 'sqlite' else '3'}x)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
