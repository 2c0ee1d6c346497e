"""Registry benchmark: load a registered LightGBM model and make its first prediction, keel beside MLflow.

    python benchmarks/bench_registry.py            # 20,000 rows x 20 features, 200 trees
    python benchmarks/bench_registry.py --quick    # small sizes, a fast check (README untouched)

Figures:
  1. cold: in a fresh process (the framework, pandas and lightgbm already imported, not timed),
     ``keel.load_model("models:/bench@production")`` + one one-row prediction, beside
     ``mlflow.pyfunc.load_model("models:/bench@production")`` + the same prediction.
     keel verifies the sha256 of every file before unpickling; MLflow does not.
  2. warm: the same call repeated in the same process (median of N). keel caches a version
     resolved by alias and re-checks only the alias row; MLflow loads the model again.
  3. one-row predict on the loaded model (median of N), signature check included for keel.

Both sides train the same LightGBM model on the same generated data (numpy, seed 7) and
register it with their default embedded store (SQLite + local files). MLflow runs in its own
virtualenv (benchmarks/.venvs/mlflow; lightgbm is added there when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _readme import write_section

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "mlflow"
README = HERE / "README.md"
START, END = "<!-- bench_registry:start -->", "<!-- bench_registry:end -->"
SIZES = {"full": {"rows": 20_000, "features": 20, "trees": 200, "repeats": 30, "cold": 5},
         "quick": {"rows": 2_000, "features": 10, "trees": 20, "repeats": 5, "cold": 2}}
SEED = 7


# -- workers (run in subprocesses: `python bench_registry.py --worker NAME JSON`) --------------

def make_data(rows: int, features: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    X = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    y = (X.iloc[:, 0] + 0.5 * X.iloc[:, 1] - 0.3 * X.iloc[:, 2] + rng.normal(0, 1, rows) > 0).astype(int)
    return X, y


def worker_keel_setup(args: dict[str, Any]) -> dict[str, Any]:
    import lightgbm as lgb

    import keel

    X, y = make_data(args["rows"], args["features"])
    model = lgb.LGBMClassifier(n_estimators=args["trees"], verbose=-1, random_state=SEED).fit(X, y)
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(5))
    mv = keel.register_model(info.uri, "bench")
    keel.promote("bench", mv.version, to="production")
    return {"version": mv.version}


def worker_mlflow_setup(args: dict[str, Any]) -> dict[str, Any]:
    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature

    X, y = make_data(args["rows"], args["features"])
    model = lgb.LGBMClassifier(n_estimators=args["trees"], verbose=-1, random_state=SEED).fit(X, y)
    mlflow.set_tracking_uri(args["uri"])
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(model, name="model", signature=infer_signature(X.head(5), model.predict(X.head(5))),
                                         input_example=X.head(5), registered_model_name="bench")
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("bench", "production", info.registered_model_version)
    return {"version": info.registered_model_version}


def worker_load(args: dict[str, Any]) -> dict[str, Any]:
    import lightgbm  # noqa: F401  (imported before timing on both sides)
    import pandas  # noqa: F401

    X, _y = make_data(200, args["features"])
    row = X.head(1)
    if args["side"] == "keel":
        import keel

        def load() -> Any:
            return keel.load_model("models:/bench@production")
    else:
        import mlflow

        mlflow.set_tracking_uri(args["uri"])

        def load() -> Any:
            return mlflow.pyfunc.load_model("models:/bench@production")

    t0 = time.perf_counter()
    model = load()
    first = model.predict(row)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        m = load()
        m.predict(row)
        warm.append(time.perf_counter() - t0)
    predict = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        model.predict(row)
        predict.append(time.perf_counter() - t0)
    return {"cold_s": cold, "warm_s": statistics.median(warm), "predict_s": statistics.median(predict), "first": float(first[0])}


WORKERS = {"keel_setup": worker_keel_setup, "mlflow_setup": worker_mlflow_setup, "load": worker_load}


# -- orchestration -----------------------------------------------------------------------------

def mlflow_python() -> Path | None:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} and installing mlflow (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow"], check=True)
    has_lgb = subprocess.run([str(py), "-c", "import lightgbm"], capture_output=True).returncode == 0
    if not has_lgb:
        import lightgbm

        print(f"Installing lightgbm=={lightgbm.__version__} into {VENV} (once)...", flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"lightgbm=={lightgbm.__version__}"], check=True)
    return py


def call(python: Path | str, worker: str, args: dict[str, Any], cwd: Path, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONPATH"] = str(HERE.parent / "src")
    env.update(env_extra or {})
    out = subprocess.run([str(python), str(Path(__file__).resolve()), "--worker", worker, json.dumps(args)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"worker {worker} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a fast check (README untouched)")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker[0]](json.loads(a.worker[1]))))
        return
    size = SIZES["quick" if a.quick else "full"]
    mlflow_py = mlflow_python()
    with tempfile.TemporaryDirectory(prefix="keel-bench-registry-") as tmp:
        kdir, mdir = Path(tmp) / "keel", Path(tmp) / "mlflow"
        kdir.mkdir()
        mdir.mkdir()
        (kdir / "keel.yaml").write_text("experiment: bench\n")
        muri = f"sqlite:///{mdir / 'mlflow.db'}"
        print(f"Training and registering ({size['rows']} rows x {size['features']} features, {size['trees']} trees)...", flush=True)
        call(sys.executable, "keel_setup", size, kdir)
        if mlflow_py:
            call(mlflow_py, "mlflow_setup", {**size, "uri": muri}, mdir)
        results: dict[str, list[dict[str, Any]]] = {"keel": [], "mlflow": []}
        for i in range(size["cold"]):
            print(f"  load round {i + 1}/{size['cold']}", flush=True)
            results["keel"].append(call(sys.executable, "load", {**size, "side": "keel"}, kdir))
            if mlflow_py:
                results["mlflow"].append(call(mlflow_py, "load", {**size, "side": "mlflow", "uri": muri}, mdir))
    table = report(size, results)
    print("\n" + table)
    if not a.quick and not a.no_readme:
        write_readme(table)
        print(f"\nWritten to {README}")


def _ms(v: float) -> str:
    return f"{v * 1000:.1f} ms" if v >= 0.001 else f"{v * 1e6:.0f} µs"


def report(size: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> str:
    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[side]) if results[side] else float("nan")

    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, Python {platform.python_version()}; "
        f"LightGBM {size['trees']} trees, {size['features']} features; median of {size['cold']} fresh processes (cold) "
        f"and of {size['repeats']} calls (warm, predict).",
        "",
        "| figure | keel | MLflow | MLflow / keel |",
        "|---|---|---|---|",
    ]
    for key, label in (("cold_s", "load_model('models:/bench@production') + first one-row predict, fresh process"),
                       ("warm_s", "same, repeated in the process (keel: alias cache)"),
                       ("predict_s", "one-row predict on the loaded model")):
        k, m = med("keel", key), med("mlflow", key)
        ratio = f"{m / k:.1f}x" if results["mlflow"] and k > 0 else "n/a"
        lines.append(f"| {label} | {_ms(k)} | {_ms(m) if results['mlflow'] else 'n/a'} | {ratio} |")
    return "\n".join(lines)


def write_readme(table: str) -> None:
    write_section("bench_registry", table, append=True,
                  intro="## Registry: load a registered model (vs MLflow)\n\n`python benchmarks/bench_registry.py` (add `--quick` for a fast check). Each full run appends its figures below.")


if __name__ == "__main__":
    main()
