"""The model server: one Starlette app serving several models on keel's, MLflow's and the OIP v2 protocols.

    app = create_app(["models:/churn@production"])      # uvicorn keel.serving.app:app_from_env --factory

Every route is a thin codec in front of :class:`~keel.serving.Predictor`, which
validates, fetches features, predicts and logs. Bad input of any kind (an empty
or invalid JSON body, a wrong content type, a body over ``max_body_bytes``, wrong
columns, an unknown model or version) is a 4xx with detail, never a 5xx; the
request id (``x-request-id``, the caller's own if it sent one) and the answering
version (``keel-model-version``) are in every prediction's headers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError, NotFoundError, ValidationError, did_you_mean, missing_extra
from keel.serving.predictor import new_request_id
from keel.serving.validation import BadRequest

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from keel.serving.predictor import Prediction, Predictor

log = logging.getLogger("keel.serving")
MAX_BODY_BYTES = 50 << 20
REQUEST_ID = "x-request-id"
VERSION_HEADER = "keel-model-version"
APP_ENV = "KEEL_SERVE_CONFIG"


class PayloadTooLarge(KeelError):
    http_status = 413


class UnsupportedMediaType(KeelError):
    http_status = 415


@dataclass
class ServeOptions:
    """How the server serves (the options of ``keel serve``)."""

    log: bool = True
    missing_features: str = "default"
    defaults: dict[str, Any] = field(default_factory=dict)
    max_body_bytes: int = MAX_BODY_BYTES
    reload: bool = True
    reload_interval: float = 1.0
    batch_max_rows: int = 0  # 0: micro-batching off
    batch_max_wait_ms: float = 2.0
    queue_max_rows: int = 10_000
    grpc_port: int | None = None  # the OIP v2 gRPC service beside HTTP
    grpc_host: str = "127.0.0.1"


class Server:
    """The served predictors, their metrics and the reload watcher, behind the routes."""

    def __init__(self, models: Sequence[str | Predictor], options: ServeOptions) -> None:
        from keel.serving.metrics import Metrics
        from keel.serving.predictor import Predictor

        if not models:
            raise ValidationError("No model to serve.", hint="keel serve models:/churn@production")
        self.options = options
        self.predictors: dict[str, Predictor] = {}
        for m in models:
            # a URI, or anything with the predictor's surface (a Predictor, a deployment's router)
            p = Predictor(m, log=options.log, missing_features=options.missing_features, defaults=options.defaults) if isinstance(m, str) else m
            if p.name in self.predictors:
                raise ValidationError(f"Model {p.name!r} is given twice ({self.predictors[p.name].uri} and {p.uri}).",
                                      hint="Serve one URI per registered model.")
            self.predictors[p.name] = p
        self.default = next(iter(self.predictors.values()))
        self.metrics = Metrics()
        self.batchers: dict[str, Any] = {}
        if options.batch_max_rows > 0:
            from keel.serving.batching import MicroBatcher

            for name, p in self.predictors.items():
                self.batchers[name] = MicroBatcher(p, max_rows=options.batch_max_rows, max_wait_ms=options.batch_max_wait_ms,
                                                   queue_max_rows=options.queue_max_rows, metrics=self.metrics)
        from keel.serving.reload import ReloadWatcher

        self.watcher = ReloadWatcher(list(self.predictors.values()), interval=options.reload_interval)
        self.ready = True
        self.started = time.time()

    def predictor(self, name: str, version: str | None = None) -> Predictor:
        p = self.predictors.get(name)
        if p is None:
            raise NotFoundError(f"No model named {name!r} is served here." + did_you_mean(name, self.predictors),
                                hint=f"Served: {', '.join(self.predictors)}.", model=name)
        if version is not None and version != str(p.version):
            raise NotFoundError(f"Model {name!r} version {version!r} is not served here; v{p.version} is.",
                                hint=f"Use /v2/models/{name}/infer, or /v2/models/{name}/versions/{p.version}/infer.", model=name, version=version)
        return p

    async def predict(self, p: Predictor, columns: Mapping[str, Any], n: int, *, request_id: str | None, row_ids: list[str] | None = None,
                      start: float) -> Prediction:
        batcher = self.batchers.get(p.name)
        if batcher is not None:
            return await batcher.submit(columns, n, request_id=request_id, row_ids=row_ids, start=start)
        return p.predict_columns(columns, n, request_id=request_id, row_ids=row_ids, start=start)

    def observe(self, model: str, version: Any, endpoint: str, status: int, start: float, rows: int = 0) -> None:
        m = self.metrics
        m.requests.labels(model, str(version), endpoint, str(status)).inc()
        m.latency.labels(model, endpoint).observe(time.perf_counter() - start)
        if rows:
            m.rows.labels(model).observe(rows)


# ---- request helpers ------------------------------------------------------------
async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"The request body of {int(declared)} bytes is over the limit of {limit} bytes.",
                                      hint="Split the rows over several requests, or use `keel score` for batches.")
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number.") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.",
                                  hint="Split the rows over several requests, or use `keel score` for batches.")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    import orjson

    if not body.strip():
        raise BadRequest("The request body is empty.", hint='Send a JSON object, e.g. {"records": [{...}]}.')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.", hint="Check the body with a JSON linter.") from None


def _media(request: Request, *, allow_missing: bool, allowed: tuple[str, ...] = ("application/json",)) -> str:
    header = request.headers.get("content-type")
    if header is None:
        if allow_missing:
            return allowed[0]
        raise UnsupportedMediaType("The request has no Content-Type.", hint=f"Send Content-Type: {allowed[0]}.")
    kind = header.split(";", 1)[0].strip().lower()
    if kind not in allowed:
        raise UnsupportedMediaType(f"Content-Type {header!r} is not accepted here.", hint=f"Send {' or '.join(allowed)}.")
    return kind


def _request_id(request: Request, body_id: str | None = None) -> str:
    rid = body_id or request.headers.get(REQUEST_ID) or new_request_id()
    if len(rid) > 200 or not (rid.isascii() and rid.isprintable()):
        raise BadRequest("The request id must be printable ASCII of at most 200 characters (it is echoed in the x-request-id header).")
    return rid


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    import orjson
    from starlette.responses import Response

    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, headers=headers, media_type="application/json")


def _headers(result: Prediction) -> dict[str, str]:
    return {REQUEST_ID: result.request_id, VERSION_HEADER: str(result.version), "keel-model": result.model}


def _error(exc: BaseException, style: str = "keel") -> Response:
    if isinstance(exc, KeelError):
        status = exc.http_status
        if style == "mlflow":
            from keel.serving.protocols.mlflow import error_body

            body: Any = error_body(exc)
            status = 400 if status in (422,) else status
        elif style == "oip":
            body = {"error": str(exc), **({"detail": exc.to_dict()["detail"]} if exc.detail else {})}
        else:
            body = exc.to_dict()
        retry = getattr(exc, "retry_after", None)
        return _json_response(body, status, headers={"retry-after": str(retry)} if retry is not None else None)
    log.exception("unexpected error while serving a request")
    return _json_response({"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}, 500)


# ---- the app ------------------------------------------------------------------
def create_app(models: Sequence[str | Predictor], options: ServeOptions | None = None, **kwargs: Any) -> Starlette:
    """The ASGI app serving ``models`` (URIs or Predictors); the first one answers /invocations."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError:  # pragma: no cover
        raise missing_extra("starlette", "serving") from None
    from keel import __version__
    from keel.serving.protocols import keel_v1, mlflow, oip

    opts = options or ServeOptions(**kwargs)
    server = Server(models, opts)

    async def v1_predict(request: Request) -> Response:
        start = time.perf_counter()
        name = request.path_params["name"]
        version: Any = "-"
        try:
            p = server.predictor(name)
            version = p.version
            _media(request, allow_missing=True)
            columns, n, rid, ids = keel_v1.decode(_json(await _body(request, opts.max_body_bytes)))
            result = await server.predict(p, columns, n, request_id=_request_id(request, rid), row_ids=ids, start=start)
        except Exception as exc:
            resp = _error(exc)
            server.observe(name, version, "v1", resp.status_code, start)
            return resp
        server.observe(name, result.version, "v1", 200, start, len(result))
        return _json_response(result.to_dict(), headers=_headers(result))

    async def invocations(request: Request) -> Response:
        start = time.perf_counter()
        p = server.default
        version: Any = p.version
        try:
            kind = mlflow.content_type_of(request.headers.get("content-type"))
            body = await _body(request, opts.max_body_bytes)
            if kind == "text/csv":
                columns, n = mlflow.decode_csv(body, [c.name for c in p.request_columns if c.type in ("string", "category")])
            else:
                columns, n = mlflow.decode_json(_json(body), [c.name for c in p.request_columns])
            result = await server.predict(p, columns, n, request_id=_request_id(request), start=start)
        except Exception as exc:
            resp = _error(exc, "mlflow")
            server.observe(p.name, version, "invocations", resp.status_code, start)
            return resp
        server.observe(p.name, result.version, "invocations", 200, start, len(result))
        return _json_response({"predictions": result.predictions}, headers=_headers(result))

    async def ping(request: Request) -> Response:
        return PlainTextResponse("\n", status_code=200 if server.ready else 503)

    async def version_route(request: Request) -> Response:
        return PlainTextResponse(__version__)

    async def v2_live(request: Request) -> Response:
        return _json_response({"live": True})

    async def v2_ready(request: Request) -> Response:
        return _json_response({"ready": server.ready}, 200 if server.ready else 503)

    async def v2_server(request: Request) -> Response:
        return _json_response({"name": "keel", "version": __version__, "extensions": ["binary_tensor_data"]})

    def _model_metadata(p: Predictor) -> dict[str, Any]:
        import numpy as np

        outputs = [{"name": "prediction", "datatype": oip.datatype_of(np.asarray(p.classes or [0.0])), "shape": [-1]}]
        if p._state.proba:
            outputs.append({"name": "score", "datatype": "FP64", "shape": [-1]})
            if p.classes and len(p.classes) > 2:
                outputs += [{"name": f"proba_{c}", "datatype": "FP64", "shape": [-1]} for c in p.classes]
        meta = {"name": p.name, "versions": [str(p.version)], "platform": f"keel-{p.model.flavor}", **oip.tensor_metadata(p.request_columns),
                "outputs": outputs}
        if p.feature_service:
            meta.setdefault("parameters", {})["feature_service"] = p.feature_service
        return meta

    async def v2_model(request: Request) -> Response:
        try:
            p = server.predictor(request.path_params["name"], request.path_params.get("version"))
        except Exception as exc:
            return _error(exc, "oip")
        return _json_response(_model_metadata(p))

    async def v2_model_ready(request: Request) -> Response:
        try:
            p = server.predictor(request.path_params["name"], request.path_params.get("version"))
        except Exception as exc:
            return _error(exc, "oip")
        return _json_response({"name": p.name, "ready": True})

    async def v2_infer(request: Request) -> Response:
        start = time.perf_counter()
        name = request.path_params["name"]
        version: Any = request.path_params.get("version", "-")
        try:
            p = server.predictor(name, request.path_params.get("version"))
            version = p.version
            header_length = request.headers.get(oip.HEADER)
            if header_length is None:
                _media(request, allow_missing=True)
            body = await _body(request, opts.max_body_bytes)
            head, tail = oip.split_binary(body, header_length)
            columns, n, rid, out_opts = oip.decode_infer(_json(head), tail, p.request_columns)
            known = [o["name"] for o in _model_metadata(p)["outputs"]]
            unknown = [o for o in out_opts["names"] if o not in known]
            if unknown:
                raise BadRequest(f"Unknown output(s) {', '.join(map(repr, unknown))} of {p.name}." + did_you_mean(unknown[0], known),
                                 hint=f"Outputs: {', '.join(known)}.")
            result = await server.predict(p, columns, n, request_id=_request_id(request, rid), start=start)
            payload, headers = oip.encode_infer(result, out_opts)
        except Exception as exc:
            resp = _error(exc, "oip")
            server.observe(name, version, "v2", resp.status_code, start)
            return resp
        server.observe(name, result.version, "v2", 200, start, len(result))
        media = headers.pop("content-type")
        return Response(payload, headers={**headers, **_headers(result)}, media_type=media)

    async def metrics(request: Request) -> Response:
        from keel.store.prediction_log import active_log

        server.metrics.observe_log(active_log())
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type.split(";")[0], headers={"content-type": content_type})

    async def openapi(request: Request) -> Response:
        from keel.serving.openapi import document

        return _json_response(document(server))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        grpc_server = None
        if opts.grpc_port:
            from keel.serving.grpc_oip import start_grpc

            grpc_server = start_grpc(server, opts.grpc_port, opts.grpc_host)
        if opts.reload:
            server.watcher.start()
        for b in server.batchers.values():
            b.start()
        try:
            yield
        finally:
            server.ready = False
            if grpc_server is not None:
                grpc_server.stop(grace=10).wait()
            server.watcher.stop()
            for b in server.batchers.values():
                await b.stop()
            from keel.store.prediction_log import active_log

            plog = active_log()
            if plog is not None:
                plog.flush_safely()

    routes = [
        Route("/v1/models/{name}/predict", v1_predict, methods=["POST"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", version_route, methods=["GET"]),
        Route("/v2/health/live", v2_live, methods=["GET"]),
        Route("/v2/health/ready", v2_ready, methods=["GET"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _json_response({"error": "NotFound", "message": f"No route {request.method} {request.url.path}.",
                               "detail": {"see": "/openapi.json"}}, 404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        allow = (getattr(exc, "headers", None) or {}).get("Allow") or _allowed(request.url.path)
        return _json_response({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on {request.url.path}.",
                               "detail": {"allow": allow}}, 405, headers={"allow": allow})

    def _allowed(path: str) -> str:
        from starlette.routing import Match

        scope = {"type": "http", "path": path, "method": "GET"}
        methods = {m for r in routes if r.matches(scope)[0] != Match.NONE for m in (getattr(r, "methods", None) or ())}
        return ", ".join(sorted(methods))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: method_not_allowed})
    app.state.server = server
    return app


def app_from_env() -> Starlette:
    """The app ``keel serve`` starts in each uvicorn worker (its configuration in ``KEEL_SERVE_CONFIG``)."""
    import json

    raw = os.environ.get(APP_ENV)
    if not raw:
        raise ValidationError(f"{APP_ENV} is not set.", hint="Start the server with `keel serve MODEL_URI`.")
    cfg = json.loads(raw)
    return create_app(cfg["models"], ServeOptions(**cfg.get("options", {})))
