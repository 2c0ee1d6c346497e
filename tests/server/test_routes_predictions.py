"""/v1/predictions/query (SQL over the prediction log, external access off) and POST /v1/feedback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.monitoring.conftest import log_rows, make_data
from tests.monitoring.conftest import registered as registered
from tests.server._api import api_client

T0 = pd.Timestamp("2026-03-01", tz="UTC")


@pytest.fixture
def logged(registered: Callable[..., Any]) -> list[str]:
    registered()
    return log_rows("churn", 1, make_data(300, 7), T0, step_s=60)


def test_query_the_log(logged: list[str]) -> None:
    with api_client() as api:
        r = api.post("/v1/predictions/query", json={"sql": "SELECT version, count(*) AS n FROM predictions WHERE model = 'churn' GROUP BY version"})
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == [{"version": 1, "n": 300}] and r.json()["columns"] == ["version", "n"]
        r = api.post("/v1/predictions/query", json={"sql": "SELECT request_id, ts FROM predictions ORDER BY ts", "limit": 5, "model": "churn"})
        body = r.json()
        assert body["num_rows"] == 300 and len(body["rows"]) == 5 and body["truncated"] is True
        assert body["rows"][0]["request_id"] == logged[0] and body["rows"][0]["ts"].startswith("2026-03-01T00:00:00")


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/*.parquet')",
    "COPY (SELECT 1) TO '/tmp/keel-escape.csv'",
    "ATTACH '/tmp/keel-escape.db' AS x",
    "INSTALL httpfs",
    "SELECT 1; SELECT 2",
    "SET enable_external_access = true",
    "not sql at all",
])
def test_queries_cannot_reach_the_servers_files(logged: list[str], sql: str) -> None:
    with api_client() as api:
        r = api.post("/v1/predictions/query", json={"sql": sql})
    assert r.status_code == 422, (sql, r.status_code, r.text)
    assert "root:" not in r.text
    assert not Path("/tmp/keel-escape.csv").exists() and not Path("/tmp/keel-escape.db").exists()


def test_feedback_by_request_id(logged: list[str]) -> None:
    with api_client() as api:
        r = api.post("/v1/feedback", json={"request_ids": [*logged[:10], "nobody"], "labels": [1] * 10 + [0], "model": "churn"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["received"], body["stored"], body["matched"], body["unknown"]) == (11, 11, 10, 1)
        r = api.post("/v1/feedback", json={"request_ids": logged[:2], "labels": [1], "model": "churn"})
        assert r.status_code == 422 and "2 request ids for 1 labels" in r.json()["message"]
        assert api.post("/v1/feedback", json={"labels": [1], "model": "churn"}).status_code == 422
        assert api.post("/v1/feedback", json={"request_ids": ["x"], "labels": [1], "model": "churn", "horizon": "soon"}).status_code == 422
