"""``keel retraining``: declare from keel.yaml, ls / show / history with --json, run --dry-run, pause, resume, bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from keel.cli.main import app
from tests.loop.test_policies import champion  # noqa: F401  (the fixture)


def keel(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_declare_ls_show_history_run_pause(champion: dict[str, Any]) -> None:  # noqa: F811
    from keel import config

    folder: Path = champion["folder"]
    conf = yaml.safe_load((folder / "keel.yaml").read_text()) or {}
    conf["retraining"] = {"churn-retrain": {"model": "churn", "triggers": [{"alert": "churn-daily"}, {"schedule": "0 3 * * 0"}],
                                            "window": "2d", "window_source": "labelled.parquet", "window_column": "ts"}}
    (folder / "keel.yaml").write_text(yaml.safe_dump(conf))
    config.reset()
    out = keel("retraining", "declare", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["version"] == 1
    listed = json.loads(keel("retraining", "ls", "--json").output)
    assert [p["name"] for p in listed] == ["churn-retrain"] and listed[0]["origin"] == "keel.yaml"
    shown = keel("retraining", "show", "churn-retrain")
    assert shown.exit_code == 0 and "alert of churn-daily" in shown.output and "cron 0 3 * * 0" in shown.output
    dry = keel("retraining", "run", "churn-retrain", "--dry-run")
    assert dry.exit_code == 0 and "1. run loop_pipes_" in dry.output and "nothing changed" in dry.output
    assert keel("retraining", "pause", "churn-retrain", "--reason", "labels late").exit_code == 0
    skipped = keel("retraining", "run", "churn-retrain")
    assert "skipped" in skipped.output and "paused" in skipped.output
    assert keel("retraining", "resume", "churn-retrain").exit_code == 0
    events = json.loads(keel("retraining", "history", "churn-retrain", "--json").output)
    assert [e["action"] for e in events][:4] == ["resume", "trigger", "pause", "dry_run"]
    assert events[2]["detail"] == {"reason": "labels late"} and all(e["user"] for e in events)


def test_cli_bad_input_is_one_line(champion: dict[str, Any]) -> None:  # noqa: F811
    out = keel("retraining", "show", "churn-retrian")
    assert out.exit_code == 1 and "No retraining policy named 'churn-retrian'" in out.output
    out = keel("retraining", "declare", "p1", "--model", "churn", "--on-alert", "nope", "--window-source", "labelled.parquet",
               "--window-column", "ts", "--window", "2d")
    assert out.exit_code == 1 and "Monitor 'nope' does not exist" in out.output
    out = keel("retraining", "declare", "p1", "--model", "churn", "--on-performance", "churn-daily:roc_auc<0.7:2",
               "--window-source", "labelled.parquet", "--window-column", "tss", "--window", "2d")
    assert out.exit_code == 1 and "window_column 'tss' is not in labelled.parquet" in out.output and "'ts'" in out.output
    out = keel("retraining", "declare", "p1", "--model", "churn", "--on-performance", "churn-daily:roc_auc<0.7:2",
               "--window-source", "labelled.parquet", "--window-column", "ts", "--window", "2d")
    assert out.exit_code == 0, out.output
    assert "churn-daily" in keel("retraining", "show", "p1").output
