"""Deployments as declared objects: parsing, checks before anything changes, audited changes, promote and rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.deployments.specs import (
    apply_config,
    build_spec,
    deploy,
    get_deployment,
    history,
    list_deployments,
    promote_deployment,
    rollback_deployment,
    set_deployment,
)
from keel.errors import ConflictError, NotFoundError, ValidationError
from tests.serving.conftest import make_data, train_model


@pytest.fixture
def two(project: Path) -> tuple[Any, Any]:
    """churn v1 @production (and @live), churn v2 @challenger: the same inputs."""
    from keel.registry.transitions import promote, set_alias

    v1 = train_model(C=1.0, alias="live")
    promote("churn", v1.version, "production")
    v2 = train_model(C=0.05, alias="challenger", data=make_data(seed=3))
    set_alias("churn", "challenger", v2.version)
    return v1, v2


def test_shadow_canary_and_ab_specs(two: tuple[Any, Any]) -> None:
    s = build_spec("live", model="churn@production", shadow="churn@challenger")
    assert s.mode == "shadow" and [r.name for r in s.routes] == ["champion", "shadow"] and s.routes[1].shadow
    c = build_spec("live", model="models:/churn@production", canary="churn/2", weight=10)
    assert c.mode == "canary" and [(r.name, r.weight) for r in c.routes] == [("champion", 90.0), ("canary", 10.0)]
    ab = build_spec("live", ab="churn/1=70,churn/2=30", sticky_by="plan")
    assert ab.mode == "ab" and [(r.name, r.ref, r.weight) for r in ab.routes] == [("a", "1", 70.0), ("b", "2", 30.0)]
    dep = deploy(ab)
    assert dep.revision == 1 and get_deployment("live").spec == ab


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ab": "churn/1=60,churn/2=50"}, "add up to 110"),
    ({"ab": "churn/1=100"}, "at least two routes"),
    ({"model": "churn@production", "canary": "churn/2", "weight": 150}, "between 0 and 100"),
    ({"model": "churn@production", "shadow": "churn@x", "canary": "churn/2"}, "cannot be combined"),
    ({"model": "churn"}, "not a model reference"),
    ({"model": "churn@production", "weight": 5}, "canary's share"),
    ({"model": "churn@production", "shadow": "churn@production"}, "same model version"),
])
def test_bad_specs_are_refused_before_anything_is_written(two: tuple[Any, Any], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        deploy(build_spec("live", **kwargs))
    assert list_deployments() == []


def test_unknown_alias_other_signature_and_sticky_column_are_refused(two: tuple[Any, Any]) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel

    with pytest.raises(NotFoundError):
        deploy(build_spec("live", model="churn@production", shadow="churn@nope"))
    df = make_data()
    other = LogisticRegression().fit(df[["a", "b"]], df["y"])
    with keel.start_run():
        info = keel.log_model(other, input_example=df[["a", "b"]].head(3))
    v3 = keel.register_model(info.uri, "churn")
    with pytest.raises(ValidationError, match="other inputs"):
        deploy(build_spec("live", model="churn@production", canary=f"churn/{v3.version}"))
    with pytest.raises(ValidationError, match="not an input"):
        deploy(build_spec("live", model="churn@production", canary="churn/2", sticky_by="customer_id"))
    assert list_deployments() == []
    pd.DataFrame()  # keep the import honest for type checkers


def test_every_change_is_an_audited_event_and_rollback_restores(two: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    monkeypatch.setenv("KEEL_USER", "alice")
    config.reset()
    deploy(build_spec("live", model="churn@production", canary="churn/2", weight=10), reason="first canary")
    monkeypatch.setenv("KEEL_USER", "bob")
    config.reset()
    dep = set_deployment("live", weight=30, reason="healthy")
    assert dep.revision == 2 and dep.spec.route("canary").weight == 30
    back = rollback_deployment("live", reason="too fast")
    assert back.revision == 3 and back.spec.route("canary").weight == 10
    events = history("live")
    assert [(e["action"], e["user"], e["reason"]) for e in events] == [
        ("create", "alice", "first canary"), ("set", "bob", "healthy"), ("rollback", "bob", "too fast")]
    assert events[1]["before"]["routes"][1]["weight"] == 10 and events[1]["after"]["routes"][1]["weight"] == 30
    single = set_deployment("live", single=True, reason="done")
    assert single.spec.mode == "single"


def test_promote_goes_through_the_registry_and_makes_the_challenger_champion(two: tuple[Any, Any], project: Path) -> None:
    from keel.registry.versions import resolve_version

    _v1, v2 = two
    make_data(seed=3).to_parquet(project / "eval.parquet")  # the challenger's own data: it wins the default gate
    deploy(build_spec("live", model="churn@production", shadow="churn@challenger"))
    with pytest.raises(Exception, match="no evaluation data"):
        promote_deployment("live", to="production")  # the registry's gates apply
    assert get_deployment("live").spec.mode == "shadow"
    out = promote_deployment("live", to="production", reason="shadow agreed", data=str(project / "eval.parquet"), target="y")
    assert out["transition"]["status"] in ("applied", "forced")
    assert resolve_version("churn", "production").version == v2.version
    dep = get_deployment("live")
    assert dep.spec.mode == "single" and dep.spec.champion.ref == "production"
    assert history("live")[-1]["action"] == "promote"
    with pytest.raises(ConflictError, match="no challenger"):
        promote_deployment("live")


def test_promotion_needing_approval_leaves_the_deployment_pending(two: tuple[Any, Any], project: Path) -> None:
    from keel import config

    (project / "keel.yaml").write_text((project / "keel.yaml").read_text() + "\nregistry:\n  require_approval: [production]\n")
    config.reset()
    deploy(build_spec("live", model="churn@production", canary="churn/2", weight=5))
    make_data(seed=3).to_parquet(project / "eval.parquet")
    out = promote_deployment("live", to="production", reason="try", data=str(project / "eval.parquet"), target="y")
    assert out["transition"]["status"] == "pending"
    assert get_deployment("live").spec.mode == "canary"
    assert history("live")[-1]["action"] == "promote_requested"


def test_keel_yaml_deployments_block(two: tuple[Any, Any]) -> None:
    deps = apply_config({"churn-live": {"model": "churn@production", "shadow": "churn@challenger"},
                         "churn-ab": {"ab": {"churn/1": 50, "churn/2": 50}, "sticky_by": "plan"}})
    assert sorted(d.name for d in deps) == ["churn-ab", "churn-live"]
    again = apply_config({"churn-live": {"model": "churn@production", "shadow": "churn@challenger"}})
    assert again[0].revision == 1  # unchanged: no new revision
    with pytest.raises(ValidationError, match="unknown key 'shaddow'"):
        apply_config({"x": {"model": "churn@production", "shaddow": "churn@challenger"}})


def test_cli_deploy_commands(two: tuple[Any, Any]) -> None:
    from keel.cli.main import app

    r = CliRunner()
    out = r.invoke(app, ["deploy", "churn-live", "--model", "churn@production", "--canary", "churn/2", "--weight", "10", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["spec"]["mode"] == "canary"
    assert "churn-live" in r.invoke(app, ["deploy", "ls"]).output
    out = r.invoke(app, ["deploy", "set", "churn-live", "--weight", "20", "--reason", "ok"])
    assert out.exit_code == 0 and "20%" in out.output
    out = r.invoke(app, ["deploy", "status", "churn-live"])
    assert out.exit_code == 0 and "recommendation" in out.output
    out = r.invoke(app, ["deploy", "history", "churn-live", "--json"])
    assert [e["action"] for e in json.loads(out.output)] == ["create", "set"]
    bad = r.invoke(app, ["deploy", "x", "--ab", "churn/1=60,churn/2=60"])
    assert bad.exit_code == 1 and "add up to 120" in bad.output and "Traceback" not in bad.output
    missing = r.invoke(app, ["deploy", "status", "nope"])
    assert missing.exit_code == 1 and "No deployment named 'nope'" in missing.output
