"""``keel server`` (the platform API) and ``keel worker`` (runs what the server queues)."""

from __future__ import annotations

from typing import Any

import typer

from keel.cli._common import JSON_OPTION, console, err_console, fail, print_json, run_guarded


def server(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1: this machine only; 0.0.0.0 for every interface)."),
    port: int = typer.Option(5000, "--port", help="HTTP port."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    auth: bool = typer.Option(False, "--auth", help="Require authentication (users, tokens, roles)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request (uvicorn's access log)."),
) -> None:
    """Run the platform server: keel's REST API, the MLflow REST protocol and the web UI.

    Clients point at it with KEEL_TRACKING_URI=http://HOST:PORT (MLflow clients with
    MLFLOW_TRACKING_URI). Stores come from the usual settings (KEEL_METADATA_URI, ...).

    Example: keel server --host 0.0.0.0 --port 5000 --auth
    """
    try:
        import uvicorn
    except ImportError:
        fail("keel server needs fastapi and uvicorn: pip install 'keel[server]'")
    import os

    from keel.server.app import create_app

    os.environ["KEEL_SERVER_AUTH"] = "1" if auth else "0"
    # The server is where the stores are: a KEEL_TRACKING_URI in its environment (meant for clients)
    # must not turn its own library calls into calls to a server.
    os.environ.pop("KEEL_TRACKING_URI", None)
    os.environ.pop("KEEL_TRACKING_TOKEN", None)
    run_guarded(lambda: create_app(auth=auth))  # a bad setting is one line and exit 1, not a traceback per worker
    console.print(f"[bold]keel server[/] http://{host}:{port}  (auth {'on' if auth else 'off'}; "
                  f"{workers} worker{'s' if workers > 1 else ''}; /v1, /api/2.0/mlflow, /docs)", highlight=False)
    config: dict[str, Any] = {"host": host, "port": port, "access_log": access_log, "log_level": "info",
                              "timeout_graceful_shutdown": 30}
    uvicorn.run("keel.server.app:create_app", factory=True, workers=workers, **config)


def worker(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Runs at once (each in a fresh process)."),
    poll: float = typer.Option(2.0, "--poll", min=0.05, help="Seconds between looks at the queue."),
    lease: float = typer.Option(60.0, "--lease", min=1.0, help="Seconds a claim lasts unless renewed; a killed worker's runs are marked crashed after it."),
    drain: bool = typer.Option(False, "--drain", help="Exit once the queue is empty and the claimed runs have ended."),
    services: bool = typer.Option(True, "--services/--no-services",
                                  help="Also run the model servers of started deployments (keel deploy start); not with --drain."),
    json: bool = JSON_OPTION,
) -> None:
    """Run the pipeline runs queued through the server (POST /v1/pipeline-runs), with this project's code.

    Start it in the project folder, beside `keel server`, on the same stores. Several
    workers may run at once (on one or more machines): each run is claimed in the
    metadata store first, so none runs twice. On SIGTERM it claims nothing more and
    exits once the runs it holds have ended.

    It also runs the model servers of deployments started with `keel deploy start`
    (restarting them when they crash); on SIGTERM it drains them and another worker
    takes them over.

    Example: keel worker --concurrency 2
    """
    from datetime import UTC, datetime

    from keel.pipelines.queue import list_queued, work

    waiting = run_guarded(lambda: len(list_queued("queued", 1000)))
    if not json:
        err_console.print(f"keel worker: {waiting} run(s) queued; polling every {poll:g} s"
                          + (" until the queue is empty." if drain else " until stopped (Ctrl-C)."))

    def show(kind: str, row: Any) -> None:
        if not json:
            console.print(f"{datetime.now(UTC):%H:%M:%S} {row.id} {row.name}: {kind}"
                          + (f" (run {row.run_id})" if row.run_id else "") + (f": {row.error}" if row.error else ""), highlight=False)

    import signal
    import threading

    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:  # SIGTERM (a deployment stopping the pod): finish what runs, claim nothing new
        if not json:
            err_console.print("keel worker: stopping after the runs it holds end (SIGTERM).")
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    supervisor = None
    if services and not drain:
        from keel.deployments.processes import supervise

        def replica(kind: str, name: str, rep: Any) -> None:
            if not json:
                console.print(f"{datetime.now(UTC):%H:%M:%S} {name}[{rep.index}] :{rep.port}: {kind}"
                              + (f" (pid {rep.pid})" if kind == "started" else "") + (f": {rep.last_error}" if kind in ("exited", "failed") else ""),
                              highlight=False)

        supervisor = threading.Thread(target=supervise, name="keel-services", kwargs={
            "until": stopping.is_set, "lease_seconds": lease, "poll_seconds": min(poll, 1.0), "on_event": replica})
        supervisor.start()
    try:
        done = run_guarded(lambda: work(concurrency=concurrency, poll_seconds=poll, lease_seconds=lease, drain=drain, on_event=show,
                                        until=stopping.is_set))
    except KeyboardInterrupt:
        fail("stopped; runs it had claimed and not finished are marked crashed once their lease expires.", code=130)
        return
    finally:
        if supervisor is not None:  # the model servers are drained and their services released
            stopping.set()
            supervisor.join()
    if json:
        print_json([r.to_dict() for r in done])
    if any(r.status != "finished" for r in done):
        raise typer.Exit(1)


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(5000, "--port", help="HTTP port."),
    open_browser: bool = typer.Option(False, "--open", help="Open the UI in the default web browser."),
) -> None:
    """Open the web UI on this project's store: a local `keel server` (auth off) at http://HOST:PORT/.

    The same pages as `keel server` serves at / — runs, models, features, pipelines,
    deployments, monitoring and lineage — for one user on the embedded default store.

    Example: keel quickstart && cd keel-quickstart && keel ui --open
    """
    try:
        import uvicorn
    except ImportError:
        fail("keel ui needs fastapi and uvicorn: pip install 'keel[server]'")
    import os

    from keel.server.app import create_app

    os.environ["KEEL_SERVER_AUTH"] = "0"
    os.environ.pop("KEEL_TRACKING_URI", None)
    os.environ.pop("KEEL_TRACKING_TOKEN", None)
    app = run_guarded(lambda: create_app(auth=False))
    url = f"http://{host}:{port}/"
    console.print(f"[bold]keel ui[/] {url}  (this project's store; auth off; Ctrl+C stops it)", highlight=False)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command()(server)
    app.command()(ui)
    app.command()(worker)
