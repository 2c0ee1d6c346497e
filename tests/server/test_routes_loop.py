"""/v1/lineage, /v1/models/{name}/versions/{version}/diagnose, /v1/owners and /v1/owners/gaps."""

from __future__ import annotations

from typing import Any

import pytest

from tests.loop.test_lineage import fs_model as fs_model
from tests.server._api import api_client, train
from tests.server.auth_fixtures import bearer


def test_lineage_diagnose_and_owners(fs_model: Any) -> None:
    from keel.registry.transitions import promote
    from keel.serving.predictor import Predictor
    from keel.store.prediction_log import active_log

    p = Predictor("models:/churn_fs@live")
    p.predict([{"customer_id": 3, "discount": 0.1}], request_id="req-route-1")
    active_log().flush()  # type: ignore[union-attr]
    promote("churn_fs", 1, "production")
    with api_client() as api:
        r = api.get("/v1/lineage/predictions/req-route-1", params={"model": "churn_fs"})
        assert r.status_code == 200, r.text
        tree = r.json()
        assert tree["kind"] == "prediction" and tree["detail"]["rows"][0]["version"] == 1
        r = api.get("/v1/lineage/models/churn_fs/live")
        assert r.status_code == 200 and r.json()["label"] == "churn_fs v1"
        assert {c["kind"] for c in r.json()["children"]} >= {"run"}
        assert api.get("/v1/lineage/models/churn_fs/1").json()["label"] == "churn_fs v1"
        r = api.get("/v1/lineage/features/usage")
        assert r.status_code == 200 and r.json()["kind"] == "feature_view"

        r = api.get("/v1/models/churn_fs/versions/production/diagnose", params={"days": 7})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["version"] == 1 and d["prediction_log"]["rows"] == 1 and any("no monitor" in f for f in d["findings"])

        owned = api.get("/v1/owners").json()
        assert {"kind": "model", "name": "churn_fs"} in [o for items in owned["owners"].values() for o in items]
        assert api.get("/v1/owners", params={"kind": "model"}).json()["kinds"] == ["model"]
        gaps = api.get("/v1/owners/gaps").json()
        assert gaps["production"] == [{"model": "churn_fs", "version": 1, "via": ["environment production"]}]
        assert {g["problem"] for g in gaps["gaps"]} == {"no_monitor", "no_contract"}

        # bad input: a 4xx that says what to do
        r = api.get("/v1/lineage/predictions/nope")
        assert r.status_code == 404 and "No logged prediction" in r.json()["message"]
        r = api.get("/v1/lineage/features/usag")
        assert r.status_code == 404 and "Did you mean 'usage'" in r.json()["message"]
        assert api.get("/v1/lineage/models/churn_fs/9").status_code == 404
        assert api.get("/v1/models/churn_fs/versions/1/diagnose", params={"days": 0}).status_code == 422
        assert api.get("/v1/models/nope/versions/1/diagnose").status_code == 404
        r = api.get("/v1/owners", params={"kind": "modle"})
        assert r.status_code == 422 and "Did you mean 'model'" in r.json()["message"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_reads_need_a_role_on_the_model(auth_people: dict[str, str], auth_client: Any) -> None:
    train()
    assert (await auth_client.get("/v1/owners/gaps")).status_code == 401
    viewer = bearer(auth_people["viewer"])
    assert (await auth_client.get("/v1/owners/gaps", headers=viewer)).status_code == 200
    assert (await auth_client.get("/v1/lineage/models/churn/1", headers=viewer)).status_code == 200
    r = await auth_client.get("/v1/models/churn/versions/1/diagnose", headers=viewer)
    assert r.status_code == 200 and r.json()["model"] == "churn"
