"""Promotion gates, overrides and approvals (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import keel
from keel import registry
from keel.errors import ConflictError, ValidationError
from keel.registry import ForbiddenError, GatesFailed
from keel.registry.gates import parse_gate

pytestmark = pytest.mark.slow  # many small end-to-end cases, each on SQLite and PostgreSQL


def test_gate_text_parses() -> None:
    g = parse_gate("roc_auc >= champion + 0.005")
    assert (g.metric, g.op, g.champion, g.required(0.8)) == ("roc_auc", ">=", True, pytest.approx(0.805))
    assert parse_gate("rmse <= champion * 1.02").required(10.0) == pytest.approx(10.2)
    assert parse_gate("rmse <= champion + 2%").required(10.0) == pytest.approx(10.2)
    assert parse_gate("roc_auc >= 0.8").value == 0.8
    with pytest.raises(keel.KeelError, match=r"not understood"):
        parse_gate("roc_auc is good")


def test_default_gate_refuses_a_worse_model_and_records_it(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    train(columns=("a", "b"))
    train(columns=("a",))  # drops a useful feature: worse ROC AUC
    keel.promote("churn", 1, to="production")
    with pytest.raises(GatesFailed, match=r"roc_auc") as exc:
        keel.promote("churn", 2, to="production", data=data, target="y")
    gate = exc.value.report.results[0]
    assert gate.status == "fail" and gate.value < gate.champion
    assert registry.get_model("churn").environments == {"production": 1}
    last = registry.history("churn")[-1]
    assert (last["action"], last["outcome"], last["to_version"]) == ("promote", "refused", 2)
    assert last["gates"]["passed"] is False
    # the evaluation of both versions on the same rows is stored on each version
    assert registry.evaluations("churn", 2)[0]["fingerprint"] == registry.evaluations("churn", 1)[0]["fingerprint"]


def test_default_gate_without_data_uses_stored_evaluations_or_asks_for_data(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    train()
    train(C=0.5)
    keel.promote("churn", 1, to="production")
    with pytest.raises(GatesFailed, match=r"pass --data PATH --target COL"):
        keel.promote("churn", 2, to="production")
    keel.evaluate("models:/churn/2", data, target="y")  # also evaluates production (v1) on the same rows
    t = keel.promote("churn", 2, to="production")
    assert t.status == "applied" and t.gates is not None and t.gates.results[0].status == "pass"


def test_noise_cannot_promote_with_confidence(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    train(C=1.0)
    train(C=0.9)  # practically the same model
    keel.promote("churn", 1, to="production")
    policy = {"gates": ["roc_auc >= champion"], "confidence": 0.95, "bootstrap": 300}
    with pytest.raises(GatesFailed) as exc:
        keel.promote("churn", 2, to="production", data=data, target="y", policy=policy)
    r = exc.value.report.results[0]
    assert r.low is not None and r.high is not None and r.low < 0 < r.high + 1e-12


def test_policy_in_keel_yaml_absolute_slices_latency(proj: Path, train: Callable[..., Any], data: pd.DataFrame, configure: Callable[..., None]) -> None:
    path = proj / "valid.parquet"
    data.to_parquet(path)
    configure({"policies": {"churn": {
        "data": str(path), "target": "y", "gates": ["roc_auc >= 0.99"], "slices": ["region"], "max_slice_drop": 0.5, "latency_ms": 10000,
    }}})
    train()
    with pytest.raises(GatesFailed) as exc:
        keel.promote("churn", 1, to="production")
    by_name = {r.name: r for r in exc.value.report.results}
    assert exc.value.report.policy == "keel.yaml"
    assert by_name["roc_auc >= 0.99"].status == "fail"
    assert by_name["smoke prediction"].status == "pass"
    assert by_name["latency p95 <= 10000 ms"].status == "pass"
    assert by_name["data contracts"].status == "skip" and "not configured" in by_name["data contracts"].detail
    assert by_name["no slice worse by > 0.5 roc_auc"].status == "pass"  # no champion yet


def test_slice_gate_names_the_worst_slice(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    train(columns=("a", "b"))
    train(columns=("a",))
    keel.promote("churn", 1, to="production")
    policy = {"gates": ["accuracy >= 0.5"], "slices": ["region"], "max_slice_drop": 0.01}
    with pytest.raises(GatesFailed, match=r"worst slice region="):
        keel.promote("churn", 2, to="production", data=data, target="y", policy=policy)


def test_force_needs_an_admin_and_a_reason(proj: Path, train: Callable[..., Any], data: pd.DataFrame, configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    configure({"admins": ["alice"]})
    train(columns=("a", "b"))
    train(columns=("a",))
    keel.promote("churn", 1, to="production")
    monkeypatch.setenv("KEEL_USER", "bob")
    config.reset()
    with pytest.raises(ForbiddenError, match=r"'bob' may not force"):
        keel.promote("churn", 2, to="production", data=data, target="y", force=True, reason="hotfix")
    monkeypatch.setenv("KEEL_USER", "alice")
    config.reset()
    with pytest.raises(ValidationError, match=r"needs a reason"):
        keel.promote("churn", 2, to="production", data=data, target="y", force=True)
    t = keel.promote("churn", 2, to="production", data=data, target="y", force=True, reason="known regression, hotfix for bug 12")
    assert t.status == "forced" and t.gates is not None and not t.gates.passed
    last = registry.history("churn")[-1]
    assert (last["user"], last["outcome"], last["reason"]) == ("alice", "forced", "known regression, hotfix for bug 12")


def test_approvals(proj: Path, train: Callable[..., Any], configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    configure({"require_approval": ["production"]})
    train()
    train(C=0.2)
    monkeypatch.setenv("KEEL_USER", "bob")
    config.reset()
    t = keel.promote("churn", 1, to="production", reason="first model")
    assert t.status == "pending" and t.request_id is not None
    assert registry.get_model("churn").environments == {}
    with pytest.raises(ForbiddenError, match=r"cannot approve it too"):
        registry.approve(t.request_id, "looks good")
    monkeypatch.setenv("KEEL_USER", "carol")
    config.reset()
    done = registry.approve(t.request_id, "reviewed the evaluation")
    assert done.to_version == 1 and registry.get_model("churn").environments == {"production": 1}
    with pytest.raises(ConflictError, match=r"already approved"):
        registry.approve(t.request_id, "again")
    t2 = keel.promote("churn", 2, to="production", data=None, policy={"smoke": True})
    registry.reject(t2.request_id, "wait for more data")  # type: ignore[arg-type]
    assert [r["status"] for r in registry.list_requests("churn")] == ["rejected", "approved"]
    assert [r["id"] for r in registry.list_requests("churn", "pending")] == []
    approvals = [e for e in registry.history("churn") if e["action"] == "approve"]
    assert [(e["user"], e["outcome"]) for e in approvals] == [("bob", "refused"), ("carol", "applied")]  # the refused one is audited
    approve_event = approvals[1]
    assert (approve_event["user"], approve_event["to_version"], approve_event["outcome"]) == ("carol", 1, "applied")
    assert registry.rollback_target("churn", "production") is None


def test_signature_must_match_the_feature_service_in_use(proj: Path, train: Callable[..., Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    from keel.features.definitions import Entity, FeatureService, FeatureView, Field, Source
    from keel.features.loader import Definitions
    from keel.features.registry import apply

    frame = pd.DataFrame({"customer_id": [1, 2], "a": [0.1, 0.2], "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)})
    customer = Entity("customer", join_keys=["customer_id"])
    src = Source("usage", df=frame)
    view = FeatureView("usage_view", entities=[customer], schema=[Field("a", "float64")], source=src)
    apply(Definitions([customer, src, view, FeatureService("churn_fs", features=[view])]))
    X = pd.DataFrame({"a": [0.1, 0.5, 0.9, 0.3], "b": [1.0, 0.0, 1.0, 0.0]})
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(X, [0, 1, 1, 0]), input_example=X, feature_service="churn_fs")
    assert info.meta["feature_service_version"] == 1
    keel.register_model(info.uri, "churn")
    with pytest.raises(ValidationError, match=r"needs column 'b'.*'churn_fs' v1 does not provide"):
        keel.promote("churn", 1, to="production")
    assert registry.get_model("churn").environments == {}


def test_a_smoke_run_can_never_be_promoted(project: Path) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (x["a"] > 0).astype(int)
    with keel.start_run(tags={"keel.smoke": "true"}) as run:
        keel.log_model(LogisticRegression().fit(x, y), input_example=x.head(3))
    mv = keel.register_model(f"runs:/{run.id}/model", "smoke-model")
    # a smoke run's registration is a dry run: checked, numbered, never stored
    assert mv.dry_run and mv.version == 1 and mv.uri == f"runs:/{run.id}/model"
    with pytest.raises(keel.KeelError, match="smoke-model"):
        registry.get_model("smoke-model")
    # its promotion runs the gates and moves nothing
    moved = keel.promote("smoke-model", mv.version, to="staging")
    assert moved.status == "dry-run" and moved.gates is not None and moved.gates.passed
    assert moved.explain().startswith("would promote smoke-model v1 -> staging: yes")
    with pytest.raises(keel.KeelError):
        registry.get_model("smoke-model")
