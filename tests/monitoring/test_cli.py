"""keel monitor / alerts / feedback: thin commands over the library, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from keel.cli.main import app
from keel.monitoring import monitors as M
from tests.monitoring.conftest import log_rows, make_data

T0 = pd.Timestamp("2026-05-01", tz="UTC")


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_monitor_commands_end_to_end(registered: Callable[..., Any], project: Path) -> None:
    registered(validation=False)
    data = make_data(3000, 70)
    data.to_parquet(project / "valid.parquet")
    out = json.loads(_ok("monitor", "baseline", "churn", "--data", "valid.parquet", "--target", "churn", "--json"))
    assert out["version"] == 1 and out["performance"]["roc_auc"] > 0.75 and "charges" in out["columns"]
    assert "baseline of churn v1" in _ok("monitor", "baseline", "churn", "--data", "valid.parquet")
    for day in range(2):
        ids = log_rows("churn", 1, make_data(800, 71 + day, shift=15.0 * day), T0 + pd.Timedelta(days=day), step_s=100, prefix=f"d{day}")
    M.define_monitor("daily", "churn", window="1d")
    runs = json.loads(_ok("monitor", "run", "daily", "--end", "2026-05-03T00:00:00Z", "--backfill", "2", "--json"))
    assert [r["status"] for r in runs] == ["ok", "alert"] and "charges" in runs[1]["drifted"]
    text = _ok("monitor", "run", "daily", "--end", "2026-05-03T00:00:00Z")
    assert "charges" in text and "alert" in text
    listed = json.loads(_ok("monitor", "ls", "--json"))
    assert listed[0]["name"] == "daily" and listed[0]["last_run"]["status"] == "alert"
    assert "runs" in _ok("monitor", "show", "daily")
    _ok("monitor", "report", "daily", "-o", "r.html")
    assert (project / "r.html").read_text().startswith("<!doctype html>")
    alerts = json.loads(_ok("alerts", "ls", "--status", "open", "--json"))
    charges = next(a for a in alerts if a["subject"] == "charges")
    assert "image_svg" not in charges["context"]
    assert json.loads(_ok("alerts", "ack", str(charges["id"]), "--json"))["status"] == "acked"
    assert "resolved" in _ok("alerts", "resolve", str(charges["id"]))
    pd.DataFrame({"request_id": [*ids[:5], "ghost"], "label": [1, 0, 1, 0, 1, 1]}).to_csv(project / "labels.csv", index=False)
    fb = json.loads(_ok("feedback", "import", "labels.csv", "--model", "churn", "--json"))
    assert fb["matched"] == 5 and fb["unknown"] == 1 and fb["unknown_examples"] == ["ghost"]
    pd.DataFrame({"x": [1.0, 2.0] * 50}).to_parquet(project / "a.parquet")
    pd.DataFrame({"x": [1.0, 2.0] * 50}).to_parquet(project / "b.parquet")
    assert json.loads(_ok("monitor", "drift", "a.parquet", "b.parquet", "--json", "-o", "d.html"))["drifted"] == []
    assert (project / "d.html").exists()


def test_errors_are_one_line_and_non_zero(project: Path) -> None:
    for args, expected in (
        (["monitor", "run", "nope"], "Monitor 'nope' does not exist"),
        (["monitor", "baseline", "nope", "--data", "x.parquet"], "nope"),
        (["alerts", "ack", "5"], "Alert 5 does not exist"),
        (["alerts", "ls", "--status", "bogus"], "not known"),
        (["feedback", "import", "missing.csv", "--model", "m"], "does not exist"),
        (["monitor", "run", "x", "--end", "yesterday"], "not an ISO-8601 time"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "error:" in result.output and expected in result.output and "Traceback" not in result.output
