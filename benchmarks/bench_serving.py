"""Serving benchmark: keel serve beside `mlflow models serve` 3.17 and a bare Starlette endpoint, same model, same load.

    python benchmarks/bench_serving.py            # full run: 1 and 2 workers, single-row and 1,000-row requests
    python benchmarks/bench_serving.py --quick    # short runs (README untouched)

The model: scikit-learn LogisticRegression on 30 numeric features (20,000 rows, seed 11), trained the
same way on both sides. The load generator is wrk (Debian's package) in its own process: 32 concurrent
keep-alive connections, POST bodies from a Lua script; requests/s and p99 come from wrk, server CPU per
request from /proc (the server's processes, workers included, before and after the run).

Servers:
  keel      `keel serve models:/bench@live` (signature validation and prediction logging on; and --no-log)
  mlflow    `mlflow models serve --env-manager local` (mlflow 3.17 in benchmarks/.venvs/mlflow)
  bare      a Starlette endpoint that parses the same JSON with orjson and calls model.predict on a
            DataFrame: no validation, no logging (the ceiling of the stack), on uvicorn

Also: Predictor.predict on one row beside the model's bare predict_proba on a 1x30 NumPy array, and
`keel score` beside a hand-written chunked predict loop over the same Parquet file (peak RSS of each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _readme import write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's keel, for the in-process figures
VENV = HERE / ".venvs" / "mlflow"
FEATURES, ROWS, SEED = 30, 20_000, 11
SIZES = {"full": {"duration": 10, "batch_rows": 10_000_000, "predict_n": 3000}, "quick": {"duration": 3, "batch_rows": 100_000, "predict_n": 300}}

BARE_APP = '''
import pickle, orjson, pandas as pd
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
model = pickle.load(open({path!r}, "rb"))
async def predict(request):
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({{"predictions": model.predict(pd.DataFrame(body["records"])).tolist()}}), media_type="application/json")
app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
'''

MLFLOW_SETUP = '''
import sys, numpy as np, pandas as pd, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng({seed})
X = pd.DataFrame(rng.normal(size=({rows}, {features})), columns=[f"f{{i}}" for i in range({features})])
y = (X.f0 + 0.5 * X.f1 - 0.3 * X.f2 + rng.normal(0, 1, {rows}) > 0).astype(int)
model = LogisticRegression(max_iter=500).fit(X, y)
mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(X, model.predict(X)))
'''


def make_data(rows: int = ROWS) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    X = pd.DataFrame(rng.normal(size=(rows, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    y = (X.f0 + 0.5 * X.f1 - 0.3 * X.f2 + rng.normal(0, 1, rows) > 0).astype(int)
    return X, y


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} and installing mlflow 3.17 (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow==3.17.*", "scikit-learn"], check=True)
    return py


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def setup_keel(work: Path) -> Path:
    """A keel project with models:/bench@live; returns the pickled model for the bare endpoint."""
    import pickle

    from sklearn.linear_model import LogisticRegression

    import keel
    from keel import config
    from keel.registry.transitions import set_alias

    os.chdir(work)
    config.init_project(work)
    config.reset()
    X, y = make_data()
    model = LogisticRegression(max_iter=500).fit(X, y)
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(5))
    v = keel.register_model(info.uri, "bench")
    set_alias("bench", "live", v.version)
    path = work / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return path


def _proc_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d.name)] = int(fields[1])
        times[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def start(cmd: list[str], cwd: Path, url: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    import urllib.error
    import urllib.request

    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc
        except urllib.error.HTTPError:  # it answers
            return proc
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{' '.join(cmd)} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the session this benchmark started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(url: str, body: str, duration: int, work: Path, pid: int, *, script: str | None = None) -> dict[str, Any]:
    """wrk posting ``body`` (or running the Lua ``script``) against ``url``; the server's CPU from /proc."""
    path = work / "post.lua"
    path.write_text(script or ('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[' + body + "]==]\n"))
    script = str(path)
    subprocess.run(["wrk", "-t1", "-c4", "-d1s", "-s", str(script), url], capture_output=True, check=False)  # warm-up
    cpu0 = _proc_cpu(pid)
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    cpu = _proc_cpu(pid) - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": _ms(p99.group(1)) if p99 else float("nan"), "requests": total,
            "cpu_ms_per_request": 1000 * cpu / max(total, 1), "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def run_http(work: Path, model_pkl: Path, duration: int, mlflow_model: Path | None) -> list[dict[str, Any]]:
    X, _ = make_data(1000)
    rows1 = X.head(1).to_dict("records")
    rows1000 = X.to_dict("records")
    keel_bin = [sys.executable, "-c", "from keel.cli.main import main; main()"]
    (work / "bare.py").write_text(BARE_APP.format(path=str(model_pkl)))
    results = []
    for workers in (1, 2):
        servers: dict[str, tuple[list[str], str, str, Path, dict[str, str]]] = {}
        port = free_port()
        servers["keel"] = ([*keel_bin, "serve", "models:/bench@live", "--port", str(port), "--workers", str(workers)],
                           f"http://127.0.0.1:{port}", "/v1/models/bench/predict", work, _env())
        port = free_port()
        servers["keel --no-log"] = ([*keel_bin, "serve", "models:/bench@live", "--no-log", "--port", str(port), "--workers", str(workers)],
                                    f"http://127.0.0.1:{port}", "/v1/models/bench/predict", work, _env())
        port = free_port()
        servers["bare starlette"] = ([sys.executable, "-m", "uvicorn", "bare:app", "--port", str(port), "--workers", str(workers),
                                      "--no-access-log", "--log-level", "warning"], f"http://127.0.0.1:{port}", "/predict", work, _env())
        if mlflow_model is not None:
            port = free_port()
            servers["mlflow"] = ([str(VENV / "bin" / "mlflow"), "models", "serve", "-m", str(mlflow_model), "-p", str(port), "-h", "127.0.0.1",
                                  "--env-manager", "local", "-w", str(workers)], f"http://127.0.0.1:{port}", "/invocations", work,
                                 {**_env(), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"})
        for name, (cmd, base, path, cwd, env) in servers.items():
            health = base + ("/ping" if name == "mlflow" else "/v2/health/ready" if name.startswith("keel") else "/predict")
            try:
                proc = start(cmd, cwd, health if name != "bare starlette" else base + "/nope", env, work / f"{name.replace(' ', '_')}-{workers}.log")
            except RuntimeError as exc:
                print(f"  {name}: {exc}", flush=True)
                continue
            try:
                for size, rows in (("1 row", rows1), ("1,000 rows", rows1000)):
                    key = "dataframe_records" if name == "mlflow" else "records"
                    r = wrk(base + path, json.dumps({key: rows}), duration, work, proc.pid)
                    r.update({"server": name, "workers": workers, "size": size, "rows_per_s": r["rps"] * len(rows)})
                    print(f"  {name:15s} {workers}w {size:10s} {r['rps']:9.1f} req/s  p99 {r['p99_ms']:8.2f} ms  "
                          f"cpu {r['cpu_ms_per_request']:.3f} ms/req  non-2xx {r['non2xx']}", flush=True)
                    results.append(r)
            finally:
                stop(proc)
    return results


def run_predictor(n: int) -> dict[str, float]:
    import warnings

    import keel
    from keel.serving import Predictor

    X, _ = make_data(1)
    row = X.to_dict("records")
    cols = {k: [v[0]] for k, v in X.to_dict("list").items()}
    model = keel.load_model("models:/bench@live").model
    matrix = X.to_numpy()
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 1x30 array for a model fitted with column names
        for name, fn in (("bare predict_proba(1x30 ndarray)", lambda: model.predict_proba(matrix)),
                         ("bare predict_proba(1-row DataFrame)", lambda: model.predict_proba(X)),
                         ("Predictor.predict(columns), log on", lambda p=Predictor("models:/bench@live"): p.predict(cols)),
                         ("Predictor.predict(records), log on", lambda p=Predictor("models:/bench@live"): p.predict(row)),
                         ("Predictor.predict(columns), log off", lambda p=Predictor("models:/bench@live", log=False): p.predict(cols))):
            for _ in range(50):
                fn()
            times = []
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[name] = statistics.median(times) * 1e6
            print(f"  {name:40s} {out[name]:8.1f} us", flush=True)
    return out


def worker_batch(args: dict[str, Any]) -> dict[str, Any]:
    """One batch job in this process (keel score, or the hand-written loop); reports seconds and peak RSS."""
    os.chdir(args["work"])
    t = time.perf_counter()
    if args["kind"] == "loop":
        import pickle

        import pyarrow as pa
        import pyarrow.parquet as pq

        model = pickle.loads(Path(args["model"]).read_bytes())
        f = pq.ParquetFile(args["input"])
        writer = None
        for i, batch in enumerate(f.iter_batches(batch_size=65_536)):
            df = batch.to_pandas()
            proba = model.predict_proba(df)
            out = pa.table({"row_id": pa.array(range(i * 65_536, i * 65_536 + len(df))), "prediction": proba.argmax(axis=1), "score": proba[:, 1]})
            writer = writer or pq.ParquetWriter(args["output"], out.schema)
            writer.write_table(out)
        if writer:
            writer.close()
    else:
        from keel.serving import score

        score("models:/bench@live", args["input"], args["output"], log=args["kind"] == "keel score")
    seconds = time.perf_counter() - t
    if args["kind"] == "keel score":  # what is still in the local segment is compacted into the lake before the process ends
        from keel.store.prediction_log import close_prediction_log

        close_prediction_log()
    return {"seconds": seconds, "seconds_with_compaction": time.perf_counter() - t,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def write_batch_input(path: Path, rows: int) -> None:
    """``rows`` x 30 features as Parquet, written 1M rows at a time (the generator's memory stays bounded too)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for i, start in enumerate(range(0, rows, 1_000_000)):
        n = min(1_000_000, rows - start)
        block = np.random.default_rng(SEED + i).normal(size=(n, FEATURES))
        table = pa.table({f"f{j}": block[:, j] for j in range(FEATURES)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=65_536)
    if writer:
        writer.close()


def run_batch(work: Path, model_pkl: Path, rows: int) -> dict[str, dict[str, float]]:
    path = work / "batch.parquet"
    write_batch_input(path, rows)
    out = {}
    for kind in ("loop", "keel score --no-log", "keel score"):
        args = {"work": str(work), "kind": kind, "input": str(path), "output": str(work / f"out-{kind.replace(' ', '_')}.parquet"), "model": str(model_pkl)}
        res = subprocess.run([sys.executable, __file__, "--worker-batch", json.dumps(args)], capture_output=True, text=True, env=_env(), cwd=work)
        if res.returncode != 0:
            print(res.stderr[-2000:])
            continue
        out[kind] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {kind:22s} {rows:,} rows in {out[kind]['seconds']:.2f}s ({rows / out[kind]['seconds']:,.0f} rows/s; "
              f"{out[kind]['seconds_with_compaction']:.2f}s until the log is in the lake), peak RSS {out[kind]['peak_rss_mb']:.0f} MB", flush=True)
    return out


def report(http: list[dict[str, Any]], predictor: dict[str, float], batch: dict[str, dict[str, float]], rows: int, duration: int) -> str:
    def get(server: str, w: int, size: str) -> dict[str, Any] | None:
        return next((r for r in http if r["server"] == server and r["workers"] == w and r["size"] == size), None)

    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores shared "
             f"(load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}; "
             + (f"wrk -t2 -c32 -d{duration}s; " if http else "") + f"LogisticRegression, {FEATURES} features.", ""]
    if http:
        lines += ["| server | workers | request | req/s | rows/s | p99 ms | server CPU ms/req | non-2xx |", "|---|---|---|---|---|---|---|---|"]
    for r in http:
        lines.append(f"| {r['server']} | {r['workers']} | {r['size']} | {r['rps']:.0f} | {r['rows_per_s']:.0f} | {r['p99_ms']:.1f} | "
                     f"{r['cpu_ms_per_request']:.2f} | {r['non2xx']} |")
    ratios = ["", "| ratio | 1 worker | 2 workers |", "|---|---|---|"] if http else []
    lines += ratios
    for label, a, b, size, key in (("keel / mlflow throughput, 1 row", "keel", "mlflow", "1 row", "rps"),
                                   ("keel / mlflow rows/s, 1,000 rows", "keel", "mlflow", "1,000 rows", "rows_per_s"),
                                   ("keel / bare Starlette, 1 row", "keel", "bare starlette", "1 row", "rps"),
                                   ("keel / bare Starlette, 1,000 rows", "keel", "bare starlette", "1,000 rows", "rps"),
                                   ("keel logging on / off, 1 row", "keel", "keel --no-log", "1 row", "rps"),
                                   ("keel logging on / off, 1,000 rows", "keel", "keel --no-log", "1,000 rows", "rps")):
        cells = []
        for w in (1, 2):
            x, y = get(a, w, size), get(b, w, size)
            cells.append(f"{x[key] / y[key]:.2f}x" if x and y and y[key] else "-")
        if http:
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    if predictor:
        bare = predictor["bare predict_proba(1x30 ndarray)"]
        lines += ["", "| one row, in process | median µs | / bare ndarray predict |", "|---|---|---|"]
        lines += [f"| {k} | {v:.1f} | {v / bare:.2f}x |" for k, v in predictor.items()]
    if batch:
        loop = batch.get("loop")
        lines += ["", f"| batch, {rows:,} rows x {FEATURES} | seconds | rows/s | peak RSS MB | throughput / loop | seconds until the log is in the lake |",
                  "|---|---|---|---|---|---|"]
        for k, v in batch.items():
            ratio = f"{loop['seconds'] / v['seconds']:.2f}x" if loop else "-"
            lines.append(f"| {k} | {v['seconds']:.2f} | {rows / v['seconds']:,.0f} | {v['peak_rss_mb']:.0f} | {ratio} | "
                         f"{v['seconds_with_compaction']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-mlflow", action="store_true", help="Skip the mlflow server (no venv).")
    parser.add_argument("--only", choices=["http", "predictor", "batch"], help="Run one part; its table is appended to the README section.")
    parser.add_argument("--worker-batch")
    args = parser.parse_args()
    if args.worker_batch:
        print(json.dumps(worker_batch(json.loads(args.worker_batch))))
        return
    size = SIZES["quick" if args.quick else "full"]
    work = Path(tempfile.mkdtemp(prefix="keel-bench-serving-"))
    model_pkl = setup_keel(work)
    mlflow_model = None
    parts = {args.only} if args.only else {"http", "predictor", "batch"}
    if not args.no_mlflow and "http" in parts:
        py = mlflow_python()
        mlflow_model = work / "mlflow-model"
        subprocess.run([str(py), "-c", MLFLOW_SETUP.format(seed=SEED, rows=ROWS, features=FEATURES), str(mlflow_model)], check=True, env=_env())
    http: list[dict[str, Any]] = []
    predictor: dict[str, float] = {}
    batch: dict[str, dict[str, float]] = {}
    if "http" in parts:
        print("HTTP (wrk):", flush=True)
        http = run_http(work, model_pkl, size["duration"], mlflow_model)
    if "predictor" in parts:
        print("Predictor, one row:", flush=True)
        predictor = run_predictor(size["predict_n"])
    if "batch" in parts:
        print("Batch:", flush=True)
        batch = run_batch(work, model_pkl, size["batch_rows"])
    text = report(http, predictor, batch, size["batch_rows"], size["duration"])
    print("\n" + text)
    if args.only and not args.quick:
        write_section("bench_serving", text, append=True)
    elif not args.quick:
        write_section("bench_serving", text, intro="## Serving (`bench_serving.py`)\n\nkeel serve beside `mlflow models serve` 3.17 and a bare "
                      "Starlette endpoint, same model and load (see the script's docstring). Each full run replaces this section.")


if __name__ == "__main__":
    main()
