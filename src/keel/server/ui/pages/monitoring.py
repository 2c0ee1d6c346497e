"""UI pages: monitoring and alerts.

- ``/monitoring``: monitors per model, their last run and status, open alerts per monitor.
- ``/monitoring/{monitor}``: drift per feature over the recent windows as a heat map (a
  cell links to that feature's distribution in that window); the distribution comparison
  for the chosen feature and window (reference vs current, from the stored baseline:
  :func:`keel.monitoring.distribution.column_distribution`); realized vs estimated
  performance over time.
- ``/alerts``: the alerts as a timeline and a table, filtered by status and monitor, paged.
- ``/alerts/{id}``: message, context, the distribution, top segments, the features
  involved; Acknowledge / Resolve for members of the model (``keel.monitoring.alerts``'s
  ``ack_alert`` / ``resolve_alert``, as ``keel alerts ack|resolve`` does, as the signed-in user).
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import KeelError
from keel.server.auth import Identity, action, authorize
from keel.server.ui.pages._clock import CLOCK, spent
from keel.server.ui.render import fmt_num, page, redirect, ui_identity
from keel.server.ui.svg import bar_chart, heatmap, line_chart

router = APIRouter()
IDENT = Depends(ui_identity)
HEAT_WINDOWS = 30  # windows (columns) of the drift heat map
PERF_RUNS = 200  # monitor runs drawn in the performance charts
ALERTS_PER_PAGE = 50
PREFERRED = ("roc_auc", "accuracy", "f1", "rmse", "mae", "precision", "recall")  # the metrics charted first


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


@router.get("/monitoring", response_class=HTMLResponse)
def monitoring_page(request: Request, _t: None = CLOCK, *, model: str | None = Query(None, max_length=255), ident: Identity = IDENT) -> HTMLResponse:
    from keel.monitoring.alerts import count_alerts
    from keel.monitoring.results import overview

    authorize(ident, "read")
    monitors = [m for m in overview() if model is None or m["model"] == model]
    counts = count_alerts(by="monitor")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for m in sorted(monitors, key=lambda m: (m["model"], m["name"])):
        m["open_alerts"] = counts.get((m["name"], "open"), 0)
        m["acked_alerts"] = counts.get((m["name"], "acked"), 0)
        by_model.setdefault(m["model"], []).append(m)
    total_open = sum(n for (_, status), n in counts.items() if status == "open")
    spent(request)
    return page(request, ident, "monitoring/list.html", section="monitoring", title="Monitoring", by_model=by_model, model=model,
                total_open=total_open)


def _heat(name: str, windows: list[datetime]) -> tuple[Any, list[str]]:
    """The drift heat map (value / threshold of each feature's flagged statistic per window) and the features, most drifted first."""
    from keel.monitoring.results import series

    if not windows:
        return heatmap([], [], []), []
    s = series(name, kind="drift", since=windows[0])
    s = s[s["threshold"].notna()]
    if s.empty:
        return heatmap([], [], []), []
    s = s.assign(ratio=s["value"] / s["threshold"].where(s["threshold"] > 0), end_ms=s["window_end"].map(_ms))
    ends = [_ms(w) for w in windows]
    pivot = s.pivot_table(index="column", columns="end_ms", values="ratio", aggfunc="max")
    latest = pivot[pivot.columns.max()].fillna(-1.0)
    features = [str(f) for f in latest.sort_values(ascending=False).index]
    grid = pivot.reindex(index=features, columns=ends).to_numpy(dtype=float)
    values = [[None if v != v else float(v) for v in row] for row in grid]
    hrefs = [[f"/monitoring/{_q(name)}?feature={_q(f)}&window={e}#distribution" for e in ends] for f in features]
    # short column labels (the heat map's header is one line of rotated text): the hour, with the day once it changes
    stamps = [datetime.fromtimestamp(e / 1000, UTC) for e in ends]
    labels = [t.strftime("%H:%M" if i and t.date() == stamps[i - 1].date() else "%d.%m %Hh") for i, t in enumerate(stamps)]
    svg = heatmap(features, labels, values, title=f"Drift of {name}: statistic / threshold per feature and window", high=2.0, cell=26,
                  hrefs=hrefs, fmt=lambda v: f"{v:.2f} x threshold")
    return svg, features


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(str(s), safe="")


def _performance(name: str, since: datetime | None) -> list[Any]:
    from keel.monitoring.results import series

    charts = []
    frames = [series(name, kind=k, since=since) for k in ("performance", "estimated")]
    import pandas as pd

    s = pd.concat([f for f in frames if not f.empty]) if any(not f.empty for f in frames) else frames[0]
    if s.empty:
        return []
    s = s[s["value"].notna()]
    s = s.assign(x=s["window_end"].map(lambda t: t.timestamp()))
    found = [m for m in dict.fromkeys(s["statistic"]) if m != "label_coverage"]
    for metric in sorted(found, key=lambda m: (PREFERRED.index(m) if m in PREFERRED else len(PREFERRED), found.index(m)))[:4]:
        g = s[s["statistic"] == metric]
        lines = {("realized" if kind == "performance" else "estimated"): (list(p["x"]), list(p["value"]))
                 for kind, p in g.groupby("kind")}
        charts.append(line_chart(lines, title=f"{metric}: realized vs estimated", x_label="window end (UTC)", y_label=metric, x_format=clock))
    cov = s[s["statistic"] == "label_coverage"]
    if not cov.empty:
        charts.append(line_chart({"label coverage": (list(cov["x"]), list(cov["value"]))}, title="Label coverage", x_label="window end (UTC)",
                                 y_label="share labelled", x_format=clock))
    return charts


def _bin_labels(hist: dict[str, Any]) -> list[str]:
    if hist.get("labels") is not None:
        return [str(x) for x in hist["labels"]]
    edges = hist.get("edges") or []
    return [fmt_num((a + b) / 2, 3) for a, b in itertools.pairwise(edges)]


def distribution_chart(hist: dict[str, Any], title: str) -> Any:
    return bar_chart(_bin_labels(hist), {"reference": hist.get("reference") or [], "current": hist.get("current") or []},
                     title=title, y_label="share of rows", width=720)


@router.get("/monitoring/{monitor}", response_class=HTMLResponse)
def monitor_page(request: Request, _t: None = CLOCK, *, monitor: str, feature: str | None = Query(None, max_length=255),
                 window: int | None = Query(None, ge=0), ident: Identity = IDENT) -> HTMLResponse:
    from keel.monitoring.alerts import list_alerts
    from keel.monitoring.distribution import column_distribution
    from keel.monitoring.monitors import get_monitor
    from keel.monitoring.results import runs

    spec = get_monitor(monitor)
    authorize(ident, "read", model=spec.model)
    recent = runs(monitor, limit=max(HEAT_WINDOWS, PERF_RUNS))
    heat_windows = sorted(r["window_end"] for r in recent[:HEAT_WINDOWS])
    heat, features = _heat(monitor, heat_windows)
    perf = _performance(monitor, min((r["window_end"] for r in recent), default=None))
    chosen_feature = feature or (features[0] if features else None)
    window_ms = window if window is not None else (_ms(heat_windows[-1]) if heat_windows else None)
    dist: dict[str, Any] | None = None
    dist_error = ""
    chart = None
    if chosen_feature and window_ms is not None:
        try:
            dist = column_distribution(monitor, chosen_feature, end=datetime.fromtimestamp(window_ms / 1000, UTC))
            chart = distribution_chart(dist["histogram"], f"{chosen_feature}: reference vs current, window ending "
                                                          f"{datetime.fromtimestamp(window_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC")
        except KeelError as exc:
            dist_error = exc.message
    open_alerts = list_alerts(monitor=monitor, status="open", limit=20)
    choices = [(_ms(w), w) for w in reversed(heat_windows)]
    if window_ms is not None and window_ms not in [c[0] for c in choices]:
        choices.insert(0, (window_ms, datetime.fromtimestamp(window_ms / 1000, UTC)))
    all_features = features or sorted(spec.columns or [])
    if chosen_feature and chosen_feature not in all_features:
        all_features = [chosen_feature, *all_features]
    spent(request)
    return page(request, ident, "monitoring/monitor.html", section="monitoring", title=f"Monitor {monitor}", spec=spec,
                last=recent[0] if recent else None, runs=recent[:10], heat=heat, perf=perf, features=all_features,
                feature=chosen_feature, window_ms=window_ms, windows=choices, dist=dist, dist_error=dist_error, chart=chart,
                open_alerts=open_alerts)


def _timeline(alerts: list[dict[str, Any]]) -> Any:
    times = [a["first_time"] for a in alerts if a.get("first_time") is not None]
    if not times:
        return None
    hourly = max(times) - min(times) < timedelta(days=2)  # a short span: per hour, else per day
    fmt, unit = ("%m-%d %H:00", "hour") if hourly else ("%Y-%m-%d", "day")
    counts = Counter(t.strftime(fmt) for t in times)
    labels = sorted(counts)
    return bar_chart(labels, {"alerts opened": [counts[d] for d in labels]}, title=f"Alerts opened per {unit} (this page)",
                     y_label="alerts", width=720, height=180)


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, _t: None = CLOCK, *, status: str | None = Query(None, max_length=16), monitor: str | None = Query(None, max_length=255),
                page_no: int = Query(1, ge=1, le=100_000, alias="page"), ident: Identity = IDENT) -> HTMLResponse:
    from keel.monitoring.alerts import STATUSES, count_alerts, list_alerts
    from keel.monitoring.monitors import list_monitors

    authorize(ident, "read")
    status = status or None
    monitor = monitor or None
    found = list_alerts(status=status, monitor=monitor, limit=ALERTS_PER_PAGE + 1, offset=(page_no - 1) * ALERTS_PER_PAGE)
    more = len(found) > ALERTS_PER_PAGE
    found = found[:ALERTS_PER_PAGE]
    counts = count_alerts(by="monitor")
    totals = {s: sum(n for (m, st), n in counts.items() if st == s and (monitor is None or m == monitor)) for s in STATUSES}
    monitors = sorted(m.name for m in list_monitors())
    timeline = _timeline(found)
    spent(request)
    return page(request, ident, "monitoring/alerts.html", section="monitoring", title="Alerts", alerts=found, status=status,
                monitor=monitor, statuses=STATUSES, monitors=monitors, page_no=page_no, more=more,
                totals=totals, timeline=timeline)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, _t: None = CLOCK, *, alert_id: int, ident: Identity = IDENT) -> HTMLResponse:
    from keel.monitoring.alerts import get_alert

    alert = get_alert(alert_id)
    authorize(ident, "read", model=alert["model"])
    ctx = alert["context"] or {}
    chart = distribution_chart(ctx["distribution"], f"{alert['subject']}: reference vs current") if ctx.get("distribution") else None
    features = []
    if ctx.get("feature"):
        features.append(ctx["feature"])
    for s in ctx.get("top_segments") or []:
        if s.get("column") and s["column"] not in features:
            features.append(s["column"])
    window_ms = None
    if ctx.get("window_end"):
        try:
            window_ms = _ms(datetime.fromisoformat(str(ctx["window_end"])))
        except ValueError:
            window_ms = None
    summary = {k: ctx.get(k) for k in ("kind", "method", "statistic", "threshold", "threshold_kind", "shift", "metric", "value", "baseline",
                                       "drop", "coverage", "objective", "limit", "affected_predictions", "window_start", "window_end", "note")
               if ctx.get(k) not in (None, "", [], {})}
    spent(request)
    return page(request, ident, "monitoring/alert.html", section="monitoring", title=f"Alert {alert_id}", alert=alert, ctx=ctx,
                summary=summary, chart=chart, features=features, window_ms=window_ms)


@router.post("/alerts/{alert_id}/ack", openapi_extra=action("write"))
def ack(alert_id: int, ident: Identity = IDENT) -> Response:
    from keel.monitoring.alerts import ack_alert, get_alert

    authorize(ident, "write", model=get_alert(alert_id)["model"])
    a = ack_alert(alert_id)
    return redirect(f"/alerts/{alert_id}", flash=f"Alert {alert_id} acknowledged by {a['acked_by']}.")


@router.post("/alerts/{alert_id}/resolve", openapi_extra=action("write"))
def resolve(alert_id: int, ident: Identity = IDENT) -> Response:
    from keel.monitoring.alerts import get_alert, resolve_alert

    authorize(ident, "write", model=get_alert(alert_id)["model"])
    a = resolve_alert(alert_id)
    return redirect(f"/alerts/{alert_id}", flash=f"Alert {alert_id} resolved by {a['resolved_by']}.")
