"""``keel serve``, ``keel score`` and ``keel predictions query``."""

from __future__ import annotations

import json as jsonlib
import os
from pathlib import Path
from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, fail, print_json, run_guarded, table

predictions_app = typer.Typer(help="The prediction log: every prediction served or scored.\n\nExample: keel predictions query \"SELECT count(*) FROM predictions\"",
                              no_args_is_help=True)


def _defaults(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            fail(f"--default {item!r} is not NAME=VALUE (e.g. --default plan=unknown).")
        name, raw = item.split("=", 1)
        try:
            out[name] = jsonlib.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def serve(
    models: list[str] = typer.Argument(None, help="Model URIs: models:/churn@production, models:/churn/3, runs:/<id>/model."),
    deployment: str = typer.Option(None, "--deployment", help="Serve a deployment (keel deploy): its champion, shadow, canary or A/B routes."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1: this machine only; 0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    grpc_port: int = typer.Option(0, "--grpc-port", help="Also serve the Open Inference Protocol over gRPC on this port (0: off)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (metrics are aggregated over them)."),
    missing_features: str = typer.Option("default", "--missing-features", help="Rows whose features are missing or stale: default (null, as a training set holds, or --default) or reject (422)."),
    default: list[str] = typer.Option([], "--default", help="NAME=VALUE given to a feature that is missing (repeatable)."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not write the prediction log."),
    reload: bool = typer.Option(True, "--reload/--no-reload", help="Follow alias moves (registry events) without a restart."),
    batch_max_rows: int = typer.Option(0, "--batch-max-rows", help="Micro-batching: rows per model call (0: off)."),
    batch_max_wait_ms: float = typer.Option(2.0, "--batch-max-wait-ms", help="Micro-batching: longest wait for a batch to fill."),
    queue_max_rows: int = typer.Option(10_000, "--queue-max-rows", help="Micro-batching: rows queued before requests get 503 + Retry-After."),
    max_body_mb: float = typer.Option(50.0, "--max-body-mb", help="Largest request body, in MB (larger: 413)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
    engine: str = typer.Option("local", "--engine", help="local (uvicorn on this machine) or ray (a Ray Serve deployment on a running cluster)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Ray: replicas of the server (one model load each)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray: the cluster's address (default KEEL_RAY_ADDRESS; `ray start --head` starts one)."),
) -> None:
    """Serve models over HTTP: keel's /v1, MLflow's /invocations and the Open Inference Protocol v2.

    A model trained from a feature service takes its entity keys; its features are
    fetched from the online store. Every prediction is logged (see `keel predictions query`).

    Example: keel serve models:/churn@production --port 8000 --grpc-port 8001 --workers 2
    (or: keel serve --deployment churn-live; on Ray: keel serve models:/churn@production --engine ray --replicas 2)
    """
    if engine not in ("local", "ray"):
        fail(f"--engine {engine!r} is not an engine: local or ray.")
    try:
        import uvicorn
    except ImportError:
        fail("keel serve needs uvicorn and starlette: pip install 'keel[serving]'")
    from keel.serving.app import APP_ENV, ServeOptions, create_app

    options = ServeOptions(log=not no_log, missing_features=missing_features, defaults=_defaults(default), reload=reload,
                           batch_max_rows=batch_max_rows, batch_max_wait_ms=batch_max_wait_ms, queue_max_rows=queue_max_rows,
                           max_body_bytes=int(max_body_mb * (1 << 20)), grpc_port=grpc_port or None, grpc_host=host)
    if bool(models) == bool(deployment):
        fail("Give model URIs or --deployment NAME (one of them), e.g. keel serve models:/churn@production.")
    if engine == "ray":
        if workers > 1:
            fail("--workers is for --engine local; on Ray give --replicas N.")
        from keel.deployments.ray_serve import serve_on_ray

        ray_app = run_guarded(lambda: serve_on_ray(list(models or []), options, deployment=deployment, replicas=replicas,
                                                   address=ray_address, host=host, port=port, access_log=access_log))
        console.print(f"[bold]keel serve[/] {ray_app.url}  on Ray {ray_app.address}: application {ray_app.name}, "
                      f"{replicas} replica{'s' if replicas > 1 else ''} (/v1, /invocations, /v2, /metrics, /openapi.json; Ctrl-C stops it)",
                      highlight=False)
        ray_app.wait()
        return
    if deployment:
        from keel.deployments.serve import DEPLOYMENT_ENV, create_deployment_app

        app = run_guarded(lambda: create_deployment_app(deployment, options))
        os.environ[DEPLOYMENT_ENV] = deployment
    else:
        # load once here: a bad URI is one line and exit 1, not a traceback in each worker
        app = run_guarded(lambda: create_app(models, options))
    server = app.state.server
    console.print(f"[bold]keel serve[/] http://{host}:{port}  " + ", ".join(f"{n} v{p.version}" for n, p in server.predictors.items())
                  + f"  ({workers} worker{'s' if workers > 1 else ''}; /v1, /invocations, /v2, /metrics, /openapi.json"
                  + (f"; gRPC {host}:{grpc_port}" if grpc_port else "") + ")", highlight=False)
    config: dict[str, Any] = {"host": host, "port": port, "access_log": access_log, "log_level": "info", "timeout_graceful_shutdown": 30}
    if workers == 1:
        uvicorn.run(app, **config)
        return
    import tempfile

    from keel.serving.metrics import MULTIPROC_ENV

    os.environ[APP_ENV] = jsonlib.dumps({"models": list(models or []), "options": options.__dict__})
    os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="keel-metrics-"))
    factory = "keel.deployments.serve:app_from_env" if deployment else "keel.serving.app:app_from_env"
    uvicorn.run(factory, factory=True, workers=workers, **config)


def score(
    model: str = typer.Argument(..., help="Model URI, e.g. models:/churn@production."),
    input: Path = typer.Option(..., "--input", "-i", help="Parquet or CSV file or folder to score."),
    output: Path = typer.Option(..., "--output", "-o", help="Parquet file to write (row_id, id/key columns, prediction, score, model_version)."),
    chunk_rows: int = typer.Option(65_536, "--chunk-rows", help="Rows per chunk (memory holds one chunk)."),
    on_error: str = typer.Option("fail", "--on-error", help="Bad rows: fail (stop, report their row numbers) or skip (score the others, report them)."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not write the scored rows to the prediction log."),
    engine: str = typer.Option("local", "--engine", help="local (in-process) or ray (Ray Data, an actor pool; KEEL_RAY_ADDRESS picks the cluster)."),
    concurrency: int = typer.Option(2, "--concurrency", help="Ray: actors in the pool (one model load each)."),
    json: bool = JSON_OPTION,
) -> None:
    """Score a file in chunks with a progress bar; Parquet out, logged with a batch id.

    Example: keel score models:/churn@production --input data/customers.parquet --output scores.parquet
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from keel.serving.batch import score as run_score

    with Progress(TextColumn("[bold]scoring[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=json, transient=True) as bar:
        task = bar.add_task("score", total=None)
        result = run_guarded(lambda: run_score(model, input, output, chunk_rows=chunk_rows, on_error=on_error, log=not no_log,
                                               engine=engine, concurrency=concurrency,
                                               progress=lambda done, total: bar.update(task, completed=done, total=total)))
    if json:
        print_json(result.to_dict())
        return
    console.print(f"scored [bold]{result.rows_scored}[/] of {result.rows_in} rows with {result.model} v{result.version} "
                  f"in {result.seconds:.1f}s ({result.engine}) → {result.output}; batch id {result.batch_id}"
                  + ("" if result.logged else " (not logged)"), highlight=False)
    if result.rows_skipped:
        console.print(f"[yellow]{result.rows_skipped} row(s) skipped[/]: " + "; ".join(
            f"row {b['row']}" if "row" in b else f"rows {b['rows'][0]}-{b['rows'][1]}: {b['error']}" for b in result.bad_rows[:5]), highlight=False)


def query(
    sql: str = typer.Argument(..., help="One SELECT over the view `predictions` (every model's log)."),
    model: str = typer.Option(None, "--model", "-m", help="Only this model's log (faster)."),
    limit: int = typer.Option(50, "--limit", help="Rows shown in the table (all rows with --json)."),
    json: bool = JSON_OPTION,
) -> None:
    """Query the prediction log with SQL (DuckDB; read-only, no file access beyond the log).

    Example: keel predictions query "SELECT version, count(*), avg(score) FROM predictions WHERE model = 'churn' GROUP BY version"
    """
    from keel.serving.sql import query as run_query
    from keel.serving.sql import rows

    result = run_guarded(lambda: run_query(sql, model=model))
    data = rows(result)
    if json:
        print_json(data)
        return
    console.print(table(f"{result.num_rows} row(s)", result.column_names, ([r[c] for c in result.column_names] for r in data[:limit])))
    if result.num_rows > limit:
        console.print(f"[dim]{result.num_rows - limit} more row(s); use --limit or --json[/]")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(score)
    predictions_app.command("query")(query)
    app.add_typer(predictions_app, name="predictions")
