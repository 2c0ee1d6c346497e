"""keel serve on Ray (Ray Serve, 2 replicas) beside keel serve local (uvicorn, 1 and 2 workers), same model, same load.

    /work/venv-ray/bin/python benchmarks/bench_ray_serve.py            # 15 s per run; README section updated
    /work/venv-ray/bin/python benchmarks/bench_ray_serve.py --quick    # 4 s per run (README untouched)

Needs Ray Serve (`pip install 'keel[ray]'`). The model: scikit-learn LogisticRegression on 30 numeric features,
in a throw-away keel project (the setup of bench_deployments.py). The prediction log is on everywhere. A Ray
head is started for the run (`ray start --head --num-cpus 2`, its own ports and temp folder, stopped by its
process group). The load generator is wrk in its own process: 32 keep-alive connections, POST /v1 bodies of 1
and of 100 rows; requests/s and p99 come from wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _readme import write_section
from bench_deployments import FEATURES, free_port, setup

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
sys.path.insert(0, str(HERE.parent))  # the tests' helpers


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, rows: int, seconds: int, work: Path) -> dict[str, Any]:
    import numpy as np

    row = {f"f{i}": float(v) for i, v in enumerate(np.random.default_rng(1).normal(size=FEATURES).round(5))}
    script = work / f"post{rows}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==['
                      + json.dumps({"records": [row] * rows}) + "]==]\n")
    subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", str(script), url], capture_output=True, check=False)  # warm-up
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p99_ms": _ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def ray_head(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    ports = [free_port() for _ in range(8)]
    temp = Path("/tmp") / f"keelbench-ray-{os.getpid()}"  # short: Ray's socket paths have a length limit
    names = ["port", "ray-client-server-port", "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", *(f"--{n}={p}" for n, p in zip(names, ports, strict=True)),
           "--include-dashboard=false", "--num-cpus=2", "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": SRC, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, stdout=open(work / "ray.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)  # noqa: SIM115
    time.sleep(12)  # the GCS, then the raylet
    return proc, f"127.0.0.1:{ports[0]}", temp


def serve(argv: list[str], folder: Path, port: int, work: Path) -> subprocess.Popen[bytes]:
    # `keel serve ...` until it is ready and has said so
    from tests.deployments.test_ray_serve import _start

    return _start(["models:/bench@champion", *argv], folder, port, work / f"serve-{port}.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    seconds = 4 if args.quick else 15
    folder = Path(tempfile.mkdtemp(prefix="keel-bench-ray-"))
    work = Path(tempfile.mkdtemp(prefix="keel-bench-ray-work-"))
    setup(folder)
    load_before = os.getloadavg()[0]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    engines = {"local, 1 worker": ["--workers", "1"], "local, 2 workers": ["--workers", "2"]}
    for name, argv in engines.items():
        port = free_port()
        proc = serve(argv, folder, port, work)
        try:
            results[name] = {rows: wrk(f"http://127.0.0.1:{port}/v1/models/bench/predict", rows, seconds, work) for rows in (1, 100)}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        print(name, results[name], flush=True)
    head, address, temp = ray_head(work)
    try:
        port = free_port()
        proc = serve(["--engine", "ray", "--replicas", "2", "--ray-address", address], folder, port, work)
        try:
            results["ray, 2 replicas"] = {rows: wrk(f"http://127.0.0.1:{port}/v1/models/bench/predict", rows, seconds, work) for rows in (1, 100)}
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(180)
        print("ray, 2 replicas", results["ray, 2 replicas"], flush=True)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the group this benchmark started, nothing else
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    lines = [f"wrk -t2 -c32 -d{seconds}s, POST /v1 (1 and 100 rows), LogisticRegression on {FEATURES} features, prediction log on; "
             f"a 2-CPU Ray head on this machine; load average {load_before:.1f} before, {load_after:.1f} after.", "",
             "| engine | rows/request | req/s | p99 ms | non-2xx |", "|---|---|---|---|---|"]
    for name, by_rows in results.items():
        for rows, r in by_rows.items():
            lines.append(f"| {name} | {rows} | {r['rps']:,.0f} | {r['p99_ms']:.1f} | {r['non2xx']} |")
    lines.append("")
    for rows in (1, 100):
        ray = results["ray, 2 replicas"][rows]["rps"]
        lines.append(f"- {rows} row(s): ray (2 replicas) / local (2 workers) throughput {ray / results['local, 2 workers'][rows]['rps']:.2f}, "
                     f"/ local (1 worker) {ray / results['local, 1 worker'][rows]['rps']:.2f}")
    text = "\n".join(lines)
    print("\n" + text)
    if not args.quick:
        write_section("ray_serve", "## keel serve on Ray beside keel serve local (`bench_ray_serve.py`)\n\n"
                      f"### keel serve --engine ray (full, {time.strftime('%Y-%m-%d')})\n\n{text}")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
