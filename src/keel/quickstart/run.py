"""The quickstart: a churn project from raw data to a gated production model and back.

It creates (or reuses) a project folder with `features.py`, `contracts/usage.yaml`
and `pipelines.py` copied from the template next to this module, generates the
data, and runs the project's training pipeline: contract -> features ->
point-in-time training set -> Optuna-tuned LightGBM -> evaluation against the
champion -> gated promotion. Then it serves a few customers from the online
store with the production model, and shows a bad batch being blocked. Run
again in the same folder, the pipeline is served from cache.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keel import config

TEMPLATE = Path(__file__).with_name("template")
PROJECT_FILES = ["features.py", "pipelines.py", "contracts/usage_feed.yaml"]


@dataclass
class QuickstartResult:
    folder: Path
    pipeline_run: str | None = None
    steps: int = 0
    cached_steps: int = 0
    time_saved_s: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)
    blocked_run: str | None = None
    blocked_checks: list[str] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(console: Console, result: QuickstartResult, title: str) -> Iterator[None]:
    start = time.perf_counter()
    with console.status(f"[bold]{title}[/] ..."):
        yield
    result.timings[title] = round(time.perf_counter() - start, 3)
    console.print(f"[green]✓[/] {title} [dim]({result.timings[title]:.1f}s)[/]")


def ensure_project(folder: Path) -> Path:
    """Create the project (keel.yaml, .keel/, the template files) unless it exists; chdir into it."""
    folder = folder.resolve()
    if not (folder / config.CONFIG_FILE).exists():
        config.init_project(folder)
    for rel in PROJECT_FILES:
        dest = folder / rel
        if not dest.exists():  # never overwrite a file the user may have edited
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TEMPLATE / rel, dest)
    import os

    os.chdir(folder)
    config.reset()
    return folder


def _pipeline(folder: Path) -> Any:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module("pipelines")
    if Path(getattr(module, "__file__", "")).resolve().parent != folder:  # another project's module
        module = importlib.reload(module)
    return module.training


def run_quickstart(folder: Path, console: Console | None = None, n_customers: int = 3_000) -> QuickstartResult:
    from keel.pipelines import FileRef, StepFailed
    from keel.quickstart import data as qdata

    console = console or Console()
    start = time.perf_counter()
    result = QuickstartResult(ensure_project(folder))
    console.print(f"[bold]keel quickstart[/] in {result.folder}")
    data_dir = result.folder / "data"

    with _stage(console, result, "Generate the churn data set (customers, daily usage, labels)"):
        if not (data_dir / "labels.parquet").exists():
            qdata.write(qdata.generate(n_customers=n_customers), data_dir)

    training = _pipeline(result.folder)
    with _stage(console, result, "Run pipelines:training (contract → features → training set → tuning → registry)"):
        run = training.run()
    features_of = importlib.import_module("pipelines").features_of
    result.pipeline_run, result.steps, result.cached_steps, result.time_saved_s = run.run_id, len(run.steps), run.cached, run.time_saved_s
    result.output = dict(run.output)
    _print_steps(console, run)
    console.print(f"  {run.summary()}")
    _print_tuning(console, run)
    _print_status(console)

    with _stage(console, result, "Serve: materialize features, look up customers online, predict with models:/churn@production"):
        result.served = _serve(console, features_of)

    with _stage(console, result, "A bad usage batch arrives: the same pipeline, blocked by the contract"):
        bad = data_dir / "incoming" / "usage-bad-batch.parquet"
        if not bad.exists():
            bad.parent.mkdir(parents=True, exist_ok=True)
            import pandas as pd

            qdata.bad_batch(pd.read_parquet(data_dir / "usage.parquet")).to_parquet(bad, index=False)
        try:
            training.run({"usage": FileRef(str(bad))})
        except StepFailed as exc:
            result.blocked_run = exc.result.run_id if exc.result is not None else None
            failed = [s for s in (exc.result.steps.values() if exc.result else []) if s.status == "failed"]
            result.blocked_checks = _contract_failures(exc)
            console.print(f"  [red]blocked[/] at step [bold]{failed[0].name if failed else '?'}[/]: run {str(result.blocked_run)[:12]} is failed; nothing downstream ran")
            for line in result.blocked_checks[:6]:
                console.print(f"    [red]✗[/] {line}")
        else:
            console.print("  [yellow]the bad batch was not blocked: check contracts/usage.yaml[/]")

    with _stage(console, result, "keel serve: the production model over HTTP on three protocols, logged"):
        result.http = _serve_http(console)

    s = config.settings()
    console.print(
        f"\nStored: metadata [bold]{s.metadata_uri}[/]\n        artifacts [bold]{s.artifacts_uri}[/]\n        online features [bold]{s.online_uri}[/]\n        data [bold]{data_dir}[/]"
        "\nNext: keel models status churn · keel pipelines show " + str(result.pipeline_run)[:8] + " · keel runs ls -e churn -o 'metrics.valid_roc_auc DESC'"
        "\nRun `keel quickstart` again: the pipeline comes from cache."
    )
    result.timings["total"] = round(time.perf_counter() - start, 3)
    return result


def _contract_failures(exc: BaseException) -> list[str]:
    """The failed checks of the ContractViolation behind a failed step, as one line each."""
    from keel.errors import ContractViolation

    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ContractViolation):
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, ContractViolation) and seen.report is not None:
        from keel.contracts.report import describe_failure

        return [describe_failure(r) for r in seen.report.failures]
    text = str(exc)
    return [line.strip() for line in text.splitlines() if line.strip()][:6]


def _print_steps(console: Console, run: Any) -> None:
    t = Table(title=f"Pipeline run {run.run_id[:12]}", header_style="bold")
    for col in ("step", "status", "cache", "seconds"):
        t.add_column(col)
    for step in run.steps.values():
        t.add_row(step.name, step.status, "hit" if step.cache_hit else "miss", f"{step.duration_s:.2f}")
    console.print(t)


def _print_tuning(console: Console, run: Any) -> None:
    import keel

    trials = keel.search_runs("churn", filter="tags.`keel.kind` = 'trial'", order_by=["metrics.valid_roc_auc DESC"], max_results=5,
                              columns=["metrics.valid_roc_auc", "params.num_leaves", "params.learning_rate", "params.min_child_samples"])
    if not len(trials):
        return
    t = Table(title="Best tuning trials (Optuna; each trial a run)", header_style="bold")
    for col in ("trial run", "valid_roc_auc", "num_leaves", "learning_rate", "min_child_samples"):
        t.add_column(col)
    for _, r in trials.iterrows():
        t.add_row(str(r["run_name"]), f"{r.get('metrics.valid_roc_auc', float('nan')):.4f}", str(r.get("params.num_leaves", "")),
                  str(r.get("params.learning_rate", ""))[:8], str(r.get("params.min_child_samples", "")))
    console.print(t)


def _print_status(console: Console) -> None:
    from keel import registry

    st = registry.status("churn")
    t = Table(title="keel models status churn", header_style="bold")
    for col in ("environment", "version", "trained by run", "roc_auc", "previous roc_auc", "rollback restores"):
        t.add_column(col)
    for env in st["environments"]:
        if env.get("version") is None:
            t.add_row(env["environment"], "-", "", "", "", "")
            continue
        auc: dict[str, Any] = next((m for m in env.get("metrics") or [] if m["metric"] == "roc_auc"), {})
        t.add_row(env["environment"], f"v{env['version']}", str(env.get("run_id", ""))[:12], _num(auc.get("current")),
                  _num(auc.get("previous")), f"v{env['rollback_to']}" if env.get("rollback_to") else "-")
    console.print(t)


def _num(v: Any) -> str:
    return "-" if v is None or v != v else f"{float(v):.4f}"


def _text(v: Any) -> str:
    return "-" if v is None or v != v else str(v)


def _serve(console: Console, features_of: Any) -> list[dict[str, Any]]:
    """The serving path: the same feature definitions, read online, scored by the production model."""
    import keel
    from keel.features import materialize

    done = materialize()
    online = keel.get_online_features("churn_v1", [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 999_999}])
    frame = online.to_df()
    model = keel.load_model("models:/churn@production")
    present = [all(s[i] != "missing" for s in online.status.values()) for i in range(len(frame))]
    scored = frame[present]
    # the project's own features_of: the same model input as in training
    risks = iter(model.predict_proba(features_of(scored))[:, 1]) if len(scored) else iter(())
    t = Table(title=f"Online: {done.keys_written} keys materialized; churn risk from models:/churn@production", header_style="bold")
    for col in ("customer", "plan", "minutes_30d", "tickets_30d", "feature status", "churn risk"):
        t.add_column(col)
    served = []
    for i, r in enumerate(frame.to_dict(orient="records")):
        risk = float(next(risks)) if present[i] else None
        statuses = sorted({s[i] for s in online.status.values()})
        t.add_row(str(r["customer_id"]), _text(r.get("plan")), _num(r.get("minutes_30d")), _text(r.get("tickets_30d")),
                  ",".join(statuses), "-" if risk is None else f"{risk:.1%}")
        served.append({"customer_id": int(r["customer_id"]), "risk": risk, "status": statuses})
    console.print(t)
    return served


def _serve_http(console: Console) -> list[dict[str, Any]]:
    """What `keel serve models:/churn@production` answers: keel /v1, MLflow /invocations and OIP v2, then the prediction log."""
    import json
    import socket
    import threading
    import urllib.request

    import uvicorn

    from keel.serving import create_app, query

    # the pipeline's features_of gives a missing plan or region "unknown": the server does the same
    app = create_app(["models:/churn@production"], defaults={"plan": "unknown", "region": "unknown"}, reload=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)

    def post(path: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read()), dict(resp.headers)

    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST /v1/models/churn/predict", "/v1/models/churn/predict", {"records": [{"customer_id": 1}, {"customer_id": 999_999}]}),
        ("POST /invocations (MLflow)", "/invocations", {"dataframe_records": [{"customer_id": 2}]}),
        ("POST /v2/models/churn/infer (OIP)", "/v2/models/churn/infer",
         {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [1]}]}),
    ]
    out = []
    t = Table(title=f"keel serve models:/churn@production on {url} (features fetched by customer id)", header_style="bold")
    for col in ("request", "answer", "x-request-id", "keel-model-version"):
        t.add_column(col, overflow="fold")
    try:
        for label, path, body in calls:
            answer, headers = post(path, body)
            out.append({"endpoint": path, "answer": answer, "version": headers.get("keel-model-version")})
            shown = {k: v for k, v in answer.items() if k in ("predictions", "scores", "missing_features", "outputs")}
            t.add_row(f"{label}\n{json.dumps(body)}", json.dumps(shown)[:160], headers.get("x-request-id", "")[:12],
                      headers.get("keel-model-version", ""))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    console.print(t)
    sql = "SELECT request_id, customer_id, plan, round(score, 3) AS score, missing_features FROM predictions ORDER BY ts DESC LIMIT 4"
    logged = query(sql, model="churn").to_pylist()
    q = Table(title=f'keel predictions query "{sql}"', header_style="bold")
    for col in ("request_id", "customer_id", "plan", "score", "missing_features"):
        q.add_column(col, overflow="fold")
    for row in logged:
        q.add_row(str(row["request_id"])[:14], str(row["customer_id"]), str(row["plan"]), str(row["score"]),
                  ",".join(row["missing_features"] or [])[:40] or "-")
    console.print(q)
    return out
