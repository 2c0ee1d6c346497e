"""``keel serve --deployment NAME``: the model server in front of a deployment's router.

The server's routes (keel /v1, MLflow /invocations, OIP v2) call a predictor's
``predict_columns``; :class:`RoutedPredictor` gives them the deployment's
:class:`~keel.deployments.routing.Router` behind that same surface, so every
protocol, micro-batching, metrics and the prediction log work unchanged. The
model is served under the champion's registered name; each response carries the
``keel-route`` header (which route answered). ``--sticky-by header:NAME`` reads the
header through :func:`sticky_middleware`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from keel.deployments.routing import Router

ROUTE_HEADER = "keel-route"
DEPLOYMENT_ENV = "KEEL_SERVE_DEPLOYMENT"  # the deployment `keel serve --deployment --workers N` serves in each worker
_sticky: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_sticky_header", default=None)
_answered: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_route_answered", default=None)


class RoutedPredictor:
    """A deployment behind the predictor surface the model server uses."""

    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def _champion(self) -> Any:
        return self.router.routes[self.router.spec.champion.name]

    def __getattr__(self, name: str) -> Any:  # signature, classes, model, uri ... are the champion's
        return getattr(self._champion, name)

    @property
    def name(self) -> str:
        return str(self._champion.name)

    @property
    def version(self) -> int:
        return int(self._champion.version)

    def reload(self) -> bool:
        return self.router.refresh(force=True)

    def predict_columns(self, columns: Mapping[str, Any], n: int, *, request_id: str | None = None, row_ids: list[str] | None = None,
                        batch_id: str | None = None, start: float | None = None, state: Any = None) -> Any:
        answer = self.router.predict_columns(columns, n, request_id=request_id, row_ids=row_ids, sticky_key=_sticky.get(), start=start,
                                             batch_id=batch_id)
        _answered.set(answer.route)
        return answer.prediction

    def predict(self, data: Any, *, request_id: str | None = None, row_ids: list[str] | None = None) -> Any:
        from keel.serving.validation import columns_of

        columns, n = columns_of(data)
        return self.predict_columns(columns, n, request_id=request_id, row_ids=row_ids)


def sticky_middleware(app: Any, header: str | None) -> Any:
    """Pure ASGI middleware: the sticky header in, the answering route out (as ``keel-route``)."""
    wanted = None if header is None else header.lower().encode()

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        value = None
        if wanted is not None:
            for k, v in scope.get("headers") or []:
                if k == wanted:
                    value = v.decode("latin-1")
                    break
        t1 = _sticky.set(value)
        t2 = _answered.set(None)

        async def send_with_route(message: Any) -> None:
            if message["type"] == "http.response.start":
                route = _answered.get()
                if route is not None:
                    message = {**message, "headers": [*message.get("headers", []), (ROUTE_HEADER.encode(), route.encode())]}
            await send(message)

        try:
            await app(scope, receive, send_with_route)
        finally:
            _sticky.reset(t1)
            _answered.reset(t2)

    return middleware


def create_deployment_app(name: str, options: Any = None, **kwargs: Any) -> Any:
    """The model server's ASGI app for deployment ``name`` (``ServeOptions`` as for ``keel serve``)."""
    from keel.serving.app import ServeOptions, create_app

    opts = options or ServeOptions(**kwargs)
    router = Router(name, log_predictions=opts.log, missing_features=opts.missing_features, defaults=opts.defaults)
    app = create_app([RoutedPredictor(router)], opts)  # type: ignore[list-item]
    spec = router.spec
    header = spec.sticky_by[len("header:"):] if spec.sticky_by and spec.sticky_by.startswith("header:") else None
    wrapped = sticky_middleware(app, header)
    wrapped.state = app.state
    wrapped.router = router
    return wrapped


def app_from_env() -> Any:
    """The app each uvicorn worker of ``keel serve --deployment NAME --workers N`` starts."""
    import json
    import os

    from keel.errors import ValidationError
    from keel.serving.app import APP_ENV, ServeOptions

    name = os.environ.get(DEPLOYMENT_ENV)
    if not name:
        raise ValidationError(f"{DEPLOYMENT_ENV} is not set.", hint="Start the server with `keel serve --deployment NAME`.")
    cfg = json.loads(os.environ.get(APP_ENV) or "{}")
    return create_deployment_app(name, ServeOptions(**cfg.get("options", {})))
