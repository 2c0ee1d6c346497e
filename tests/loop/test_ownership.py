"""keel owners: what each owner owns, and the responsibility gaps of what runs in production."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from keel.loop.ownership import in_production, ownership, responsibility_gaps
from tests.loop.test_lineage import fs_model as fs_model

CONTRACT = """contract: {name}
owners: [{owner}]
columns:
  customer_id: {{type: int, nullable: false}}
"""


def problems(gaps: list[Any]) -> set[tuple[str, str, str]]:
    return {(g.kind, g.name, g.problem) for g in gaps}


def _drop_owners(kind: str, name: str) -> None:
    """An object from before owners were recorded (or whose owners were removed behind keel's back)."""
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.auth import owners

    with get_metadata_store().write() as conn:
        conn.execute(sa.delete(owners).where(owners.c.kind == kind, owners.c.name == name))


def test_gaps_close_one_by_one(fs_model: Any, project: Path) -> None:
    from keel.config import acting_as
    from keel.deployments.specs import build_spec, deploy
    from keel.monitoring.monitors import define_monitor
    from keel.registry.transitions import promote

    assert in_production() == [] and responsibility_gaps() == []  # registered, not in production: nothing to flag

    promote("churn_fs", 1, "production", reason="first")
    assert in_production() == [{"model": "churn_fs", "version": 1, "via": ["environment production"]}]
    found = problems(responsibility_gaps())
    assert ("model_version", "churn_fs/1", "no_monitor") in found
    assert {("model_version", "churn_fs/1:profile", "no_contract"), ("model_version", "churn_fs/1:usage", "no_contract")} <= found
    assert not any(p == "no_owner" for _, _, p in found)  # the model, its views: owned by who registered / applied them
    assert not any(n.endswith(":pricing") for _, n, _ in found)  # an on-demand view: its inputs are checked instead

    with acting_as("carol"):
        deploy(build_spec("churn-live", model="churn_fs@live"))
    vias = in_production()[0]["via"]
    assert vias == ["environment production", "deployment churn-live (champion)"]
    assert ownership(["deployment"])["owners"] == {"carol": [{"kind": "deployment", "name": "churn-live"}]}
    _drop_owners("deployment", "churn-live")
    assert ("deployment", "churn-live", "no_owner") in problems(responsibility_gaps())
    _drop_owners("model", "churn_fs")
    assert ("model_version", "churn_fs/1", "no_owner") in problems(responsibility_gaps())

    from keel.store.owners import add_owners

    add_owners("deployment", "churn-live", ["carol"])
    add_owners("model", "churn_fs", ["alice"])
    define_monitor("churn-watch", "churn_fs", window="1d", owners=["dave"])
    (project / "contracts").mkdir(exist_ok=True)
    (project / "contracts" / "usage.yaml").write_text(CONTRACT.format(name="usage_feed", owner="erin"))  # on the source
    (project / "contracts" / "profile.yaml").write_text(CONTRACT.format(name="profile_rows", owner="erin"))  # on the view
    assert responsibility_gaps() == []

    listed = ownership()
    assert {"kind": "monitor", "name": "churn-watch"} in listed["owners"]["dave"]
    assert {"kind": "contract", "name": "usage_feed"} in listed["owners"]["erin"]  # declared, not validated yet
    assert {"kind": "model", "name": "churn_fs"} in listed["owners"]["alice"]
    assert listed["unowned"] == []

    (project / "contracts" / "profile.yaml").write_text("contract: profile_rows\ncolumns:\n  customer_id: {type: int}\n")
    assert problems(responsibility_gaps()) == {("contract", "profile_rows", "no_owner")}


def test_a_model_without_features_needs_a_contract_named_like_it(project: Path) -> None:
    from keel.registry.transitions import promote
    from tests.serving.conftest import train_model

    train_model("plain", alias=None)
    promote("plain", 1, "production")
    assert ("model_version", "plain/1", "no_contract") in problems(responsibility_gaps())
    (project / "contracts").mkdir()
    (project / "contracts" / "plain.yaml").write_text(CONTRACT.format(name="plain_inputs", owner="erin").replace("customer_id", "a"))
    assert ("model_version", "plain/1", "no_contract") not in problems(responsibility_gaps())


def test_cli_owners_report_and_check(fs_model: Any, project: Path) -> None:
    from keel.cli.main import app
    from keel.registry.transitions import promote

    r = CliRunner()
    out = r.invoke(app, ["owners", "--check"])
    assert out.exit_code == 0, out.output
    assert "No responsibility gap" in out.output and "feature_view" in out.output

    promote("churn_fs", 1, "production")
    out = r.invoke(app, ["owners"])
    assert out.exit_code == 0 and "Responsibility gaps" in out.output and "no monitor" in out.output
    out = r.invoke(app, ["owners", "--check", "--json"])
    assert out.exit_code == 1
    body = json.loads(out.output)
    assert {g["problem"] for g in body["gaps"]} == {"no_monitor", "no_contract"} and body["production"][0]["model"] == "churn_fs"

    out = r.invoke(app, ["owners", "ls", "feature_view", "--json"])  # one kind
    assert out.exit_code == 0 and json.loads(out.output)["kinds"] == ["feature_view"]
    out = r.invoke(app, ["owners", "ls", "model", "churn_fs", "--json"])  # one object, as before
    assert out.exit_code == 0 and json.loads(out.output)["name"] == "churn_fs"
    bad = r.invoke(app, ["owners", "ls", "modle"])
    assert bad.exit_code == 1 and "Did you mean 'model'" in bad.output


@pytest.mark.parametrize("owners", [["alice", "bob"], "alice, bob"])
def test_monitors_take_declared_owners(project: Path, owners: Any) -> None:
    from keel.monitoring.monitors import define_monitor
    from keel.store.owners import owners_of
    from tests.serving.conftest import train_model

    train_model("churn")
    define_monitor("m1", "churn", owners=owners)
    assert owners_of("monitor", "m1") == ["alice", "bob"]
