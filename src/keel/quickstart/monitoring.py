"""The quickstart's monitoring stage: a baseline for the production version, a monitor, and runs over logged traffic.

The production version's baseline is built from the validation split the
pipeline evaluated it on (a rerun finds it stored). Two days of traffic are
replayed through the prediction log: every customer's online features, scored by
the version, yesterday as they are and today with one known fault, a usage feed
that halves ``minutes_30d`` for basic-plan customers. The monitor
``churn-daily`` (window 1 day, segments plan and region) runs over both days:
yesterday nothing is flagged, today ``minutes_30d`` is, with the amount and the
segment driving it. A rerun in the same hour writes the same parts again (the
replay's part names are fixed), so the window holds one replay, not two.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

MODEL = "churn"
MONITOR = "churn-daily"
SHIFTED, SEGMENT, FACTOR = "minutes_30d", ("plan", "basic"), 0.5
REPLAY = "quickstart-replay"


def run(folder: Path, pipeline_run: Any, features_of: Any) -> dict[str, Any]:
    """Baseline, monitor, replayed traffic and the two monitor runs; returns what the stage shows."""
    from keel.monitoring import define_monitor, run_monitor
    from keel.monitoring.baselines import build_baseline, has_baseline
    from keel.registry.versions import resolve_version

    version = resolve_version(MODEL, "production").version
    built = False
    if not has_baseline(MODEL, version):  # the validation split the gates evaluated the version on
        _, valid = pipeline_run.load("split")
        build_baseline(MODEL, features_of(valid).assign(churned=valid["churned"].to_numpy()), version=version, target="churned")
        built = True
    define_monitor(MONITOR, MODEL, window="1d", segments=["plan", "region"], alerts=[])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # whole hours: a rerun in this hour rewrites the same parts
    rows = _replay(version, features_of, now)
    days = [run_monitor(MONITOR, end=now - timedelta(days=1)), run_monitor(MONITOR, end=now)]
    report = folder / "reports" / f"{MONITOR}.html"
    from keel.monitoring.results import write_report

    write_report(MONITOR, report)
    return {"version": version, "baseline_built": built, "replayed": rows, "report": str(report),
            "runs": [_summary(r) for r in days]}


def _replay(version: int, features_of: Any, now: datetime) -> int:
    """Every customer's online features, scored by ``version`` and logged for yesterday and today (today with the fault)."""
    import numpy as np
    import pyarrow as pa

    import keel
    from keel.store import predictions

    customers = [{"customer_id": int(i)} for i in range(1, _customers() + 1)]
    online = keel.get_online_features("churn_v1", customers).to_df()
    model = keel.load_model(f"models:/{MODEL}/{version}")
    n = len(online)
    written = 0
    for day, faulty in ((2, False), (1, True)):
        frame = online.copy()
        if faulty:
            basic = frame[SEGMENT[0]] == SEGMENT[1]
            frame.loc[basic, SHIFTED] = frame.loc[basic, SHIFTED] * FACTOR
        x = features_of(frame)
        score = model.predict_proba(x)[:, 1]
        start = now - timedelta(days=day)
        step = timedelta(days=1) / max(n, 1)  # spread over the day: every hour's partition gets rows, so a rerun replaces it
        cols: dict[str, Any] = {
            "request_id": pa.array([f"{REPLAY}-{start:%Y%m%dT%H}-{i}" for i in range(n)]),
            "ts": pa.array([start + step * i for i in range(n)], pa.timestamp("us", tz="UTC")),
            "model": pa.array([MODEL] * n), "version": pa.array(np.full(n, version, np.int64)),
            "route": pa.array(["default"] * n), "batch_id": pa.array([REPLAY] * n),
            "customer_id": pa.array(frame["customer_id"].to_numpy(np.int64)),
            **{c: pa.array(x[c].to_numpy()) for c in x.columns},
            "prediction": pa.array((score >= 0.5).astype(np.int64)), "score": pa.array(score.astype(np.float64)),
        }
        predictions.write(predictions.normalize(pa.table(cols)), writer=REPLAY)
        written += n
    return written


def _customers() -> int:
    import pandas as pd

    return int(pd.read_parquet(Path("data") / "customers.parquet", columns=["customer_id"])["customer_id"].max())


def _summary(result: Any) -> dict[str, Any]:
    columns = []
    for vr in result.versions:
        if vr.drift is None:
            continue
        for c in vr.drift.columns:
            columns.append({"column": c.column, "method": c.method, "statistic": c.statistic, "threshold": c.threshold,
                            "level": c.level, "shift": c.shift()})
    return {"window_start": result.window_start, "window_end": result.window_end, "rows": result.rows, "status": result.status,
            "drifted": result.drifted, "columns": columns, "alerts": [a["message"] for a in result.alerts if a["subject"] == SHIFTED],
            "notes": result.notes}


def show(console: Console, out: dict[str, Any]) -> None:
    """The two days side by side, and the alert."""
    if not out:
        return
    yesterday, today = out["runs"]
    console.print(f"  baseline of churn v{out['version']}: {'built from the validation split' if out['baseline_built'] else 'already stored'}; "
                  f"{out['replayed']:,} predictions replayed into the log (today: {SHIFTED} x{FACTOR} for {SEGMENT[0]} = {SEGMENT[1]})")
    t = Table(title=f"keel monitor run {MONITOR} (window 1 day, against v{out['version']}'s baseline)", header_style="bold")
    for col in ("column", "method", f"yesterday ({yesterday['rows']:,} rows)", f"today ({today['rows']:,} rows)", "today's shift"):
        t.add_column(col, overflow="fold")
    before = {c["column"]: c for c in yesterday["columns"]}
    for c in today["columns"]:
        t.add_row(c["column"], c["method"], _cell(before.get(c["column"])), _cell(c), escape(c["shift"]) if c["level"] == "alert" else "")
    console.print(t)
    for line in today["alerts"]:
        console.print(f"  [red]alert[/] {escape(line)}")
    console.print(f"  report: {out['report']} · keel alerts ls · keel monitor show {MONITOR}")


def _cell(c: dict[str, Any] | None) -> str:
    if c is None or c["statistic"] is None:
        return "-" if c is None else c["level"]
    style = {"alert": "red", "warn": "yellow"}.get(c["level"], "green")
    op = ">" if c["level"] == "alert" else "<="
    return f"[{style}]{c['statistic']:.3f} {op} {c['threshold']:.3f} {c['level']}[/]"
