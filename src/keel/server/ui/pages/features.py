"""UI pages: the feature store — ``/features`` and ``/features/{view}``.

- ``/features``: the applied feature views, on-demand views, entities, sources and feature
  services, with their current version, owners, freshness and users (``keel features ls``).
- ``/features/{view}``: the view's definition (entities, source, TTL, schema or
  aggregations), its versions with their hashes and who applied them when, the freshness of
  the online store (the last materialization: its window, rows read and keys written), the
  services and model versions that use it (``feature_consumers``), and the contract results
  of the view and its source over time, as a chart and a table (:mod:`keel.contracts.history`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from keel.errors import NotFoundError
from keel.server.auth import Identity, authorize
from keel.server.ui.pages.timing import STARTED, timed_page
from keel.server.ui.render import ui_identity
from keel.server.ui.svg import line_chart

router = APIRouter(dependencies=[STARTED])
IDENT = Depends(ui_identity)
VALIDATIONS = 50  # contract validations shown per target
KIND_ORDER = ("feature_view", "on_demand_feature_view", "feature_service", "entity", "source")
KIND_TITLES = {"feature_view": "Feature views", "on_demand_feature_view": "On-demand feature views", "feature_service": "Feature services",
               "entity": "Entities", "source": "Sources"}


@router.get("/features", response_class=HTMLResponse)
def features_page(request: Request, ident: Identity = IDENT) -> HTMLResponse:
    from keel.features.registry import listing

    authorize(ident, "read")
    rows = listing()
    groups = [(KIND_TITLES[k], k, [r for r in rows if r["kind"] == k]) for k in KIND_ORDER]
    return timed_page(request, ident, "features/list.html", section="features", title="Features", groups=groups, total=len(rows))


def _model_ref(consumer_id: str) -> tuple[str, int] | None:
    """('churn', 3) from a model consumer id 'churn@v3'."""
    name, sep, version = consumer_id.rpartition("@v")
    return (name, int(version)) if sep and version.isdigit() else None


def _when(ms: Any) -> str:
    return datetime.fromtimestamp(float(ms) / 1000, tz=UTC).strftime("%m-%d %H:%M:%S")


def _contracts(target: str) -> dict[str, Any] | None:
    """The last validations of ``target`` (oldest first for the chart), and each check's story; None when never validated."""
    from keel.contracts.history import history

    try:
        validations, checks = history(target, limit=VALIDATIONS)
    except NotFoundError:
        return None
    xs = [v["created"].timestamp() * 1000 for v in reversed(validations)]
    chart = line_chart({"errors": (xs, [v["errors"] for v in reversed(validations)]),
                        "warnings": (xs, [v["warnings"] for v in reversed(validations)])},
                       title=f"Contract results of {target} over time", x_label="validated at (UTC)", y_label="failed checks",
                       x_format=_when, width=720, height=220)
    return {"target": target, "validations": validations, "checks": checks, "chart": chart}


@router.get("/features/{view}", response_class=HTMLResponse)
def view_page(request: Request, view: str, ident: Identity = IDENT) -> HTMLResponse:
    from keel.features.materialization import watermarks
    from keel.features.registry import applied_objects, consumer_rows, describe_object

    authorize(ident, "read")
    obj = describe_object(view, kind=None)
    if obj["kind"] not in ("feature_view", "on_demand_feature_view"):
        obj = describe_object(view, kind="feature_view")  # a source or service of the same name: the view, else NotFound
    spec = obj["spec"]
    objects = applied_objects()
    services = sorted(n for (k, n), o in objects.items() if k == "feature_service"
                      and any(str(f.get("view")) == view for f in o["spec"].get("features") or []))
    consumers = consumer_rows(services)
    models = []
    for c in consumers:
        ref = _model_ref(str(c["consumer_id"])) if c["consumer_kind"] == "model" else None
        models.append({**c, "model": ref[0] if ref else None, "version": ref[1] if ref else None})
    mark = watermarks().get(view)
    source = spec.get("source")
    source_spec = (objects.get(("source", str(source))) or {}).get("spec") if source else None
    contract_targets = [t for t in dict.fromkeys([view, *(s["view"] for s in spec.get("sources") or [] if isinstance(s, dict)),
                                                  *([source] if source else [])]) if t]
    results = [r for r in (_contracts(str(t)) for t in contract_targets) if r is not None]
    from keel.store.owners import owners_of

    return timed_page(request, ident, "features/view.html", section="features", title=view, obj=obj, spec=spec, services=services,
                owners=owners_of("feature_view", view) or [o.strip() for o in str(spec.get("owner") or "").split(",") if o.strip()],
                consumers=models, mark=mark, source=source, source_spec=source_spec, contracts=results,
                contract_targets=contract_targets, spec_json=json.dumps(spec, indent=2, sort_keys=True, default=str))
