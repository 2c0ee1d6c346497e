"""/v1/monitors and /v1/alerts: list, run and read results; list, ack and resolve alerts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from tests.monitoring.conftest import log_rows, make_data
from tests.monitoring.conftest import registered as registered
from tests.server._api import api_client

T0 = pd.Timestamp("2026-03-01", tz="UTC")
END = T0 + pd.Timedelta(days=1)


@pytest.fixture
def drifting(registered: Callable[..., Any]) -> None:
    from keel.monitoring import monitors as M

    registered()
    log_rows("churn", 1, make_data(1500, 60, shift=20.0), T0, step_s=50)
    M.define_monitor("daily", "churn", window="1d")


def test_run_a_monitor_and_handle_its_alerts(drifting: None) -> None:
    with api_client() as api:
        listed = api.get("/v1/monitors").json()
        assert [(m["name"], m["model"], m["last_run"]) for m in listed] == [("daily", "churn", None)]
        r = api.post("/v1/monitors/daily/run", json={"end": END.isoformat()})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["status"] == "alert" and result["rows"] == 1500 and "charges" in result["drifted"]
        assert result["alerts"]

        runs = api.get("/v1/monitors/daily/results").json()
        assert len(runs) == 1 and runs[0]["status"] == "alert"
        assert api.get("/v1/monitors/daily").json()["runs"][0]["run_id"] == runs[0]["run_id"]
        latest = api.get("/v1/monitors/daily/results/latest").json()
        assert latest["status"] == "alert"
        assert api.get("/v1/monitors").json()[0]["last_run"]["status"] == "alert"

        alerts = api.get("/v1/alerts", params={"status": "open"}).json()
        assert alerts and all(a["monitor"] == "daily" for a in alerts)
        assert all("image_svg" not in a["context"] for a in alerts)
        first = alerts[0]["id"]
        assert api.get(f"/v1/alerts/{first}").json()["id"] == first
        r = api.post(f"/v1/alerts/{first}/ack")
        assert r.status_code == 200 and r.json()["status"] == "acked"
        assert api.post(f"/v1/alerts/{first}/resolve").json()["status"] == "resolved"
        r = api.post(f"/v1/alerts/{first}/resolve")
        assert r.status_code == 422 and "already resolved" in r.json()["message"]
        assert api.post("/v1/alerts/999999/ack").status_code == 404


def test_unknown_monitors_and_bad_input(drifting: None) -> None:
    with api_client() as api:
        r = api.post("/v1/monitors/dialy/run", json={})
        assert r.status_code == 404 and "daily" in r.json()["message"]
        assert api.get("/v1/monitors/daily/results/latest").status_code == 404  # not run yet
        assert api.get("/v1/alerts", params={"status": "closed"}).status_code == 422
        assert api.post("/v1/monitors/daily/run", json={"end": "tomorrow"}).status_code == 422
