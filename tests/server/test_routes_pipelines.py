"""/v1/pipelines and /v1/pipeline-runs: the project's pipelines, and runs queued for `keel worker` (never run in a request)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server._api import api_client
from tests.server._flows import write_pipelines


@pytest.fixture
def flows(project: Path) -> Iterator[Path]:
    write_pipelines(project)
    yield project
    sys.modules.pop("pipelines", None)


def test_list_the_projects_pipelines(flows: Path) -> None:
    with api_client() as api:
        found = api.get("/v1/pipelines").json()
    assert [(p["name"], p["ref"], p["experiment"]) for p in found] == [("training", "pipelines:training", "queued")]
    assert found[0]["description"] == "Sum a range, k times."
    assert [(p["name"], p["type"], p["default"], p["required"]) for p in found[0]["parameters"]] == [
        ("n", "int", 10, False), ("k", "int", 2, False), ("pause", "float", 0.0, False)]


def test_queue_a_run_then_read_its_status(flows: Path) -> None:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.pipelines import pipeline_runs

    with api_client() as api:
        r = api.post("/v1/pipeline-runs", json={"pipeline": "training", "params": {"n": 5}})
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["status"] == "queued" and queued["params"] == {"n": 5} and queued["run_id"] is None
        one = api.get(f"/v1/pipeline-runs/{queued['id']}").json()
        assert one["status"] == "queued" and one["steps"] == []
        assert [q["id"] for q in api.get("/v1/pipeline-runs", params={"status": "queued"}).json()] == [queued["id"]]
        assert api.get("/v1/pipeline-runs", params={"status": "finished"}).json() == []
    with get_metadata_store().read() as conn:  # nothing ran inside the request
        assert conn.execute(pipeline_runs.select()).first() is None


def test_a_client_id_makes_retries_idempotent(flows: Path) -> None:
    with api_client() as api:
        body = {"pipeline": "pipelines:training", "params": {"n": 3}, "id": "nightly-2026-12-03"}
        first = api.post("/v1/pipeline-runs", json=body).json()
        again = api.post("/v1/pipeline-runs", json=body).json()
        assert first["id"] == again["id"] == "nightly-2026-12-03" and first["requested_time"] == again["requested_time"]
        assert len(api.get("/v1/pipeline-runs").json()) == 1
        r = api.post("/v1/pipeline-runs", json={**body, "params": {"n": 4}})
        assert r.status_code == 409


def test_bad_requests_are_refused_before_queueing(flows: Path) -> None:
    with api_client() as api:
        r = api.post("/v1/pipeline-runs", json={"pipeline": "trainig"})
        assert r.status_code == 404 and "training" in r.json()["message"]
        # only the project's pipelines: a reference to any other module is never imported
        r = api.post("/v1/pipeline-runs", json={"pipeline": "antigravity:fly"})
        assert r.status_code == 404 and "antigravity" not in sys.modules
        r = api.post("/v1/pipeline-runs", json={"pipeline": "training", "params": {"epochs": 3}})
        assert r.status_code == 422 and "epochs" in r.json()["message"]
        r = api.post("/v1/pipeline-runs", json={"pipeline": "training", "params": {"n": "many"}})
        assert r.status_code == 422
        assert api.post("/v1/pipeline-runs", json={"pipeline": "training", "id": "../etc"}).status_code == 422
        assert api.post("/v1/pipeline-runs", json={"pipeline": "training", "engine": "spark"}).status_code == 422
        assert api.get("/v1/pipeline-runs/nope").status_code == 404
        assert api.get("/v1/pipeline-runs").json() == []


def test_a_project_without_pipelines(project: Path) -> None:
    with api_client() as api:
        assert api.get("/v1/pipelines").json() == []
        r = api.post("/v1/pipeline-runs", json={"pipeline": "training"})
        assert r.status_code == 404 and "pipelines.py" in r.json()["message"]
