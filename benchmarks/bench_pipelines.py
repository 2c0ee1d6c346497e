"""Pipelines benchmark: keel beside Prefect, same machine, one run.

    python benchmarks/bench_pipelines.py            # 20 steps, 50 Optuna trials
    python benchmarks/bench_pipelines.py --quick    # 20 steps, 12 trials

Figures (the performance section of issue 7):
  1. Overhead of a 20-step pipeline of trivial steps (each adds 1 to its input, a chain),
     cold (nothing cached) and fully cached, keel beside Prefect 3 running the equivalent
     flow with content caching on (cache_policy INPUTS + TASK_SOURCE, persisted results).
     Each side runs in a fresh process inside a fresh project/home folder; a tiny warm-up
     pipeline runs first so that neither side's one-off start-up (keel: creating the
     metadata database; Prefect: starting its ephemeral API server) is counted.
     keel's figure includes everything a run records: the tracked pipeline run, a child run
     per step, cache lookups and content-addressed outputs.
  2. 50 Optuna trials (each ~0.5 s of single-threaded NumPy work) through a keel tuning step, sequentially
     (engine local) and on the local process pool (engine process): the speed-up.

Prefect runs in its own virtualenv (benchmarks/.venvs/prefect, created on first use).
A full run writes its figures into benchmarks/README.md (--no-readme to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from _readme import write_section  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venvs" / "prefect"
README = HERE / "README.md"
START, END = "<!-- bench_pipelines:start -->", "<!-- bench_pipelines:end -->"
STEPS = 20
LOAD = 0.0


def keel_chain_module(n: int) -> str:
    out = ["import keel", ""]
    for i in range(n):
        out += ["@keel.step", f"def s{i}(x: int) -> int:", "    return x + 1", ""]
    out += ["@keel.step", "def w(x: int) -> int:", "    return x", ""]
    out += ["@keel.pipeline", "def chain(x: int = 0):", "    v = x"]
    out += [f"    v = s{i}(v)" for i in range(n)]
    out += ["    return v", "", "@keel.pipeline", "def warmup(x: int = 0):", "    return w(x)", ""]
    return "\n".join(out)


KEEL_OVERHEAD = """
import json, sys, time
sys.path.insert(0, ".")
from pathlib import Path
from keel.config import init_project
init_project(Path("."))
import chainmod
chainmod.warmup.run()
t = time.perf_counter(); cold = chainmod.chain.run({"x": 0}); t_cold = time.perf_counter() - t
t = time.perf_counter(); hot = chainmod.chain.run({"x": 0}); t_hot = time.perf_counter() - t
assert cold.output == hot.output == %d and hot.cached == %d, (cold.output, hot.cached)
print(json.dumps({"cold": t_cold, "cached": t_hot, "cached_steps": hot.cached}))
"""

PREFECT_OVERHEAD = """
import json, time
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

def make(i):
    def f(x: int) -> int:
        return x + 1
    f.__name__ = f.__qualname__ = f"s{i}"
    return task(f, name=f"s{i}", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)

TASKS = [make(i) for i in range(%d)]

@task(persist_result=True)
def w(x: int) -> int:
    return x

@flow(log_prints=False)
def warmup(x: int = 0):
    return w(x)

@flow(log_prints=False)
def chain(x: int = 0):
    v = x
    for t in TASKS:
        v = t(v)
    return v

if __name__ == "__main__":
    warmup(0)
    t = time.perf_counter(); a = chain(0); t_cold = time.perf_counter() - t
    t = time.perf_counter(); b = chain(0); t_hot = time.perf_counter() - t
    assert a == b == %d
    import prefect
    print(json.dumps({"cold": t_cold, "cached": t_hot, "version": prefect.__version__}))
"""

TUNING_MODULE = """
import numpy as np
import keel


@keel.step
def data(n: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, 20))


@keel.tune(space={"alpha": (1e-3, 10.0, "log"), "k": (1, 20)}, n_trials=%d, pruner=None, direction="minimize")
def search(X: np.ndarray, *, params, trial):
    # ~0.5 s of NumPy work per trial (one BLAS thread): ridge-like solves on a random problem
    rng = np.random.default_rng(params["k"])
    loss = 0.0
    for _ in range(300):
        y = X @ rng.random(20)
        w = np.linalg.solve(X.T @ X + params["alpha"] * np.eye(20), X.T @ y)
        loss += float(np.mean((X @ w - y) ** 2))
    return loss


@keel.pipeline
def tuning(n: int = 20000):
    return search(data(n))["params"]
"""

KEEL_TUNING = """
import json, sys, time
sys.path.insert(0, ".")
from pathlib import Path
from keel.config import init_project
init_project(Path("."))
import tunemod
tunemod.tuning.run(refresh=True, engine="local", params={"n": 100})  # warm-up: imports, database
t = time.perf_counter(); seq = tunemod.tuning.run(refresh=True, engine="local"); t_seq = time.perf_counter() - t
t = time.perf_counter(); par = tunemod.tuning.run(refresh=True, engine="process", max_workers=%d); t_par = time.perf_counter() - t
assert seq.load("search")["trials"] == par.load("search")["trials"] == %d
print(json.dumps({"sequential": t_seq, "process": t_par}))
"""


def run_keel(code: str, module_name: str, module_src: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, f"{module_name}.py").write_text(module_src)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        # one BLAS thread per process: the pool's speed-up then comes from processes, not threads
        env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"keel side failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_prefect() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", "import prefect"], capture_output=True).returncode != 0:
        print("creating", VENV, "(pip install prefect) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        # fastapi 0.150+ dropped Body(min_items=...), which Prefect 3.8's server still uses
        subprocess.run([str(py), "-m", "pip", "install", "-q", "prefect", "fastapi>=0.139,<0.150"], check=True)
    return py


def run_prefect(n: int) -> dict[str, Any]:
    py = ensure_prefect()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "flow.py")
        script.write_text(PREFECT_OVERHEAD % (n, n))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KEEL_"))}
        env.update({
            "PREFECT_HOME": str(Path(tmp, "home")), "PREFECT_LOCAL_STORAGE_PATH": str(Path(tmp, "results")),
            "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true", "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a loaded machine starts it slowly
        })
        out = subprocess.run([str(py), str(script)], cwd=tmp, env=env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"prefect side failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def write_readme(text: str) -> None:
    write_section("bench_pipelines", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="12 tuning trials instead of 50")
    ap.add_argument("--no-readme", action="store_true", help="do not write benchmarks/README.md")
    ap.add_argument("--no-peer", action="store_true", help="skip Prefect")
    args = ap.parse_args()
    global LOAD
    LOAD = os.getloadavg()[0]
    trials = 12 if args.quick else 50
    workers = max(2, os.cpu_count() or 2)

    print(f"1. {STEPS}-step pipeline of trivial steps", flush=True)
    k = run_keel(KEEL_OVERHEAD % (STEPS, STEPS), "chainmod", keel_chain_module(STEPS))
    print(f"   keel     cold {k['cold']:.3f} s   fully cached {k['cached']:.3f} s ({k['cached_steps']} steps from cache)", flush=True)
    p: dict[str, Any] | None = None
    if not args.no_peer:
        p = run_prefect(STEPS)
        print(f"   prefect  cold {p['cold']:.3f} s   fully cached {p['cached']:.3f} s (prefect {p['version']})")
        print(f"   ratio prefect/keel: cold {p['cold'] / k['cold']:.2f}x, cached {p['cached'] / k['cached']:.2f}x")

    print(f"2. {trials} Optuna trials, sequential vs process pool ({workers} workers)", flush=True)
    t = run_keel(KEEL_TUNING % (workers, trials), "tunemod", TUNING_MODULE % trials)
    speedup = t["sequential"] / t["process"]
    print(f"   sequential {t['sequential']:.2f} s   process pool {t['process']:.2f} s   speed-up {speedup:.2f}x")

    if args.no_readme:
        return
    lines = [
        "## Pipelines (`bench_pipelines.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (load average {LOAD:.1f} at start),"
        f" Python {platform.python_version()}"
        + (f", Prefect {p['version']}" if p else "") + (" (--quick)" if args.quick else "") + ".",
        "",
        f"| {STEPS}-step pipeline of trivial steps | keel | Prefect | Prefect / keel |",
        "|---|---|---|---|",
    ]
    for label, key in (("cold (nothing cached)", "cold"), ("fully cached", "cached")):
        lines.append(f"| {label} | {k[key]:.3f} s | {p[key]:.3f} s | {p[key] / k[key]:.2f}x |" if p else f"| {label} | {k[key]:.3f} s | - | - |")
    lines += [
        "",
        f"| {trials} Optuna trials ({t['sequential'] / trials:.2f} s each, sequentially) | sequential | process pool ({workers} workers) | speed-up |",
        "|---|---|---|---|",
        f"| keel tuning step | {t['sequential']:.2f} s | {t['process']:.2f} s | {speedup:.2f}x |",
        "",
        "keel's pipeline figures include the tracked pipeline run, a child run per step, cache",
        "lookups and content-addressed outputs; Prefect's include its task runs against the",
        "ephemeral API server with INPUTS + TASK_SOURCE caching and persisted results.",
    ]
    write_readme("\n".join(lines))
    print(f"wrote {README}")


if __name__ == "__main__":
    main()
