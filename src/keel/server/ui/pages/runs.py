"""UI pages: experiments and runs (``/experiments``, ``/runs``, ``/runs/{id}``, ``/compare``).

- ``/experiments``: every experiment with its run count and last run.
- ``/runs?experiment=E&filter=F&sort=S&columns=C&page=N``: the runs table, sorted by the
  database (``sort`` is an ``order_by`` item: ``metrics.auc DESC``), filtered with keel's
  filter language (the one of ``keel runs ls --filter``; a bad filter answers 400 with the
  error on the page), the chosen metric/param columns kept in the URL, numbered pages of
  :data:`PAGE_SIZE` with the total count; checkboxes and a "Compare" button.
- ``/compare?runs=a,b``: 2 to 10 runs: params and latest metrics side by side (rows that
  differ marked), each metric's curves overlaid (x: step, wall time or time since the run
  started; EMA smoothing on the server; downsampled on the server) and params against a
  chosen metric as scatter plots.
- ``/runs/{id}``: params, metrics with their history plots, tags, artifacts by folder and
  downloadable (``/runs/{id}/artifacts/{path}``: sha256-verified, then streamed), the
  reproducibility record, datasets with their feature versions, parent, child runs (a
  tuning parent's trials as scatter plots) and the model versions registered from it.
"""

from __future__ import annotations

import math
import mimetypes
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.background import BackgroundTask

from keel.errors import KeelError, NotFoundError, ValidationError, did_you_mean
from keel.server.auth import Identity, authorize
from keel.server.ui import svg
from keel.server.ui.render import page, ui_identity

router = APIRouter()
IDENT = Depends(ui_identity)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
COMPARE_MIN, COMPARE_MAX = 2, 10
MAX_CHARTS = 12          # metric plots per page (the rest are listed)
MAX_CHILDREN = 1000      # trials read for a tuning parent's scatter plots
DEFAULT_METRICS, DEFAULT_PARAMS = 6, 4
DEFAULT_CANDIDATES = 40  # metrics and params read to pick the default columns from
X_AXES = {"step": "step", "time": "wall time (UTC)", "relative": "seconds since the run started"}
SMOOTHING = [0.0, 0.6, 0.8, 0.9, 0.95, 0.99]
INLINE_TYPES = {"text/plain", "image/png", "image/jpeg", "image/gif", "image/webp", "application/json", "text/csv"}


def _ms(value: Any) -> int | None:
    """Epoch milliseconds of a pandas Timestamp / datetime (None for NaT/None)."""
    if value is None or value != value:  # NaT != NaT
        return None
    return int(value.timestamp() * 1000)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _short(run_id: str, name: str) -> str:
    return f"{name} ({run_id[:6]})"


# -- /experiments ----------------------------------------------------------------------------

@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, ident: Identity = IDENT) -> HTMLResponse:
    from keel.tracking.query import list_experiments

    authorize(ident, "read")
    rows = list_experiments()
    rows.sort(key=lambda r: (r["last_run"] is None, -(r["last_run"].timestamp() if r["last_run"] else 0), r["name"]))
    return page(request, ident, "runs/experiments.html", section="runs", title="Experiments", experiments=rows)


# -- /runs -----------------------------------------------------------------------------------

def _split(values: list[str]) -> list[str]:
    """Repeated query values and comma-separated ones alike: ``runs=a,b&runs=c`` -> [a, b, c]."""
    out: list[str] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _check_columns(columns: list[str], keys: dict[str, list[str]]) -> list[str]:
    known = {f"metrics.{k}" for k in keys["metric"]} | {f"params.{k}" for k in keys["param"]} | {f"tags.{k}" for k in keys["tag"]}
    for c in columns:
        if c not in known:
            raise ValidationError(f"Unknown column {c!r}." + did_you_mean(c, sorted(known)),
                                  hint="Choose columns among the metrics, params and tags the runs have (the Columns form).")
    return columns


def _sort_column(sort: str) -> tuple[str, bool]:
    """('metrics.auc', descending) of an order_by item such as 'metrics.auc DESC'."""
    text = sort.strip()
    upper = text.upper()
    for suffix, desc in ((" DESC", True), (" ASC", False)):
        if upper.endswith(suffix):
            return text[: -len(suffix)].strip(), desc
    return text, False


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, experiment: str | None = None, filter: str = "", sort: str = "",
              columns: list[str] = Query([]), page_no: int = Query(1, alias="page", ge=1, le=1_000_000),
              per_page: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE), ident: Identity = IDENT) -> HTMLResponse:
    from keel.tracking.query import list_experiments
    from keel.tracking.search import run_keys, search_runs_page

    authorize(ident, "read", experiment=experiment)
    all_experiments = list_experiments()
    scope: list[str | int] = [experiment] if experiment else [e["name"] for e in all_experiments]
    chosen = _split(columns)
    error: KeelError | None = None
    rows: list[dict[str, Any]] = []
    total = 0
    keys: dict[str, list[str]] = {"param": [], "metric": [], "tag": []}
    shown: list[str] = []
    if scope:
        try:
            keys = run_keys(scope)
            # by default, the first metrics and params that the runs on this page have (a filter to the tuning trials
            # shows their params, not the pipeline steps' empty columns); read from a bounded set of candidates
            shown = _check_columns(chosen, keys) if chosen else (
                [f"metrics.{k}" for k in keys["metric"][:DEFAULT_CANDIDATES]] + [f"params.{k}" for k in keys["param"][:DEFAULT_CANDIDATES]])
            sort_col, _desc = _sort_column(sort) if sort else ("", False)
            if sort_col.startswith(("metrics.", "params.", "tags.")) and sort_col not in shown:
                shown = [sort_col, *shown]
            frame, total = search_runs_page(scope, filter.strip() or None, [sort] if sort.strip() else None, columns=shown or [],
                                            offset=(page_no - 1) * per_page, limit=per_page)
            if not chosen:
                shown = _default_columns(frame, shown, sort_col)
            rows = _table_rows(frame, shown)
        except KeelError as exc:
            error = exc
            rows, total = [], 0
    pages = max(1, math.ceil(total / per_page))
    state = {"experiment": experiment or "", "filter": filter, "sort": sort, "columns": ",".join(chosen), "per_page": per_page}

    def url(**changes: Any) -> str:
        q = {**state, "page": page_no, **changes}
        if q.get("per_page") == PAGE_SIZE:
            q.pop("per_page")
        if q.get("page") == 1:
            q.pop("page")
        return "/runs?" + urlencode({k: v for k, v in q.items() if v not in ("", None)})

    sort_col, sort_desc = _sort_column(sort) if sort else ("start_time", True)

    def sort_url(col: str) -> str:
        desc = not sort_desc if col == sort_col else col.startswith("metrics.") or col == "start_time"
        return url(sort=f"{col} {'DESC' if desc else 'ASC'}", page=1)

    def aria_sort(col: str) -> str:
        return ("descending" if sort_desc else "ascending") if col == sort_col else ""

    return page(
        request, ident, "runs/runs.html", section="runs", title=f"Runs of {experiment}" if experiment else "Runs",
        status_code=error.http_status if error is not None and error.http_status < 500 else (400 if error else 200),
        experiment=experiment or "", experiments=all_experiments, filter=filter, sort=sort, chosen=chosen, shown=shown,
        keys=keys, rows=rows, total=total, page_no=page_no, pages=pages, per_page=per_page, error=error,
        first=(page_no - 1) * per_page + 1 if rows else 0, last=(page_no - 1) * per_page + len(rows),
        url=url, sort_url=sort_url, aria_sort=aria_sort, compare_max=COMPARE_MAX,
    )


def _default_columns(frame: Any, candidates: list[str], sort_col: str) -> list[str]:
    """The sort column, then the first DEFAULT_METRICS metrics and DEFAULT_PARAMS params with a value on the page
    (the first candidates when the page is empty)."""
    has = [c for c in candidates if c in frame.columns and frame[c].notna().any()] if len(frame) else candidates
    metrics = [c for c in has if c.startswith("metrics.") and c != sort_col][:DEFAULT_METRICS]
    params = [c for c in has if c.startswith("params.") and c != sort_col][:DEFAULT_PARAMS]
    return ([sort_col] if sort_col in candidates else []) + metrics + params


def _table_rows(frame: Any, shown: list[str]) -> list[dict[str, Any]]:
    cols = {c: frame[c].tolist() if c in frame.columns else [None] * len(frame) for c in shown}
    out = []
    for i, (rid, name, status, start, end, user, parent) in enumerate(zip(
            frame["run_id"], frame["run_name"], frame["status"], frame["start_time"], frame["end_time"], frame["user"],
            frame["parent_id"], strict=True)):
        start_ms, end_ms = _ms(start), _ms(end)
        values = [cols[c][i] for c in shown]
        out.append({"id": rid, "name": name, "status": status, "start_ms": start_ms, "user": user, "parent_id": parent,
                    "duration_ms": end_ms - start_ms if start_ms is not None and end_ms is not None else None,
                    "values": [None if isinstance(v, float) and math.isnan(v) else v for v in values]})
    return out


# -- /compare --------------------------------------------------------------------------------

def _x_values(axis: str, steps: Any, ts: Any, start_ms: int | None) -> Any:
    import numpy as np

    if axis == "time":
        return ts.astype(float) / 1000.0
    if axis == "relative":
        origin = start_ms if start_ms is not None else (int(ts[0]) if len(ts) else 0)
        return (ts.astype(float) - origin) / 1000.0
    return np.asarray(steps, dtype=float)


def _time_label(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%H:%M:%S")


def _curves(infos: list[Any], axis: str, smooth: float, width: int) -> tuple[list[dict[str, Any]], list[str]]:
    """One chart per metric (the first :data:`MAX_CHARTS`), every run's curve on it; and the metrics left out."""
    from keel.tracking.query import metric_histories

    names = sorted({k for info in infos for k in info.metrics})
    drawn, rest = names[:MAX_CHARTS], names[MAX_CHARTS:]
    histories = metric_histories([i.id for i in infos], drawn)
    charts = []
    for key in drawn:
        series: dict[str, tuple[Any, Any]] = {}
        points = 0
        for info in infos:
            found = histories.get((info.id, key))
            if found is None:
                continue
            steps, ts, vals = found
            points += len(vals)
            start = _ms(info.start_time) if info.start_time else None
            series[_short(info.id, info.name)] = (_x_values(axis, steps, ts, start), svg.ema(vals, smooth) if smooth else vals)
        chart = svg.line_chart(series, title=key, width=width, height=280, x_label=X_AXES[axis], y_label=key,
                               x_format=_time_label if axis == "time" else None)
        charts.append({"key": key, "svg": chart, "points": points, "runs": len(series)})
    return charts, rest


def _numeric_params(param_rows: list[dict[str, Any]]) -> list[str]:
    """Params whose values are numbers on at least two of the runs and not all equal."""
    out = []
    for row in param_rows:
        nums = {v for v in (_num(x) for x in row["values"]) if v is not None}
        if len(nums) >= 2:
            out.append(row["key"])
    return out


def _side_by_side(infos: list[Any], attr: str) -> list[dict[str, Any]]:
    keys = sorted({k for info in infos for k in getattr(info, attr)})
    rows = []
    for k in keys:
        values = [getattr(info, attr).get(k) for info in infos]
        comparable = ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in values]
        rows.append({"key": k, "values": values, "differs": len({repr(v) for v in comparable}) > 1})
    return rows


def _scatters(points_by_run: list[tuple[str, str, dict[str, Any], dict[str, float]]], params: list[str], metric: str,
              best_high: bool = True) -> list[dict[str, Any]]:
    """One scatter per param: x the param's value, y ``metric``, a point per run (linked to it)."""
    out = []
    ys = [m.get(metric) for _rid, _label, _p, m in points_by_run]
    finite = [(i, y) for i, y in enumerate(ys) if y is not None and math.isfinite(y)]
    best = (max if best_high else min)(finite, key=lambda t: t[1])[0] if finite else None
    for key in params:
        pts: list[tuple[float, float, str]] = []
        hrefs: list[str | None] = []
        for rid, label, p, m in points_by_run:
            x, y = _num(p.get(key)), m.get(metric)
            pts.append((x if x is not None else math.nan, y if y is not None else math.nan, label))
            hrefs.append(f"/runs/{rid}")
        out.append({"param": key, "svg": svg.scatter(pts, title=f"{metric} by {key}", x_label=key, y_label=metric, hrefs=hrefs, best=best)})
    return out


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, runs: list[str] = Query([]), x: str = "step", smooth: float = Query(0.0, ge=0.0, lt=1.0),
                 metric: str = "", ident: Identity = IDENT) -> HTMLResponse:
    from keel.tracking.query import get_run

    refs = _split(runs)
    if not COMPARE_MIN <= len(refs) <= COMPARE_MAX:
        raise ValidationError(f"Compare needs {COMPARE_MIN} to {COMPARE_MAX} runs; got {len(refs)}"
                              + (f" ({', '.join(r[:12] for r in refs[:12])}{', ...' if len(refs) > 12 else ''})." if refs else "."),
                              hint=f"Tick {COMPARE_MIN} to {COMPARE_MAX} runs in the runs table and press Compare, or open /compare?runs=ID1,ID2.")
    if x not in X_AXES:
        raise ValidationError(f"x={x!r} is no x axis.", hint=f"Use one of {', '.join(X_AXES)}.")
    authorize(ident, "read")
    infos: list[Any] = []
    for ref in refs:
        info = get_run(ref)
        authorize(ident, "read", experiment=info.experiment)
        if info.id not in [i.id for i in infos]:
            infos.append(info)
    if len(infos) < COMPARE_MIN:
        raise ValidationError(f"Compare needs {COMPARE_MIN} different runs; {', '.join(refs)} name one.", hint="Tick another run.")
    params = _side_by_side(infos, "params")
    metrics = _side_by_side(infos, "metrics")
    charts, rest = _curves(infos, x, smooth, width=640)
    metric_keys = [m["key"] for m in metrics]
    if metric and metric not in metric_keys:
        raise ValidationError(f"None of these runs has metric {metric!r}." + did_you_mean(metric, metric_keys), hint="Pick one from the list.")
    y_metric = metric or (metric_keys[0] if metric_keys else "")
    numeric = _numeric_params(params)
    scatters = _scatters([(i.id, _short(i.id, i.name), i.params, i.metrics) for i in infos], numeric, y_metric) if y_metric else []
    ids = ",".join(i.id for i in infos)
    return page(request, ident, "runs/compare.html", section="runs", title=f"Compare {len(infos)} runs", infos=infos,
                params=params, metrics=metrics, charts=charts, rest=rest, x=x, x_axes=X_AXES, smooth=smooth,
                smoothing=sorted({*SMOOTHING, smooth}), metric=y_metric, metric_keys=metric_keys, scatters=scatters, ids=ids,
                palette=svg.PALETTE, n_params_differ=sum(r["differs"] for r in params))


# -- /runs/{id} ------------------------------------------------------------------------------

def _folder(artifacts: list[dict[str, Any]], prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(sub-folders with their file count and size, files) directly under ``prefix``."""
    base = prefix + "/" if prefix else ""
    folders: dict[str, dict[str, Any]] = {}
    files = []
    for a in artifacts:
        path = a["path"]
        if not path.startswith(base):
            continue
        rest = path[len(base):]
        if "/" in rest:
            name = rest.split("/", 1)[0]
            f = folders.setdefault(name, {"name": name, "path": base + name, "files": 0, "size": 0})
            f["files"] += 1
            f["size"] += int(a["size"])
        else:
            files.append({**a, "name": rest})
    return sorted(folders.values(), key=lambda f: f["name"]), files


def _children(info: Any, metric: str) -> dict[str, Any]:
    """The run's children (a tuning parent's trials): a table of the first 100, scatter plots over all."""
    from keel.tracking.search import search_runs

    if not info.children:
        return {"rows": [], "total": 0, "scatters": [], "metric": "", "metric_keys": [], "compare": ""}
    frame = search_runs(info.experiment_id, filter=f"parent_id = '{info.id}'", order_by=["start_time"], max_results=MAX_CHILDREN)
    metric_cols = [c for c in frame.columns if c.startswith("metrics.")]
    param_cols = [c for c in frame.columns if c.startswith("params.")]
    metric_keys = [c[len("metrics."):] for c in metric_cols]
    if metric and metric not in metric_keys:
        raise ValidationError(f"No child run of {info.id} has metric {metric!r}." + did_you_mean(metric, metric_keys), hint="Pick one from the list.")
    y = metric or next((k for k in metric_keys if k in ("value", "objective", "score")), metric_keys[0] if metric_keys else "")
    records = frame.to_dict(orient="records")
    runs = [(r["run_id"], _short(r["run_id"], r["run_name"]),
             {c[len("params."):]: r[c] for c in param_cols if r[c] is not None},
             {c[len("metrics."):]: float(r[c]) for c in metric_cols if r[c] == r[c]}) for r in records]
    scatters: list[dict[str, Any]] = []
    compare = ""
    if y:
        numeric = [c[len("params."):] for c in param_cols
                   if len({v for v in (_num(r[c]) for r in records) if v is not None}) >= 2]
        higher = not any(w in y.lower() for w in ("loss", "error", "rmse", "mae", "mse"))
        scatters = _scatters(runs, numeric[:8], y, best_high=higher)
        ranked = sorted((r for r in runs if y in r[3] and math.isfinite(r[3][y])), key=lambda r: r[3][y], reverse=higher)
        if len(ranked) >= COMPARE_MIN:
            compare = ",".join(r[0] for r in ranked[:COMPARE_MAX])
    rows = [{"id": rid, "label": label, "status": r["status"], "value": m.get(y)} for (rid, label, _p, m), r in zip(runs, records, strict=True)][:100]
    return {"rows": rows, "total": len(records), "scatters": scatters, "metric": y, "metric_keys": metric_keys, "compare": compare}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, path: str = "", metric: str = "", ident: Identity = IDENT) -> HTMLResponse:
    from keel.registry.versions import versions_of_run
    from keel.store.blobs import check_artifact_path
    from keel.tracking.environment import LOCK_ARTIFACT
    from keel.tracking.query import get_run, metric_histories

    authorize(ident, "read")
    info = get_run(run_id)
    authorize(ident, "read", experiment=info.experiment)
    prefix = check_artifact_path(path) if path else ""
    folders, files = _folder(info.artifacts, prefix)
    if prefix and not folders and not files:
        raise NotFoundError(f"Run {info.id} has no artifact folder {prefix!r}.", hint=f"Browse the run's artifacts at /runs/{info.id}.")
    keys = sorted(info.metrics)
    histories = metric_histories([info.id], keys)
    curves = [k for k in keys if len(histories.get((info.id, k), ((), (), ()))[2]) > 1]  # one value is a number, not a curve
    plots = []
    for key in curves[:MAX_CHARTS]:
        steps, _ts, vals = histories[(info.id, key)]
        plots.append({"key": key, "points": len(vals),
                      "svg": svg.line_chart({key: (steps, vals)}, title=key, width=460, height=220, x_label="step", y_label=key)})
    paths = {a["path"] for a in info.artifacts}
    git = info.env.get("git") or {}
    from keel.tracking.environment import DIFF_ARTIFACT

    crumbs = []
    acc = []
    for part in prefix.split("/") if prefix else []:
        acc.append(part)
        crumbs.append({"name": part, "path": "/".join(acc)})
    return page(
        request, ident, "runs/run.html", section="runs", title=info.name, info=info, plots=plots, more_metrics=curves[MAX_CHARTS:],
        folders=folders, files=files, prefix=prefix, crumbs=crumbs, git=git, env=info.env,
        lock=LOCK_ARTIFACT if LOCK_ARTIFACT in paths else "", diff=DIFF_ARTIFACT if DIFF_ARTIFACT in paths else "",
        versions=versions_of_run(info.id), children=_children(info, metric), quote=quote,
        system_tags={k: v for k, v in info.tags.items() if k.startswith(("keel.", "mlflow."))},
        user_tags={k: v for k, v in info.tags.items() if not k.startswith(("keel.", "mlflow."))},
    )


@router.get("/runs/{run_id}/artifacts/{path:path}")
def download_artifact(run_id: str, path: str, inline: bool = False, ident: Identity = IDENT) -> FileResponse:
    """An artifact's bytes, checked against its sha256 first (as the library does before it loads one)."""
    from keel.store.blobs import check_artifact_path, get_artifact_store
    from keel.tracking.artifacts import list_artifacts
    from keel.tracking.query import get_run

    name = check_artifact_path(path)
    authorize(ident, "read")
    info = get_run(run_id)
    authorize(ident, "read", experiment=info.experiment)
    found = [a for a in list_artifacts(info.id) if a["path"] == name]
    if not found:
        under = [a["path"] for a in info.artifacts if a["path"].startswith(name + "/")]
        hint = (f"{name!r} is a folder: browse it at /runs/{info.id}?path={quote(name)}." if under
                else f"Browse the run's artifacts at /runs/{info.id}.")
        raise NotFoundError(f"Run {info.id} has no artifact {name!r}." + did_you_mean(name, [a["path"] for a in info.artifacts]), hint=hint)
    art = found[0]
    fd, tmp = tempfile.mkstemp(prefix="keel-ui-download-")
    os.close(fd)
    try:
        get_artifact_store().get_file(art["digest"], Path(tmp), what=f"{name} of run {info.id}")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    filename = name.rsplit("/", 1)[-1]
    media = art.get("media_type") or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_")
    shown = inline and media in INLINE_TYPES  # never an artifact's HTML or SVG rendered in the UI's origin
    disposition = f"{'inline' if shown else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return FileResponse(tmp, media_type=media, headers={"Content-Disposition": disposition, "X-Keel-Sha256": art["digest"],
                                                        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
                        background=BackgroundTask(Path(tmp).unlink, missing_ok=True))
