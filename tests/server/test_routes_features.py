"""/v1/features: definitions, online reads by entity key and pushes of JSON rows, over the project's feature store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.features.conftest import EXAMPLE, make_churn_data
from tests.server._api import api_client


@pytest.fixture
def features_project(project: Path) -> Iterator[Path]:
    from keel.features import loader, online
    from keel.features.registry import apply
    from keel.store import kv

    online.reset_context()
    shutil.copy(EXAMPLE, project / "features.py")
    make_churn_data(project)
    apply()
    yield project
    loader.clear_cache()
    online.reset_context()
    kv.reset_kv_stores()


def _row(customer: int, sessions: int = 4, minutes: float = 10.0) -> dict[str, object]:
    return {"customer_id": customer, "sessions": sessions, "minutes": minutes, "support_tickets": 0, "payment_failures": 1,
            "event_timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}


def test_definitions_list_and_show(features_project: Path) -> None:
    with api_client() as api:
        found = {(d["kind"], d["name"]): d for d in api.get("/v1/features/definitions").json()}
        assert ("feature_view", "usage") in found and ("feature_service", "churn_v1") in found
        assert found[("feature_view", "usage")]["owner"] == "growth@example.com"
        assert "minutes_per_session" in found[("feature_view", "usage")]["features"]
        one = api.get("/v1/features/definitions/usage", params={"kind": "feature_view"}).json()
        assert one["version"] == 1 and one["spec"]["ttl_seconds"] == 30 * 86400 and [h["version"] for h in one["history"]] == [1]
        r = api.get("/v1/features/definitions/usag")
        assert r.status_code == 404 and "usage" in r.json()["message"]  # did you mean
        assert api.get("/v1/features/definitions/usage", params={"kind": "nonsense"}).status_code == 422


def test_push_json_rows_then_read_online(features_project: Path) -> None:
    with api_client() as api:
        r = api.post("/v1/features/views/usage/push", json={"rows": [_row(7), _row(8, sessions=5, minutes=20.0)], "to": "online"})
        assert r.status_code == 200, r.text
        assert (r.json()["rows"], r.json()["keys_written"]) == (2, 2)
        r = api.post("/v1/features/online", json={"features": ["usage:minutes_per_session", "usage:sessions"],
                                                  "entity_rows": [{"customer_id": 7}, {"customer_id": 8}, {"customer_id": 999}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["values"]["minutes_per_session"] == [2.5, 4.0, None]
        assert body["status"]["sessions"] == ["present", "present", "missing"]
        assert body["rows"]["customer_id"] == [7, 8, 999]
        # columns as a dict of lists work too, and status can be left out
        r = api.post("/v1/features/online", json={"features": ["usage:sessions"], "entity_rows": {"customer_id": [8]}, "with_status": False})
        assert r.json()["values"]["sessions"] == [5] and r.json().get("status") is None


def test_bad_pushes_and_reads_are_4xx(features_project: Path) -> None:
    with api_client() as api:
        bad = _row(7)
        bad["event_timestamp"] = "yesterday-ish"
        r = api.post("/v1/features/views/usage/push", json={"rows": [bad]})
        assert r.status_code == 422 and "ISO-8601" in r.json()["message"]
        r = api.post("/v1/features/views/usage/push", json={"rows": [{"customer_id": 7}]})
        assert r.status_code == 422 and "lack column" in r.json()["message"]
        r = api.post("/v1/features/views/usage/push", json={"rows": [_row(7), {**_row(8), "sessions": "many"}]})
        assert r.status_code == 422
        assert api.post("/v1/features/views/nope/push", json={"rows": [_row(7)]}).status_code == 404
        assert api.post("/v1/features/views/usage/push", json={"rows": []}).status_code == 422
        r = api.post("/v1/features/online", json={"features": ["usage:nope"], "entity_rows": [{"customer_id": 7}]})
        assert r.status_code in (404, 422) and "nope" in r.json()["message"]
