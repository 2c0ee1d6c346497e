"""The platform server's ASGI app: one FastAPI app mounting every router.

Each router module in :data:`ROUTERS` exposes ``router`` (a ``fastapi.APIRouter``);
the app adds ``GET /health``, the mapping of :class:`~keel.errors.KeelError` to its
HTTP status (bad input is a 4xx with detail, never a 500) and the OpenAPI document
at ``/openapi.json``.
"""

from __future__ import annotations

import importlib
from typing import Any

from keel.errors import KeelError, missing_extra

# One module per concern; each owns its URL prefix.
ROUTERS = [
    "keel.server.routes.users",      # /v1/login, /v1/users, /v1/tokens, /v1/roles, /v1/owners
    "keel.server.routes.tracking",   # /v1/experiments, /v1/runs (+ metrics, artifacts)
    "keel.server.routes.models",     # /v1/models/{name}/versions (register), packages (download)
    "keel.server.routes.registry",   # /v1/registry/... (aliases, environments, promote, approvals, audit)
    "keel.server.routes.features",   # /v1/features/...
    "keel.server.routes.predictions",  # /v1/predictions/query, /v1/feedback
    "keel.server.routes.monitoring",   # /v1/monitors, /v1/alerts
    "keel.server.routes.pipelines",    # /v1/pipelines, /v1/pipeline-runs
    "keel.server.mlflow",            # /api/2.0/mlflow/..., /api/2.0/mlflow-artifacts/...
]


def create_app(*, auth: bool | None = None) -> Any:
    """The platform API as a FastAPI app.

    ``auth``: require authentication (``keel server --auth``); None reads
    ``KEEL_SERVER_AUTH``-style settings through :mod:`keel.server.auth`.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise missing_extra("fastapi", "server") from exc

    from keel import __version__
    from keel.server import auth as auth_mod

    app = FastAPI(title="keel", version=__version__,
                  description="The keel platform API: tracking, registry, features, predictions, monitoring and pipelines.")
    app.state.auth = auth_mod.auth_enabled(auth)

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    @app.get("/health", tags=["health"], summary="Liveness and readiness probe")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for name in ROUTERS:
        module = importlib.import_module(name)
        app.include_router(module.router)
    auth_mod.install(app)
    return app
