"""What the pipeline commands print: cache hit or miss, hints to `keel pipelines ls`, the scheduler's start."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from keel.cli.main import app
from tests.pipelines.conftest import FLOW

runner = CliRunner()


def test_a_cache_miss_shows_miss_and_a_hit_shows_hit(write_module) -> None:
    write_module("flowmod_cli", FLOW)
    first = runner.invoke(app, ["pipelines", "run", "flowmod_cli:flow", "-p", "n=4"], env={"COLUMNS": "120"})
    assert first.exit_code == 0, first.output
    rows = [line for line in first.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and all("│ miss " in line for line in rows)
    assert "error" not in first.stdout.splitlines()[1]  # no step failed: no empty error column
    run_id = json.loads(runner.invoke(app, ["pipelines", "ls", "--json"]).stdout)[0]["run_id"]
    shown = runner.invoke(app, ["pipelines", "show", run_id], env={"COLUMNS": "200"})
    assert shown.output.count("cache miss") == 3
    again = runner.invoke(app, ["pipelines", "run", "flowmod_cli:flow", "-p", "n=4"], env={"COLUMNS": "120"})
    assert sum("│ hit " in line for line in again.stdout.splitlines()) == 3


def test_pipelines_show_points_at_pipelines_ls(write_module) -> None:
    empty = runner.invoke(app, ["pipelines", "show"])
    assert empty.exit_code == 1 and "keel pipelines ls" in empty.output and "keel pipelines run" in empty.output
    write_module("flowmod_cli2", FLOW)
    assert runner.invoke(app, ["pipelines", "run", "flowmod_cli2:flow"]).exit_code == 0
    latest = runner.invoke(app, ["pipelines", "show"], env={"COLUMNS": "200"})
    assert latest.exit_code == 0 and "The latest pipeline run; `keel pipelines ls` lists them all." in latest.output
    assert "total" in latest.output
    unknown = runner.invoke(app, ["pipelines", "show", "nope"])
    assert unknown.exit_code == 1 and "No pipeline run 'nope'" in unknown.output and "keel pipelines ls" in unknown.output
    resume = runner.invoke(app, ["pipelines", "resume", "nope"])
    assert resume.exit_code == 1 and "keel pipelines ls" in resume.output


def test_the_scheduler_says_what_it_is_doing_at_start(write_module) -> None:
    write_module("flowmod_cli3", FLOW)
    added = runner.invoke(app, ["schedule", "add", "nightly", "flowmod_cli3:flow", "--cron", "0 3 * * *"])
    assert added.exit_code == 0, added.output
    out = runner.invoke(app, ["scheduler", "--once", "--now", "2026-01-01T01:00:00Z"])
    assert out.exit_code == 0, out.output
    assert "keel scheduler: checking 1 schedule(s) once: nightly (cron 0 3 * * *)." in out.output
    assert "Nothing due." in out.output
