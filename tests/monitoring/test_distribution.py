"""column_distribution(): one feature in one monitor window against the version's baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from keel.errors import NotFoundError
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def test_distribution_per_window_and_feature(registered: Callable[..., Any]) -> None:
    from keel.monitoring.distribution import column_distribution
    from keel.monitoring.monitors import define_monitor, run_monitor

    registered()
    log_rows("churn", 1, make_data(600, 7), T0, step_s=6, prefix="a")  # the first hour: like the reference
    log_rows("churn", 1, make_data(600, 8, shift=25.0), T0 + pd.Timedelta(hours=1), step_s=6, prefix="b")  # charges moved
    define_monitor("hourly", "churn", window="1h")
    for h in (1, 2):
        run_monitor("hourly", end=(T0 + pd.Timedelta(hours=h)).to_pydatetime())
    last = column_distribution("hourly", "charges")  # the last window by default
    assert last["version"] == 1 and last["rows"] == 600 and last["drift"]["level"] == "alert"
    h = last["histogram"]
    assert h["kind"] == "numeric" and len(h["edges"]) == 31 and abs(sum(h["current"]) - 1) < 1e-9 and abs(sum(h["reference"]) - 1) < 1e-9
    first = column_distribution("hourly", "charges", end=(T0 + pd.Timedelta(hours=1)).to_pydatetime())
    assert first["drift"]["level"] != "alert" and first["window_end"] == T0 + pd.Timedelta(hours=1)
    plan = column_distribution("hourly", "plan")
    assert plan["histogram"]["kind"] == "categorical" and {"basic", "plus", "pro"} <= set(plan["histogram"]["labels"])
    with pytest.raises(NotFoundError, match="Did you mean 'charges'"):
        column_distribution("hourly", "charge")
    with pytest.raises(NotFoundError, match="no predictions in the window"):
        column_distribution("hourly", "charges", end=(T0 - pd.Timedelta(days=2)).to_pydatetime())
    with pytest.raises(NotFoundError, match="v5 of churn has no predictions"):
        column_distribution("hourly", "charges", version=5)
