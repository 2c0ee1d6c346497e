import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import keel
from keel.cli.main import app

runner = CliRunner()


def _two_runs() -> tuple[str, str]:
    with keel.start_run(name="a", experiment="cli") as a:
        keel.log_params({"model": "lgbm", "lr": 0.1})
        keel.log_metric("auc", 0.8)
    with keel.start_run(name="b", experiment="cli") as b:
        keel.log_params({"model": "xgb", "lr": 0.2})
        keel.log_metric("auc", 0.9)
    return a.id, b.id


def test_runs_ls_show_diff_compare_json(project: Path) -> None:
    a, b = _two_runs()
    out = runner.invoke(app, ["runs", "ls", "-e", "cli", "-f", "metrics.auc > 0.85", "--json"])
    assert out.exit_code == 0, out.output
    assert [r["run_id"] for r in json.loads(out.stdout)] == [b]
    out = runner.invoke(app, ["runs", "show", a[:8], "--json"])
    assert json.loads(out.stdout)["params"] == {"model": "lgbm", "lr": "0.1"}
    out = runner.invoke(app, ["runs", "diff", a, b, "--json"])
    diff = json.loads(out.stdout)
    assert {p["key"] for p in diff["params"]} == {"model", "lr"}
    out = runner.invoke(app, ["runs", "compare", "a", "b"])
    assert out.exit_code == 0 and "lgbm" in out.stdout and "xgb" in out.stdout
    out = runner.invoke(app, ["experiments", "ls", "--json"])
    assert any(e["name"] == "cli" and e["runs"] == 2 for e in json.loads(out.stdout))


def test_bad_input_is_one_line_and_non_zero(project: Path) -> None:
    _two_runs()
    out = runner.invoke(app, ["runs", "show", "no-such-run"])
    assert out.exit_code == 1
    assert "No run with id or name 'no-such-run'" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["runs", "ls", "-e", "cli", "-f", "metrics.acu > 1"])
    assert out.exit_code == 1 and "metrics.auc" in out.output


def test_delete_and_gc(project: Path) -> None:
    a, _ = _two_runs()
    out = runner.invoke(app, ["runs", "delete", a, "--yes", "--json"])
    assert json.loads(out.stdout)["deleted"] == [a]
    assert runner.invoke(app, ["runs", "show", a]).exit_code == 1
    out = runner.invoke(app, ["gc", "--grace", "0", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["kept"] >= 1


def test_reproduce_restores_code_diff_lock_and_command(project: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (project / "train.py").write_text("import keel, sys\nwith keel.start_run() as r:\n    keel.log_param('x', 1)\nprint(r.id)\n")
    git("add", "train.py")
    git("commit", "-qm", "train")
    (project / "train.py").write_text((project / "train.py").read_text() + "# uncommitted change\n")
    env = {**os.environ, "KEEL_HOME": str(project)}
    rid = subprocess.run([sys.executable, "train.py", "--epochs", "3"], cwd=project, env=env, capture_output=True, text=True, check=True).stdout.strip()
    info = keel.get_run(rid)
    assert info.env["git"]["dirty"] is True and len(info.env["git"]["diff_sha256"]) == 64
    out = runner.invoke(app, ["runs", "reproduce", rid, str(project / "repro"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    repro = project / "repro"
    assert (repro / "code" / "train.py").read_text().endswith("# uncommitted change\n")
    assert "keel==" in (repro / "requirements.txt").read_text().lower() or "sqlalchemy==" in (repro / "requirements.txt").read_text().lower()
    assert "python train.py --epochs 3" in (repro / "run.sh").read_text()
    assert any("input data" in m or "machine" in m for m in result["missing"])
    # a second reproduce into the same, now non-empty, folder is refused
    assert runner.invoke(app, ["runs", "reproduce", rid, str(repro)]).exit_code == 1


def test_config_and_init(project: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["config", "--json"])
    data = json.loads(out.stdout)
    assert {s["name"] for s in data["settings"]} >= {"metadata_uri", "artifacts_uri", "online_uri"}
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["init", str(fresh)]).exit_code == 0
    assert runner.invoke(app, ["init", str(fresh)]).exit_code == 1


def test_init_with_a_github_workflow(tmp_path: Path) -> None:
    out = runner.invoke(app, ["init", str(tmp_path / "p"), "--ci", "github"])
    assert out.exit_code == 0, out.output
    wf = (tmp_path / "p" / ".github" / "workflows" / "keel.yml").read_text()
    assert "keel ci" in wf and "pipelines:training" in wf
    assert runner.invoke(app, ["init", str(tmp_path / "q"), "--ci", "gitlab"]).exit_code == 1


def test_init_ci_github_in_an_existing_project_installs_the_extras_it_needs(project: Path) -> None:
    (project / "pipelines.py").write_text(
        "import keel\nfrom sklearn.linear_model import LogisticRegression\n\n\n"
        "@keel.tune(space={'c': (0.1, 1.0)}, n_trials=2)\ndef train(df, *, params, trial):\n    import lightgbm\n    return 0.0, None\n"
    )
    before = (project / "keel.yaml").read_text()
    out = runner.invoke(app, ["init", ".", "--ci", "github"])
    assert out.exit_code == 0, out.output
    assert (project / "keel.yaml").read_text() == before  # the project's settings are kept
    assert "it installs keel[lightgbm,tuning]" in out.output
    wf = (project / ".github" / "workflows" / "keel.yml").read_text()
    assert 'pip install "keel[lightgbm,tuning]"' in wf and "keel ci pipelines:training" in wf
    assert "pip install -e ." not in wf  # the project is not a package


def test_config_masks_passwords_in_uris(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("KEEL_METADATA_URI", "postgresql+psycopg://bob:s3cret-pw@db.example:5432/keel")
    monkeypatch.setenv("KEEL_ONLINE_URI", "redis://:t0ken-value@cache.example:6379/0")
    for args in (["config"], ["config", "--json"]):
        out = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        assert "s3cret-pw" not in out.output and "t0ken-value" not in out.output
        assert "bob:***@db.example" in out.output and ":***@cache.example" in out.output
