"""/v1/registry: each route calls the keel.registry function of its command; gates and approver rules apply there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel import config
from tests.server._api import api_client, make_data, train


def _as(monkeypatch: pytest.MonkeyPatch, user: str) -> None:
    """The acting user of the next requests (the auth-off identity is KEEL_USER)."""
    monkeypatch.setenv("KEEL_USER", user)
    config.reset()


def _registry_config(project: Path, block: dict[str, object]) -> None:
    path = project / "keel.yaml"
    doc = yaml.safe_load(path.read_text()) or {}
    doc["registry"] = block
    path.write_text(yaml.safe_dump(doc))
    config.reset()


def test_models_versions_aliases_and_audit(project: Path) -> None:
    train()
    train(C=0.5, seed=1)
    with api_client() as api:
        models = api.get("/v1/registry/models").json()
        assert [(m["name"], m["latest_version"]) for m in models] == [("churn", 2)]
        assert api.get("/v1/registry/models/churn").json()["latest_version"] == 2
        versions = api.get("/v1/registry/models/churn/versions").json()
        assert [v["version"] for v in versions] == [1, 2] and versions[0]["uri"] == "models:/churn/1"

        r = api.put("/v1/registry/models/churn/aliases/champion", json={"version": 1})
        assert r.status_code == 200, r.text
        assert (r.json()["action"], r.json()["to_version"]) == ("alias", 1)
        one = api.get("/v1/registry/models/churn/versions/champion").json()
        assert one["version"] == 1 and one["aliases"] == ["champion"] and "evaluations" in one
        assert api.get("/v1/registry/models/churn/versions/2").json()["version"] == 2
        assert api.get("/v1/registry/models/churn/versions/99").status_code == 404

        assert api.delete("/v1/registry/models/churn/aliases/champion").json()["action"] == "unalias"
        assert api.delete("/v1/registry/models/churn/aliases/champion").status_code == 404
        r = api.put("/v1/registry/models/churn/aliases/production", json={"version": 1})
        assert r.status_code == 422 and "environment" in r.json()["message"]  # environments move through gates only

        audit = api.get("/v1/registry/models/churn/audit").json()
        assert [e["action"] for e in audit] == ["register", "register", "alias", "unalias"]
        assert api.get("/v1/registry/models/nope/audit").status_code == 404
        envs = api.get("/v1/registry/environments").json()
        assert [e["name"] for e in envs] == ["staging", "production"]


def test_promote_through_gates_status_and_rollback(project: Path) -> None:
    train()
    train(C=0.5, seed=1)
    make_data(seed=5).to_parquet(project / "valid.parquet")
    with api_client() as api:
        r = api.post("/v1/registry/models/churn/versions/1/promote", json={"to": "production"})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["to_version"]) == ("applied", 1)
        # the second promotion is gated against the champion, on data from the project folder
        r = api.post("/v1/registry/models/churn/versions/2/promote",
                     json={"to": "production", "data": "valid.parquet", "target": "y"})
        assert r.status_code == 200, r.text
        assert r.json()["gates"]["results"] and r.json()["from_version"] == 1

        status = api.get("/v1/registry/models/churn/status").json()
        prod = next(e for e in status["environments"] if e["environment"] == "production")
        assert prod["version"] == 2 and prod["rollback_to"] == 1

        r = api.post("/v1/registry/models/churn/rollback", json={"env": "production", "reason": "latency"})
        assert r.status_code == 200 and (r.json()["from_version"], r.json()["to_version"]) == (2, 1)

        # a failing gate is a 422 whose body carries every gate's result
        _registry_config(project, {"policies": {"churn": {"gates": ["roc_auc >= 0.999"]}}})
        r = api.post("/v1/registry/models/churn/versions/2/promote", json={"to": "production", "data": "valid.parquet", "target": "y"})
        assert r.status_code == 422 and r.json()["error"] == "GatesFailed"
        assert any(g["status"] == "fail" for g in r.json()["report"]["results"])
        # files outside the project folder are never read
        for bad in ("/etc/passwd", "../outside.parquet", "s3://bucket/x.parquet"):
            r = api.post("/v1/registry/models/churn/versions/2/promote", json={"to": "production", "data": bad, "target": "y"})
            assert r.status_code == 422 and "project" in r.json()["message"], bad
        r = api.post("/v1/registry/models/churn/versions/2/promote", json={"to": "prod"})
        assert r.status_code == 404 and "production" in r.json()["message"]  # did you mean


def test_approval_needs_another_user_than_the_requester(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _registry_config(project, {"require_approval": ["production"]})
    _as(monkeypatch, "alice")
    train()
    with api_client() as api:
        _as(monkeypatch, "bob")
        r = api.post("/v1/registry/models/churn/versions/1/promote", json={"to": "production", "reason": "ready"})
        assert r.status_code == 200 and r.json()["status"] == "pending"
        rid = r.json()["request_id"]
        assert api.get(f"/v1/registry/requests/{rid}").json()["requested_by"] == "bob"
        assert [q["id"] for q in api.get("/v1/registry/requests", params={"status": "pending"}).json()] == [rid]

        r = api.post(f"/v1/registry/requests/{rid}/approve", json={"reason": "me"})
        assert r.status_code == 403  # the requester
        _as(monkeypatch, "carol")
        r = api.post(f"/v1/registry/requests/{rid}/approve", json={"reason": "reviewed"})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["to_version"]) == ("applied", 1)
        assert api.post(f"/v1/registry/requests/{rid}/reject", json={"reason": "late"}).status_code in (409, 422)
        assert api.post("/v1/registry/requests/999/approve", json={"reason": "x"}).status_code == 404
        assert api.post(f"/v1/registry/requests/{rid}/approve", json={}).status_code == 422  # a reason is required
        audit = api.get("/v1/registry/models/churn/audit").json()
        assert [(e["action"], e["user"], e["outcome"]) for e in audit if e["action"] in ("request", "approve")] == [
            ("request", "bob", "pending"), ("approve", "bob", "refused"), ("approve", "carol", "applied")]  # the refusal is audited


def test_archive_restore_and_delete(project: Path) -> None:
    train()
    train(seed=1)
    with api_client() as api:
        r = api.post("/v1/registry/models/churn/versions/1/archive", json={"reason": "old"})
        assert r.status_code == 200, r.text
        assert api.get("/v1/registry/models/churn/versions/1").json()["status"] == "archived"
        assert api.post("/v1/registry/models/churn/versions/1/promote", json={"to": "staging"}).status_code == 422
        assert api.post("/v1/registry/models/churn/versions/1/restore", json={}).status_code == 200
        assert api.delete("/v1/registry/models/churn/versions/2", params={"reason": "leak"}).status_code == 200
        assert [v["version"] for v in api.get("/v1/registry/models/churn/versions").json()] == [1]
        assert api.post("/v1/registry/models/churn/archive", json={}).json()["action"] == "archive"
        assert api.get("/v1/registry/models/churn").json()["status"] == "archived"
