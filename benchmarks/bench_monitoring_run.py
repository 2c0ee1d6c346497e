"""A monitor run over a window of 1,000,000 logged predictions x 30 inputs, with a stored baseline.

    python benchmarks/bench_monitoring_run.py                # 1,000,000 predictions
    python benchmarks/bench_monitoring_run.py --rows 200000  # a smaller window

In a throw-away project (a temporary folder): a logistic regression on 30
numeric inputs is registered, its baseline built from 100,000 validation rows,
and a day of predictions (three of the 30 inputs shifted in the second half of
the day) written to the prediction log as the serving path compacts it: typed
Parquet, one part per hour, plus 5 % shadow-route rows that the monitor must not
read. The timed part is ``keel.monitoring.run_monitor`` with its default checks
(drift, quality, performance with the CBPE estimate, service objectives), the
result stored and alerts raised: reading the window, each version against its
baseline, the time series written. It runs in a process of its own after one
warm-up run on another day (imports and first-call costs), ``--repeats`` times
over the same window (default 3: on a shared machine one run's wall time says
little), and prints each run's wall time and CPU seconds, their median and best,
and the peak RSS; a profile of where the time went with ``--profile``. No peer:
the issue's target is under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
FEATURES = [f"f{i}" for i in range(30)]
SHIFTED = ["f0", "f1", "f2"]
DAY = "2026-03-02"


def _frame(rows: int, seed: int, *, shift: float = 0.0):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {f: rng.normal(i % 7, 1 + i % 3, rows) for i, f in enumerate(FEATURES)}
    for f in SHIFTED:
        data[f] = data[f] + shift
    frame = pd.DataFrame(data)
    logit = (frame["f0"] - 0) / 2 - (frame["f3"] - 3) / 3 + (frame["f5"] - 5) / 4
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def setup(folder: Path, rows: int) -> None:
    """Register the model, build its baseline, and log a day (and a warm-up day) of predictions."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from sklearn.linear_model import LogisticRegression

    import keel
    from keel import config
    from keel.monitoring import build_baseline, define_monitor
    from keel.store import predictions

    os.chdir(folder)
    config.init_project(folder)
    config.reset()
    train, valid = _frame(20_000, 1), _frame(100_000, 2)
    model = LogisticRegression(max_iter=300).fit(train[FEATURES], train["label"])
    with keel.start_run():
        info = keel.log_model(model, input_example=train[FEATURES].head(5))
    version = keel.register_model(info.uri, "bench").version
    build_baseline("bench", valid, version=version, target="label")
    define_monitor("bench-daily", "bench", window="1d")
    for day, n, seed in (("2026-03-01", 20_000, 3), (DAY, rows, 4)):
        start = pd.Timestamp(day, tz="UTC")
        half = n // 2
        for part, (lo, hi, shift) in enumerate(((0, half, 0.0), (half, n, 0.25))):  # the second half of the day drifts
            frame = _frame(hi - lo, seed * 10 + part, shift=shift)
            score = model.predict_proba(frame[FEATURES])[:, 1]
            seconds = (np.arange(lo, hi) * (86_399_000_000 // max(n - 1, 1))).astype("timedelta64[us]")
            ts = np.datetime64(start.tz_localize(None), "us") + seconds
            route = np.where(np.random.default_rng(seed + part).random(hi - lo) < 0.05, "shadow", "default")
            cols = {
                "request_id": pa.array([f"{day}-{i}" for i in range(lo, hi)]),
                "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "model": pa.array(["bench"] * (hi - lo)),
                "version": pa.array(np.full(hi - lo, version, np.int64)),
                "route": pa.array(route),
                "latency_ms": pa.array(np.random.default_rng(part).gamma(2, 2, hi - lo)),
                "status": pa.array(["ok"] * (hi - lo)),
                **{f: pa.array(frame[f].to_numpy()) for f in FEATURES},
                "prediction": pa.array((score >= 0.5).astype(np.int64)),
                "score": pa.array(score),
            }
            predictions.append(pa.table(cols))


def child(folder: str, profile: bool, repeats: int = 1) -> dict:
    import resource

    import pandas as pd

    from keel import config
    from keel.monitoring import run_monitor

    os.chdir(folder)
    config.reset()
    run_monitor("bench-daily", end=pd.Timestamp("2026-03-02", tz="UTC"))  # the warm-up day
    end = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1)
    prof = None
    if profile:  # CPU time per function, on one thread (the profiler sees only the main thread)
        import cProfile

        from keel.monitoring import stats

        stats.PARALLEL_MIN_VALUES = sys.maxsize
        prof = cProfile.Profile(time.process_time)
        prof.enable()
    runs = []
    for _ in range(1 if profile else repeats):  # the later runs update the alerts the first opened, as a rerun does
        result = None  # the last run's tables are freed before the next run reads its own
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_monitor("bench-daily", end=end)
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(60)
    return {"runs": runs, "rows": result.rows, "status": result.status, "drifted": result.drifted,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--folder", help="set up here once and reuse it on later runs (default: a temporary folder)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1] == "1", int(args.child[2])), default=str))
        return
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    env = {k: v for k, v in env.items() if not k.startswith("KEEL_")} | {"PYTHONPATH": str(HERE.parent / "src")}
    with tempfile.TemporaryDirectory(prefix="keel-bench-monitor-") as scratch:
        tmp = args.folder or scratch
        if not (Path(tmp) / "keel.yaml").exists():
            Path(tmp).mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_monitoring_run as b; "
                            f"b.setup(__import__('pathlib').Path({tmp!r}), {args.rows})"], check=True, env=env)
            print(f"setup (model, baseline, {args.rows:,} logged predictions): {time.perf_counter() - t0:.1f} s", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", tmp, "1" if args.profile else "0", str(args.repeats)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=None if args.profile else subprocess.PIPE)
        if proc.returncode:
            raise SystemExit(f"the monitor run failed:\n{(proc.stderr or '')[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    import statistics

    walls, cpus = [w for w, _ in r["runs"]], [c for _, c in r["runs"]]
    each = ", ".join(f"{w:.2f} s ({c:.2f})" for w, c in r["runs"])
    line = (f"monitor run over {r['rows']:,} predictions x {len(FEATURES)} inputs (stored baseline; drift, quality, performance, "
            f"service; stored, alerts raised): median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} CPU-s; "
            f"best {min(walls):.2f} s wall, {min(cpus):.2f} CPU-s (runs, wall (CPU-s): {each}); peak RSS {r['peak_rss_mb']:.0f} MB; "
            f"status {r['status']}, drifted {r['drifted']}")
    print(line)
    body = (f"{line}.\n\nTarget: under 3 s. Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end of the run "
            "(shared with other work).")
    if args.rows == 1_000_000:
        write_section("monitoring_run", body, intro="## Monitoring: a monitor run over 1M logged predictions (`python benchmarks/bench_monitoring_run.py`)")


if __name__ == "__main__":
    main()
