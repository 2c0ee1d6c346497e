"""keel's own client through `keel server`, beside MLflow's client through `mlflow server`; one run.

    python benchmarks/bench_server_client.py            # full sizes
    python benchmarks/bench_server_client.py --quick    # small sizes, a fast check

Figures (issue 15, "keel's own client over HTTP"):
  1. log_metric into a remote run: keel, 100,000 calls timed to the end of the run (every
     buffered batch sent and stored by the server), then every value read back over HTTP and
     compared. MLflow beside it on the same values: `mlflow.log_metric` with MLflow's async
     logging on (its own buffered mode), and `MlflowClient.log_batch` with 1,000 values a call
     (the most its REST API takes), each read back with get_metric_history.
  2. 16 concurrent client processes writing through one keel server on PostgreSQL: errors,
     values lost (counted in the database afterwards), values doubled, and values/s overall.

Each server runs in its own process (SQLite, 1 worker, unless said), each load generator
in its own process. MLflow runs in its own virtualenv (benchmarks/.venvs/mlflow, created on
first use). A full run appends its figures to benchmarks/README.md (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
VENV = HERE / ".venvs" / "mlflow"
PG_ADMIN = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SEED = 7
SIZES = {
    "full": {"log_n": 100_000, "mlflow_async_n": 2_000, "batch_n": 100_000, "batch_size": 1000, "clients": 16, "client_runs": 4, "client_values": 25_000},
    "quick": {"log_n": 10_000, "mlflow_async_n": 500, "batch_n": 10_000, "batch_size": 1000, "clients": 4, "client_runs": 2, "client_values": 2_000},
}


# -- load generators (each in its own process) -------------------------------------------------
def worker_keel_log(a: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import keel

    n = a["n"]
    values = np.random.default_rng(SEED).random(n).tolist()
    with keel.start_run("log-bench", experiment="log-bench") as run:
        keel.log_metric("warmup", 0.0)
        run.flush()
        t = time.perf_counter()
        for i in range(n):
            keel.log_metric("loss", values[i], step=i)
        calls = time.perf_counter() - t
    elapsed = time.perf_counter() - t  # the run has ended: every batch is stored on the server
    history = keel.get_metric_history(run.id, "loss")
    ok = len(history) == n and np.array_equal(history["value"].to_numpy(), np.asarray(values)) and list(history["step"]) == list(range(n))
    return {"seconds": elapsed, "calls_seconds": calls, "n": n, "read_back": len(history), "equal": bool(ok)}


def worker_mlflow_async(a: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(a["uri"])
    mlflow.set_experiment("log-bench")
    n = a["n"]
    values = np.random.default_rng(SEED).random(n).tolist()
    with mlflow.start_run() as run:
        mlflow.log_metric("warmup", 0.0)
        t = time.perf_counter()
        for i in range(n):
            mlflow.log_metric("loss", values[i], step=i, synchronous=False)
    mlflow.flush_async_logging()
    elapsed = time.perf_counter() - t
    history = MlflowClient(a["uri"]).get_metric_history(run.info.run_id, "loss")
    got = [m.value for m in sorted(history, key=lambda m: m.step)]
    return {"seconds": elapsed, "n": n, "read_back": len(history), "equal": got == values}


def worker_mlflow_batch(a: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import numpy as np
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(a["uri"])
    mlflow.set_tracking_uri(a["uri"])
    exp = client.create_experiment(f"batch-{uuid.uuid4().hex[:6]}")
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
    history = client.get_metric_history(run.info.run_id, "loss")
    got = [m.value for m in sorted(history, key=lambda m: m.step)]
    return {"seconds": elapsed, "n": n, "read_back": len(history), "equal": got == values}


def worker_keel_client(a: dict[str, Any]) -> dict[str, Any]:
    """One of the concurrent clients: runs x values, counting the calls that raised."""
    import keel

    errors, ids = 0, []
    t = time.perf_counter()
    for r in range(a["runs"]):
        try:
            with keel.start_run(f"{a['tag']}-{r}", experiment="concurrent") as run:
                keel.log_params({"client": a["tag"], "r": r})
                for i in range(a["values"]):
                    keel.log_metric("v", float(i))
            ids.append(run.id)
        except Exception as exc:  # counted, and reported: the figure is "0 errors"
            errors += 1
            sys.stderr.write(f"client {a['tag']}: {type(exc).__name__}: {exc}\n")
    return {"ids": ids, "errors": errors, "seconds": time.perf_counter() - t}


# -- plumbing ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready in {timeout:.0f} s: {log.read_text()[-3000:]}")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def keel_server(home: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    proc = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "server", "--port", str(port)],
                            cwd=home, env=clean_env(KEEL_HOME=str(home), **env), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", proc, log)
    return proc, url


def mlflow_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "mlflow.log"
    mlflow_bin = VENV / "bin" / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "artifacts")],
        cwd=folder, env=clean_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", proc, log, timeout=300)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM) if _own_group(proc) else proc.terminate()
            proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            proc.kill()
            proc.wait()


def _own_group(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} and installing mlflow (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow>=3,<4"], check=True)
    return py


def call(python: Path | str, worker: str, args: dict[str, Any], env: dict[str, str], timeout: float = 3600) -> subprocess.Popen[str]:
    return subprocess.Popen([str(python), str(Path(__file__).resolve()), "--worker", worker, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen[str], worker: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker} failed:\n{err[-4000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def pg_database() -> tuple[str, str] | None:
    import sqlalchemy as sa

    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    try:
        engine = sa.create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception as exc:
        print(f"PostgreSQL not reachable ({exc}); skipping the concurrent-clients figure")
        return None
    url = sa.engine.make_url(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://")).set(database=name)
    return url.render_as_string(hide_password=False), name


def drop_pg(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# -- the figures ------------------------------------------------------------------------------
def run_logging(size: dict[str, Any], tmp: Path, rows: list[tuple[str, str, str, str]]) -> None:
    server, url = keel_server(tmp / "keel")
    try:
        client_dir = tmp / "keel-client"
        client_dir.mkdir()
        env = clean_env(KEEL_TRACKING_URI=url, KEEL_CAPTURE_ENVIRONMENT="false")
        proc = call(sys.executable, "keel_log", {"n": size["log_n"]}, env)
        k = result(proc, "keel_log")
    finally:
        stop(server)
    local_dir = tmp / "keel-local"
    local_dir.mkdir()
    local = result(call(sys.executable, "keel_log", {"n": size["log_n"]}, clean_env(KEEL_HOME=str(local_dir), KEEL_CAPTURE_ENVIRONMENT="false")), "keel_log")
    mpy = mlflow_python()
    mserver, murl = mlflow_server(tmp / "mlflow")
    try:
        menv = clean_env(MLFLOW_ENABLE_ASYNC_LOGGING="true")
        m_async = result(call(mpy, "mlflow_async", {"n": size["mlflow_async_n"], "uri": murl}, menv), "mlflow_async")
        m_batch = result(call(mpy, "mlflow_batch", {"n": size["batch_n"], "batch_size": size["batch_size"], "uri": murl}, menv), "mlflow_batch")
    finally:
        stop(mserver)
    keel_rate = k["n"] / k["seconds"]
    async_rate = m_async["n"] / m_async["seconds"]
    batch_rate = m_batch["n"] / m_batch["seconds"]
    rows.append((f"log_metric into a remote run, {k['n']:,} calls, to the end of the run",
                 f"{keel_rate:,.0f} values/s; read back {k['read_back']:,}, equal: {k['equal']}",
                 f"MLflow async log_metric ({m_async['n']:,}): {async_rate:,.0f}/s, read back {m_async['read_back']:,}, equal: {m_async['equal']}",
                 f"{keel_rate / async_rate:,.1f}x (target >= 100,000 values/s: {'met' if keel_rate >= 100_000 and k['equal'] else 'NOT met'})"))
    local_rate = local["n"] / local["seconds"]
    rows.append(("the same keel loop into the local SQLite store (no server), same run", f"{local_rate:,.0f} values/s, equal: {local['equal']}",
                 "", f"remote / local: {keel_rate / local_rate:.2f}"))
    rows.append((f"the same keel run vs MLflow log_batch ({size['batch_size']:,} values a call, {m_batch['n']:,} values)",
                 f"{keel_rate:,.0f} values/s",
                 f"{batch_rate:,.0f} values/s, read back {m_batch['read_back']:,}, equal: {m_batch['equal']}",
                 f"{keel_rate / batch_rate:,.1f}x"))


def run_concurrent(size: dict[str, Any], tmp: Path, rows: list[tuple[str, str, str, str]]) -> None:
    import sqlalchemy as sa

    db = pg_database()
    if db is None:
        return
    uri, name = db
    try:
        server, url = keel_server(tmp / "keel-pg", KEEL_METADATA_URI=uri)
        try:
            env = clean_env(KEEL_TRACKING_URI=url, KEEL_CAPTURE_ENVIRONMENT="false")
            t = time.perf_counter()
            procs = [call(sys.executable, "keel_client", {"tag": f"c{i}", "runs": size["client_runs"], "values": size["client_values"]}, env)
                     for i in range(size["clients"])]
            results = [result(p, "keel_client") for p in procs]
            elapsed = time.perf_counter() - t
        finally:
            stop(server)
        engine = sa.create_engine(uri)
        with engine.connect() as conn:
            stored = dict(conn.execute(sa.text("SELECT run_id, sum(n) FROM metric_history GROUP BY run_id")).all())
            runs = int(conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one())
        engine.dispose()
    finally:
        drop_pg(name)
    ids = [i for r in results for i in r["ids"]]
    errors = sum(r["errors"] for r in results)
    expected = size["clients"] * size["client_runs"] * size["client_values"]
    got = sum(int(stored.get(i, 0)) for i in ids)
    lost = expected - got if got <= expected else 0
    doubled = got - expected if got > expected else 0
    logging_s = max(r["seconds"] for r in results)  # from each client's first run to its last end_run, the slowest client
    rows.append((f"{size['clients']} client processes x {size['client_runs']} runs x {size['client_values']:,} values, one keel server on PostgreSQL",
                 f"{errors} errors, {lost} lost, {doubled} doubled, {runs} runs stored; {expected / logging_s:,.0f} values/s while logging "
                 f"({expected / elapsed:,.0f}/s counting the processes' start)",
                 "", "target 0 errors, 0 lost: " + ("met" if errors == 0 and lost == 0 and doubled == 0 and runs == len(ids) else "NOT met")))


def render(rows: list[tuple[str, str, str, str]], title: str) -> str:
    lines = [title, "", "| what | keel | peer | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.worker:
        print(json.dumps(globals()[f"worker_{opts.worker}"](json.loads(opts.args))))
        return
    size = SIZES["quick" if opts.quick else "full"]
    load = os.getloadavg()
    rows: list[tuple[str, str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-client-"))
    try:
        run_logging(size, tmp, rows)
        run_concurrent(size, tmp, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = os.getloadavg()
    title = (f"### keel's client through `keel server` ({'quick' if opts.quick else 'full'}, {dt.date.today()}; "
             f"load average {load[0]:.1f} before, {after[0]:.1f} after)")
    table = render(rows, title)
    print(table)
    if not opts.quick and not opts.no_readme:
        sys.path.insert(0, str(HERE))
        from _readme import write_section

        write_section("bench_server_client", table, append=True)


if __name__ == "__main__":
    main()
