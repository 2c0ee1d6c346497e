"""One feature's distribution in one monitor window against the version's baseline (reference vs current).

``column_distribution("churn-daily", "charges", end=...)`` opens the monitor's window
ending at ``end`` (the last one by default), reads that one column of the version's
rows (the newest version in the window unless ``version`` is given), applies the
stored baseline's fitted reference to it and returns the shares per bin or category
(:meth:`~keel.monitoring.drift.DriftReport.histogram`) with the column's drift line.
The web UI's monitor page draws its distribution comparison from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from keel.errors import NotFoundError, did_you_mean


def column_distribution(monitor: str, column: str, *, end: datetime | None = None, version: int | None = None,
                        bins: int = 30) -> dict[str, Any]:
    """``{"monitor", "model", "version", "column", "window_start", "window_end", "rows", "histogram", "drift"}``."""
    from keel.monitoring.baselines import get_baseline
    from keel.monitoring.drift import compare
    from keel.monitoring.monitors import get_monitor
    from keel.monitoring.reference import Reference
    from keel.monitoring.window import open_window

    spec = get_monitor(monitor)
    if end is None:
        from keel.monitoring.results import runs

        last = runs(monitor, limit=1)
        end = last[0]["window_end"] if last else datetime.now(UTC)
    assert end is not None
    window = open_window(spec.model, spec.window_spec(), end.astimezone(UTC))
    versions = window.versions
    if not versions:
        raise NotFoundError(f"Monitor {monitor!r} has no predictions in the window ending {end:%Y-%m-%d %H:%M} UTC.",
                            hint="Pick another window, or run the monitor after traffic arrives.")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise NotFoundError(f"v{version} of {spec.model} has no predictions in that window (it has v{', v'.join(map(str, versions))}).")
    baseline = get_baseline(spec.model, version)
    ref = baseline.reference
    if column not in ref.columns:
        raise NotFoundError(f"Column {column!r} is not in the baseline of {spec.model} v{version}." + did_you_mean(column, list(ref.columns)),
                            hint=f"The baseline has {', '.join(sorted(ref.columns))}.")
    one = Reference({column: ref.columns[column]}, ref.rows, ref.n_chunks, ref.bins, {}, None, ref.sample)
    rows = window.read(version, [column])
    report = compare(one, rows, method=spec.method, thresholds=spec.thresholds, added=[])
    c = report[column]
    return {"monitor": monitor, "model": spec.model, "version": version, "versions": versions, "column": column,
            "window_start": window.start, "window_end": window.end, "rows": rows.num_rows,
            "histogram": report.histogram(column, bins),
            "drift": {"method": c.method, "statistic": c.statistic, "threshold": c.threshold, "level": c.level,
                      "describe": c.describe(), "shift": c.shift()}}
