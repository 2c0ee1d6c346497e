"""The platform server's ASGI app: one FastAPI app mounting every router.

Each router module in :data:`ROUTERS` exposes ``router`` (a ``fastapi.APIRouter``);
the app adds ``GET /health``, the mapping of errors to responses and the OpenAPI
document at ``/openapi.json``:

- a :class:`~keel.errors.KeelError` is its ``http_status`` with its ``to_dict()`` body
  (plus ``report`` when gates or a contract refused), so bad input is a 4xx with
  detail, never a 500;
- a request that does not match its schema is FastAPI's 422 with the field's location;
- an unknown route is a 404 (a wrong method a 405) with the same JSON body as a KeelError;
- anything else is a 500 whose body says only that it was logged: a traceback never
  reaches a client or the log, and the log line is redacted.

Responses are rendered with orjson: NaN and infinities become null, NumPy scalars numbers.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from keel.errors import KeelError, NotFoundError, missing_extra, redact

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
    "keel.server.routes.retraining",   # /v1/retraining (policies, history, run, pause, resume)
    "keel.server.routes.deployments",  # /v1/deployments (set, promote, rollback, history, status, compare)
    "keel.server.routes.loop",         # /v1/lineage/..., /v1/models/{name}/versions/{version}/diagnose, /v1/owners, /v1/owners/gaps
    "keel.server.mlflow",            # /api/2.0/mlflow/..., /api/2.0/mlflow-artifacts/...
]
# Routers that answer errors in a protocol of their own: MLflow's error_code bodies (or keel's, from the auth layer).
OWN_ERRORS = {"keel.server.mlflow"}

log = logging.getLogger("keel.server")


def error_body(exc: KeelError) -> dict[str, Any]:
    """A KeelError as the API sends it: ``to_dict()``, with the gate or contract report when there is one."""
    body = exc.to_dict()
    report = getattr(exc, "report", None)
    if report is not None and hasattr(report, "to_dict"):
        body["report"] = report.to_dict()
    return body


class _Contain:
    """Answer an unexpected exception with a 500 that says only that it was logged, and log it redacted.

    It sits inside Starlette's error middleware, so the exception goes no further: no
    traceback (whose message might hold a secret) reaches the client or uvicorn's log.
    """

    def __init__(self, app: Any, response_class: Any) -> None:
        self.app = app
        self.response_class = response_class

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.error("%s %s failed: %s", scope.get("method"), scope.get("path"), redact(f"{type(exc).__name__}: {exc}"))
            if not started:  # once the response has begun, the server can only close the connection
                body = {"error": "InternalError", "message": "The server failed on this request; the error is in its log."}
                await self.response_class(body, status_code=500)(scope, receive, send)


def _allowed_methods(request: Any) -> list[str]:
    """Every method the OpenAPI document lists for this path (Starlette's 405 names only the first route's)."""
    import re

    paths = request.app.openapi()["paths"]
    if request.url.path in paths:  # a literal path (/v1/runs/search) is that path's, not also a template's (/v1/runs/{run})
        return sorted(m.upper() for m in paths[request.url.path])
    methods: set[str] = set()
    for template, ops in paths.items():
        pattern = "^" + re.sub(r"\\\{[^\\]*\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.url.path):
            methods |= {m.upper() for m in ops}
    return sorted(methods)


def _json_response_class() -> Any:
    import orjson
    from fastapi.responses import JSONResponse

    class KeelJSONResponse(JSONResponse):
        """JSON by orjson: NaN/inf as null, datetimes as ISO-8601, NumPy values as numbers."""

        def render(self, content: Any) -> bytes:
            return orjson.dumps(content, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    return KeelJSONResponse


def create_app(*, auth: bool | None = None) -> Any:
    """The platform API as a FastAPI app.

    ``auth``: require authentication (``keel server --auth``); None reads
    ``KEEL_SERVER_AUTH``-style settings through :mod:`keel.server.auth`.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise missing_extra("fastapi", "server") from exc

    from keel import __version__
    from keel.server import auth as auth_mod
    from keel.server.schemas import ERROR_RESPONSES, MLFLOW_ERROR_RESPONSES, Health
    from keel.server.ui import install as install_ui
    from keel.server.ui.render import keel_error_page as ui_error

    response_class = _json_response_class()
    app = FastAPI(
        title="keel", version=__version__, default_response_class=response_class,
        description="The keel platform API: tracking, registry, features, predictions, monitoring and pipelines.",
    )
    app.state.auth = auth_mod.auth_enabled(auth)

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> Any:
        html = ui_error(request, exc)  # a UI page's error is a page
        return html if html is not None else response_class(error_body(exc), status_code=exc.http_status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        headers = exc.headers
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"No route {request.method} {request.url.path}. The routes are listed at /docs and /openapi.json."
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            message = f"{request.method} is not allowed on {request.url.path} (only {', '.join(allowed)}). The routes are listed at /docs."
            headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        else:
            message = str(exc.detail)
        if exc.status_code == 404:
            page = ui_error(request, NotFoundError(message))
            if page is not None:
                return page
        name = {404: "NotFound", 405: "MethodNotAllowed", 401: "AuthenticationError", 403: "ForbiddenError"}.get(exc.status_code, "HTTPError")
        return response_class({"error": name, "message": message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        from fastapi.encoders import jsonable_encoder

        # FastAPI's body ({"detail": [{loc, msg, type}, ...]}), minus the echoed input, which may hold a secret
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")} for e in exc.errors()]
        return response_class({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_middleware(_Contain, response_class=response_class)

    @app.get("/health", tags=["health"], summary="Liveness and readiness probe", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # The MLflow protocol's router first: routes are matched in order, and its clients make
    # many small calls (a run is four); keel's own paths (/v1/...) never overlap its prefixes.
    for name in sorted(ROUTERS, key=lambda n: n not in OWN_ERRORS):
        module = importlib.import_module(name)
        for router in getattr(module, "ROUTERS", None) or [module.router]:  # a package's routers, not nested in one more
            app.include_router(router, responses=MLFLOW_ERROR_RESPONSES if name in OWN_ERRORS else ERROR_RESPONSES)
    auth_mod.install(app)
    install_ui(app)  # the web UI at / (its routes stay out of the OpenAPI document)
    return app
