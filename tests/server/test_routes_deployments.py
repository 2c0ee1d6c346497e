"""/v1/deployments: the keel deploy commands as routes, audited with the authenticated user, refused by role."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server._api import api_client, train
from tests.server.auth_fixtures import bearer


@pytest.fixture
def two_versions(project: Path) -> Path:
    train()
    train(seed=1)
    return project


def test_deployment_lifecycle(two_versions: Path) -> None:
    from keel.config import settings

    me = settings().acting_user
    with api_client() as api:
        r = api.post("/v1/deployments", json={"name": "churn-live", "model": "churn/1", "canary": "churn/2", "weight": 10, "reason": "try v2"})
        assert r.status_code == 200, r.text
        dep = r.json()
        assert dep["revision"] == 1 and dep["spec"]["mode"] == "canary" and [x["weight"] for x in dep["spec"]["routes"]] == [90, 10]
        assert [d["name"] for d in api.get("/v1/deployments").json()] == ["churn-live"]
        assert api.get("/v1/deployments/churn-live").json()["spec"]["routes"][1]["ref"] == "2"

        r = api.post("/v1/deployments/churn-live/set", json={"weight": 25})
        assert r.status_code == 200 and r.json()["revision"] == 2 and r.json()["spec"]["routes"][1]["weight"] == 25
        r = api.post("/v1/deployments/churn-live/rollback", json={"reason": "too fast"})
        assert r.status_code == 200 and r.json()["revision"] == 3 and r.json()["spec"]["routes"][1]["weight"] == 10
        events = api.get("/v1/deployments/churn-live/history").json()
        assert [(e["action"], e["user"]) for e in events] == [("create", me), ("set", me), ("rollback", me)]
        assert events[0]["reason"] == "try v2"

        status = api.get("/v1/deployments/churn-live/status", params={"since": "1h"}).json()
        assert status["deployment"]["name"] == "churn-live" and set(status["comparison"]["routes"]) == {"champion", "canary"}
        compared = api.get("/v1/deployments/churn-live/compare").json()
        assert compared["recommendation"] == "not enough data" and compared["routes"]["canary"]["requests"] == 0

        r = api.post("/v1/deployments/churn-live/promote", json={"to": "staging", "reason": "canary healthy"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["transition"]["to_version"] == 2 and out["transition"]["status"] == "applied"
        assert out["deployment"]["spec"]["mode"] == "single" and out["deployment"]["spec"]["routes"][0]["ref"] == "staging"
        assert api.get("/v1/deployments/churn-live/history").json()[-1]["action"] == "promote"

        r = api.delete("/v1/deployments/churn-live", params={"reason": "done"})
        assert r.status_code == 200 and r.json() == {"name": "churn-live", "deleted": True}
        assert api.get("/v1/deployments/churn-live").status_code == 404
        assert api.get("/v1/deployments/churn-live/history").json()[-1]["action"] == "delete"


def test_bad_input_is_a_4xx_that_names_the_fix(two_versions: Path) -> None:
    with api_client() as api:
        assert api.post("/v1/deployments", json={"name": "churn-live", "model": "churn/1"}).status_code == 200
        r = api.get("/v1/deployments/churn-lve")
        assert r.status_code == 404 and "Did you mean 'churn-live'" in r.json()["message"]
        assert api.post("/v1/deployments/churn-lve/set", json={"weight": 5}).status_code == 404
        r = api.post("/v1/deployments", json={"name": "x", "model": "churn/1", "canary": "churn/2", "weight": 150})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "weight"
        r = api.post("/v1/deployments", json={"name": "x", "ab": {"churn/1": 50, "churn/2": 40}})
        assert r.status_code == 422 and "add up to 90" in r.json()["message"]
        r = api.post("/v1/deployments", json={"name": "x", "model": "churn@nowhere"})
        assert r.status_code == 404 and "nowhere" in r.json()["message"]
        r = api.post("/v1/deployments", json={"name": "x", "model": "churn/1", "sticky_by": "customer"})
        assert r.status_code == 422 and "sticky-by" in r.json()["message"]
        assert api.post("/v1/deployments", json={"name": "x", "model": "churn/1", "colour": "red"}).status_code == 422
        r = api.post("/v1/deployments/churn-live/promote", json={})
        assert r.status_code == 409 and "no challenger" in r.json()["message"]
        r = api.post("/v1/deployments/churn-live/rollback", json={})
        assert r.status_code == 409
        r = api.get("/v1/deployments/churn-live/status", params={"since": "yesterday"})
        assert r.status_code == 422
        assert [d["name"] for d in api.get("/v1/deployments").json()] == ["churn-live"]  # nothing half-written


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_roles_and_the_authenticated_user_on_events(auth_people: dict[str, str], auth_client: object) -> None:
    import httpx

    c: httpx.AsyncClient = auth_client  # type: ignore[assignment]
    train()
    train(seed=1)
    body = {"name": "churn-live", "model": "churn/1", "shadow": "churn/2"}
    assert (await c.get("/v1/deployments")).status_code == 401
    r = await c.post("/v1/deployments", json=body, headers=bearer(auth_people["viewer"]))
    assert r.status_code == 403
    r = await c.post("/v1/deployments", json=body, headers=bearer(auth_people["member"]))
    assert r.status_code == 200, r.text
    viewer = bearer(auth_people["viewer"])
    assert (await c.get("/v1/deployments/churn-live", headers=viewer)).status_code == 200
    assert (await c.post("/v1/deployments/churn-live/set", json={"single": True}, headers=viewer)).status_code == 403
    assert (await c.post("/v1/deployments/churn-live/rollback", json={}, headers=viewer)).status_code == 403
    assert (await c.post("/v1/deployments/churn-live/promote", json={"to": "staging"}, headers=viewer)).status_code == 403
    r = await c.post("/v1/deployments/churn-live/promote", json={"to": "staging", "force": True, "reason": "x"},
                     headers=bearer(auth_people["member"]))
    assert r.status_code == 403  # past the gates: admins only
    assert (await c.delete("/v1/deployments/churn-live", headers=bearer(auth_people["member"]))).status_code == 403
    r = await c.post("/v1/deployments/churn-live/set", json={"single": True, "reason": "shadow off"}, headers=bearer(auth_people["approver"]))
    assert r.status_code == 200
    events = (await c.get("/v1/deployments/churn-live/history", headers=viewer)).json()
    assert [(e["action"], e["user"]) for e in events] == [("create", "r_member"), ("set", "r_approver")]
    from keel.store.owners import owners_of

    assert owners_of("deployment", "churn-live") == ["r_member"]
    assert (await c.delete("/v1/deployments/churn-live", headers=bearer(auth_people["admin"]))).status_code == 200
    events = (await c.get("/v1/deployments/churn-live/history", headers=viewer)).json()
    assert events[-1]["action"] == "delete" and events[-1]["user"] == "r_admin"
