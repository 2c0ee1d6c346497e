"""``keel models diagnose churn@production``: one screen that answers "what is wrong with this model".

Sections, each from what keel already stores (a section that cannot be built says
why; the others still show):

- **changes**: registry events of the model, changes of the deployments routing to
  it, feature definitions applied for its views, failed contract validations of
  their sources, in the window;
- **alerts**: open and acknowledged alerts of the model's monitors, with their context;
- **drift**: the most drifted features of each monitor's latest run (value against
  threshold), with the top segments an alert recorded;
- **performance**: realized and estimated performance over the monitors' runs;
- **prediction log**: volume per day, error share, latency p50/p99 and rows with
  missing features, per version;
- **lineage**: the run and data behind the version (see :mod:`keel.loop.lineage`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keel.errors import KeelError, ValidationError


def _section(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except KeelError as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:  # a section must not take the whole screen down
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def _changes(mv: Any, since_ms: int) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from keel.deployments.specs import list_deployments
    from keel.registry.audit import history
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.contracts import contract_validations
    from keel.store.schema.deployments import deployment_events
    from keel.store.schema.features import feature_objects

    out: list[dict[str, Any]] = []
    for e in history(mv.model):
        ms = e.get("ts_ms") or 0
        if ms >= since_ms:
            out.append({"time_ms": ms, "what": "registry", "detail": f"{e.get('action')} {e.get('target') or ''} "
                        f"v{e.get('from_version')}→v{e.get('to_version')} {e.get('outcome') or ''} by {e.get('user')}".strip()})
    deps = [d.name for d in list_deployments() if any(r.model == mv.model for r in d.spec.routes)]
    views = [n.label.split(" v")[0] for n in _lineage(mv).walk() if n.kind == "feature_view"]
    sources = [n.label.split(" v")[0] for n in _lineage(mv).walk() if n.kind == "source"]
    with get_metadata_store().read() as conn:
        if deps:
            for r in conn.execute(sa.select(deployment_events).where(deployment_events.c.deployment.in_(deps),
                                                                     deployment_events.c.created_ms >= since_ms)):
                out.append({"time_ms": r.created_ms, "what": "deployment", "detail": f"{r.deployment}: {r.action} by {r.user}"
                            + (f" ({r.reason})" if r.reason else "")})
        if views:
            for r in conn.execute(sa.select(feature_objects.c.kind, feature_objects.c.name, feature_objects.c.version, feature_objects.c.created_ms)
                                  .where(feature_objects.c.name.in_(views + sources), feature_objects.c.created_ms >= since_ms)):
                out.append({"time_ms": r.created_ms, "what": "features", "detail": f"{r.kind} {r.name} v{r.version} applied"})
        if sources:
            for r in conn.execute(sa.select(contract_validations).where(contract_validations.c.target.in_(sources),
                                                                        contract_validations.c.passed.is_(False),
                                                                        contract_validations.c.created_ms >= since_ms)):
                out.append({"time_ms": r.created_ms, "what": "contract", "detail": f"{r.contract} failed on {r.target}: {r.errors} error(s) "
                            f"over {r.num_rows} rows"})
    out.sort(key=lambda c: c["time_ms"], reverse=True)
    for c in out:
        c["time"] = datetime.fromtimestamp(c["time_ms"] / 1000, UTC).isoformat(timespec="seconds")
    return out


_LINEAGE: dict[tuple[str, int], Any] = {}


def _lineage(mv: Any) -> Any:
    from keel.loop.lineage import model_lineage

    key = (mv.model, mv.version)
    if key not in _LINEAGE:
        _LINEAGE[key] = model_lineage(mv.model, mv.version)
    return _LINEAGE[key]


def _monitors(mv: Any) -> list[Any]:
    from keel.monitoring.monitors import list_monitors

    return [m for m in list_monitors() if m.model == mv.model]


def _alerts(mv: Any) -> list[dict[str, Any]]:
    from keel.monitoring.alerts import list_alerts

    out = []
    for a in list_alerts():
        if a["model"] != mv.model or a["status"] == "resolved":
            continue
        out.append({"id": a["id"], "monitor": a["monitor"], "subject": a["subject"], "level": a["level"], "status": a["status"],
                    "message": a["message"], "version": a["version"], "segments": (a["context"] or {}).get("top_segments"),
                    "last": None if a.get("last_time") is None else a["last_time"].isoformat(timespec="seconds")})
    return out


def _results(monitor: str, kind: str, *, latest: bool = False) -> list[Any]:
    """The monitor's stored results of ``kind`` oldest first (``latest``: only its last window's), straight from SQL."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitor_results as t

    q = sa.select(t.c.window_end_ms, t.c.version, t.c.column, t.c.statistic, t.c.value, t.c.threshold, t.c.level).where(
        t.c.monitor == monitor, t.c.kind == kind)
    if latest:
        q = q.where(t.c.window_end_ms == sa.select(sa.func.max(t.c.window_end_ms)).where(t.c.monitor == monitor, t.c.kind == kind)
                    .scalar_subquery())
    with get_metadata_store().read() as conn:
        return list(conn.execute(q.order_by(t.c.window_end_ms, t.c.id)).all())


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _number(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def _drift(mv: Any, top: int) -> list[dict[str, Any]]:
    out = []
    for m in _monitors(mv):
        last = _results(m.name, "drift", latest=True)

        def ratio(r: Any) -> float:
            t = _number(r.threshold)
            v = _number(r.value)
            return v / t if v is not None and t is not None and t > 0 else float("-inf")  # no ratio: last, as pandas sorts NaN

        for r in sorted(last, key=ratio, reverse=True)[:top]:
            out.append({"monitor": m.name, "column": r.column, "statistic": r.statistic,
                        "value": float("nan") if r.value is None else float(r.value), "threshold": _number(r.threshold),
                        "level": r.level, "window_end": _iso(r.window_end_ms)})
    out.sort(key=lambda d: (d["value"] / d["threshold"]) if d["threshold"] else 0.0, reverse=True)
    return out[:top]


def _performance(mv: Any) -> list[dict[str, Any]]:
    out = []
    for m in _monitors(mv):
        for kind in ("performance", "estimated"):
            for r in _results(m.name, kind):
                out.append({"monitor": m.name, "kind": kind, "metric": r.statistic, "value": _number(r.value),
                            "version": None if r.version is None else int(r.version), "window_end": _iso(r.window_end_ms)})
    return out


def _log_health(mv: Any, start: datetime) -> dict[str, Any]:
    """Volume per day, error share, latency p50/p99 and missing-feature share per version, over [start, now).

    Counts come from each part's summary (its footer, cached) when the part lies
    inside the window, holds one version and one day; the other parts (the window's
    first hour, older parts) are counted by DuckDB. Latency quantiles are exact
    (DuckDB's ``quantile_cont``): the parts' latency histograms say which bins hold
    the wanted ranks, and one scan returns only those bins' values (see :func:`_quantiles`).
    """
    import duckdb
    import numpy as np

    from keel.store import predictions as P
    from keel.store.lake import sql_string

    paths = P.files(mv.model, start=start)
    if not paths:
        return {"rows": 0, "days": [], "versions": []}
    start_us = int(start.timestamp() * 1_000_000)
    counts: dict[int, list[int]] = {}  # version -> [rows, errors, rows with missing features]
    days: dict[int, int] = {}  # UTC day number -> rows
    bins: dict[int, Any] = {}  # version -> dense latency counts (see predictions.latency_bin_counts)
    slots = len(P.latency_edges()) + 2
    inside, cut = [], []
    for path, (st, _bloom) in zip(paths, P.summaries(mv.model, paths), strict=True):
        if not st.get("rows") or st["ts_max_us"] < start_us:
            continue
        if st["ts_min_us"] < start_us or len(st["versions"]) != 1 or len(st["days"]) != 1 \
                or "first" not in (st.get("latency_bins") or {}):
            cut.append(path)  # counted by DuckDB below
            continue
        inside.append(path)
        version = int(next(iter(st["versions"])))
        c = counts.setdefault(version, [0, 0, 0])
        c[0] += st["rows"]
        c[1] += st["rows"] - st["status"].get("ok", 0)
        c[2] += st["missing_features_rows"]
        day = int(next(iter(st["days"])))
        days[day] = days.get(day, 0) + st["rows"]
        if version not in bins:
            bins[version] = np.zeros(slots, np.int64)
        P.add_histogram(bins[version], st["latency_bins"])

    def scan(group: list[str], filtered: bool, by_name: bool = True) -> str:
        return (f"SELECT {{cols}} FROM read_parquet([{', '.join(sql_string(p) for p in group)}], union_by_name = {str(by_name).lower()})"
                + (" WHERE ts >= $start" if filtered else ""))

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # a long query must not draw into --json output
        con.execute("SET TimeZone = 'UTC'")
        lat = " UNION ALL ".join(scan(g, f).format(cols="version, latency_ms") for g, f in ((inside, False), (cut, True)) if g)
        args = {"start": start} if cut else {}
        if cut:  # the cut parts' in-window latencies join the histograms
            got = con.execute(f"SELECT version, latency_ms FROM ({scan(cut, True).format(cols='version, latency_ms')}) "
                              "WHERE latency_ms IS NOT NULL", args).fetchnumpy()
            for version in set(got["version"].tolist()):
                extra = P.latency_bin_counts(got["latency_ms"][got["version"] == version])
                bins[int(version)] = bins[int(version)] + extra if int(version) in bins else extra
        try:  # keel's parts share the reserved columns' types: no need to read every schema first
            fast = " UNION ALL ".join(scan(g, f, by_name=f).format(cols="version, latency_ms") for g, f in ((inside, False), (cut, True)) if g)
            quantiles = _quantiles(con, fast, args, bins)
        except duckdb.Error:
            quantiles = _quantiles(con, lat, args, bins)
        if cut:
            cols = ("version, ts, CASE WHEN coalesce(status, 'ok') <> 'ok' THEN 1 ELSE 0 END AS failed, "
                    "CASE WHEN len(coalesce(missing_features, [])) > 0 THEN 1 ELSE 0 END AS missing")
            rows = scan(cut, True).format(cols=cols)
            for v, n, e, mf in con.execute(f"SELECT version, count(*), sum(failed), sum(missing) FROM ({rows}) GROUP BY version",
                                           {"start": start}).fetchall():
                c = counts.setdefault(int(v), [0, 0, 0])
                c[0] += int(n)
                c[1] += int(e or 0)
                c[2] += int(mf or 0)
            for d, n in con.execute(f"SELECT (epoch_us(ts) // 86400000000)::BIGINT AS d, count(*) FROM ({rows}) GROUP BY d",
                                    {"start": start}).fetchall():
                days[int(d)] = days.get(int(d), 0) + int(n)
    finally:
        con.close()
    versions = [{"version": v, "rows": n, "error_share": e / n if n else 0.0, "latency_p50_ms": quantiles.get(v, (None, None))[0],
                 "latency_p99_ms": quantiles.get(v, (None, None))[1], "missing_features_share": mf / n if n else 0.0}
                for v, (n, e, mf) in sorted(counts.items()) if n]
    return {"rows": sum(v["rows"] for v in versions), "versions": versions,
            "days": [{"day": datetime.fromtimestamp(d * 86400, UTC).date().isoformat(), "rows": n} for d, n in sorted(days.items())]}


_QUANTILES = (0.5, 0.99)


def _quantiles(con: Any, rows: str, args: dict[str, Any], bins: dict[int, Any]) -> dict[int, tuple[float | None, ...]]:
    """DuckDB's ``quantile_cont(latency_ms, q)`` per version for q in _QUANTILES, exactly, reading only the wanted bins' values.

    ``bins``: each version's dense latency counts. They give each wanted rank's bin;
    one scan returns the values of those bins; the value at a rank is then the bin's
    sorted values at the rank minus the rows below the bin, interpolated as DuckDB
    does (lo + (hi - lo) * fraction; DuckDB's own rounding of that last step differs
    from it in the last bit now and then, 1e-16 relative). When a count is open (NaN,
    below 0) or the scan does not return exactly the bins' counts, DuckDB's own
    quantile answers instead.
    """
    import math

    import numpy as np

    from keel.store import predictions as P

    edges = P.latency_edges()
    wanted: dict[tuple[int, int], int] = {}  # (version, bin) -> rows below the bin
    ranks: dict[int, list[tuple[float, int, int]]] = {}  # version -> [(position, floor rank, ceil rank) per quantile]
    exact = all(not h[0] and not h[-1] for h in bins.values())
    for version, h in bins.items() if exact else ():
        cum = np.cumsum(h)
        n = int(cum[-1])
        if not n:
            continue
        ranks[version] = [((n - 1) * q, math.floor((n - 1) * q), math.ceil((n - 1) * q)) for q in _QUANTILES]
        for _pos, *pair in ranks[version]:
            for r in pair:
                slot = int(np.searchsorted(cum, r, side="right"))
                wanted[(version, slot - 1)] = int(cum[slot - 1]) if slot else 0
    if exact and wanted:
        # the wanted bins' values: a few latency ranges (the bins of every version, merged), then exact per version in NumPy
        spans: list[list[int]] = []
        for b in sorted({b for _, b in wanted}):
            if spans and spans[-1][1] == b - 1:
                spans[-1][1] = b
            else:
                spans.append([b, b])
        where = " OR ".join(f"(latency_ms >= {float(edges[lo])!r}" + (f" AND latency_ms < {float(edges[hi + 1])!r})" if hi + 1 < len(edges) else ")")
                            for lo, hi in spans)
        got = con.execute(f"SELECT version, latency_ms FROM ({rows}) WHERE {where}", args).fetchnumpy()
        key = got["version"].astype(np.int64) * (len(edges) + 1) + (np.searchsorted(edges, got["latency_ms"], side="right") - 1)
        order = np.argsort(key, kind="stable")
        key, lat = key[order], got["latency_ms"][order]
        values = {}
        for v, b in wanted:
            i, j = np.searchsorted(key, v * (len(edges) + 1) + b, side="left"), np.searchsorted(key, v * (len(edges) + 1) + b, side="right")
            values[(v, b)] = np.sort(lat[i:j])
        if all(len(values[(v, b)]) == bins[v][b + 1] for v, b in wanted):
            def at(version: int, rank: int) -> float:
                for (v, b), below in wanted.items():
                    if v == version and below <= rank < below + len(values[(v, b)]):
                        return float(values[(v, b)][rank - below])
                raise AssertionError(rank)

            out: dict[int, tuple[float | None, ...]] = {}
            for version, triples in ranks.items():
                qs = []
                for pos, lo_rank, hi_rank in triples:
                    lo, hi = at(version, lo_rank), at(version, hi_rank)
                    qs.append(lo if lo_rank == hi_rank else lo + (hi - lo) * (pos - lo_rank))
                out[version] = tuple(qs)
            return out
    qcols = ", ".join(f"quantile_cont(latency_ms, {q})" for q in _QUANTILES)
    return {int(r[0]): tuple(r[1:]) for r in con.execute(f"SELECT version, {qcols} FROM ({rows}) GROUP BY version", args).fetchall()}


def diagnose(ref: str, *, days: int = 30, top: int = 5) -> dict[str, Any]:
    """The diagnosis of a model version (``NAME@ALIAS`` or ``NAME/VERSION``), JSON-ready."""
    from keel.loop.lineage import _split_ref
    from keel.registry.versions import resolve_version

    if days < 1:
        raise ValidationError(f"--days {days} must be at least 1.")
    name, v = _split_ref(ref)
    mv = resolve_version(name, int(v) if v.isdigit() else v)
    _LINEAGE.clear()
    start = datetime.now(UTC) - timedelta(days=days)
    since_ms = int(start.timestamp() * 1000)
    lineage = _section(lambda: _lineage(mv).to_dict())
    out = {
        "model": mv.model, "version": mv.version, "ref": ref, "aliases": mv.aliases, "environments": mv.environments,
        "window_days": days, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "monitors": _section(lambda: [m.name for m in _monitors(mv)]),
        "changes": _section(_changes, mv, since_ms),
        "alerts": _section(_alerts, mv),
        "drift": _section(_drift, mv, top),
        "performance": _section(_performance, mv),
        "prediction_log": _section(_log_health, mv, start),
        "lineage": lineage,
    }
    out["findings"] = findings(out)
    return out


def findings(d: dict[str, Any]) -> list[str]:
    """The few lines a person should read first."""
    out: list[str] = []
    if isinstance(d["monitors"], list) and not d["monitors"]:
        out.append(f"{d['model']} has no monitor: nothing watches its inputs or predictions (keel monitor ...)")
    if isinstance(d["alerts"], list) and d["alerts"]:
        worst = d["alerts"][0]
        out.append(f"{len(d['alerts'])} open alert(s); e.g. {worst['subject']}: {worst['message']}")
    if isinstance(d["drift"], list):
        flagged = [x for x in d["drift"] if x["level"] in ("alert", "warn")]
        if flagged:
            out.append("drifted: " + ", ".join(f"{x['column']} ({x['statistic']} {x['value']:.3g} > {x['threshold']:.3g})" for x in flagged if x["threshold"]))
    log = d["prediction_log"]
    if isinstance(log, dict) and "versions" in log:
        if not log["rows"]:
            out.append(f"no predictions logged in the last {d['window_days']} days")
        for v in log["versions"]:
            if v["error_share"] > 0.01:
                out.append(f"v{v['version']}: {v['error_share']:.1%} of logged predictions failed")
            if v["missing_features_share"] > 0.05:
                out.append(f"v{v['version']}: {v['missing_features_share']:.1%} of rows had missing features")
    if isinstance(d["changes"], list) and d["changes"]:
        out.append(f"{len(d['changes'])} change(s) in the window, latest: {d['changes'][0]['what']}: {d['changes'][0]['detail']}")
    return out or ["nothing stands out: no open alert, no drift over its threshold, the log is healthy"]


# ---- the page -------------------------------------------------------------------

def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(d: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    log = d["prediction_log"]
    if isinstance(log, dict) and log.get("days"):
        fig, ax = plt.subplots(figsize=(7, 2.4))
        ax.bar([x["day"] for x in log["days"]], [x["rows"] for x in log["days"]], color="#1e88e5")
        ax.set_title("predictions per day")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        out.append(("Prediction volume", _png(fig)))
    perf = d["performance"]
    if isinstance(perf, list) and perf:
        fig, ax = plt.subplots(figsize=(7, 2.6))
        series: dict[str, list[tuple[str, float]]] = {}
        for p in perf:
            if p["value"] is not None:
                series.setdefault(f"{p['kind']} {p['metric']}", []).append((p["window_end"], p["value"]))
        for label, pts in list(series.items())[:6]:
            ax.plot([datetime.fromisoformat(t) for t, _ in pts], [v for _, v in pts], marker="o", label=label)  # type: ignore[arg-type]
        ax.legend(fontsize=7)
        ax.set_title("performance per monitor run")
        out.append(("Performance", _png(fig)))
    drift = d["drift"]
    if isinstance(drift, list) and drift:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(drift) + 1))
        ratios = [x["value"] / x["threshold"] if x["threshold"] else 0 for x in drift]
        ax.barh([f"{x['column']} ({x['statistic']})" for x in drift], ratios, color=["#c62828" if r > 1 else "#9e9e9e" for r in ratios])
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xlabel("statistic / threshold")
        ax.set_title("most drifted features (latest run)")
        out.append(("Drift", _png(fig)))
    return out


def write_html(d: dict[str, Any], path: str | Path) -> Path:
    """A self-contained page: findings, tables of each section and the plots."""
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>diagnose {e(d['model'])} v{d['version']}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;font-size:14px}"
             "li{margin:.3em 0}pre{background:#f6f6f6;padding:8px;overflow:auto}</style></head><body>",
             f"<h1>{e(d['model'])} v{d['version']} <small>({e(d['ref'])}, last {d['window_days']} days)</small></h1>",
             "<h2>Findings</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in d["findings"]) + "</ul>"]
    for title, src in _plots(d):
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='{src}'>")
    for key in ("alerts", "drift", "changes"):
        rows = d[key]
        parts.append(f"<h2>{key.title()}</h2>")
        if isinstance(rows, list) and rows:
            cols = [c for c in rows[0] if c not in ("time_ms", "segments")]
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows) + "</table>")
        else:
            parts.append(f"<p>{e(str(rows.get('unavailable')) if isinstance(rows, dict) else 'none')}</p>")
    parts.append("<h2>Prediction log</h2><pre>" + e(json.dumps(d["prediction_log"], indent=2, default=str)) + "</pre>")
    parts.append("<h2>Lineage</h2><pre>" + e(json.dumps(d["lineage"], indent=2, default=str)[:20000]) + "</pre></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
    return path
