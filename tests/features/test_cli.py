"""`keel features apply|ls|show|materialize|skew`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from keel.cli.main import app

runner = CliRunner()


def test_features_commands(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    dry = runner.invoke(app, ["features", "apply", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["changed"] is False
    res = runner.invoke(app, ["features", "apply", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["definitions_version"] == 1
    assert "No changes" in runner.invoke(app, ["features", "apply"]).output

    mat = runner.invoke(app, ["features", "materialize", "--json"])
    assert mat.exit_code == 0, mat.output
    assert json.loads(mat.output)["keys_written"] == 100

    listing = json.loads(runner.invoke(app, ["features", "ls", "--json"]).output)
    usage = next(r for r in listing if r["kind"] == "feature_view" and r["name"] == "usage")
    assert usage["used_by"] == ["churn_v1"] and usage["materialized_until"] and usage["owner"] == "growth@example.com"

    shown = runner.invoke(app, ["features", "show", "usage", "--kind", "feature_view"])
    assert shown.exit_code == 0 and "minutes_per_session" in shown.output and "nullif" in shown.output

    skew = runner.invoke(app, ["features", "skew", "churn_v1", "--sample", "5", "--json"])
    assert skew.exit_code == 0, skew.output
    assert json.loads(skew.output)["ok"] is True


def test_errors_are_one_line_messages(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    runner.invoke(app, ["features", "apply"])
    bad = runner.invoke(app, ["features", "show", "usge"])
    assert bad.exit_code == 1 and "Did you mean 'usage'" in bad.output
    bad = runner.invoke(app, ["features", "skew", "churn_v2"])
    assert bad.exit_code == 1 and "Did you mean 'churn_v1'" in bad.output


def test_every_command_has_an_example() -> None:
    from keel.cli.features import features_app

    for command in features_app.registered_commands:
        assert command.callback is not None and "Example:" in (command.callback.__doc__ or ""), command.name


def test_retire_deletes_an_old_versions_online_values(churn_project: tuple[Path, dict[str, pd.DataFrame]]) -> None:
    import os

    root, _ = churn_project
    assert runner.invoke(app, ["features", "apply"]).exit_code == 0
    assert runner.invoke(app, ["features", "materialize"]).exit_code == 0
    path = root / "features.py"
    path.write_text(path.read_text().replace("minutes / nullif(sessions, 0)", "minutes / nullif(sessions + 1, 0)"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert runner.invoke(app, ["features", "apply", "--allow-breaking"]).exit_code == 0
    bad = runner.invoke(app, ["features", "retire", "usage", "2"])
    assert bad.exit_code == 1 and "cannot be retired" in bad.output
    res = runner.invoke(app, ["features", "retire", "usage", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["namespace"].startswith("fv:usage:")
