"""keel runs ls reads well at 80 and 140 columns: sort key shown, empty columns hidden, -c adds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keel
from keel.cli.main import app

runner = CliRunner()


def _tuning_runs() -> None:
    for i in range(12):
        with keel.start_run(name=f"train-trial-{i}", experiment="churn"):
            keel.log_params({"num_leaves": 8 + 3 * i, "learning_rate": 0.020953 + i / 997, "min_child_samples": 5 + i,
                             **{f"constant_{k}": "same" for k in range(10)}})
            keel.log_metrics({"valid_roc_auc": 0.9 + i / 1000, "value": 0.9 + i / 1000, "keel.duration_s": 1.0 + i, "broken": math.nan})


def _table_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line[:1] in "┏┃┡│└"]


@pytest.mark.parametrize("width", [80, 140])
def test_runs_ls_fits_the_width_and_shows_the_sort_key(project: Path, width: int) -> None:
    _tuning_runs()
    out = runner.invoke(app, ["runs", "ls", "-e", "churn", "-o", "metrics.valid_roc_auc DESC"], env={"COLUMNS": str(width)})
    assert out.exit_code == 0, out.output
    lines = _table_lines(out.output)
    assert lines and max(len(line) for line in lines) <= width
    header = next(line for line in lines if "run" in line and "┃" in line)
    assert "valid_roc_auc ↓" in header  # the sort key, with its direction
    assert "broken" not in out.output.split("not shown")[0]  # empty for every run: never a column
    assert "constant_0" not in header  # the same in every run: not picked over varying keys
    assert "sorted by metrics.valid_roc_auc ↓" in out.output and "not shown:" in out.output
    first = next(line for line in lines if "train-trial-11" in line)
    assert lines.index(first) < next(i for i, line in enumerate(lines) if "train-trial-0 " in line)  # best first
    assert "0.911" in first


def test_negative_zero_is_printed_as_zero(project: Path) -> None:
    from keel.cli.runs_table import fmt

    assert fmt(-0.0) == "0" and fmt(0.0) == "0" and fmt(-0.5) == "-0.5"
    with keel.start_run(name="z", experiment="churn") as run:
        keel.log_metric("delta", -0.0)
    for args in (["runs", "ls", "-e", "churn"], ["runs", "show", run.id]):
        out = runner.invoke(app, args, env={"COLUMNS": "120"})
        assert out.exit_code == 0, out.output
        assert "-0 " not in out.output and "│ 0 " in out.output.replace("0  ", "0 ")


def test_runs_ls_picks_more_columns_when_wider_and_c_adds_one(project: Path) -> None:
    _tuning_runs()

    def headers(*args: str, width: int) -> str:
        out = runner.invoke(app, ["runs", "ls", "-e", "churn", *args], env={"COLUMNS": str(width)})
        assert out.exit_code == 0, out.output
        return next(line for line in _table_lines(out.output) if "┃" in line and "run" in line)

    narrow, wide = headers(width=80), headers(width=140)
    assert wide.count("┃") > narrow.count("┃")
    assert "started ↓" in narrow  # the default order, newest first
    assert "valid_roc_auc" in wide and "num_leaves" in wide and "learning_rate" in wide
    assert "constant_3" in headers("-c", "params.constant_3", width=140)
    bad = runner.invoke(app, ["runs", "ls", "-e", "churn", "-c", "params.num_leaf"])
    assert bad.exit_code == 1 and "Did you mean 'params.num_leaves'" in bad.output


def test_tables_of_models_and_the_quickstart_never_show_minus_zero() -> None:
    from keel.cli.models import _num as models_num
    from keel.quickstart.run import _num as quickstart_num

    assert models_num(-0.00001) == "0.0000" and models_num(-0.5) == "-0.5000"
    assert quickstart_num(-0.0) == "0.0000" and quickstart_num(None) == "-"
