"""Monitors: declared in code or keel.yaml, run over their window, stored as time series, reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from keel.errors import NotFoundError, ValidationError
from keel.monitoring import monitors as M
from keel.monitoring import results as R
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-02-01", tz="UTC")


def test_a_monitor_run_flags_the_shifted_feature_and_stores_the_series(registered: Callable[..., Any]) -> None:
    registered()
    log_rows("churn", 1, make_data(1500, 11), T0, step_s=50)  # day 1
    log_rows("churn", 1, make_data(1500, 12, shift=15.0), T0 + pd.Timedelta(days=1), step_s=50, prefix="d2")
    log_rows("churn", 1, make_data(300, 13), T0 + pd.Timedelta(days=1), step_s=50, prefix="sh", route="shadow", score=[0.99] * 300)
    M.define_monitor("daily", "churn", window="1d", objectives={"latency_p99_ms": 1.0, "min_volume": 10})
    day1 = M.run_monitor("daily", end=T0 + pd.Timedelta(days=1))
    day2 = M.run_monitor("daily", end=T0 + pd.Timedelta(days=2))
    assert day1.rows == 1500 and day2.rows == 1500  # the shadow route is not read
    inputs = {"charges", "tenure", "control", "plan"}
    assert set(day1.drifted) & inputs == set() and set(day2.drifted) & inputs == {"charges"}
    assert day2.status == "alert" and day2.service["objectives"]["latency_p99_ms"]["level"] == "alert"
    assert day2.service["error_rate"] == 0.0 and day2.service["missing_feature_rate"] == 0.0
    ks = R.series("daily", kind="drift", column="charges", statistic="ks")
    assert len(ks) == 2 and ks["level"].tolist() == ["ok", "alert"] and ks["threshold"].notna().all()
    assert ks["value"].iloc[1] > ks["threshold"].iloc[1]
    assert set(R.series("daily", kind="estimated")["statistic"]) >= {"accuracy", "roc_auc"}
    again = M.run_monitor("daily", end=T0 + pd.Timedelta(days=2))  # the same window again replaces its points
    assert again.status == "alert" and len(R.series("daily", kind="drift", column="charges", statistic="ks")) == 2
    assert len(R.runs("daily")) == 2 and R.runs("daily")[0]["status"] == "alert"


def test_report_is_a_self_contained_page_with_plots(registered: Callable[..., Any], project: Path) -> None:
    registered()
    for day in range(3):
        log_rows("churn", 1, make_data(800, 20 + day, shift=10.0 * (day == 2)), T0 + pd.Timedelta(days=day), step_s=100, prefix=f"d{day}")
    M.define_monitor("daily", "churn", window="1d")
    with pytest.raises(NotFoundError, match="keel monitor run daily"):
        R.write_report("daily", project / "r.html")
    for day in range(3):
        M.run_monitor("daily", end=T0 + pd.Timedelta(days=day + 1))
    path = R.write_report("daily", project / "out" / "report.html")
    page = path.read_text()
    assert page.startswith("<!doctype html>") and "Drift over time" in page and "realized vs estimated" in page
    assert page.count("<svg") >= 8 and "http" not in page.split("<body>", 1)[1].replace("http://www.w3.org/2000/svg", "")


def test_monitors_from_keel_yaml_and_bad_declarations(registered: Callable[..., Any], project: Path) -> None:
    registered()
    doc = yaml.safe_load((project / "keel.yaml").read_text()) or {}
    doc["monitors"] = {"hourly": {"model": "churn", "window": "500 predictions", "schedule": "0 * * * *", "segments": ["plan"]}}
    (project / "keel.yaml").write_text(yaml.safe_dump(doc))
    from keel import config

    config.reset()
    M.define_monitor("coded", "churn")
    assert [(m.name, m.origin) for m in M.list_monitors()] == [("coded", "code"), ("hourly", "keel.yaml")]
    spec = M.get_monitor("hourly")
    assert spec.window_spec() == 500 and spec.segments == ["plan"]
    assert M.due_monitors(pd.Timestamp("2026-02-01 05:00", tz="UTC").to_pydatetime()) == ["hourly"]
    assert M.due_monitors(pd.Timestamp("2026-02-01 05:30", tz="UTC").to_pydatetime()) == []
    log_rows("churn", 1, make_data(700, 30), T0, step_s=10)
    result = M.run_monitor("hourly", end=T0 + pd.Timedelta(days=1))
    assert result.rows == 500
    with pytest.raises(NotFoundError, match="Did you mean 'hourly'"):
        M.get_monitor("hourly2")
    with pytest.raises(ValidationError, match="Did you mean 'drift'"):
        M.define_monitor("bad", "churn", checks=["drfit"])
    with pytest.raises(ValidationError, match="unknown setting 'windw'"):
        M.define_monitor("bad", "churn", windw="1d")
    with pytest.raises(ValidationError, match="not a positive count"):
        M.define_monitor("bad", "churn", window="0 predictions")
    with pytest.raises(ValidationError, match="5 fields"):
        M.define_monitor("bad", "churn", schedule="hourly")
    with pytest.raises(ValidationError, match="sink kind 'pager'"):
        M.define_monitor("bad", "churn", alerts=[{"kind": "pager"}])


def test_empty_window_and_missing_baseline_are_clear_results(registered: Callable[..., Any]) -> None:
    registered(validation=False)
    M.define_monitor("daily", "churn", window="1d")
    empty = M.run_monitor("daily", end=T0)
    assert empty.status == "no_data" and "nothing to compare" in empty.notes[0]
    log_rows("churn", 1, make_data(200, 40), T0, step_s=10)
    nob = M.run_monitor("daily", end=T0 + pd.Timedelta(days=1))
    assert nob.status == "no_baseline" and "keel monitor baseline churn --version 1" in nob.notes[0]


def test_each_version_is_compared_with_its_own_baseline(registered: Callable[..., Any]) -> None:
    registered()
    registered(seed=5)  # v2, its own validation data and baseline
    log_rows("churn", 1, make_data(600, 50), T0, step_s=10, prefix="a")
    log_rows("churn", 2, make_data(600, 51, shift=12.0), T0, step_s=10, prefix="b")
    M.define_monitor("daily", "churn", window="1d")
    result = M.run_monitor("daily", end=T0 + pd.Timedelta(days=1))
    by = {v.version: v for v in result.versions}
    assert sorted(by) == [1, 2] and by[1].rows == 600
    assert "charges" not in by[1].drift.drifted and "charges" in by[2].drift.drifted  # type: ignore[union-attr]
