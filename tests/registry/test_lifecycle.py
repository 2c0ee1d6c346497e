"""Archiving and deleting registered models and versions: audited, refused while held, deletes are tombstones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import keel
from keel import registry
from keel.cli.main import app
from keel.errors import ConflictError, NotFoundError, ValidationError

pytestmark = pytest.mark.slow  # end-to-end, each on SQLite and PostgreSQL


def _artifact_rows(version_id: str) -> int:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import artifacts

    with get_metadata_store().read() as conn:
        return int(conn.execute(
            sa.select(sa.func.count()).where(artifacts.c.owner_kind == "model_version", artifacts.c.owner_id == version_id)
        ).scalar() or 0)


def test_archive_refuses_held_versions_and_blocks_promotion(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    v1, v2, v3 = train(), train(C=0.5), train(C=0.2)
    keel.promote("churn", 1, to="production")
    registry.set_alias("churn", "champion", 2)
    with pytest.raises(ConflictError, match=r"churn v1 cannot be archived: it is held by environment 'production' \(v1\)") as info:
        registry.archive_version("churn", 1)
    assert "rollback" in str(info.value)
    with pytest.raises(ConflictError, match=r"held by alias 'champion'.*keel models alias churn champion --delete"):
        registry.archive_version("churn", 2)
    event = registry.archive_version("churn", 3, reason="superseded")
    assert (event["action"], event["to_version"], event["reason"]) == ("archive", 3, "superseded")
    assert registry.get_version("churn", 3).status == "archived"
    # an archived version never enters an environment or alias, but loads by number
    with pytest.raises(ValidationError, match=r"churn v3 is archived; cannot promote it to staging.*--restore"):
        keel.promote("churn", 3, to="staging")
    with pytest.raises(ValidationError, match="archived"):
        registry.set_alias("churn", "challenger", 3)
    assert len(keel.load_model("models:/churn/3", cache=False).predict(data)) == len(data)
    assert keel.load_model("models:/churn/latest", cache=False).source.version == 2  # latest skips retired versions
    registry.restore_version("churn", 3)
    registry.set_alias("churn", "challenger", 3)
    actions = [(e["action"], e["to_version"]) for e in registry.history("churn") if e["action"] in ("archive", "unarchive")]
    assert actions == [("archive", 3), ("unarchive", 3)]
    with pytest.raises(ConflictError, match="not archived"):
        registry.restore_version("churn", 3)
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.archive_version("churn", 9)
    assert (v1.version, v2.version, v3.version) == (1, 2, 3)


def test_delete_is_a_tombstone(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.registry import model_versions

    v1, _v2 = train(), train(C=0.5)
    keel.promote("churn", 2, to="production")
    with pytest.raises(ConflictError, match="production"):
        registry.delete_version("churn", 2)
    with get_metadata_store().read() as conn:
        vid = str(conn.execute(sa.select(model_versions.c.id).where(model_versions.c.version == 1)).scalar())
    assert _artifact_rows(vid) > 0
    registry.delete_version("churn", 1, reason="leaked labels")
    # the record and lineage keep resolving for what names it
    mv = registry.get_version("churn", 1)
    assert mv.status == "deleted" and mv.deleted_time is not None and mv.lineage["run_id"] == v1.run_id
    assert [v.version for v in registry.list_versions("churn")] == [2]
    assert [v.version for v in registry.list_versions("churn", include_deleted=True)] == [1, 2]
    # its files are released (keel gc may reclaim them), and loading says why it cannot
    assert _artifact_rows(vid) == 0
    with pytest.raises(NotFoundError, match=r"Version 1 of model 'churn' was deleted"):
        keel.load_model("models:/churn/1", cache=False)
    with pytest.raises(ValidationError, match="deleted"):
        keel.promote("churn", 1, to="staging")
    with pytest.raises(ConflictError, match="already deleted"):
        registry.delete_version("churn", 1)
    # version numbers are never reused; registering the same run again makes a new version
    assert keel.register_model(f"runs:/{v1.run_id}/model", "churn").version == 3
    assert [e["action"] for e in registry.history("churn")].count("delete") == 1


def test_delete_model_refused_while_held_then_tombstoned_and_revived(proj: Path, train: Callable[..., Any]) -> None:
    train(), train(C=0.5)
    registry.set_alias("churn", "champion", 1)
    with pytest.raises(ConflictError, match=r"Model 'churn' cannot be deleted: it is held by alias 'champion' \(v1\)"):
        registry.delete_model("churn")
    registry.delete_alias("churn", "champion")
    registry.delete_model("churn")
    assert [m.name for m in registry.list_models()] == []
    assert registry.get_model("churn").status == "deleted"
    assert {v.status for v in registry.list_versions("churn", include_deleted=True)} == {"deleted"}
    # the name comes back with the next number: churn v1 stays the version the lineage names
    v3 = train(C=0.1)
    assert v3.version == 3 and registry.get_model("churn").status == "active"
    assert registry.get_version("churn", 1).status == "deleted"


def test_archived_model_takes_no_versions_until_restored(proj: Path, train: Callable[..., Any]) -> None:
    train()
    registry.archive_model("churn", reason="project closed")
    assert registry.get_model("churn").status == "archived"
    with pytest.raises(ValidationError, match=r"Model 'churn' is archived; it takes no new versions"):
        train(C=0.3)
    with pytest.raises(ValidationError, match=r"Model 'churn' is archived"):
        registry.set_alias("churn", "champion", 1)
    registry.restore_model("churn")
    assert train(C=0.3).version == 2


def test_cli_archive_and_delete(proj: Path, train: Callable[..., Any]) -> None:
    train(), train(C=0.5)
    keel.promote("churn", 1, to="production")
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "delete", "churn", "1", "--yes"])
    assert refused.exit_code == 1 and "production" in refused.output
    ok = runner.invoke(app, ["models", "archive", "churn", "2", "--reason", "old", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["action"] == "archive"
    assert runner.invoke(app, ["models", "archive", "churn", "2", "--restore"]).exit_code == 0
    gone = runner.invoke(app, ["models", "delete", "churn", "2", "-y"])
    assert gone.exit_code == 0 and "tombstone" in gone.output
    shown = runner.invoke(app, ["models", "show", "churn", "2"])
    assert shown.exit_code == 0 and "deleted" in shown.output
    asked = runner.invoke(app, ["models", "delete", "churn"], input="n\n")
    assert asked.exit_code == 1 and registry.get_model("churn").status == "active"
