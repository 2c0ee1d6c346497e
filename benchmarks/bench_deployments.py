"""Deployments benchmark: the champion's latency with a shadow on vs off, under an open-loop load.

    python benchmarks/bench_deployments.py            # 20 s per phase
    python benchmarks/bench_deployments.py --quick    # 6 s per phase

The model: scikit-learn LogisticRegression on 30 numeric features (champion and challenger, trained on the same
data with different C), in a throw-away keel project. One `keel serve --deployment bench` process (1 worker, the
prediction log on). The peak is measured with wrk (closed loop, 32 connections); then an open-loop load generator
in a process of its own (raw HTTP/1.1 keep-alive on asyncio streams) sends requests at half the peak on a fixed
schedule and measures each latency from the moment the request was due (so a stalled server is not hidden by a
waiting client), with the deployment a single champion, then with a shadow added (the router follows the change
without a restart), alternated for ``--rounds`` rounds, since the load of a shared machine drifts; the p99 of each
phase is over all its rounds. ``--readme`` appends the figures to benchmarks/README.md.
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
    """Requests at ``rate``/s on a fixed schedule; latency from each request's due time (its own process).

    Plain HTTP/1.1 keep-alive on asyncio streams, the request bytes built once: an HTTP client library costs
    more CPU per request than the server being measured, and on a loaded machine it fell behind its schedule.
    At most ``CONNECTIONS`` connections, as wrk has a fixed number: a request due while all are busy waits
    for one, and that wait counts in its latency (opening a connection per late request instead turned a
    slow moment of the machine into a storm of connections).
    """
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", int(u.port or 80)
    payload = body()
    request = (f"POST {u.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    errors = [0]

    async def main() -> list[float]:
        lat: list[float] = []
        idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(CONNECTIONS):
            idle.put_nowait(await asyncio.open_connection(host, port))

        async def one(due: float) -> None:
            conn = await idle.get()
            try:
                reader, writer = conn
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, AttributeError):
                errors[0] += 1
                conn[1].close()
                idle.put_nowait(await asyncio.open_connection(host, port))
                return
            if head[9:12] == b"200":
                lat.append((time.perf_counter() - due) * 1000)
            else:
                errors[0] += 1
            idle.put_nowait(conn)

        tasks = []
        start = time.perf_counter() + 0.2
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        while not idle.empty():
            idle.get_nowait()[1].close()
        return lat

    lat: list[float] = []
    try:
        lat = asyncio.run(main())
    finally:
        queue.put((lat, errors[0]))


CONNECTIONS = 32  # as many as wrk uses for the peak
GENERATORS = 1  # open-loop processes sharing the rate (one sends a few thousand requests per second on raw streams)


def measure(url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=open_loop, args=(url, rate / GENERATORS, seconds, q)) for _ in range(GENERATORS)]
    for p in procs:
        p.start()
    lat, errors = [], 0
    deadline = time.monotonic() + seconds * 10 + 120
    got = 0
    while got < len(procs):
        try:
            part, err = q.get(timeout=5)
        except Exception:  # queue.Empty: a generator that died without reporting must not hang the run
            dead = [p for p in procs if not p.is_alive() and p.exitcode != 0]
            if dead or time.monotonic() > deadline:
                raise SystemExit(f"an open-loop generator stopped without its figures (exit codes {[p.exitcode for p in procs]})") from None
            continue
        got += 1
        lat += part
        errors += err
    for p in procs:
        p.join()
    if not lat:
        raise SystemExit(f"the open-loop load got no answer ({errors} errors)")
    return lat, errors


def cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children (a figure the machine's other load does not inflate)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(len(s) * q))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="off/on rounds, alternated (the load of a shared machine drifts)")
    ap.add_argument("--readme", action="store_true", help="append the figures to benchmarks/README.md")
    args = ap.parse_args()
    seconds = 6 if args.quick else 20
    load_start = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-deploy-"))
    setup(folder)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "serve", "--deployment", "bench", "--port", str(port)],
                              cwd=folder, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    from keel.deployments.specs import set_deployment

    phases: dict[str, list[float]] = {"off": [], "on": []}
    errors = {"off": 0, "on": 0}
    cpu = {"off": 0.0, "on": 0.0}
    peaks: list[float] = []
    rounds: list[tuple[float, float]] = []
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/v1/models/bench/predict"
        for r in range(args.rounds):
            p99 = []
            for phase in ("off", "on"):
                if phase == "on":
                    set_deployment("bench", shadow="bench@challenger", reason="benchmark: shadow on")
                elif r:
                    set_deployment("bench", single=True, reason="benchmark: shadow off")
                time.sleep(2.5)  # the router re-reads the deployment every second
                if phase == "off":  # the champion's peak, again each round: the machine's other load drifts
                    peaks.append(wrk_peak(url, max(3, seconds // 2)))
                    rate = peaks[-1] / 2
                    print(f"round {r + 1}: peak {peaks[-1]:,.0f} req/s, open-loop load {rate:,.0f} req/s", flush=True)
                used = cpu_s(server.pid)
                lat, err = measure(url, rate, seconds)
                cpu[phase] += cpu_s(server.pid) - used
                phases[phase] += lat
                errors[phase] += err
                p99.append(pct(lat, 0.99))
                print(f"round {r + 1} shadow {phase}: p50 {pct(lat, 0.5):.2f} ms, p99 {p99[-1]:.2f} ms, {len(lat):,} answered, {err} errors",
                      flush=True)
            rounds.append((p99[0], p99[1]))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    load = os.getloadavg()[0]
    off, on = phases["off"], phases["on"]
    lines = [f"Shadow on vs off, keel serve --deployment (1 worker, log on), LogisticRegression on {FEATURES} features, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average {load_start:.1f} at start, {load:.1f} at end",
             "",
             f"peak (wrk, 32 connections, champion only, each round): {', '.join(f'{p:,.0f}' for p in peaks)} req/s; open-loop load at "
             f"half of it, {args.rounds} rounds of {seconds} s per phase (off, on alternated); the server's CPU per answered request: "
             f"{cpu['off'] / len(phases['off']) * 1000:.2f} ms off, {cpu['on'] / len(phases['on']) * 1000:.2f} ms on", "",
             "| phase | p50 ms | p99 ms | answered | errors |", "|---|---|---|---|---|",
             f"| champion only | {pct(off, 0.5):.2f} | {pct(off, 0.99):.2f} | {len(off):,} | {errors['off']} |",
             f"| champion + shadow | {pct(on, 0.5):.2f} | {pct(on, 0.99):.2f} | {len(on):,} | {errors['on']} |", "",
             f"champion p99 with the shadow / without: **{pct(on, 0.99) / pct(off, 0.99):.2f}** (target <= 1.10); per round: "
             + ", ".join(f"{b / a:.2f}" for a, b in rounds)]
    print("\n" + "\n".join(lines))
    if args.readme:
        sys.path.insert(0, str(HERE))
        from _readme import write_section

        write_section("bench_deployments", "\n".join(lines), append=True,
                      intro="## Deployments: the champion's latency with a shadow on vs off (`bench_deployments.py`)")


if __name__ == "__main__":
    main()
