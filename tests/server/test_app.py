"""The platform app: health, the OpenAPI document, errors as JSON with their status, never a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.server._api import api_client


def test_health_and_openapi(project: Path) -> None:
    with api_client() as api:
        r = api.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/registry/models", "/v1/features/online", "/v1/predictions/query", "/v1/feedback", "/v1/monitors",
                 "/v1/alerts", "/v1/pipelines", "/v1/pipeline-runs", "/v1/pipeline-runs/{run_id}"):
        assert path in paths, path
    # every operation documents its error bodies, and no route takes a stray query parameter
    for path, ops in paths.items():
        for method, op in ops.items():
            names = [p["name"] for p in op.get("parameters", [])]
            assert "request" not in names and "ident" not in names, (method, path, names)
            if path != "/health":
                assert {"404", "422"} <= set(op["responses"]), (method, path)


def test_unknown_route_is_json_404(project: Path) -> None:
    with api_client() as api:
        r = api.get("/v1/no-such-thing")
        assert r.status_code == 404
        assert r.json()["error"] == "NotFound" and "/docs" in r.json()["message"]
        r = api.request("PATCH", "/health")
        assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed"
        r = api.request("PATCH", "/v1/registry/models/churn")  # GET and DELETE are two routes: Allow names both
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "DELETE"}


def test_keel_error_maps_to_status_with_body(project: Path) -> None:
    with api_client() as api:
        r = api.get("/v1/registry/models/nope")
        assert r.status_code == 404
        body = r.json()
        assert body["error"] == "NotFoundError" and "nope" in body["message"]
        r = api.post("/v1/feedback", json={"request_ids": ["a", "b"], "labels": [1], "model": "churn"})
        assert r.status_code == 422 and r.json()["error"] == "ValidationError" and "2 request ids for 1 labels" in r.json()["message"]
        r = api.put("/v1/registry/models/churn/aliases/bad alias!", json={"version": 1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "alias"]  # the pattern in the OpenAPI


def test_request_validation_is_422_with_field_and_no_echo(project: Path) -> None:
    with api_client() as api:
        r = api.post("/v1/predictions/query", json={"sql": 5, "password": "hunter2"})
        assert r.status_code == 422
        detail = r.json()["detail"]
        locs = [tuple(d["loc"]) for d in detail]
        assert ("body", "sql") in locs and ("body", "password") in locs
        assert "hunter2" not in r.text  # the input is never echoed back
        r = api.post("/v1/predictions/query", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        # types are strict: a number is not a boolean, and a time is ISO-8601 text
        r = api.post("/v1/pipeline-runs", json={"pipeline": "training", "refresh": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "refresh"]
        r = api.post("/v1/monitors/daily/run", json={"end": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "end"]


def test_unexpected_error_is_500_without_traceback(project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from keel import registry

    def boom(**_: object) -> None:
        raise RuntimeError("postgresql://u:s3cret@db/x exploded")

    monkeypatch.setattr(registry, "list_models", boom)
    with caplog.at_level(logging.INFO), api_client() as api:  # the exception goes no further than the app
        r = api.get("/v1/registry/models")
    assert r.status_code == 500
    assert r.json()["error"] == "InternalError" and "s3cret" not in r.text and "Traceback" not in r.text
    logged = "\n".join(rec.getMessage() + (rec.exc_text or "") for rec in caplog.records)
    assert "GET /v1/registry/models failed: RuntimeError: postgresql://u:***@db/x exploded" in logged and "s3cret" not in logged


def test_nan_is_sent_as_null(project: Path) -> None:
    from keel.server.app import _json_response_class

    cls = _json_response_class()
    assert cls({"x": float("nan"), "y": [float("inf")]}).body == b'{"x":null,"y":[null]}'


@pytest.mark.postgres
def test_values_postgres_cannot_hold_are_4xx(pg_project: Path) -> None:
    from tests.server._api import train

    train()
    with api_client() as api:
        r = api.get("/v1/pipeline-runs/a%00b")
        assert r.status_code == 422 and "NUL" in r.json()["message"]
        r = api.get("/v1/registry/models/churn/audit", params={"target": "prod\x00"})
        assert r.status_code == 422
        r = api.post("/v1/registry/models/churn/archive", json={"reason": "bad\x00reason"})
        assert r.status_code == 422
        assert api.get("/v1/registry/models/churn").json()["status"] == "active"  # nothing was written


def test_the_route_sees_the_authenticated_user(project: Path) -> None:
    """Library code inside a (threadpool) route records the identity the dependency set, not KEEL_USER."""
    from collections.abc import AsyncIterator

    from keel.config import acting_as
    from keel.server.app import create_app
    from keel.server.auth import Identity, identity
    from tests.server._api import Api, train

    train()

    async def erin() -> AsyncIterator[Identity]:
        with acting_as("erin"):
            yield Identity(user="erin", role="admin", authenticated=True)

    from anyio.from_thread import start_blocking_portal

    app = create_app()
    app.dependency_overrides[identity] = erin
    with start_blocking_portal() as portal:
        api = Api(app, portal)
        r = api.put("/v1/registry/models/churn/aliases/champion", json={"version": 1})
        assert r.status_code == 200 and r.json()["user"] == "erin"
        portal.call(api.client.aclose)


def test_keel_server_and_worker_commands() -> None:
    import typer.main

    from keel.cli.main import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    server = {p.name: p.default for p in commands["server"].params}
    assert server["host"] == "127.0.0.1" and server["workers"] == 1  # this machine only, unless told otherwise
    worker = {p.name for p in commands["worker"].params}
    assert {"concurrency", "poll", "lease", "drain", "json"} <= worker
    assert "Example: keel worker" in (commands["worker"].help or "")
