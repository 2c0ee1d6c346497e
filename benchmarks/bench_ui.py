"""The web UI's pages on a big store, served by a real ``keel server``: server time and first paint.

    python benchmarks/bench_ui.py [--runs 10000] [--long-runs 10] [--points 100000] [--repeats 15]

The store (built once through the tracking API, cached under /tmp/keel-bench-ui by its size
and the tracking schema): experiment ``bench`` with ``--runs`` runs of 10 params and 10
metrics each (``keel.start_run`` / ``log_params`` / ``log_metrics``, environment capture
off), and experiment ``long`` with ``--long-runs`` runs whose metric ``loss`` has
``--points`` values each (``keel.log_metric`` in a loop: the buffered writer stores them
in batches).

Then ``keel server`` (auth off, one process) on a free port, and for each page:

- server time: the median and p95 of its ``X-Render-Ms`` header (the route's own time:
  the reads, the SVG and the template) and of the wall time of the whole request from
  an httpx client on this machine, over ``--repeats`` requests after two warm-ups;
- first paint (the runs table and the compare page): Playwright driving Debian's
  Chromium (/usr/bin/chromium, headless, 1280x800, a fresh context each time), the
  ``first-contentful-paint`` entry of ``performance.getEntriesByType('paint')``, median
  over ``--paint-repeats`` loads.

Targets (issue #18): every page under 300 ms server time; first paint under 1 s.
MLflow's UI is not run beside it: it is a JavaScript application whose first paint is
an empty shell that fetches the runs afterwards, so neither figure compares like for like.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path(os.environ.get("KEEL_BENCH_UI_CACHE", "/tmp/keel-bench-ui"))
KEEL = [sys.executable, "-c", "from keel.cli.main import main; main()"]
CHROMIUM = "/usr/bin/chromium"
SEED = 7
MODELS = ["lgbm", "xgb", "rf", "logreg"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["KEEL_CAPTURE_ENVIRONMENT"] = "false"
    return env


# -- the store (built in a subprocess: `bench_ui.py --build DIR RUNS LONG POINTS`) ------------

def build(folder: Path, n_runs: int, n_long: int, n_points: int) -> None:
    import numpy as np

    import keel
    from keel import config

    os.chdir(folder)
    config.init_project(folder)
    config.reset()
    rng = np.random.default_rng(SEED)
    p = rng.random((n_runs, 9))
    m = rng.random((n_runs, 10))
    model = rng.integers(0, len(MODELS), n_runs)
    t = time.perf_counter()
    for i in range(n_runs):
        with keel.start_run(experiment="bench", name=f"run-{i:05d}"):
            keel.log_params({"model": MODELS[int(model[i])], **{f"p{j + 1}": f"{p[i, j]:.6f}" for j in range(9)}})
            keel.log_metrics({"auc": float(m[i, 0]), **{f"m{j}": float(m[i, j]) for j in range(1, 10)}})
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1}/{n_runs} runs ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    steps = np.arange(n_points)
    for r in range(n_long):
        noise = rng.normal(0, 0.05, n_points)
        values = (np.exp(-steps / (n_points / 5)) * (1 + r / 10) + noise).tolist()
        with keel.start_run(experiment="long", name=f"long-{r}"):
            keel.log_params({"lr": f"{0.001 * (r + 1):.3f}", "depth": str(3 + r % 5), "model": MODELS[r % 4]})
            log = keel.log_metric
            for s in range(n_points):
                log("loss", values[s], step=s)
            keel.log_metric("accuracy", float(0.7 + r / 50))
        print(f"  long run {r + 1}/{n_long}: {n_points:,} points ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)


def store(n_runs: int, n_long: int, n_points: int) -> Path:
    """The project folder holding the store, built once per size and tracking schema."""
    h = hashlib.sha256()
    for path in sorted([ROOT / "src/keel/store/schema/tracking.py", *(ROOT / "src/keel/store/migrations/versions").glob("*.py")]):
        h.update(path.read_bytes())
    folder = CACHE / f"runs{n_runs}-long{n_long}x{n_points}-{h.hexdigest()[:10]}"
    if (folder / ".complete").exists():
        return folder
    tmp = CACHE / f".build-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    print(f"Building the store in {folder} (once)...", flush=True)
    t = time.perf_counter()
    try:
        subprocess.run([sys.executable, __file__, "--build", str(tmp), str(n_runs), str(n_long), str(n_points)],
                       env=_env(), check=True, cwd=tmp)
        (tmp / ".complete").write_text(f"{time.perf_counter() - t:.1f} s\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
    return folder


# -- the server and the measurements ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server writes it until it stops
    proc = subprocess.Popen([*KEEL, "server", "--port", str(port)], cwd=folder, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"keel server exited:\n{(folder / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("keel server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def server_times(url: str, path: str, repeats: int) -> dict[str, Any]:
    import httpx

    render, wall = [], []
    with httpx.Client(base_url=url, headers={"accept": "text/html"}, timeout=60) as c:
        for i in range(repeats + 2):
            t = time.perf_counter()
            r = c.get(path)
            elapsed = (time.perf_counter() - t) * 1000
            if r.status_code != 200:
                raise SystemExit(f"GET {path} answered {r.status_code}: {r.text[:500]}")
            if i >= 2:
                render.append(float(r.headers["x-render-ms"]))
                wall.append(elapsed)
    return {"render_median": statistics.median(render), "render_p95": pct(render, 0.95),
            "wall_median": statistics.median(wall), "wall_p95": pct(wall, 0.95), "bytes": len(r.content)}


def first_paints(url: str, paths: dict[str, str], repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {name: [] for name in paths}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        for _ in range(repeats):
            for name, path in paths.items():  # interleaved, so a noisy moment hits both pages alike
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(url + path, wait_until="load")
                # the entry is queued after the paint itself: wait for it (up to 10 s)
                handle = page.wait_for_function("() => { const e = performance.getEntriesByType('paint')"
                                                ".find(x => x.name === 'first-contentful-paint'); return e ? e.startTime : null; }",
                                                timeout=10_000)
                fcp = handle.json_value()
                if fcp is None:
                    raise SystemExit(f"no first-contentful-paint entry for {path}")
                out[name].append(float(fcp))
                context.close()
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--long-runs", type=int, default=10)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--paint-repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    folder = store(args.runs, args.long_runs, args.points)
    proc, url = start_server(folder)
    try:
        long_ids = _ids(folder, "long")
        bench_ids = _ids(folder, "bench", 1)
        compare = "/compare?" + urlencode({"runs": ",".join(long_ids)})
        pages = {
            "overview /": "/",
            "experiments": "/experiments",
            f"runs table ({args.runs:,} runs)": "/runs?experiment=bench",
            "runs table, sorted by a metric": "/runs?" + urlencode({"experiment": "bench", "sort": "metrics.m3 DESC"}),
            "runs table, sorted by a param": "/runs?" + urlencode({"experiment": "bench", "sort": "params.p2 ASC"}),
            "runs table, filtered": "/runs?" + urlencode({"experiment": "bench", "filter": "metrics.auc > 0.5 and params.model = 'lgbm'"}),
            "runs table, page 150 of 200": "/runs?" + urlencode({"experiment": "bench", "page": 150}),
            "runs table, all experiments": "/runs",
            f"compare {len(long_ids)} x {args.points:,} points": compare,
            "compare, wall time, EMA 0.9": compare + "&x=time&smooth=0.9",
            f"run detail ({args.points:,} points)": f"/runs/{long_ids[0]}",
            "run detail (a table run)": f"/runs/{bench_ids[0]}",
        }
        print(f"\nkeel server {url} on {folder}  (load average {os.getloadavg()[0]:.1f})\n")
        print(f"{'page':<38}{'X-Render-Ms':>13}{'p95':>8}{'wall ms':>10}{'p95':>8}{'KB':>8}  target 300 ms")
        figures: dict[str, Any] = {}
        for name, path in pages.items():
            f = server_times(url, path, args.repeats)
            figures[name] = f
            ok = "ok" if f["render_p95"] < 300 else "OVER"
            print(f"{name:<38}{f['render_median']:>13.1f}{f['render_p95']:>8.1f}{f['wall_median']:>10.1f}{f['wall_p95']:>8.1f}"
                  f"{f['bytes'] / 1024:>8.0f}  {ok}", flush=True)
        paint_pages = {f"runs table ({args.runs:,} runs)": pages[f"runs table ({args.runs:,} runs)"],
                       f"compare {len(long_ids)} x {args.points:,} points": compare}
        paints = first_paints(url, paint_pages, args.paint_repeats)
        print(f"\n{'first contentful paint (Chromium)':<38}{'median ms':>13}{'max':>8}  target 1000 ms")
        for name, values in paints.items():
            figures[f"paint: {name}"] = values
            print(f"{name:<38}{statistics.median(values):>13.0f}{max(values):>8.0f}  {'ok' if max(values) < 1000 else 'OVER'}")
        print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")
        if args.json:
            print(json.dumps(figures))
    finally:
        stop(proc)


def _ids(folder: Path, experiment: str, limit: int = 100) -> list[str]:
    """Run ids of ``experiment`` read from the store (oldest first) in a subprocess of the project."""
    code = (f"import json, keel; f = keel.search_runs({experiment!r}, order_by=['start_time'], max_results={limit}, columns=[]); "
            "print(json.dumps(list(f['run_id'])))")
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=_env(), capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        build(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
