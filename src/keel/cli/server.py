"""``keel server`` (the platform API) and ``keel worker`` (runs what the server queues)."""

from __future__ import annotations

from typing import Any

import typer

from keel.cli._common import console, fail, run_guarded


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


def register(app: typer.Typer) -> None:
    app.command()(server)
