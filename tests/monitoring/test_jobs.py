"""The ``monitor`` job kind: a schedule runs a monitor through keel's scheduler."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from keel.errors import NotFoundError
from keel.monitoring import monitors as M
from keel.monitoring import results as R
from tests.monitoring.conftest import log_rows, make_data


def test_a_schedule_runs_a_monitor_and_an_unknown_monitor_is_refused(registered: Callable[..., Any]) -> None:
    from keel.pipelines.schedule import add_schedule
    from keel.pipelines.triggers import run_scheduler

    registered()
    start = pd.Timestamp(datetime.now(UTC) - timedelta(minutes=50))
    log_rows("churn", 1, make_data(600, 3), start, step_s=2)
    M.define_monitor("hourly", "churn", window="1h")
    with pytest.raises(NotFoundError, match="hourly"):
        add_schedule("bad", "hourli", job="monitor", cron="* * * * *")
    add_schedule("every-minute", "hourly", job="monitor", cron="* * * * *")
    later = datetime.now(UTC) + timedelta(minutes=2)
    fired = run_scheduler(once=True, clock=lambda: later)
    assert [(f.schedule, f.status) for f in fired] == [("every-minute", "finished")]
    runs = R.runs("hourly")
    assert len(runs) == 1 and runs[0]["status"] in {"ok", "warn", "alert"}
