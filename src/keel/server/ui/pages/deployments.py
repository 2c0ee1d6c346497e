"""UI pages: deployments and serving.

- ``/deployments``: every deployment with its mode (single, shadow, canary, A/B), routes,
  weights and the model versions they resolve to.
- ``/deployments/{name}``: the routes and weights; traffic, latency p50/p99 and error
  charts per route over the chosen window (one DuckDB aggregate over the prediction log,
  :func:`keel.deployments.traffic.traffic`); the champion vs challenger comparison
  (:func:`keel.deployments.compare.compare`: agreement, score differences, quality with
  its interval, the recommendation); the latest requests of the window (each linking to
  the prediction's lineage); the change history with who and why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from keel.errors import KeelError
from keel.server.auth import Identity, authorize
from keel.server.ui.pages._clock import CLOCK, spent
from keel.server.ui.render import page, ui_identity
from keel.server.ui.svg import line_chart

router = APIRouter()
IDENT = Depends(ui_identity)
WINDOWS = {"1h": 60, "6h": 72, "24h": 48, "7d": 84, "30d": 60}  # window -> buckets
HISTORY_SHOWN = 50
LATEST_SHOWN = 10
# A live view by default: compare() reads the window's rows (about 1 s per million on this machine), traffic() aggregates them.
DEFAULT_WINDOW = "1h"


def clock(t: float) -> str:
    """An x tick of a time axis in epoch seconds: 'MM-DD HH:MM' UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


def _resolved(route: Any) -> int | None:
    from keel.registry.versions import resolve_version

    try:
        return int(resolve_version(route.model, int(route.ref) if route.ref.isdigit() else route.ref).version)
    except KeelError:
        return None


def _routes(dep: Any) -> list[dict[str, Any]]:
    return [{"name": r.name, "model": r.model, "ref": r.ref, "label": r.label(), "weight": r.weight, "shadow": r.shadow,
             "version": _resolved(r)} for r in dep.spec.routes]


@router.get("/deployments", response_class=HTMLResponse)
def deployments_page(request: Request, _t: None = CLOCK, *, ident: Identity = IDENT) -> HTMLResponse:
    from keel.deployments.specs import list_deployments

    authorize(ident, "read")
    rows = [{"dep": d, "routes": _routes(d)} for d in list_deployments()]
    spent(request)
    return page(request, ident, "deployments/list.html", section="deployments", title="Deployments", rows=rows)


def _charts(t: dict[str, Any]) -> dict[str, Any]:
    requests: dict[str, tuple[list[float], list[float]]] = {}
    latency: dict[str, tuple[list[float], list[float]]] = {}
    errors: dict[str, tuple[list[float], list[float]]] = {}
    per_min = 60.0 / t["bucket_s"]
    for route, points in t["routes"].items():
        if not points:
            continue
        xs = [p["t"] for p in points]
        requests[route] = (xs, [p["requests"] * per_min for p in points])
        errors[route] = (xs, [p["errors"] / p["requests"] * 100 for p in points])
        for q in ("p50", "p99"):
            lat = [(p["t"], p[f"{q}_ms"]) for p in points if p[f"{q}_ms"] is not None]
            if lat:
                latency[f"{route} {q}"] = ([a for a, _ in lat], [b for _, b in lat])
    return {
        "traffic": line_chart(requests, title="Requests per minute, per route", x_label="time (UTC)", y_label="requests / min", x_format=clock),
        "latency": line_chart(latency, title="Latency p50 and p99, per route", x_label="time (UTC)", y_label="ms", x_format=clock),
        "errors": line_chart(errors, title="Error rate, per route", x_label="time (UTC)", y_label="% of requests", x_format=clock),
    }


def _latest(dep: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The window's last requests through ``dep``'s routes, newest first: one DuckDB top-N per model over the window's files."""
    import duckdb

    from keel.store import predictions as P
    from keel.store.lake import sql_string

    out: list[dict[str, Any]] = []
    for model in sorted({r.model for r in dep.spec.routes}):
        routes = sorted({r.name for r in dep.spec.routes if r.model == model})
        paths = P.files(model, start=start, end=end)
        if not paths:
            continue
        scan = f"read_parquet([{', '.join(sql_string(p) for p in paths)}], union_by_name = true)"
        marks = ", ".join("?" for _ in routes)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            rows = con.execute(f"SELECT request_id, ts, route, version, coalesce(status, 'ok'), latency_ms FROM {scan} "
                               f"WHERE ts >= ? AND ts < ? AND route IN ({marks}) ORDER BY ts DESC LIMIT {LATEST_SHOWN}",
                               [start, end, *routes]).fetchall()
        finally:
            con.close()
        out += [{"request_id": r[0], "ts": r[1], "route": r[2], "model": model, "version": r[3], "status": r[4], "latency_ms": r[5]}
                for r in rows]
    return sorted(out, key=lambda r: r["ts"], reverse=True)[:LATEST_SHOWN]


@router.get("/deployments/{name}", response_class=HTMLResponse)
def deployment_page(request: Request, _t: None = CLOCK, *, name: str, window: str = Query(DEFAULT_WINDOW, max_length=8),
                    ident: Identity = IDENT) -> HTMLResponse:
    from keel.deployments.compare import compare
    from keel.deployments.specs import get_deployment, history
    from keel.deployments.traffic import traffic
    from keel.errors import ValidationError

    dep = get_deployment(name)
    for r in dep.spec.routes:
        authorize(ident, "read", model=r.model)
    if window not in WINDOWS:
        raise ValidationError(f"window={window!r} is not one of {', '.join(WINDOWS)}.", hint="Pick one in the window list.")
    t = traffic(name, since=window, buckets=WINDOWS[window])
    comparison = compare(name, since=window)
    events = list(reversed(history(name)))[:HISTORY_SHOWN]
    routes, charts = _routes(dep), _charts(t)
    total = sum(p["requests"] for pts in t["routes"].values() for p in pts)
    latest = _latest(dep, t["start"], t["end"])
    spent(request)
    return page(request, ident, "deployments/deployment.html", section="deployments", title=f"Deployment {name}", dep=dep,
                routes=routes, window=window, windows=list(WINDOWS), charts=charts, cmp=comparison, events=events,
                total_requests=total, latest=latest)

