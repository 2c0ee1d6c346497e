"""Deployments benchmark: the champion's latency with a shadow on vs off, under an open-loop load.

    python benchmarks/bench_deployments.py            # 20 s per phase
    python benchmarks/bench_deployments.py --quick    # 6 s per phase

The model: scikit-learn LogisticRegression on 30 numeric features (champion and challenger, trained on the same
data with different C), in a throw-away keel project. One `keel serve --deployment bench` process (1 worker, the
prediction log on). The peak is measured with wrk (closed loop, 32 connections); then an open-loop load generator
in processes of its own (two, sharing the rate) sends requests at half the peak on a fixed schedule and measures each latency from the moment
the request was due (so a stalled server is not hidden by a waiting client), first with the deployment a single
champion, then with a shadow added (the router follows the change without a restart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
FEATURES = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(folder: Path) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    os.chdir(folder)
    import keel
    from keel.config import init_project
    from keel.registry.transitions import set_alias

    init_project(folder)
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(20_000, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    y = (X.iloc[:, :5].sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    for alias, c in (("champion", 1.0), ("challenger", 0.1)):
        with keel.start_run():
            info = keel.log_model(LogisticRegression(C=c, max_iter=500).fit(X, y), input_example=X.head(5))
        set_alias("bench", alias, keel.register_model(info.uri, "bench").version)
    from keel.deployments.specs import build_spec, deploy

    deploy(build_spec("bench", model="bench@champion"))


def body() -> bytes:
    import numpy as np

    row = {f"f{i}": float(v) for i, v in enumerate(np.random.default_rng(1).normal(size=FEATURES).round(5))}
    return json.dumps({"records": [row]}).encode()


def wrk_peak(url: str, seconds: int) -> float:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = [[{body().decode()}]]\nwrk.headers["Content-Type"] = "application/json"\n')
        script = f.name
    out = subprocess.run([wrk, "-t2", "-c32", f"-d{seconds}s", "-s", script, url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]


def open_loop(url: str, rate: float, seconds: float, queue: Any) -> None:
    """Requests at ``rate``/s on a fixed schedule; latency from each request's due time (its own process)."""
    import httpx

    payload = body()

    errors = [0]

    async def main() -> list[float]:
        lat: list[float] = []
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=None)) as client:
            start = time.perf_counter() + 0.2
            n = int(rate * seconds)

            async def one(due: float) -> None:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    r = await client.post(url, content=payload, headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    errors[0] += 1
                    return
                if r.status_code == 200:
                    lat.append((time.perf_counter() - due) * 1000)
                else:
                    errors[0] += 1

            await asyncio.gather(*[one(start + i / rate) for i in range(n)])
        return lat

    lat: list[float] = []
    try:
        lat = asyncio.run(main())
    finally:
        queue.put((lat, errors[0]))


GENERATORS = 2  # open-loop processes sharing the rate: one Python process cannot send much more than ~400 req/s here


def measure(url: str, rate: float, seconds: float) -> tuple[float, float, int]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=open_loop, args=(url, rate / GENERATORS, seconds, q)) for _ in range(GENERATORS)]
    for p in procs:
        p.start()
    lat, errors = [], 0
    for _ in procs:
        part, err = q.get(timeout=seconds * 10 + 120)
        lat += part
        errors += err
    lat = sorted(lat)
    for p in procs:
        p.join()
    if not lat:
        raise SystemExit(f"the open-loop load got no answer ({errors} errors)")
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], len(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 6 if args.quick else 20
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-deploy-"))
    setup(folder)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "serve", "--deployment", "bench", "--port", str(port)],
                              cwd=folder, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/v1/models/bench/predict"
        peak = wrk_peak(url, max(3, seconds // 2))
        print(f"peak {peak:,.0f} req/s", flush=True)
        rate = peak / 2
        off = measure(url, rate, seconds)
        from keel.deployments.specs import set_deployment

        set_deployment("bench", shadow="bench@challenger", reason="benchmark")
        time.sleep(2.5)  # the router re-reads the deployment every second
        on = measure(url, rate, seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    load = os.getloadavg()[0]
    print(f"\nShadow on vs off, keel serve --deployment (1 worker, log on), LogisticRegression on {FEATURES} features "
          f"(load average {load:.1f})\n")
    print(f"peak (wrk, 32 connections): {peak:,.0f} req/s; open-loop load: {rate:,.0f} req/s for {seconds} s per phase\n", flush=True)
    print("| phase | p50 ms | p99 ms | requests |")
    print("|---|---|---|---|")
    print(f"| champion only | {off[0]:.1f} | {off[1]:.1f} | {off[2]:,} |")
    print(f"| champion + shadow | {on[0]:.1f} | {on[1]:.1f} | {on[2]:,} |")
    print(f"\nchampion p99 with the shadow / without: {on[1] / off[1]:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
