"""Serving with features fetched by entity key: keel serve on the SQLite and the Redis online store, beside the same model given its features.

    python benchmarks/bench_serving_features.py            # 10 s per run
    python benchmarks/bench_serving_features.py --quick    # 3 s per run (README untouched)

A feature view of 30 Float64 features over 10,000 customers is materialized into the
online store; a LogisticRegression is trained from the feature service (its requests
carry only ``customer_id``), and the same model is registered again without the
service (its requests carry the 30 features). Same load generator as bench_serving.py:
wrk in its own process, 32 keep-alive connections, one row per request, 1 worker;
each request asks for a random customer. Targets (issue #13): the fetching server at
least 60 % of the throughput of the plain one, p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _readme import write_section
from bench_serving import FEATURES, _env, free_port, start, stop, wrk

CUSTOMERS = 10_000
REDIS = "redis://127.0.0.1:6379/0"
DEFS = '''
from datetime import timedelta
from keel.features import Entity, FeatureService, FeatureView, Field, Float64, Int64, Source

customer = Entity("customer", join_keys=["customer_id"], value_type=Int64)
stats = FeatureView("stats", entities=[customer], source=Source("stats", path="data/stats.parquet", timestamp_field="event_timestamp"),
                    ttl=timedelta(days=30), schema=[Field(f"f{{i}}", Float64) for i in range({features})])
bench_fs = FeatureService("bench_fs", features=[stats])
'''
LUA_FS = '''wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(11)
request = function()
  return wrk.format(nil, nil, nil, '{"records": [{"customer_id": ' .. math.random(1, @N@) .. '}]}')
end
'''.replace("@N@", str(CUSTOMERS))


def setup(work: Path, online_uri: str | None) -> dict[str, Any]:
    """The project: definitions, data, materialization and the two models; returns a feature row for the plain model."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel
    from keel import config
    from keel.features import apply, materialize
    from keel.registry.transitions import set_alias

    os.chdir(work)
    config.init_project(work)
    if online_uri:
        os.environ["KEEL_ONLINE_URI"] = online_uri
    config.reset()
    (work / "features.py").write_text(DEFS.format(features=FEATURES))
    rng = np.random.default_rng(11)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    data = pd.DataFrame(rng.normal(size=(CUSTOMERS, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    data.insert(0, "customer_id", np.arange(1, CUSTOMERS + 1, dtype=np.int64))
    data["event_timestamp"] = now - pd.Timedelta(hours=2)
    (work / "data").mkdir(exist_ok=True)
    data.to_parquet(work / "data" / "stats.parquet", index=False)
    apply()
    materialize()
    labels = pd.DataFrame({"customer_id": data["customer_id"], "event_timestamp": now - pd.Timedelta(hours=1)})
    ts = keel.get_training_set(labels, "bench_fs")
    X = ts[[f"f{i}" for i in range(FEATURES)]].astype("float64")
    y = (X.f0 + 0.5 * X.f1 - 0.3 * X.f2 + rng.normal(0, 1, len(X)) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(X, y)
    with keel.start_run():
        keel.log_dataset(ts, "train")
        info = keel.log_model(model, signature=X, input_example=X.head(3))
    set_alias("fs", "live", keel.register_model(info.uri, "fs").version)
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(3))
    set_alias("plain", "live", keel.register_model(info.uri, "plain").version)
    return X.head(1).to_dict("records")[0]


def _clear_redis(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(f"{prefix}*"))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])


def run(duration: int) -> list[dict[str, Any]]:
    import json

    results = []
    prefix = f"keel-bench-{os.getpid()}:"
    for backend, uri in (("sqlite", None), ("redis", f"{REDIS}?prefix={prefix}")):
        work = Path(tempfile.mkdtemp(prefix=f"keel-bench-features-{backend}-"))
        row = setup(work, uri)
        env = _env(**({"KEEL_ONLINE_URI": uri} if uri else {}))
        try:
            for model, body in (("plain", json.dumps({"records": [row]})), ("fs", None)):
                port = free_port()
                cmd = [sys.executable, "-c", "from keel.cli.main import main; main()", "serve", f"models:/{model}@live", "--port", str(port)]
                proc = start(cmd, work, f"http://127.0.0.1:{port}/v2/health/ready", env, work / f"serve-{model}.log")
                try:
                    url = f"http://127.0.0.1:{port}/v1/models/{model}/predict"
                    r = wrk(url, body, duration, work, proc.pid) if body else wrk(url, "", duration, work, proc.pid, script=LUA_FS)
                finally:
                    stop(proc)
                r.update({"backend": backend, "model": "features in the request" if model == "plain" else "fetched by customer_id"})
                print(f"  {backend:6s} {r['model']:24s} {r['rps']:8.1f} req/s  p99 {r['p99_ms']:7.2f} ms  cpu {r['cpu_ms_per_request']:.3f} ms/req  "
                      f"non-2xx {r['non2xx']}", flush=True)
                results.append(r)
        finally:
            if uri:
                _clear_redis(prefix)
            os.environ.pop("KEEL_ONLINE_URI", None)
    return results


def report(results: list[dict[str, Any]], duration: int) -> str:
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} cores shared "
             f"(load average {os.getloadavg()[0]:.1f} at the end); wrk -t2 -c32 -d{duration}s, one row per request, 1 worker; "
             f"LogisticRegression on {FEATURES} features of {CUSTOMERS:,} customers.", "",
             "| online store | request | req/s | p99 ms | server CPU ms/req | non-2xx | fetched / in request |", "|---|---|---|---|---|---|---|"]
    for r in results:
        plain = next(x for x in results if x["backend"] == r["backend"] and x["model"] == "features in the request")
        lines.append(f"| {r['backend']} | {r['model']} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_request']:.2f} | {r['non2xx']} | "
                     f"{r['rps'] / plain['rps']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    duration = 3 if args.quick else 10
    print("HTTP with feature fetch (wrk):", flush=True)
    text = report(run(duration), duration)
    print("\n" + text)
    if not args.quick:
        write_section("bench_serving_features", text, intro="## Serving with features fetched from the online store (`bench_serving_features.py`)\n\n"
                      "The same model served with its 30 features in the request, and fetched by `customer_id` from the SQLite and the Redis "
                      "online store (see the script's docstring). Each full run replaces this section.")


if __name__ == "__main__":
    main()
