"""The runs pages in a real browser: runs table -> tick two runs -> Compare -> a run -> download an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]


def test_runs_table_to_compare_to_a_run_and_its_artifact(project: Path, ui_server: Any, page: Any) -> None:
    import keel

    for i in range(3):
        with keel.start_run(experiment="churn", name=f"trial-{i}"):
            keel.log_params({"num_leaves": str(16 * (i + 1)), "model": "lgbm"})
            for step in range(50):
                keel.log_metric("loss", 1.0 / (step + 1 + i), step=step)
            keel.log_metric("auc", 0.8 + i / 100)
            keel.log_text(f"weights of trial {i}\n", "model/weights.txt")
    server = ui_server(project)

    page.goto(server.url + "/experiments")
    page.get_by_role("link", name="churn").click()
    table = page.get_by_role("table", name="Runs of churn")
    assert table.get_by_role("row").count() == 4  # the header and three runs
    page.get_by_role("link", name="metrics.auc").click()  # sort by a metric on the server
    page.wait_for_url("**sort=metrics.auc+DESC**")
    names = page.get_by_role("table", name="Runs of churn").locator("tbody tr td:nth-child(2) a").all_inner_texts()
    assert names == ["trial-2", "trial-1", "trial-0"]

    page.get_by_label("Select run trial-0").check()
    page.get_by_label("Select run trial-2").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/compare?runs=**")
    assert page.get_by_role("heading", name="Compare 2 runs").is_visible()
    assert page.get_by_role("img", name="loss").locator("polyline").count() == 2  # the two curves overlaid
    diff = page.get_by_role("table", name="Params of the runs; rows where the values differ are highlighted")
    assert "≠ num_leaves" in diff.locator("tr.differs").inner_text()
    page.get_by_label("X axis").select_option("relative")  # keel.js submits the form: redrawn on the server
    page.wait_for_url("**x=relative**")
    assert page.get_by_role("img", name="loss").is_visible()

    page.get_by_role("link", name="trial-2").first.click()
    page.wait_for_url("**/runs/*")
    assert page.get_by_role("heading", name="trial-2").is_visible()
    page.get_by_role("link", name="model/").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download weights.txt").click()
    saved = download.value.path()
    assert download.value.suggested_filename == "weights.txt" and Path(saved).read_text() == "weights of trial 2\n"
