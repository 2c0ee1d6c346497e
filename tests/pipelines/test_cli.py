"""keel pipelines run|resume|ls|show, keel schedule, keel scheduler, keel ci."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from keel.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_run_show_ls_and_resume(flow, project: Path) -> None:
    r = invoke("pipelines", "run", "flowmod:flow", "--param", "n=4", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["status"] == "finished" and out["cached"] == 0
    run_id = out["run_id"]
    again = json.loads(invoke("pipelines", "run", "flowmod:flow", "-p", "n=4", "--json").stdout)
    assert again["cached"] == 3
    shown = invoke("pipelines", "show", run_id[:10])
    assert shown.exit_code == 0
    assert "load" in shown.stdout and "double" in shown.stdout and "total" in shown.stdout and "finished" in shown.stdout
    js = json.loads(invoke("pipelines", "show", run_id, "--json").stdout)
    assert [s["name"] for s in js["graph"]["steps"]] == ["load", "double", "total"]
    assert js["graph"]["steps"][2]["upstream"] == ["load", "double"]
    listed = json.loads(invoke("pipelines", "ls", "--json").stdout)
    assert [row["cached"] for row in listed] == [3, 0]
    resumed = json.loads(invoke("pipelines", "resume", run_id, "--from", "double", "--json").stdout)
    assert [s["status"] for s in resumed["steps"]] == ["cached", "finished", "finished"]
    assert "Pipeline runs" in invoke("pipelines", "ls").stdout


def test_bad_input_is_one_line_before_anything_runs(flow) -> None:
    for args, message in [
        (("--param", "nn=3"), "has no parameter 'nn'. Did you mean 'n'?"),
        (("--param", "n=three"), "parameter 'n' = 'three' is not a valid int"),
        (("--param", "n"), "--param 'n' is not key=value"),
    ]:
        r = runner.invoke(app, ["pipelines", "run", "flowmod:flow", *args])
        assert r.exit_code == 1 and message in r.output
    r = runner.invoke(app, ["pipelines", "run", "nomodule_here:flow"])
    assert r.exit_code == 1 and "No module named 'nomodule_here'" in r.output
    from keel.pipelines.runner import list_runs

    assert list_runs() == []


def test_failed_run_exits_non_zero_and_names_the_step(write_module) -> None:
    write_module("bad_cli_mod", """
    import keel

    @keel.step
    def broken(n: int) -> int:
        raise ValueError("no good")

    @keel.pipeline
    def p(n: int = 1):
        return broken(n)
    """)
    r = runner.invoke(app, ["pipelines", "run", "bad_cli_mod:p"])
    assert r.exit_code == 1
    assert "Step broken" in r.output and "ValueError: no good" in r.output


def test_schedule_commands_scheduler_and_ci(flow) -> None:
    r = invoke("schedule", "add", "nightly", "flowmod:flow", "--cron", "0 3 * * *", "--param", "n=2")
    assert r.exit_code == 0 and "nightly" in r.stdout
    assert json.loads(invoke("schedule", "ls", "--json").stdout)[0]["params"] == {"n": 2}
    assert "cron 0 3 * * *" in invoke("schedule", "ls").stdout
    fired = json.loads(invoke("scheduler", "--once", "--now", "2099-01-01T03:00:00Z", "--json").stdout)
    assert [(f["schedule"], f["status"]) for f in fired] == [("nightly", "finished")]
    assert invoke("scheduler", "--once", "--now", "2099-01-01T03:00:30Z").stdout.strip() == "Nothing due."
    bad = runner.invoke(app, ["scheduler", "--once", "--now", "2099-01-01T03:00:00"])
    assert bad.exit_code == 1 and "has no time zone" in bad.output
    assert invoke("schedule", "rm", "nightly").exit_code == 0
    ci = invoke("ci", "flowmod:flow", "--json")
    assert ci.exit_code == 0 and json.loads(ci.stdout)["ok"] is True
