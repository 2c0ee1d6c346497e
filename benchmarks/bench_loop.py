"""`keel lineage` and `keel models diagnose` on a store with 10,000 runs, 100 versions and 10M logged predictions.

    python benchmarks/bench_loop.py                       # build the store in a temporary folder, time, delete it
    python benchmarks/bench_loop.py --dir /tmp/loopstore  # keep the store there (built once, reused by later runs)
    python benchmarks/bench_loop.py --predictions 1000000 # a smaller log

The store is generated, not replayed: 10,000 finished runs with params and metrics
written in bulk (the rows the tracking API writes), one logistic regression on 10
inputs registered as 100 versions of ``churn`` (version 100 in production, served by
the deployment ``churn-live``, watched by a monitor), and the prediction log written
through the lake API in bulk (``keel.store.predictions.write``: typed Parquet, one
part per model, version and hour): 10M rows over the last 30 days, each version
answering 1 % of them in turn, request ids as keel's servers make them (a random
prefix per process and a counter; 8 processes).

Timed, each in a fresh process (cold: interpreter, imports and the first query) and
as a second call in one process (warm):

- ``keel lineage prediction ID`` for a request id in the middle of the log, with and
  without ``--model``;
- ``keel lineage model churn/50``;
- ``keel models diagnose churn@production`` (30 days: every version in the window).

No peer tool traces a prediction to its data or diagnoses a model in one call; the
reference beside ours is keel's previous implementation (``--previous``, default the
commit before the summaries: a DuckDB scan of every Parquet file of the log for the
request id, the health figures over the whole window), run on the same store in the
same run, cold and warm alike. The target (issue #17) is under 2 s for each, cold.
Cold keel runs find the summary cache already built (the first command of the run
builds it from the parts' footers, as any earlier command would have).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
INPUTS = [f"f{i}" for i in range(10)]
PROCESSES = 8
DAYS = 30


def _project(folder: Path) -> None:
    for key in [k for k in os.environ if k.startswith("KEEL_")]:
        del os.environ[key]
    os.environ["KEEL_CAPTURE_ENVIRONMENT"] = "false"
    os.chdir(folder)
    from keel import config

    config.init_project(folder)
    config.reset()


def _runs(n: int) -> None:
    import keel
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import metrics, params, runs

    exp = keel.set_experiment("bench")
    now = int(time.time() * 1000)
    R, P, M = [], [], []
    for i in range(n):
        rid = uuid.UUID(int=(7 << 64) + i).hex
        start = now - (n - i) * 60_000
        R.append((rid, exp, f"run-{i}", None, "finished", start, start + 30_000, start + 30_000, "bench", "localhost", None, "{}"))
        P += [(rid, "C", str(0.1 + i % 10), 0.1 + i % 10), (rid, "seed", str(i), float(i))]
        M += [(rid, "auc", 0.7 + (i % 100) / 1000, 0, start + 20_000), (rid, "loss", 0.5 - (i % 100) / 1000, 0, start + 20_000)]
    store = get_metadata_store()
    with store.write() as conn:
        for table, rows in ((runs, R), (params, P), (metrics, M)):
            store.insert_many(conn, table, rows)


def _versions(n: int) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel
    from keel.deployments.specs import build_spec, deploy
    from keel.monitoring.monitors import define_monitor
    from keel.registry.transitions import promote

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, len(INPUTS))), columns=INPUTS)
    y = (X.f0 + X.f1 + rng.normal(0, 1, len(X)) > 0).astype(int)
    for v in range(n):
        with keel.start_run(name=f"train-{v}"):
            keel.log_params({"C": 1.0 + v})
            keel.log_dataset(X.assign(y=y), "train")
            info = keel.log_model(LogisticRegression(C=1.0 + v).fit(X, y), input_example=X.head(5))
        keel.register_model(info.uri, "churn")
    promote("churn", n, "production", reason="bench")
    deploy(build_spec("churn-live", model="churn@production"))
    define_monitor("churn-daily", "churn", window="1d")


def _prefix(process: int) -> str:
    """A server process's request-id prefix (random-looking, fixed so that runs repeat)."""
    import hashlib

    return hashlib.sha256(f"process-{process}".encode()).hexdigest()[:20]


def _log(rows: int, versions: int, chunk: int = 500_000) -> None:
    """``rows`` predictions over the last DAYS days, written in bulk through the lake API."""
    import numpy as np
    import pyarrow as pa

    from keel.store import predictions as P

    rng = np.random.default_rng(1)
    end_us = int(time.time() * 1e6)
    start_us = end_us - DAYS * 86_400 * 1_000_000
    prefixes = np.array([_prefix(p) for p in range(PROCESSES)])
    for lo in range(0, rows, chunk):
        n = min(chunk, rows - lo)
        i = np.arange(lo, lo + n)
        ts = start_us + (i * ((end_us - start_us) / rows)).astype(np.int64)  # i * span overflows int64 at 10M rows
        proc = i % PROCESSES
        counter = i // PROCESSES
        ids = np.char.add(prefixes[proc], np.char.zfill(np.char.mod("%x", counter), 12))
        x = rng.normal(size=(n, len(INPUTS)))
        score = 1 / (1 + np.exp(-(x[:, 0] + x[:, 1])))
        table = pa.table({
            "request_id": pa.array(ids, pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "model": pa.array(["churn"] * n, pa.string()),
            "version": pa.array(1 + i * versions // rows, pa.int64()),
            "route": pa.array(["champion"] * n, pa.string()),
            "latency_ms": pa.array(rng.gamma(2.0, 1.5, n)),
            "status": pa.array(np.where(rng.random(n) < 0.002, "error", "ok"), pa.string()),
            **{c: pa.array(x[:, j]) for j, c in enumerate(INPUTS)},
            "prediction": pa.array((score > 0.5).astype(np.int64)),
            "score": pa.array(score),
        })
        P.write(P.normalize(table), writer=f"bench-{lo}")
        print(f"  log: {lo + n:,}/{rows:,} rows", file=sys.stderr, flush=True)


def build(folder: Path, *, runs: int, versions: int, predictions: int) -> dict[str, Any]:
    _project(folder)
    t = time.perf_counter()
    _runs(runs)
    t_runs = time.perf_counter() - t
    _versions(versions)
    t_versions = time.perf_counter() - t - t_runs
    _log(predictions, versions)
    from keel.store.predictions import files

    request_id = _prefix(3) + f"{predictions // PROCESSES // 2:012x}"  # process 3, half-way
    out = {"runs": runs, "versions": versions, "predictions": predictions, "request_id": request_id, "parts": len(files("churn")),
           "seconds": {"runs": t_runs, "versions": t_versions, "log": time.perf_counter() - t - t_runs - t_versions}}
    (folder / "bench_loop.json").write_text(json.dumps(out))
    return out


# ---- timing -------------------------------------------------------------------------

COMMANDS = {
    "lineage prediction (no --model)": lambda rid: ["lineage", "prediction", rid, "--json"],
    "lineage prediction --model churn": lambda rid: ["lineage", "prediction", rid, "--model", "churn", "--json"],
    "lineage model churn/50": lambda rid: ["lineage", "model", "churn/50", "--json"],
    "models diagnose churn@production": lambda rid: ["models", "diagnose", "churn@production", "--json"],
}


PREVIOUS = "b1e17c8"  # main before the prediction-log summaries (full scans)


def _env(folder: Path, src: Path = HERE.parent / "src") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(src)
    return env


def _previous_src(rev: str, into: Path) -> Path:
    """keel's source at ``rev`` (git archive of this repository), the implementation to compare with."""
    target = into / f"keel-{rev}"
    if not (target / "src" / "keel").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", rev, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def cold(folder: Path, args: list[str], src: Path = HERE.parent / "src", *, json_out: bool = True) -> float:
    t = time.perf_counter()
    launcher = "import sys; sys.argv[0] = 'keel'; from keel.cli.main import main; main()"  # what the keel script runs
    proc = subprocess.run([sys.executable, "-c", launcher, *args], cwd=folder, env=_env(folder, src), capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0 or (json_out and "{" not in proc.stdout):  # the previous keel let DuckDB's progress bar into stdout
        raise SystemExit(f"keel {' '.join(args)} failed: {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    return elapsed


IMPORTS = ("keel.cli.main", "keel.cli.loop", "keel.loop.lineage", "keel.loop.diagnose", "keel.registry.versions", "keel.deployments.specs",
           "keel.tracking.artifacts", "keel.features.registry", "keel.monitoring.alerts", "keel.store.predictions", "duckdb", "numpy",
           "pyarrow.parquet")


def _imports(folder: Path) -> float:
    """A fresh process importing the modules the timed commands use, and nothing else: the import floor."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "; ".join(f"import {m}" for m in IMPORTS)], cwd=folder, env=_env(folder), check=True)
    return time.perf_counter() - t


def worker_warm(folder: str, request_id: str) -> dict[str, float]:
    """Each call twice in this process; the second is timed."""
    os.chdir(folder)
    from keel.loop.diagnose import diagnose
    from keel.loop.lineage import model_lineage, prediction_lineage

    calls = {
        "lineage prediction (no --model)": lambda: prediction_lineage(request_id),
        "lineage prediction --model churn": lambda: prediction_lineage(request_id, model="churn"),
        "lineage model churn/50": lambda: model_lineage("churn/50"),
        "models diagnose churn@production": lambda: diagnose("churn@production"),
    }
    out = {}
    for name, fn in calls.items():
        fn()
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t
    return out


def _worker(name: str, *args: str, src: Path = HERE.parent / "src") -> dict[str, float]:
    code = f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_loop as b; print(json.dumps(b.{name}(*{list(args)!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(Path(args[0]), src), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="Keep the store in this folder (built when empty, reused otherwise).")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--predictions", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="Cold runs of each command (the median is reported).")
    ap.add_argument("--no-readme", action="store_true", help="Do not write the figures into benchmarks/README.md.")
    ap.add_argument("--previous", default=PREVIOUS, help="The git revision of keel to compare with (its src/ is extracted with git archive).")
    a = ap.parse_args()
    folder = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="keel-bench-loop-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        meta_path = folder / "bench_loop.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            print(f"reusing the store in {folder}", file=sys.stderr)
        else:
            code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_loop as b; from pathlib import Path; "
                    f"print(json.dumps(b.build(Path({str(folder)!r}), runs={a.runs}, versions={a.versions}, predictions={a.predictions})))")
            proc = subprocess.run([sys.executable, "-c", code], env=_env(folder), stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit("building the store failed")
            meta = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"built in {sum(meta['seconds'].values()):.0f} s: {meta}", file=sys.stderr)
        rid = meta["request_id"]
        prev = _previous_src(a.previous, Path(tempfile.gettempdir()) / "keel-bench-loop-previous")
        cold(folder, COMMANDS["lineage prediction (no --model)"](rid))  # builds the summary cache once, as any earlier command would
        keys = list(COMMANDS)
        colds: dict[str, list[float]] = {k: [] for k in keys}
        warm: dict[str, list[float]] = {k: [] for k in keys}
        old_cold: dict[str, list[float]] = {k: [] for k in keys}
        old_warm: dict[str, list[float]] = {k: [] for k in keys}
        floor: list[float] = []
        imports: list[float] = []
        for _ in range(a.repeat):  # interleaved, so the machine's noise falls on every column alike
            floor.append(cold(folder, ["--version"], json_out=False))  # interpreter and CLI start: the floor of any command
            imports.append(_imports(folder))
            for k, args in COMMANDS.items():
                colds[k].append(cold(folder, args(rid)))
                old_cold[k].append(cold(folder, args(rid), prev))
            for k, v in _worker("worker_warm", str(folder), rid).items():
                warm[k].append(v)
            for k, v in _worker("worker_warm", str(folder), rid, src=prev).items():
                old_warm[k].append(v)

        def med(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        load = os.getloadavg()
        lines = [f"{meta['runs']:,} runs, {meta['versions']} versions, {meta['predictions']:,} logged predictions in {meta['parts']:,} Parquet parts; "
                 f"median of {a.repeat}, {os.cpu_count()} cores (shared), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
                 f"at the end; previous = keel {a.previous}. A fresh `keel --version` (interpreter and CLI start, the floor of "
                 f"any command) took {med(floor):.2f} s, and a fresh process that only imports what the commands import "
                 f"{med(imports):.2f} s, in the same run.", "",
                 "| command | keel cold process (s) | keel warm call (s) | previous cold (s) | previous warm (s) | previous / keel, cold | previous / keel, warm | under 2 s cold |",
                 "|---|---:|---:|---:|---:|---:|---:|:---:|"]
        for k in keys:
            c, w, oc, ow = med(colds[k]), med(warm[k]), med(old_cold[k]), med(old_warm[k])
            lines.append(f"| `keel {' '.join(COMMANDS[k]('ID')[:-1])}` | {c:.2f} | {w:.3f} | {oc:.2f} | {ow:.3f} | {oc / c:.1f}x | {ow / w:.1f}x "
                         f"| {'yes' if c < 2 else 'NO'} |")
        text = "\n".join(lines)
        print(text)
        if not a.no_readme:
            write_section("bench_loop", "## Lineage and diagnosis (bench_loop.py)\n\n" + text)
    finally:
        if not a.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
