"""The MLflow wire protocol around keel's library: errors in MLflow's shape, bodies, JSON out.

MLflow clients read an error as ``{"error_code": "RESOURCE_DOES_NOT_EXIST",
"message": ...}`` with the HTTP status MLflow's server uses for that code, and
raise the exception they expect from it (``RestException``). Every keel error
raised inside an MLflow route is translated by :class:`MlflowRoute`; a body
that is not JSON, or a field of the wrong type, is ``INVALID_PARAMETER_VALUE``
(400), never a 500.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from keel.errors import (
    AuthenticationError,
    ConflictError,
    DependencyError,
    ForbiddenError,
    IntegrityError,
    KeelError,
    NotFoundError,
    StoreError,
    ValidationError,
    WriteConflict,
)

# (error_code, http status) as MLflow's server answers them
_CODES: list[tuple[type[KeelError], str, int]] = [
    (AuthenticationError, "UNAUTHENTICATED", 401),
    (ForbiddenError, "PERMISSION_DENIED", 403),
    (NotFoundError, "RESOURCE_DOES_NOT_EXIST", 404),
    (WriteConflict, "ABORTED", 409),
    (ConflictError, "RESOURCE_ALREADY_EXISTS", 400),
    (IntegrityError, "DATA_LOSS", 500),
    (StoreError, "TEMPORARILY_UNAVAILABLE", 503),
    (DependencyError, "NOT_IMPLEMENTED", 501),
    (KeelError, "INVALID_PARAMETER_VALUE", 400),
]


class MlflowError(KeelError):
    """An error with an explicit MLflow error code (e.g. RESOURCE_ALREADY_EXISTS)."""

    def __init__(self, message: str, *, code: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.http_status = status


def already_exists(message: str, hint: str | None = None) -> MlflowError:
    return MlflowError(message, code="RESOURCE_ALREADY_EXISTS", status=400, hint=hint)


def error_body(exc: KeelError) -> tuple[dict[str, Any], int]:
    if isinstance(exc, MlflowError):
        return {"error_code": exc.code, "message": str(exc)}, exc.http_status
    for cls, code, status in _CODES:
        if isinstance(exc, cls):
            return {"error_code": code, "message": str(exc)}, status
    raise AssertionError("unreachable")  # KeelError is the last entry


class MlflowRoute(APIRoute):
    """An APIRoute whose errors (keel's and FastAPI's validation) come back in MLflow's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except KeelError as exc:
                body, status = error_body(exc)
                return json_response(body, status)
            except RequestValidationError as exc:
                return json_response({"error_code": "INVALID_PARAMETER_VALUE", "message": _describe(exc)}, 400)
            except sa.exc.DataError as exc:  # a value the column cannot hold (too long, out of range): bad input
                detail = str(getattr(exc, "orig", exc)).splitlines()[0]
                return json_response({"error_code": "INVALID_PARAMETER_VALUE", "message": f"A value does not fit: {detail}"}, 400)

        return route


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{loc or 'request'}: {err.get('msg')}")
    return "Invalid request: " + "; ".join(parts)


def _default(obj: Any) -> Any:
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# A response this large goes gzipped to a client that accepts it (the MLflow client's
# requests session does): a metric history of 100k points is 8.5 MB of JSON and 1.6 MB
# gzipped at level 1, compressed in ~30 ms, where the raw bytes cost the client many more reads.
GZIP_MIN_BYTES = 64 * 1024


def json_response(body: Any, status: int = 200, request: Request | None = None) -> Response:
    """``body`` as JSON; gzipped when it is large and ``request`` accepts gzip."""
    data = orjson.dumps(body, default=_default)
    if request is not None and len(data) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        import gzip

        return Response(gzip.compress(data, compresslevel=1, mtime=0), status_code=status, media_type="application/json",
                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(data, status_code=status, media_type="application/json")


def number(v: float | None) -> float | str:
    """A double as proto3 JSON writes it: NaN and infinities as strings."""
    if v is None:
        return "NaN"
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


async def body(request: Request) -> dict[str, Any]:
    """The JSON body of a POST/PATCH/DELETE, or the query of a GET (MLflow sends GET fields as a query)."""
    if request.method == "GET":
        out: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key in out:
                prev = out[key]
                out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[key] = value
        return out
    raw = await request.body()
    if not raw.strip():
        data: Any = dict(request.query_params)
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValidationError("The request body is not valid JSON.", hint="Send a JSON object, as the MLflow client does.") from None
    if not isinstance(data, dict):
        raise ValidationError(f"The request body must be a JSON object, got {type(data).__name__}.", hint="Send a JSON object.")
    if request.method == "DELETE" and request.query_params:
        data = {**dict(request.query_params), **data}
    return data


def text(data: dict[str, Any], key: str, *, required: bool = False, default: str | None = None) -> str | None:
    v = data.get(key)
    if v is None or v == "":
        if required:
            raise ValidationError(f"Missing value for required parameter '{key}'.", hint=f"Pass '{key}'.")
        return default
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ValidationError(f"Parameter '{key}' must be a string, got {v!r}.", hint=f"Pass '{key}' as a string.")
    return str(v)


def integer(data: dict[str, Any], key: str, *, default: int | None = None) -> int | None:
    v = data.get(key)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise ValidationError(f"Parameter '{key}' must be an integer, got {v!r}.")
    try:
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError
            return int(v)
        return int(v)
    except (TypeError, ValueError):
        raise ValidationError(f"Parameter '{key}' must be an integer, got {v!r}.", hint=f"Pass '{key}' as a whole number.") from None


def items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A repeated message field: a list of objects."""
    v = data.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise ValidationError(f"Parameter '{key}' must be a list of objects.", hint=f"Pass '{key}' as [{{...}}, ...].")
    return v


def strings(data: dict[str, Any], key: str) -> list[str]:
    v = data.get(key)
    if v is None:
        return []
    if isinstance(v, str | int):
        return [str(v)]
    if not isinstance(v, list) or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in v):
        raise ValidationError(f"Parameter '{key}' must be a list of strings.", hint=f"Pass '{key}' as [\"...\"].")
    return [str(x) for x in v]


def key_values(data: dict[str, Any], key: str) -> dict[str, str]:
    """A repeated {key, value} field as a dict (the last of repeated keys wins, as MLflow's stores do)."""
    out: dict[str, str] = {}
    for item in items(data, key):
        k = item.get("key")
        if not isinstance(k, str) or not k:
            raise ValidationError(f"Every entry of '{key}' needs a non-empty 'key', got {item!r}.")
        v = item.get("value", "")
        out[k] = v if isinstance(v, str) else orjson.dumps(v).decode()
    return out


def check_experiment_id(value: str | None) -> int:
    if value is None or not str(value).lstrip("-").isdigit():
        raise ValidationError(f"Experiment id {value!r} is not a number.", hint="Pass the experiment_id MLflow returned.")
    return int(value)
