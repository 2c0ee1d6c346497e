"""Routes of the platform API: monitors and their results, alerts (``keel monitor ...``, ``keel alerts ...``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from keel.server.auth import Identity, authorize, identity
from keel.server.routes.common import Name, ObjectId
from keel.server.schemas import (
    AlertChange,
    AlertOut,
    MonitorDetail,
    MonitorOut,
    MonitorResultOut,
    MonitorRunIn,
)

router = APIRouter(tags=["monitoring"])
IDENT = Depends(identity)


@router.get("/v1/monitors", response_model=list[MonitorOut], summary="Monitors (keel.yaml and code) with their last run (keel monitor ls)")
def list_monitors(ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.monitoring.results import overview

    authorize(ident, "read")
    return overview()


@router.get("/v1/monitors/{name}", response_model=MonitorDetail, summary="A monitor's declaration and recent runs (keel monitor show)")
def get_monitor(name: Name, limit: int = Query(10, ge=1, le=10_000), ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.monitors import get_monitor as find
    from keel.monitoring.results import runs

    spec = find(name)
    authorize(ident, "read", model=spec.model)
    return {"monitor": spec.to_dict(), "runs": runs(name, limit=limit)}


@router.post("/v1/monitors/{name}/run", response_model=MonitorResultOut,
             summary="Run a monitor over the window ending now (or at `end`): stores the result, raises alerts (keel monitor run)")
def run_monitor(name: Name, body: MonitorRunIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.monitors import get_monitor as find
    from keel.monitoring.monitors import run_monitor as run

    authorize(ident, "write", model=find(name).model)
    return run(name, end=body.end).to_dict()


@router.get("/v1/monitors/{name}/results", response_model=list[dict[str, Any]], summary="A monitor's stored runs, newest window first")
def results(name: Name, limit: int = Query(50, ge=1, le=10_000), ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.monitoring.monitors import get_monitor as find
    from keel.monitoring.results import runs

    authorize(ident, "read", model=find(name).model)
    return runs(name, limit=limit)


@router.get("/v1/monitors/{name}/results/latest", response_model=dict[str, Any],
            summary="The full result of a monitor's latest run: drift per column, performance, service, alerts")
def latest(name: Name, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.monitors import get_monitor as find
    from keel.monitoring.results import last_summary

    authorize(ident, "read", model=find(name).model)
    return last_summary(name)


@router.get("/v1/alerts", response_model=list[AlertOut], summary="Alerts, newest first, with their delivery state (keel alerts ls)")
def list_alerts(status: Literal["open", "acked", "resolved"] | None = None, monitor: str | None = None,
                ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.monitoring.alerts import list_alerts as found
    from keel.monitoring.alerts import without_image

    authorize(ident, "read")
    return [without_image(a) for a in found(status=status, monitor=monitor)]


@router.get("/v1/alerts/{alert_id}", response_model=AlertOut, summary="One alert with its full context (the distribution image included)")
def get_alert(alert_id: ObjectId, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.alerts import get_alert as find

    alert = find(alert_id)
    authorize(ident, "read", model=alert["model"])
    return alert


@router.post("/v1/alerts/{alert_id}/ack", response_model=AlertChange, summary="Acknowledge an alert: it stays open, sends no more notifications (keel alerts ack)")
def ack(alert_id: ObjectId, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.alerts import ack_alert, get_alert

    authorize(ident, "write", model=get_alert(alert_id)["model"])
    return ack_alert(alert_id)


@router.post("/v1/alerts/{alert_id}/resolve", response_model=AlertChange, summary="Resolve an alert: the next occurrence opens a new one (keel alerts resolve)")
def resolve(alert_id: ObjectId, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.monitoring.alerts import get_alert, resolve_alert

    authorize(ident, "write", model=get_alert(alert_id)["model"])
    return resolve_alert(alert_id)
