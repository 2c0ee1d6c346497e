"""``keel serve --engine ray``: the model server's ASGI app as a Ray Serve deployment with replicas.

    app = serve_on_ray(["models:/churn@production"], ServeOptions(), replicas=2, address="10.0.0.5:6379")
    app.wait()      # until SIGINT / SIGTERM, then the application is deleted from the cluster

Each replica builds the same app ``keel serve`` runs (:func:`keel.serving.app.create_app`,
or :func:`keel.deployments.serve.create_deployment_app` for ``--deployment NAME``), so
the three REST protocols, micro-batching, metrics and the prediction log behave as
on one machine. Ray Serve's proxy takes the HTTP port and spreads the requests over
the replicas; each response names the replica that answered in ``keel-replica``.

A replica runs in the project's folder with its settings (the metadata store,
artifacts, lake and online store URIs of the driver), so N replicas read one
registry and one online store. Each writes its own prediction-log segments under
a writer label ``ray-<app>-<replica>`` (part files never collide), and the app's
shutdown (``serve.delete`` deletes the replicas gracefully) compacts them into the
lake: nothing a replica answered is lost when the application stops.

keel never starts a Ray cluster for a server: a local Ray would die with the
command, so the cluster is named with ``--ray-address`` or ``KEEL_RAY_ADDRESS``
(``ray start --head`` starts one).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, DependencyError, KeelError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from keel.serving.app import ServeOptions

REPLICA_HEADER = "keel-replica"
REQUEST_ID = "x-request-id"
KEEL_REQUEST_ID = "keel-request-id"  # the app's request id when it is not the one in Ray's x-request-id
_replicas: list[_Replica] = []  # the replica of this Ray worker process (one per actor)


def _require_serve() -> Any:
    try:
        import ray  # noqa: F401
        from ray import serve
    except ImportError:
        raise DependencyError("keel serve --engine ray needs Ray Serve, which is not installed.",
                              hint="Install it with: pip install 'keel[ray]'") from None
    return serve


def ray_address(address: str | None = None) -> str:
    """The cluster to serve on: ``address``, else the ``ray_address`` setting (KEEL_RAY_ADDRESS); never a local Ray."""
    from keel.config import settings

    found = address or str(settings().ray_address or "")
    if not found:
        raise ConfigError("keel serve --engine ray needs a running Ray cluster, and none is named.",
                          hint="Start one with `ray start --head`, then pass --ray-address HOST:PORT (or set KEEL_RAY_ADDRESS).")
    return found


def _probe(address: str) -> None:
    """Fail at once when nothing listens at a HOST:PORT address (ray.init would retry for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"No Ray cluster answers at {address!r} ({exc.strerror or exc}).",
                          hint="Start one with `ray start --head`, and pass the address it prints with --ray-address "
                               "(or set KEEL_RAY_ADDRESS).") from None


def _http_port() -> int | None:
    """The port of the cluster's Serve proxy (Serve keeps the options it was first started with), if Ray says."""
    try:
        from ray.serve.context import _get_global_client

        client: Any = _get_global_client()
        return int(client.http_config.port)
    except Exception:  # a private API: an other Ray version may not have it
        return None


def replica_middleware(app: Any, replica: str) -> Any:
    """Pure ASGI middleware naming the answering replica in the ``keel-replica`` response header.

    Ray Serve's proxy puts its own ``x-request-id`` on every response (the caller's, or
    one it made up, which the app also sees as the request's header). The app's own is
    dropped when it is that one, and kept as ``keel-request-id`` when the body gave
    another (OIP's ``id``, keel's ``request_id``), so a response never carries two.
    """
    value = replica.encode()
    rid_header = REQUEST_ID.encode()

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        sent = next((v for k, v in scope.get("headers") or [] if k == rid_header), None)

        async def send_with_replica(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for k, v in message.get("headers", []):
                    if k.lower() == rid_header:
                        if v == sent:
                            continue
                        k = KEEL_REQUEST_ID.encode()
                    headers.append((k, v))
                message = {**message, "headers": [*headers, (REPLICA_HEADER.encode(), value)]}
            await send(message)

        await app(scope, receive, send_with_replica)

    middleware.state = getattr(app, "state", None)  # type: ignore[attr-defined]
    return middleware


class _Replica:
    """One Ray Serve replica: the project's settings, a writer label, then the app (built by :func:`_replica_app`)."""

    def __init__(self, root: str, env: dict[str, str], models: list[str], deployment: str | None, options: dict[str, Any],
                 app_name: str) -> None:
        os.environ.update(env)
        os.chdir(root)
        from ray import serve

        from keel import config
        from keel.serving.app import ServeOptions
        from keel.store.prediction_log import set_writer_label

        config.reset()
        ctx = serve.get_replica_context()
        rid = getattr(getattr(ctx, "replica_id", None), "unique_id", None) or str(getattr(ctx, "replica_tag", os.getpid()))
        self.replica = str(rid)
        set_writer_label(f"ray-{app_name}-{self.replica}")
        opts = ServeOptions(**options)
        if deployment:
            from keel.deployments.serve import create_deployment_app

            app = create_deployment_app(deployment, opts)
        else:
            from keel.serving.app import create_app

            app = create_app(models, opts)
        self.asgi = replica_middleware(app, self.replica)
        _replicas.append(self)

    def __del__(self) -> None:
        # after the app's lifespan shutdown (which compacts the log): close the writer, releasing its folder
        from keel.store.prediction_log import close_prediction_log

        close_prediction_log()


def _replica_app() -> Any:
    """The ASGI app of this process's replica (Ray Serve calls it after ``_Replica.__init__``)."""
    return _replicas[-1].asgi


@dataclass
class RayApp:
    """A keel server running as a Ray Serve application."""

    name: str
    address: str
    url: str
    replicas: int

    def stop(self) -> None:
        """Delete the application (its replicas shut down gracefully and flush their logs); Serve too if nothing else runs."""
        from ray import serve

        serve.delete(self.name)
        try:
            others = serve.status().applications
        except Exception:  # the controller is already gone
            return
        if not others:
            serve.shutdown()

    def wait(self) -> None:
        """Block until SIGINT or SIGTERM, then :meth:`stop`."""
        done = threading.Event()
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not done.wait(1.0):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.stop()


def app_name_for(models: Sequence[str], deployment: str | None) -> str:
    """``keel-<deployment>`` or ``keel-<model>[-<model>...]``: the Serve application's name."""
    raw = deployment or "-".join(re.split("[/@]", m.split(":/", 1)[-1].lstrip("/"))[0] for m in models)
    return "keel-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in raw)[:60]


def serve_on_ray(models: Sequence[str], options: ServeOptions, *, deployment: str | None = None, replicas: int = 1,
                 address: str | None = None, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                 access_log: bool = False) -> RayApp:
    """Run the model server on a Ray cluster as a Serve application of ``replicas`` replicas, at ``http://host:port/``.

    ``access_log`` turns on Ray Serve's line per request in the replica logs (off, as uvicorn's is for ``keel serve``).
    """
    if replicas < 1:
        raise ConfigError(f"--replicas {replicas} is not a number of replicas.", hint="Give 1 or more.")
    if bool(models) == bool(deployment):
        raise ConfigError("Give model URIs or a deployment name (one of them).", hint="keel serve models:/churn@production --engine ray")
    if options.grpc_port:
        raise ConfigError("--grpc-port is not served by --engine ray (Ray Serve's proxy carries HTTP only here).",
                          hint="Drop --grpc-port, or serve gRPC with --engine local.")
    cluster = ray_address(address)
    _probe(cluster)
    serve = _require_serve()
    # load once here: a bad URI or deployment is one line on the driver, not a failed replica on the cluster
    check = dataclasses.replace(options, log=False, reload=False)
    if deployment:
        from keel.deployments.serve import create_deployment_app

        create_deployment_app(deployment, check)
    else:
        from keel.serving.app import create_app

        create_app(list(models), check)
    from keel.config import settings
    from keel.serving.batch_ray import connect_ray, worker_env

    connect_ray(cluster)
    app_name = name or app_name_for(models, deployment)
    serve.start(http_options={"host": host, "port": port})
    running = _http_port()
    if running is not None and running != port:
        raise ConfigError(f"Ray Serve already runs on this cluster with its HTTP proxy on port {running}; --port {port} cannot apply.",
                          hint=f"Pass --port {running}, or stop Serve on the cluster first (`serve shutdown`).")
    server = serve.deployment(serve.ingress(_replica_app)(_Replica), name="keel-server", num_replicas=replicas,
                              graceful_shutdown_timeout_s=30, max_ongoing_requests=32)
    bound = server.bind(str(settings().root.resolve()), worker_env(), list(models), deployment, dataclasses.asdict(options), app_name)
    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C or SIGTERM while the replicas start: the application is deleted, not left running on the cluster
    on_term = signal.signal(signal.SIGTERM, interrupted) if threading.current_thread() is threading.main_thread() else None
    try:
        serve.run(bound, name=app_name, route_prefix="/", blocking=False, logging_config={"enable_access_log": access_log})
    except KeyboardInterrupt:
        serve.delete(app_name)
        raise
    except KeelError:
        raise
    except Exception as exc:  # a replica that could not start comes back as Ray's RuntimeError with its traceback
        lines = [ln for ln in str(exc).splitlines() if "Error:" in ln]
        raise KeelError(f"The Ray Serve application {app_name!r} did not start: {(lines[-1] if lines else str(exc)).strip()}",
                        hint="The replica logs are in the cluster's session folder (/tmp/ray/session_latest/logs/serve).") from None
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    return RayApp(name=app_name, address=cluster, url=f"http://{host}:{port}", replicas=replicas)
