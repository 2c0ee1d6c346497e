"""Monitor results as time series, and the HTML report over them.

Each run is one ``monitor_runs`` row (the whole result as JSON) and one
``monitor_results`` row per (version, kind, column, statistic): drift per column
(every statistic, the flagged one with its threshold and level), data quality,
realized and estimated performance with label coverage, business metrics, service
objectives and the multivariate signal. A rerun of the same window replaces
its rows, so the series holds one point per window.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from keel.monitoring.monitors import MonitorResult, MonitorSpec


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _points(result: MonitorResult) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(version: int | None, kind: str, column: str, statistic: str, value: Any, threshold: Any = None, level: str = "ok") -> None:
        v = None if value is None or value != value else float(value)
        out.append({"version": version, "kind": kind, "column": column, "statistic": statistic, "value": v,
                    "threshold": None if threshold is None else float(threshold), "level": level})

    for vr in result.versions:
        d = vr.drift
        if d is not None:
            for c in d.columns:
                for stat, value in c.statistics.items():
                    flagged = stat == c.method
                    add(vr.version, "drift", c.column, stat, value, c.threshold if flagged else None, c.level if flagged else "ok")
                add(vr.version, "quality", c.column, "null_rate", c.null_rate_current)
                add(vr.version, "quality", c.column, "out_of_range_share", c.out_of_range_share)
            if d.multivariate and d.multivariate.get("statistic") is not None:
                m = d.multivariate
                add(vr.version, "multivariate", "*", "pca_reconstruction_error", m["statistic"], m["upper"], m["level"])
        perf = vr.performance
        if perf:
            add(vr.version, "performance", "*", "label_coverage", perf.get("coverage"))
            for k, v in perf.get("metrics", {}).items():
                add(vr.version, "performance", "*", k, v)
        for k, v in vr.estimated.items():
            add(vr.version, "estimated", "*", k, v)
        for k, v in vr.business.items():
            add(vr.version, "business", "*", k, v)
        add(vr.version, "service", "*", "rows", vr.rows)
    for key, value in result.service.items():
        if key != "objectives" and isinstance(value, int | float):
            obj = result.service.get("objectives", {}).get("min_volume" if key == "volume" else key)
            add(None, "service", "*", key, value, obj["limit"] if obj else None, obj["level"] if obj else "ok")
    return out


def store_result(spec: MonitorSpec, result: MonitorResult) -> int:
    """Store a run and its points (replacing an earlier run of the same window); returns the run id."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.monitoring import monitor_results, monitor_runs

    end = _ms(result.window_end)
    versions = [v.version for v in result.versions]
    store = get_metadata_store()
    with store.write() as conn:
        old = [r[0] for r in conn.execute(sa.select(monitor_runs.c.id).where(monitor_runs.c.monitor == spec.name, monitor_runs.c.window_end_ms == end)).all()]
        if old:
            conn.execute(sa.delete(monitor_results).where(monitor_results.c.run_id.in_(old)))
            conn.execute(sa.delete(monitor_runs).where(monitor_runs.c.id.in_(old)))
        rid = conn.execute(sa.insert(monitor_runs).values(
            monitor=spec.name, model=spec.model, version=max(versions) if versions else None, window_start_ms=_ms(result.window_start),
            window_end_ms=end, rows=result.rows, status=result.status, summary=json.dumps(result.to_dict(), default=str), run_ms=now_ms(),
        )).inserted_primary_key[0]  # type: ignore[index]
        rows = [(int(rid), spec.name, p["version"], end, p["kind"], p["column"], p["statistic"], p["value"], p["threshold"], p["level"])
                for p in _points(result)]
        store.insert_many(conn, monitor_results, rows, ["run_id", "monitor", "version", "window_end_ms", "kind", "column", "statistic", "value", "threshold", "level"])
    result.run_id = int(rid)
    return int(rid)


def runs(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The monitor's runs, newest window first (without the full summary)."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, ms_to_datetime
    from keel.store.schema.monitoring import monitor_runs as t

    q = sa.select(t.c.id, t.c.version, t.c.window_start_ms, t.c.window_end_ms, t.c.rows, t.c.status, t.c.run_ms).where(t.c.monitor == name)
    q = q.order_by(t.c.window_end_ms.desc())
    if limit:
        q = q.limit(limit)
    with get_metadata_store().read() as conn:
        rows = conn.execute(q).all()
    return [{"run_id": r.id, "version": r.version, "window_start": ms_to_datetime(r.window_start_ms), "window_end": ms_to_datetime(r.window_end_ms),
             "rows": r.rows, "status": r.status, "run_time": ms_to_datetime(r.run_ms)} for r in rows]


def overview() -> list[dict[str, Any]]:
    """Every monitor (keel.yaml and code) with its last run (``keel monitor ls``)."""
    from keel.monitoring.monitors import list_monitors
    from keel.store.owners import owners_of_many

    monitors = list_monitors()
    owned = owners_of_many("monitor", [m.name for m in monitors])
    out = []
    for m in monitors:
        last = runs(m.name, limit=1)
        out.append({**m.to_dict(), "owners": owned.get(m.name, []), "last_run": last[0] if last else None})
    return out


def last_summary(name: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitor_runs as t

    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(t.c.summary).where(t.c.monitor == name).order_by(t.c.window_end_ms.desc()).limit(1)).first()
    if row is None:
        raise NotFoundError(f"Monitor {name!r} has not run yet.", hint=f"Run it: keel monitor run {name}")
    return dict(json.loads(row.summary))


def series(name: str, *, kind: str | None = None, column: str | None = None, statistic: str | None = None,
           since: datetime | None = None) -> pd.DataFrame:
    """The monitor's time series: window_end, version, kind, column, statistic, value, threshold, level.

    ``since``: only windows ending at or after it (a page shows the recent ones, not years of them).
    """
    import pandas as pd
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitor_results as t

    q = sa.select(t.c.window_end_ms, t.c.version, t.c.kind, t.c.column, t.c.statistic, t.c.value, t.c.threshold, t.c.level).where(t.c.monitor == name)
    for col, value in ((t.c.kind, kind), (t.c.column, column), (t.c.statistic, statistic)):
        if value is not None:
            q = q.where(col == value)
    if since is not None:
        q = q.where(t.c.window_end_ms >= _ms(since))
    with get_metadata_store().read() as conn:
        rows = conn.execute(q.order_by(t.c.window_end_ms)).all()
    frame = pd.DataFrame(rows, columns=["window_end_ms", "version", "kind", "column", "statistic", "value", "threshold", "level"])
    frame.insert(0, "window_end", pd.to_datetime(frame.pop("window_end_ms"), unit="ms", utc=True))
    return frame


def report_html(name: str) -> str:
    """A self-contained HTML report: the last window's distributions, drift over time, performance realized vs estimated."""
    from keel.monitoring.html import CSS, _esc, line_svg
    from keel.monitoring.monitors import get_monitor, run_monitor

    spec = get_monitor(name)
    history = series(name)
    if history.empty:
        raise NotFoundError(f"Monitor {name!r} has not run yet.", hint=f"Run it: keel monitor run {name}")
    last = runs(name, limit=1)[0]
    latest = run_monitor(name, end=last["window_end"], alerts=False, store=False)  # recomputed from the stored baseline: the plots need the rows
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(name)}</title><style>{CSS}</style></head><body>",
             f"<h1>Monitor {_esc(name)}</h1><p>model <b>{_esc(spec.model)}</b>, window {_esc(spec.window)}; last window "
             f"{latest.window_start:%Y-%m-%d %H:%M} → {latest.window_end:%Y-%m-%d %H:%M} UTC, {latest.rows} predictions, "
             f"status <span class='{latest.status}'>{latest.status}</span></p>"]
    parts += [f"<p class='muted'>{_esc(n)}</p>" for n in latest.notes]
    t = history.assign(x=history["window_end"].astype("int64") / 1e9)
    drift = t[(t["kind"] == "drift") & t["threshold"].notna()]
    if not drift.empty:
        parts.append("<h2>Drift over time</h2><div class='grid'>")
        for column, g in drift.groupby("column", sort=True):
            stat = g["statistic"].iloc[-1]
            parts.append(f"<div class='card'>{line_svg({f'{stat}': list(zip(g['x'], g['value'], strict=True)), 'threshold': list(zip(g['x'], g['threshold'], strict=True))}, f'{column} ({stat})')}</div>")
        parts.append("</div>")
    perf = t[t["kind"].isin(["performance", "estimated"])]
    if not perf.empty:
        parts.append("<h2>Performance: realized vs estimated</h2><div class='grid'>")
        for metric in [m for m in ("roc_auc", "accuracy", "f1", "rmse") if m in set(perf["statistic"])]:
            g = perf[perf["statistic"] == metric]
            lines = {str(kind): list(zip(s["x"], s["value"], strict=True)) for kind, s in g.groupby("kind")}
            parts.append(f"<div class='card'>{line_svg(lines, metric)}</div>")
        cov = perf[perf["statistic"] == "label_coverage"]
        if not cov.empty:
            parts.append(f"<div class='card'>{line_svg({'label coverage': list(zip(cov['x'], cov['value'], strict=True))}, 'label coverage')}</div>")
        parts.append("</div>")
    for vr in latest.versions:
        if vr.drift is None:
            continue
        from keel.monitoring.html import column_svg, drift_table_html

        parts.append(f"<h2>v{vr.version}: the last window against its baseline</h2>{drift_table_html(vr.drift)}<div class='grid'>")
        for c in sorted(vr.drift.columns, key=lambda c: (not c.drifted, c.column)):
            if c.statistic is not None:
                parts.append(f"<div class='card'>{column_svg(vr.drift, c.column)}<div class='{c.level}'>{_esc(c.describe())}</div></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(name: str, output: str | Path) -> Path:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(name), encoding="utf-8")
    return path
