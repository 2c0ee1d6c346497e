"""/v1/retraining: viewers read, members declare, run, pause and resume; the authenticated user is on every event; bad input is a 4xx."""

from __future__ import annotations

from typing import Any

import pytest

from tests.loop.test_policies import champion as champion
from tests.server.auth_fixtures import bearer

pytestmark = pytest.mark.anyio


async def test_retraining_routes_with_roles(champion: dict[str, Any], auth_client: Any, auth_people: dict[str, str]) -> None:
    viewer, member = bearer(auth_people["viewer"]), bearer(auth_people["member"])
    body = {"name": "churn-retrain", "model": "churn", "triggers": [{"alert": "churn-daily"}], "window": "2d",
            "window_source": "labelled.parquet", "window_column": "ts"}
    refused = await auth_client.post("/v1/retraining", json=body, headers=viewer)
    assert refused.status_code == 403
    r = await auth_client.post("/v1/retraining", json=body, headers=member)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["pipeline"] == f"{champion['module']}:retrain"

    listed = await auth_client.get("/v1/retraining", headers=viewer)
    assert [p["name"] for p in listed.json()] == ["churn-retrain"]
    shown = (await auth_client.get("/v1/retraining/churn-retrain", headers=viewer)).json()
    assert shown["owners"] == ["r_member"] and shown["schedules"][0]["name"] == "retraining.churn-retrain.0"

    assert (await auth_client.post("/v1/retraining/churn-retrain/run", json={"mode": "dry-run"}, headers=viewer)).status_code == 403
    dry = await auth_client.post("/v1/retraining/churn-retrain/run", json={"mode": "dry-run"}, headers=member)
    assert dry.status_code == 200 and dry.json()["status"] == "dry-run"
    paused = await auth_client.post("/v1/retraining/churn-retrain/pause", json={"reason": "labels late"}, headers=member)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    skipped = await auth_client.post("/v1/retraining/churn-retrain/run", json={}, headers=member)
    assert skipped.json()["status"] == "skipped"
    events = (await auth_client.get("/v1/retraining/churn-retrain/history", headers=viewer)).json()
    assert [e["action"] for e in events] == ["trigger", "pause", "dry_run", "declare"]
    assert {e["user"] for e in events} == {"r_member"}
    assert events[0]["trigger"] == {"kind": "manual", "by": "r_member"}


async def test_retraining_bad_input(champion: dict[str, Any], auth_client: Any, auth_people: dict[str, str]) -> None:
    member = bearer(auth_people["member"])
    r = await auth_client.get("/v1/retraining/nope", headers=member)
    assert r.status_code == 404 and "No retraining policy named 'nope'" in r.json()["message"]
    r = await auth_client.post("/v1/retraining", json={"name": "p", "model": "churn", "triggers": [{"alert": "churn-dialy"}]}, headers=member)
    assert r.status_code == 404 and "Did you mean 'churn-daily'" in r.json()["message"]
    r = await auth_client.post("/v1/retraining", json={"name": "p", "model": "churn", "triggers": [{"model": "churn"}], "window_source": "labelled.parquet",
                                                       "window_column": "ts"}, headers=member)
    assert r.status_code == 422 and "would trigger itself" in r.json()["message"]
    r = await auth_client.post("/v1/retraining", json={"name": "p", "model": "churn", "triggers": [], "typo": 1}, headers=member)
    assert r.status_code == 422
    r = await auth_client.post("/v1/retraining/nope/run", json={"mode": "fast"}, headers=member)
    assert r.status_code == 422
