"""The tracking and models routes in-process (httpx over ASGI): identity on every route, 4xx on bad input."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from keel.server.app import create_app
from keel.server.auth import identity

OURS = ("/v1/experiments", "/v1/runs", "/v1/blobs", "/v1/models")


def test_every_route_takes_the_identity_dependency() -> None:
    from keel.server.routes import models, tracking

    checked = 0
    for route in [*tracking.router.routes, *models.router.routes]:
        path = getattr(route, "path", "")
        assert path.startswith(OURS), path
        calls = [d.call for d in route.dependant.dependencies]  # type: ignore[attr-defined]
        assert identity in calls, path
        checked += 1
    assert checked >= 25


@pytest.fixture
async def api(project: Path) -> httpx.AsyncClient:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_app()), base_url="http://keel") as client:
        yield client


@pytest.mark.anyio
async def test_bad_input_is_4xx_never_5xx(api: httpx.AsyncClient) -> None:
    rid = uuid.uuid4().hex
    assert (await api.post("/v1/runs", json={"id": rid, "name": "r", "experiment": "e"})).status_code == 200
    bad = [
        await api.post("/v1/runs", json={"id": "not-hex", "name": "r"}),
        await api.post("/v1/runs", json={"id": uuid.uuid4().hex, "name": "r", "parent_id": "f" * 32}),
        await api.patch(f"/v1/runs/{rid}", json={"status": "exploded"}),
        await api.post(f"/v1/runs/{rid}/params", json={"params": {"bad name ": 1}}),
        await api.post(f"/v1/runs/{rid}/tags", json={"tags": {"k": "x" * 10_000}}),
        await api.get(f"/v1/runs/{rid}/metrics/nope"),
        await api.get(f"/v1/runs/{rid}/artifacts/../../etc/passwd"),
        await api.get(f"/v1/runs/{rid}/artifacts/missing.txt"),
        await api.post(f"/v1/runs/{rid}/artifacts", json={"files": [{"path": "a.txt", "digest": "a" * 64, "size": 1}]}),
        await api.post("/v1/runs/search", json={"filter": "metrics.x >"}),
        await api.get("/v1/blobs/xyz"),
        await api.put("/v1/blobs/" + "b" * 64, content=b"hello"),
        await api.put("/v1/blobs/" + "b" * 64 + "/parts/0", content=b"hello"),
        await api.post("/v1/blobs/" + "b" * 64 + "/complete", json={"parts": 2, "size": 10}),
        await api.post("/v1/models/resolve", json={"uri": "s3://x"}),
        await api.post("/v1/models/resolve", json={"uri": "models:/nope/1"}),
        await api.post("/v1/models/bad name/versions", json={"source": f"runs:/{rid}/model"}),
        await api.post("/v1/models/m/versions", json={"source": f"runs:/{rid}/model"}),
        await api.get("/v1/models/nope/versions/1/package"),
        await api.get("/v1/models/nope"),
        await api.get("/v1/runs/" + "0" * 32),
    ]
    for r in bad:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)


@pytest.mark.anyio
async def test_a_blob_upload_is_stored_by_its_hash_and_streamed_back(api: httpx.AsyncClient) -> None:
    data = b"keel " * 1000
    digest = hashlib.sha256(data).hexdigest()
    assert (await api.get(f"/v1/blobs/{digest}")).json() == {"exists": False, "parts_received": []}
    assert (await api.put(f"/v1/blobs/{digest}", content=data)).json()["stored"] is True
    assert (await api.put(f"/v1/blobs/{digest}", content=data)).json()["stored"] is False  # stored once
    rid = uuid.uuid4().hex
    await api.post("/v1/runs", json={"id": rid, "name": "r", "experiment": "e"})
    ok = await api.post(f"/v1/runs/{rid}/artifacts", json={"files": [{"path": "d/x.txt", "digest": digest, "size": len(data)}]})
    assert ok.status_code == 200
    got = await api.get(f"/v1/runs/{rid}/artifacts/d/x.txt")
    assert got.content == data and got.headers["x-keel-sha256"] == digest
    rest = await api.get(f"/v1/runs/{rid}/artifacts/d/x.txt", headers={"Range": "bytes=4990-"})
    assert rest.status_code == 206 and rest.content == data[4990:]
    assert (await api.get(f"/v1/runs/{rid}/artifacts/d/x.txt", headers={"Range": "bytes=99999-"})).status_code == 416


@pytest.mark.anyio
async def test_routes_authorize_the_object_they_act_on(api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.server.routes import models, tracking

    seen: list[tuple[str, str | None, str | None]] = []

    def record(ident: object, action: str, *, experiment: str | None = None, model: str | None = None) -> None:
        seen.append((action, experiment, model))

    monkeypatch.setattr(tracking, "authorize", record)
    monkeypatch.setattr(models, "authorize", record)
    rid = uuid.uuid4().hex
    await api.post("/v1/runs", json={"id": rid, "name": "r", "experiment": "risk"})
    await api.post(f"/v1/runs/{rid}/params", json={"params": {"a": 1}})
    await api.get(f"/v1/runs/{rid}")
    await api.post("/v1/runs/search", json={"experiment": "risk"})
    await api.post("/v1/models/resolve", json={"uri": "models:/churn/1"})
    assert seen[:4] == [("write", "risk", None), ("write", "risk", None), ("read", "risk", None), ("read", "risk", None)]
    assert seen[4] == ("read", None, "churn")
