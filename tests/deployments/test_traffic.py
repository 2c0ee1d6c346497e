"""traffic(): a deployment's requests, errors and latency per route and time bucket, from one aggregate over the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from keel.errors import NotFoundError, ValidationError
from tests.monitoring.conftest import log_rows, make_data, registered  # noqa: F401 - the fixture


def test_traffic_buckets_per_route(registered: Callable[..., Any]) -> None:  # noqa: F811 - the imported fixture
    from keel.deployments.specs import build_spec, deploy
    from keel.deployments.traffic import traffic

    registered("churn", seed=0)
    registered("churn", seed=3)
    deploy(build_spec("live", model="churn/1", canary="churn/2", weight=20))
    end = pd.Timestamp.now(tz="UTC").floor("h")
    start = end - pd.Timedelta(hours=2)
    log_rows("churn", 1, make_data(120, 1), start, step_s=60, route="champion", prefix="a", latency_ms=4.0)  # 2 h, one a minute
    log_rows("churn", 2, make_data(30, 2), start, step_s=240, route="canary", prefix="b", status="error", latency_ms=9.0)
    log_rows("churn", 1, make_data(50, 3), start, step_s=60, route="other", prefix="c")  # not a route of the deployment
    log_rows("churn", 1, make_data(10, 4), start - pd.Timedelta(hours=5), step_s=60, route="champion", prefix="d")  # before the window
    t = traffic("live", since=start.to_pydatetime(), end=end.to_pydatetime(), buckets=4)
    assert t["bucket_s"] == 1800 and set(t["routes"]) == {"champion", "canary"}
    champ, canary = t["routes"]["champion"], t["routes"]["canary"]
    assert [p["requests"] for p in champ] == [30, 30, 30, 30] and all(p["errors"] == 0 and p["p99_ms"] == 4.0 for p in champ)
    assert sum(p["requests"] for p in canary) == 30 and all(p["errors"] == p["requests"] and p["p50_ms"] == 9.0 for p in canary)
    assert champ[0]["t"] == start.timestamp() + 900  # bucket midpoints
    with pytest.raises(ValidationError, match="buckets=0"):
        traffic("live", buckets=0)
    with pytest.raises(NotFoundError, match="Did you mean 'live'"):
        traffic("liv")
