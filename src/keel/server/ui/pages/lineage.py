"""UI pages: lineage and diagnosis.

- ``/lineage``: a form (a prediction's request id, a model version, a feature view or source).
- ``/lineage/predictions/{request_id}``, ``/lineage/models/{name}/{version}`` (a version
  number or an alias), ``/lineage/features/{view}``: the :mod:`keel.loop.lineage` tree
  drawn as a graph (each box links to its page: run, model version, feature view,
  deployment, monitor) and the same tree as an expandable list. An unknown id is a 404
  page with the hint of the library's error.
- ``/diagnose/{name}/{version}`` (or an alias: ``/diagnose/churn/production``): the page
  form of ``keel models diagnose`` (:func:`keel.loop.diagnose.diagnose`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from keel.server.auth import Identity, authorize
from keel.server.ui.pages._clock import CLOCK, spent
from keel.server.ui.render import page, redirect, ui_identity
from keel.server.ui.svg import GraphNode, bar_chart, dag, line_chart

router = APIRouter()
IDENT = Depends(ui_identity)
KIND_LABEL = {"model_version": "model version", "feature_view": "feature view", "feature_service": "feature service"}
MAX_GRAPH_NODES = 120  # a wider tree is drawn cut, and listed whole


def _q(s: Any) -> str:
    return quote(str(s), safe="")


def node_href(kind: str, label: str) -> str | None:
    """The page of a lineage node, from its kind and label (the labels :mod:`keel.loop.lineage` writes)."""
    head, _, rest = label.partition(" ")
    if kind == "model_version" and " v" in label:
        name, _, version = label.rpartition(" v")
        return f"/models/{_q(name)}/{version}" if version.isdigit() else None
    if kind == "run" and head == "run" and rest and rest != "None":
        return f"/runs/{_q(rest.split()[0])}"
    if kind == "deployment" and head == "deployment" and rest:
        return f"/deployments/{_q(rest.split()[0])}"
    if kind == "monitor" and head == "monitor" and rest:
        return f"/monitoring/{_q(rest.split()[0])}"
    if kind == "prediction" and head == "prediction" and rest:
        return f"/lineage/predictions/{_q(rest)}"
    if kind == "feature_view":
        return f"/features/{_q(label.split(' v')[0])}"
    if kind == "source":
        return f"/lineage/features/{_q(label.split(' v')[0])}"
    return None


def _logged_row(r: dict[str, Any]) -> str:
    """One logged prediction as it reads: 'churn v1 via champion at 2026-12-04 18:42:04 UTC → 1'."""
    ts = str(r.get("ts") or "").replace("T", " ")[:19]
    out = f"{r.get('model')} v{r.get('version')} via {r.get('route') or 'default'}" + (f" at {ts} UTC" if ts else "")
    return out + (f" → {r['prediction']}" if r.get("prediction") is not None else "")


def _detail_text(d: dict[str, Any]) -> str:
    bits = []
    for key in ("aliases", "environments", "route", "mode", "experiment", "rows", "status", "trained_by"):
        v = d.get(key)
        if v in (None, [], {}, ""):
            continue
        if key == "rows" and isinstance(v, list) and all(isinstance(r, dict) for r in v):  # a prediction's logged rows, not a dict dump
            bits.append("; ".join(_logged_row(r) for r in v))
        else:
            bits.append(f"{key} {','.join(map(str, v)) if isinstance(v, list) else v}")
    return " · ".join(bits)


def graph(tree: dict[str, Any], title: str) -> Any:
    """The tree (``Node.to_dict()``) as an SVG DAG: one box per node, linked to its page."""
    nodes: list[GraphNode] = []
    edges: list[tuple[str, str]] = []

    def visit(n: dict[str, Any], parent: str | None) -> None:
        if len(nodes) >= MAX_GRAPH_NODES:
            return
        nid = f"n{len(nodes)}"
        nodes.append(GraphNode(nid, n["label"], detail=KIND_LABEL.get(n["kind"], n["kind"]), href=node_href(n["kind"], n["label"])))
        if parent is not None:
            edges.append((parent, nid))
        for c in n.get("children") or []:
            visit(c, nid)

    visit(tree, None)
    return dag(nodes, edges, title=title, box_w=210)


def _tree_page(request: Request, ident: Identity, tree: dict[str, Any], title: str, what: str) -> HTMLResponse:
    svg = graph(tree, title)
    spent(request)
    return page(request, ident, "lineage/tree.html", section="lineage", title=title, tree=tree, what=what, svg=svg,
                href=node_href, kinds=KIND_LABEL, detail_text=_detail_text, count=_count(tree))


def _count(tree: dict[str, Any]) -> int:
    return 1 + sum(_count(c) for c in tree.get("children") or [])


def _ref(name: str, version: str) -> str:
    return f"{name}/{version}" if version.isdigit() else f"{name}@{version}"


@router.get("/lineage", response_class=HTMLResponse)
def lineage_form(request: Request, _t: None = CLOCK, *, request_id: str = Query("", max_length=512), model: str = Query("", max_length=512),
                 view: str = Query("", max_length=255), ident: Identity = IDENT) -> Response:
    from keel.loop.lineage import _split_ref

    authorize(ident, "read")
    if request_id.strip():
        return redirect(f"/lineage/predictions/{_q(request_id.strip())}")
    if model.strip():
        name, version = _split_ref(model.strip())
        return redirect(f"/lineage/models/{_q(name)}/{_q(version)}")
    if view.strip():
        return redirect(f"/lineage/features/{_q(view.strip())}")
    spent(request)
    return page(request, ident, "lineage/form.html", section="lineage", title="Lineage")


@router.get("/lineage/predictions/{request_id}", response_class=HTMLResponse)
def prediction_page(request: Request, _t: None = CLOCK, *, request_id: str, ident: Identity = IDENT) -> HTMLResponse:
    from keel.loop.lineage import prediction_lineage

    authorize(ident, "read")
    tree = prediction_lineage(request_id).to_dict()
    for row in tree["detail"].get("rows") or []:
        authorize(ident, "read", model=row["model"])
    return _tree_page(request, ident, tree, f"Lineage of prediction {request_id}", "prediction")


@router.get("/lineage/models/{name}/{version}", response_class=HTMLResponse)
def model_page(request: Request, _t: None = CLOCK, *, name: str, version: str, ident: Identity = IDENT) -> HTMLResponse:
    from keel.loop.lineage import model_lineage

    authorize(ident, "read", model=name)
    tree = model_lineage(name, version).to_dict()
    return _tree_page(request, ident, tree, f"Lineage of {tree['label']}", "model")


@router.get("/lineage/features/{view}", response_class=HTMLResponse)
def feature_page(request: Request, _t: None = CLOCK, *, view: str, ident: Identity = IDENT) -> HTMLResponse:
    from keel.loop.lineage import feature_usage

    authorize(ident, "read")
    tree = feature_usage(view).to_dict()
    return _tree_page(request, ident, tree, f"Who uses {view}", "feature")


def _diagnose_charts(d: dict[str, Any]) -> dict[str, Any]:
    charts: dict[str, Any] = {}
    log = d["prediction_log"]
    if isinstance(log, dict) and log.get("days"):
        charts["volume"] = bar_chart([x["day"][5:] for x in log["days"]], {"predictions": [x["rows"] for x in log["days"]]},
                                     title="Predictions per day", y_label="predictions", width=720, height=200)
    perf = d["performance"]
    if isinstance(perf, list) and perf:
        by_metric: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        several = len({p["monitor"] for p in perf}) > 1
        for p in perf:
            if p["value"] is None or p["metric"] == "label_coverage":
                continue
            label = ("realized" if p["kind"] == "performance" else "estimated") + (f" ({p['monitor']})" if several else "")
            xs, ys = by_metric.setdefault(p["metric"], {}).setdefault(label, ([], []))
            xs.append(datetime.fromisoformat(p["window_end"]).timestamp())
            ys.append(p["value"])
        charts["performance"] = [line_chart(lines, title=f"{metric} over time", x_label="window end (UTC)", y_label=metric,
                                            x_format=lambda t: datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M"))
                                 for metric, lines in list(by_metric.items())[:4]]
    drift = d["drift"]
    if isinstance(drift, list) and drift:
        charts["drift"] = bar_chart([x["column"] for x in drift], {"statistic / threshold": [x["value"] / x["threshold"] if x["threshold"] else 0.0 for x in drift]},
                                    title="Most drifted features, latest run (1 = the threshold)", y_label="statistic / threshold", width=720, height=200)
    return charts


@router.get("/diagnose/{name}/{version}", response_class=HTMLResponse)
def diagnose_page(request: Request, _t: None = CLOCK, *, name: str, version: str, days: int = Query(30, ge=1, le=3650), ident: Identity = IDENT) -> HTMLResponse:
    from keel.loop.diagnose import diagnose

    authorize(ident, "read", model=name)
    d = diagnose(_ref(name, version), days=days)
    lineage = d["lineage"]
    svg = graph(lineage, f"Lineage of {d['model']} v{d['version']}") if isinstance(lineage, dict) and "kind" in lineage else None
    charts = _diagnose_charts(d)
    spent(request)
    return page(request, ident, "lineage/diagnose.html", section="lineage", title=f"Diagnose {d['model']} v{d['version']}", d=d,
                charts=charts, lineage_svg=svg, days=days)
