"""`keel models ...`: tables for people, --json for scripts, non-zero exit on refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from keel.cli.main import app

pytestmark = pytest.mark.slow  # many small end-to-end cases, each on SQLite and PostgreSQL


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    if env:
        from keel import config

        config.reset()
    return CliRunner().invoke(app, list(args), env=env)


def test_promote_prints_gates_and_refuses_with_exit_1(proj: Path, train: Callable[..., Any], data: pd.DataFrame) -> None:
    path = proj / "valid.parquet"
    data.to_parquet(path)
    train(columns=("a", "b"))
    train(columns=("a",))
    ok = _run("models", "promote", "churn", "1", "--to", "production")
    assert ok.exit_code == 0, ok.output
    assert "churn v1 is now in production" in ok.output
    refused = _run("models", "promote", "churn", "2", "--to", "production", "--data", str(path), "--target", "y")
    assert refused.exit_code == 1
    assert "FAIL" in refused.output and "roc_auc" in refused.output and "refused" in refused.output
    as_json = _run("models", "promote", "churn", "2", "--to", "production", "--data", str(path), "--target", "y", "--json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout[: as_json.stdout.rindex("}") + 1])
    assert body["status"] == "refused" and body["gates"]["passed"] is False


def test_status_history_ls_alias_rollback_json(proj: Path, train: Callable[..., Any]) -> None:
    train()
    train(C=0.3)
    assert _run("models", "promote", "churn", "1", "--to", "production").exit_code == 0
    assert _run("models", "alias", "churn", "challenger", "2").exit_code == 0
    st = json.loads(_run("models", "status", "churn", "--json").stdout)
    prod = next(e for e in st["environments"] if e["environment"] == "production")
    assert prod["version"] == 1 and st["aliases"] == {"challenger": 2}
    listed = json.loads(_run("models", "ls", "--json").stdout)
    assert listed[0]["name"] == "churn" and listed[0]["environments"] == {"production": 1}
    out = _run("models", "rollback", "churn", "--env", "production")
    assert out.exit_code == 1 and "no earlier version" in out.output
    unknown = _run("models", "show", "chrun")
    assert unknown.exit_code == 1 and "Did you mean 'churn'" in unknown.output
    text = _run("models", "status", "churn")
    assert text.exit_code == 0 and "production" in text.output and "rollback restores" in text.output
    hist = json.loads(_run("models", "history", "churn", "--json").stdout)
    assert [e["action"] for e in hist] == ["register", "register", "promote", "alias"]


def test_evaluate_and_approval_commands(proj: Path, train: Callable[..., Any], data: pd.DataFrame, configure: Callable[..., None]) -> None:
    path = proj / "valid.csv"
    data.to_csv(path, index=False)
    configure({"require_approval": ["production"]})
    train()
    train(C=0.2)
    ev = _run("models", "evaluate", "churn", "1", "--data", str(path), "--target", "y", "--slice", "region", "--json")
    assert ev.exit_code == 0, ev.output
    body = json.loads(ev.stdout)
    assert body["version"] == 1 and 0.5 < body["metrics"]["roc_auc"] <= 1 and {s["slice"] for s in body["slices"]} == {"region=north", "region=south"}
    req = _run("models", "promote", "churn", "1", "--to", "production", "--json", env={"KEEL_USER": "bob"})
    assert req.exit_code == 0, req.output
    rid = json.loads(req.stdout)["request_id"]
    pending = json.loads(_run("models", "requests", "churn", "--status", "pending", "--json").stdout)
    assert [r["id"] for r in pending] == [rid]
    own = _run("models", "approve", str(rid), "--reason", "mine", env={"KEEL_USER": "bob"})
    assert own.exit_code == 1 and "cannot approve it too" in own.output
    ok = _run("models", "approve", str(rid), "--reason", "reviewed", env={"KEEL_USER": "carol"})
    assert ok.exit_code == 0, ok.output
    cmp = _run("models", "evaluate", "churn", "2", "--data", str(path), "--target", "y")
    assert cmp.exit_code == 0 and "baseline" in cmp.output and "95% interval" in cmp.output
