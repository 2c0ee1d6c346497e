"""The quickstart: a churn project from raw data to a gated production model and back.

It creates (or reuses) a project folder with `features.py`, `contracts/usage_feed.yaml`
and `pipelines.py` copied from the template next to this module, generates the
data, and runs the project's training pipeline: contract -> features ->
point-in-time training set -> Optuna-tuned LightGBM -> evaluation against the
champion -> gated promotion. Then it serves a few customers from the online
store with the production model, over HTTP too, monitors the production version
against its baseline on two days of replayed traffic, and shows a bad batch
being blocked. Run again in the same folder, the pipeline is served from cache.

Each part is a stage function (``stage_data``, ``stage_training``,
``stage_serving``, ``stage_http``, ``stage_monitoring``, ``stage_blocked_batch``) taking the shared
:class:`QuickstartResult`; :data:`STAGES` lists them in order, so a new part
of the walk-through is one more function in that list.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keel import config
from keel.errors import DependencyError

TEMPLATE = Path(__file__).with_name("template")
PROJECT_FILES = ["features.py", "pipelines.py", "contracts/usage_feed.yaml"]
EXPERIMENT = "churn"  # the template pipeline's experiment, and the project's default in keel.yaml
# The project's promotion gates for churn: a retrained version is compared with production on the same fresh
# holdout and may not be worse by more than 0.01 ROC AUC (a refit on newer data rarely beats a tuned champion
# on the point estimate; the shadow's live comparison then decides on real traffic).
GATES = """registry:
  policies:
    churn:
      gates:
        - roc_auc >= champion - 0.01   # not worse than production by more than 0.01, on the same holdout
      smoke: true                      # and the packaged model predicts on its input example
"""
# What the template's pipeline imports beyond keel's base install: the `quickstart` extra.
REQUIRED = {"optuna": "tuning", "lightgbm": "lightgbm", "starlette": "serving", "uvicorn": "serving", "prometheus_client": "serving"}


@dataclass
class QuickstartResult:
    folder: Path
    console: Console = field(repr=False, default_factory=Console)
    n_customers: int = 3_000
    pipeline_run: str | None = None
    steps: int = 0
    cached_steps: int = 0
    time_saved_s: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] | None = None
    keys_materialized: int = 0
    blocked_run: str | None = None
    blocked_checks: list[str] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    http: list[dict[str, Any]] = field(default_factory=list)
    monitoring: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    run: Any = field(default=None, repr=False)  # the training pipeline's result, for its steps' outputs

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``keel quickstart --json``)."""
        return {
            "folder": str(self.folder), "pipeline_run": self.pipeline_run, "steps": self.steps, "cached_steps": self.cached_steps,
            "time_saved_s": self.time_saved_s, "output": self.output, "gates": self.gates, "keys_materialized": self.keys_materialized,
            "served": self.served, "blocked_run": self.blocked_run, "blocked_checks": self.blocked_checks, "monitoring": self.monitoring,
            "loop": self.loop, "timings": self.timings,
        }


def check_requirements() -> None:
    """Fail in one line, before anything is written, when the quickstart's extra is not installed."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(
            f"keel quickstart needs {' and '.join(repr(m) for m in missing)}, which {'is' if len(missing) == 1 else 'are'} not installed.",
            hint="Install the quickstart's extra: pip install 'keel[quickstart]' (from a checkout: pip install -e '.[quickstart]').",
        )


@contextmanager
def _stage(result: QuickstartResult, title: str) -> Iterator[None]:
    start = time.perf_counter()
    with result.console.status(f"[bold]{title}[/] ..."):
        yield
    result.timings[title] = round(time.perf_counter() - start, 3)
    result.console.print(f"[green]✓[/] {title} [dim]({result.timings[title]:.1f}s)[/]")


def ensure_project(folder: Path) -> Path:
    """Create the project (keel.yaml, .keel/, the template files) unless it exists; chdir into it."""
    folder = folder.resolve()
    if not (folder / config.CONFIG_FILE).exists():
        path = config.init_project(folder, experiment=EXPERIMENT)
        with path.open("a") as f:
            f.write(GATES)
    for rel in PROJECT_FILES:
        dest = folder / rel
        if not dest.exists():  # never overwrite a file the user may have edited
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TEMPLATE / rel, dest)
    os.chdir(folder)
    config.reset()
    return folder


def _project_module() -> Any:
    """The project's own ``pipelines`` module (another project's is reloaded from this folder)."""
    folder = Path.cwd()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()  # the folder may be newer than the import system's view of sys.path
    module = importlib.import_module("pipelines")
    if Path(getattr(module, "__file__", "")).resolve().parent != folder:
        module = importlib.reload(module)
    return module


# -- stages -------------------------------------------------------------------------

def stage_data(result: QuickstartResult) -> None:
    from keel.quickstart import data as qdata

    with _stage(result, "Generate the churn data set (customers, daily usage, labels)"):
        if not (result.data_dir / "labels.parquet").exists():
            paths = qdata.write(qdata.generate(n_customers=result.n_customers), result.data_dir)
            # Incremental materialization re-reads files modified up to 2 s before a run started reading
            # (coarse file-system clocks); date the generated files before that, or on a fast machine the
            # rerun re-reads them and reports keys materialized instead of "already up to date".
            import os
            import time

            past = time.time() - 10
            for path in paths.values():
                os.utime(path, (past, past))


def stage_training(result: QuickstartResult) -> None:
    """Run pipelines:training and show its steps, the best trials, the promotion's gates and the registry."""
    console = result.console
    training = _project_module().training
    with _stage(result, "Run pipelines:training (contract → features → training set → tuning → registry)"):
        run = training.run()
    result.run = run
    result.pipeline_run, result.steps, result.cached_steps, result.time_saved_s = run.run_id, len(run.steps), run.cached, run.time_saved_s
    result.output = dict(run.output)
    _print_steps(console, run)
    console.print(f"  {run.summary()}")
    _print_tuning(console)
    result.gates = _promotion_gates(result.output.get("version"))
    _print_gates(console, result.gates, str(result.output.get("promotion", "")))
    _print_status(console)


def stage_serving(result: QuickstartResult) -> None:
    with _stage(result, "Serve: materialize features, look up customers online, predict with models:/churn@production"):
        result.served = _serve(result, _project_module().features_of)


def stage_blocked_batch(result: QuickstartResult) -> None:
    from keel.pipelines import FileRef, StepFailed
    from keel.quickstart import data as qdata

    console = result.console
    with _stage(result, "A bad usage batch arrives: the same pipeline, blocked by the contract"):
        bad = result.data_dir / "incoming" / "usage-bad-batch.parquet"
        if not bad.exists():
            bad.parent.mkdir(parents=True, exist_ok=True)
            import pandas as pd

            qdata.bad_batch(pd.read_parquet(result.data_dir / "usage.parquet")).to_parquet(bad, index=False)
        try:
            _project_module().training.run({"usage": FileRef(str(bad))})
        except StepFailed as exc:
            result.blocked_run = exc.result.run_id if exc.result is not None else None
            failed = [s for s in (exc.result.steps.values() if exc.result else []) if s.status == "failed"]
            result.blocked_checks = _contract_failures(exc)
            console.print(f"  [red]blocked[/] at step [bold]{failed[0].name if failed else '?'}[/]: run {str(result.blocked_run)[:12]} is failed; nothing downstream ran")
            for line in result.blocked_checks[:6]:
                console.print(f"    [red]✗[/] {escape(line)}")
        else:
            console.print("  [yellow]the bad batch was not blocked: check contracts/usage_feed.yaml[/]")


def stage_http(result: QuickstartResult) -> None:
    with _stage(result, "keel serve: the production model over HTTP on three protocols, logged"):
        result.http = _serve_http(result.console)


def stage_monitoring(result: QuickstartResult) -> None:
    from keel.quickstart import monitoring

    with _stage(result, "Monitor: churn@production's baseline, the monitor churn-daily, two days of replayed traffic"):
        result.monitoring = monitoring.run(result.folder, result.run, _project_module().features_of)
    monitoring.show(result.console, result.monitoring)


def stage_loop(result: QuickstartResult) -> None:
    from keel.quickstart import loop

    with _stage(result, "Close the loop: a shift, the alert, the retraining policy, a shadow beside production, a canary, the promotion"):
        result.loop = loop.run(_project_module().features_of)
    loop.show(result.console, result.loop)


Stage = Callable[[QuickstartResult], None]
STAGES: list[tuple[str, Stage]] = [
    ("data", stage_data),
    ("training", stage_training),
    ("serving", stage_serving),
    ("http", stage_http),
    ("monitoring", stage_monitoring),
    ("blocked_batch", stage_blocked_batch),
    ("loop", stage_loop),
]


def run_quickstart(folder: Path, console: Console | None = None, n_customers: int = 3_000) -> QuickstartResult:
    """Create or reuse the churn project in ``folder`` and run every stage; returns what happened."""
    check_requirements()
    start = time.perf_counter()
    result = QuickstartResult(ensure_project(folder), console or Console(), n_customers)
    result.console.print(f"[bold]keel quickstart[/] in {result.folder}")
    for _name, stage in STAGES:
        stage(result)
    _print_closing(result)
    result.timings["total"] = round(time.perf_counter() - start, 3)
    return result


# -- output -------------------------------------------------------------------------

def _print_closing(result: QuickstartResult) -> None:
    s = config.settings()
    run = str(result.pipeline_run)[:8]
    result.console.print(
        f"\nStored: metadata [bold]{s.metadata_uri}[/]\n        artifacts [bold]{s.artifacts_uri}[/]\n"
        f"        online features [bold]{s.online_uri}[/]\n        data [bold]{result.data_dir}[/]\n"
        f"Next (cd {result.folder.name}): keel models status churn · keel pipelines show {run} · keel runs ls -o 'metrics.valid_roc_auc DESC'\n"
        "Run `keel quickstart` again: the pipeline comes from cache."
    )


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


def _print_tuning(console: Console) -> None:
    import keel

    trials = keel.search_runs(EXPERIMENT, filter="tags.`keel.kind` = 'trial'", order_by=["metrics.valid_roc_auc DESC"], max_results=5,
                              columns=["metrics.valid_roc_auc", "params.num_leaves", "params.learning_rate", "params.min_child_samples"])
    if not len(trials):
        return
    t = Table(title="Best tuning trials (Optuna; each trial a run)", header_style="bold")
    for col in ("trial run", "valid_roc_auc", "num_leaves", "learning_rate", "min_child_samples"):
        t.add_column(col)
    for _, r in trials.iterrows():
        t.add_row(str(r["run_name"]), _num(r.get("metrics.valid_roc_auc")), str(r.get("params.num_leaves", "")),
                  _num(r.get("params.learning_rate")), str(r.get("params.min_child_samples", "")))
    console.print(t)


def _promotion_gates(version: Any) -> dict[str, Any] | None:
    """The gate report of the last promotion attempt of ``version`` (from the audit log; cached reruns have it too)."""
    from keel import registry

    if version is None:
        return None
    events = [e for e in registry.history(EXPERIMENT) if e["action"] == "promote" and e["to_version"] == version and e.get("gates")]
    return events[-1]["gates"] if events else None


def _print_gates(console: Console, gates: dict[str, Any] | None, outcome: str) -> None:
    if not gates:
        return
    champion = gates.get("champion_version")
    verdict = outcome.split(":", 1)[0] or ("passed" if gates.get("passed") else "refused")
    t = Table(
        title=f"Promotion gates: {gates['model']} v{gates['version']} -> {gates['environment']} "
        f"(policy: {gates.get('policy')}; champion: {'v' + str(champion) if champion else 'none'}): {verdict}",
        header_style="bold",
    )
    for col in ("gate", "metric", "threshold", "champion", "result"):
        t.add_column(col)
    for r in gates.get("results", []):
        style = {"pass": "green", "fail": "red"}.get(r["status"], "yellow")
        t.add_row(r["name"], _num(r.get("value")), _num(r.get("required")), _num(r.get("champion")) if champion else "none",
                  f"[{style}]{r['status']}[/]")
    console.print(t)
    for r in gates.get("results", []):
        console.print(f"  [dim]{escape(r['name'])}: {escape(r['detail'])}[/]")


def _print_status(console: Console) -> None:
    from keel import registry

    st = registry.status(EXPERIMENT)
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
    """A number for a table: 4 significant decimals, '-' when missing, never '-0'."""
    if v is None or v != v:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    text = f"{f:.4f}" if abs(f) < 1e6 else f"{f:.4g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _text(v: Any) -> str:
    return "-" if v is None or v != v else str(v)


def _serve(result: QuickstartResult, features_of: Any) -> list[dict[str, Any]]:
    """The serving path: the same feature definitions, read online, scored by the production model."""
    import keel
    from keel.features import materialize

    done = materialize(incremental=True)  # a rerun reads nothing new: the online store is already up to date
    result.keys_materialized = done.keys_written
    online = keel.get_online_features("churn_v1", [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 999_999}])
    frame = online.to_df()
    model = keel.load_model("models:/churn@production")
    present = [all(s[i] != "missing" for s in online.status.values()) for i in range(len(frame))]
    scored = frame[present]
    # the project's own features_of: the same model input as in training
    risks = iter(model.predict_proba(features_of(scored))[:, 1]) if len(scored) else iter(())
    fresh = f"{done.keys_written:,} keys materialized" if done.keys_written else "already up to date"
    t = Table(title=f"Online store: {fresh}; churn risk from models:/churn@production", header_style="bold")
    for col in ("customer", "plan", "minutes_30d", "tickets_30d", "feature status", "churn risk"):
        t.add_column(col)
    served = []
    for i, r in enumerate(frame.to_dict(orient="records")):
        risk = float(next(risks)) if present[i] else None
        statuses = sorted({s[i] for s in online.status.values()})
        t.add_row(str(r["customer_id"]), _text(r.get("plan")), _num(r.get("minutes_30d")), _text(r.get("tickets_30d")),
                  ",".join(statuses), "-" if risk is None else f"{risk:.1%}")
        served.append({"customer_id": int(r["customer_id"]), "risk": risk, "status": statuses})
    result.console.print(t)
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
