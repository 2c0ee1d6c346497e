"""The experiments and runs pages over httpx: the table (sort, filter, columns, pages), compare, run detail, downloads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.anyio


def _runs(n: int, experiment: str = "exp-a") -> list[str]:
    import keel

    ids = []
    for i in range(n):
        with keel.start_run(experiment=experiment, name=f"run-{i:02d}") as run:
            keel.log_params({"lr": f"{0.01 * (i + 1):.2f}", "model": "lgbm" if i % 2 else "xgb"})
            for step in range(5):
                keel.log_metric("loss", 1.0 / (i + step + 1), step=step)
            keel.log_metric("auc", 0.5 + i / 100)
            ids.append(run.id)
    return ids


def _names(html: str) -> list[str]:
    """The run names in the runs table, in their order."""
    body = html.split('<table id="runs-table">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a href="/runs/[0-9a-f]{32}">(run-\d+)</a>', body)


async def test_experiments_list_counts_and_links(ui_client: Any) -> None:
    _runs(3, "exp-a")
    _runs(1, "exp-b")
    r = await ui_client.get("/experiments")
    assert r.status_code == 200 and float(r.headers["x-render-ms"]) >= 0
    assert '<a href="/runs?experiment=exp-a">exp-a</a>' in r.text and '<a href="/runs?experiment=exp-b">exp-b</a>' in r.text
    row = r.text.split('experiment=exp-a">exp-a</a>', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num" data-sort="3">3</td>' in row


async def test_runs_table_sorts_filters_and_chooses_columns(ui_client: Any) -> None:
    _runs(6)
    r = await ui_client.get("/runs", params={"experiment": "exp-a"})
    assert r.status_code == 200
    assert _names(r.text) == [f"run-{i:02d}" for i in range(5, -1, -1)]  # newest first
    assert ">metrics.auc</a>" in r.text and ">params.lr</a>" in r.text  # default columns
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "sort": "metrics.auc ASC"})
    assert _names(r.text) == [f"run-{i:02d}" for i in range(6)]
    assert 'aria-sort="ascending"' in r.text
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "sort": "params.lr DESC"})
    assert _names(r.text) == [f"run-{i:02d}" for i in range(5, -1, -1)]
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "filter": "params.model = 'lgbm' and metrics.auc > 0.51"})
    assert r.status_code == 200 and _names(r.text) == ["run-05", "run-03"] and "of 2" in r.text
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "columns": "params.model"})
    head = r.text.split("<thead>", 2)[1].split("</thead>", 1)[0]
    assert ">params.model</a>" in head and "metrics.auc" not in head
    assert 'name="columns" value="params.model" checked' in r.text  # the column form keeps the choice
    r = await ui_client.get("/runs", params=[("experiment", "exp-a"), ("columns", "params.model"), ("columns", "metrics.loss")])
    head = r.text.split("<thead>", 2)[1].split("</thead>", 1)[0]
    assert ">params.model</a>" in head and ">metrics.loss</a>" in head
    assert "sort=metrics.loss+DESC" in head and "columns=params.model%2Cmetrics.loss" in head  # sort links keep the columns


async def test_bad_filter_and_unknown_column_show_the_error_not_a_500(ui_client: Any) -> None:
    _runs(2)
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "filter": "metrics.auc >"})
    assert 400 <= r.status_code < 500 and 'role="alert"' in r.text and "metrics.auc &gt;" in r.text
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "filter": "metrics.acu > 0.5"})
    assert 400 <= r.status_code < 500 and "Unknown metric" in r.text and "metrics.auc" in r.text  # did you mean
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "columns": "metrics.nope"})
    assert 400 <= r.status_code < 500 and "Unknown column &#39;metrics.nope&#39;" in r.text
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "sort": "metrics.auc SIDEWAYS"})
    assert 400 <= r.status_code < 500 and 'role="alert"' in r.text
    r = await ui_client.get("/runs", params={"experiment": "no-such-exp"})
    assert r.status_code == 404 and "no-such-exp" in r.text


async def test_paging_counts_every_run(ui_client: Any) -> None:
    from keel.store.metadata import get_metadata_store

    _runs(1)
    _bulk_runs(get_metadata_store(), 120)
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "per_page": 50})
    assert "Runs 1 to 50 of 121" in r.text and "Page 1 of 3" in r.text and 'rel="next"' in r.text
    seen: list[str] = []
    for n in (1, 2, 3):
        r = await ui_client.get("/runs", params={"experiment": "exp-a", "per_page": 50, "page": n, "sort": "run_name ASC"})
        seen += re.findall(r'name="runs" value="([0-9a-f]{32})"', r.text)
    assert len(seen) == 121 and len(set(seen)) == 121
    assert "Runs 101 to 121 of 121" in r.text and 'rel="next"' not in r.text and 'rel="prev"' in r.text
    r = await ui_client.get("/runs", params={"experiment": "exp-a", "page": 0})
    assert r.status_code == 422


def _bulk_runs(store: Any, n: int) -> None:
    """n more finished runs in exp-a, written as the bulk benchmark does (rows the tracking API writes)."""
    import time
    import uuid

    import keel
    from keel.store.schema import runs

    exp = keel.set_experiment("exp-a")
    now = int(time.time() * 1000) - 10_000_000
    with store.write() as conn:
        store.insert_many(conn, runs, [(uuid.uuid4().hex, exp, f"bulk-{i:03d}", None, "finished", now + i, now + i + 5, now + i + 5,
                                        "bench", "localhost", None, "{}") for i in range(n)])


async def test_compare_diffs_params_and_overlays_curves(ui_client: Any) -> None:
    a, b, _c = _runs(3)
    r = await ui_client.get("/compare", params={"runs": f"{a},{b}"})
    assert r.status_code == 200
    assert r.text.count('<svg class="chart"') >= 2  # a chart per metric (auc, loss) and the scatter
    loss = r.text.split('aria-label="loss"', 1)[1].split("</svg>", 1)[0]
    assert loss.count("<polyline") == 2  # one curve per run
    params = r.text.split('<h2 id="params">', 1)[1].split('<h2 id="metrics">', 1)[0]
    assert re.search(r'<tr class="differs">\s*<th scope="row"><span title="values differ">≠ </span>lr</th>', params)
    assert "1 of 2 params differ" in params or "2 of 2 params differ" in params
    assert 'aria-label="auc by lr"' in r.text  # params vs a metric
    r2 = await ui_client.get("/compare", params=[("runs", a), ("runs", b), ("x", "relative"), ("smooth", "0.9"), ("metric", "loss")])
    assert r2.status_code == 200 and "seconds since the run started" in r2.text and "smoothed 0.9" in r2.text
    assert 'aria-label="loss by lr"' in r2.text
    for bad, message in (({"runs": a}, "Compare needs 2 to 10 runs; got 1"), ({}, "got 0"),
                         ({"runs": ",".join([*_runs(9, "exp-c"), a, b])}, "got 11"),
                         ({"runs": f"{a},{b}", "x": "sideways"}, "is no x axis"),
                         ({"runs": f"{a},{b}", "metric": "acu"}, "Did you mean")):
        r = await ui_client.get("/compare", params=bad)
        assert 400 <= r.status_code < 500 and "text/html" in r.headers["content-type"] and message in r.text, (bad, r.text[-800:])
    r = await ui_client.get("/compare", params={"runs": f"{a},{'f' * 32}"})
    assert r.status_code == 404


async def test_compare_draws_long_histories_downsampled(ui_client: Any) -> None:
    import numpy as np

    import keel

    ids = []
    for i in range(2):
        with keel.start_run(experiment="long") as run:
            for step, v in enumerate(np.sin(np.arange(20_000) / 500.0) + i):
                keel.log_metric("wave", float(v), step=step)
            ids.append(run.id)
    r = await ui_client.get("/compare", params={"runs": ",".join(ids), "smooth": "0.99"})
    assert r.status_code == 200 and "20,000 points" not in r.text and "40,000 points over 2 runs" in r.text
    for pts in re.findall(r'<polyline[^>]* points="([^"]+)"', r.text):
        assert len(pts.split()) <= 800


async def test_run_detail_shows_the_record_and_links(ui_client: Any, project: Path) -> None:
    import pandas as pd

    import keel

    with keel.start_run(experiment="exp-a", name="parent") as parent:
        keel.log_param("model", "lgbm")
        for step in range(3):
            keel.log_metric("auc", 0.8 + step / 100, step=step)
        keel.log_metric("one_value", 1.0)
        keel.set_tag("team", "risk")
        keel.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), name="train")
        keel.log_text("hello", "notes/readme.txt")
        keel.log_dict({"a": 1}, "notes/deep/config.json")
        for i in range(4):
            with keel.start_run(name=f"trial-{i}", nested=True):
                keel.log_params({"lr": str(0.1 * (i + 1)), "depth": str(3 + i)})
                keel.log_metric("value", 0.5 + 0.1 * i)
    r = await ui_client.get(f"/runs/{parent.id}")
    assert r.status_code == 200
    text = r.text
    assert "<th scope=\"row\">model</th><td>lgbm</td>" in text and "team" in text and "risk" in text
    assert 'aria-label="auc"' in text and 'aria-label="one_value"' not in text  # a plot per curve, one value is no curve
    assert '<a href="/runs/' + parent.id + '?path=notes#artifacts">notes/</a>' in text
    assert "train" in text and "training" in text  # the dataset input
    assert "Python" in text and "Download the package lock" in text  # the reproducibility record
    assert "Child runs" in text and text.count('aria-label="value by') == 2 and "Compare the best 4 trials" in text
    r = await ui_client.get(f"/runs/{parent.id}", params={"path": "notes"})
    assert "readme.txt" in r.text and 'deep/</a>' in r.text and f'href="/runs/{parent.id}/artifacts/notes/readme.txt"' in r.text
    r = await ui_client.get(f"/runs/{parent.id}", params={"path": "nothing"})
    assert r.status_code == 404
    r = await ui_client.get("/runs/" + "0" * 32)
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


async def test_run_detail_links_the_model_versions_registered_from_it(ui_client: Any) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    with keel.start_run(experiment="exp-a") as run:
        keel.log_model(LogisticRegression().fit(X, [0, 0, 1, 1]), "model", input_example=X.head(2))
    keel.register_model(f"runs:/{run.id}/model", "churn")
    r = await ui_client.get(f"/runs/{run.id}")
    assert '<a href="/models/churn/1">churn v1</a>' in r.text and '/lineage/models/churn/1' in r.text


async def test_artifact_download_is_the_stored_bytes(ui_client: Any, project: Path) -> None:
    import os

    import keel

    blob = os.urandom(300_000)
    (project / "weights.bin").write_bytes(blob)
    (project / "page.html").write_text("<script>alert(1)</script>")
    with keel.start_run(experiment="exp-a") as run:
        keel.log_artifact(project / "weights.bin", "model/weights.bin")
        keel.log_artifact(project / "page.html", "report é.html")
        keel.log_text("a,b\n1,2\n", "data.csv")
    r = await ui_client.get(f"/runs/{run.id}/artifacts/model/weights.bin")
    assert r.status_code == 200 and r.content == blob
    assert r.headers["content-disposition"].startswith('attachment; filename="weights.bin"')
    assert r.headers["content-type"] == "application/octet-stream"
    r = await ui_client.get(f"/runs/{run.id}/artifacts/data.csv", params={"inline": 1})
    assert r.content == b"a,b\n1,2\n" and r.headers["content-type"].startswith("text/csv") and r.headers["content-disposition"].startswith("inline")
    r = await ui_client.get(f"/runs/{run.id}/artifacts/{quote('report é.html')}", params={"inline": 1})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")  # never rendered in the UI's origin
    assert "filename*=UTF-8''report%20%C3%A9.html" in r.headers["content-disposition"] and r.headers["content-security-policy"] == "sandbox"
    r = await ui_client.get(f"/runs/{run.id}/artifacts/model")
    assert r.status_code == 404 and "is a folder" in r.text


@pytest.mark.parametrize("path", ["..%2F..%2Fkeel.yaml", "model/..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"])
async def test_artifact_path_traversal_is_refused(ui_client: Any, project: Path, path: str) -> None:
    import keel

    with keel.start_run(experiment="exp-a") as run:
        keel.log_text("x", "model/a.txt")
    r = await ui_client.get(f"/runs/{run.id}/artifacts/{path}")
    assert r.status_code == 422 and "text/html" in r.headers["content-type"]
    assert ("would escape the store" in r.text or "is an absolute path" in r.text) and "content-disposition" not in r.headers


async def test_corrupted_artifact_is_refused_not_sent(ui_client: Any, project: Path) -> None:
    import keel
    from keel.store.blobs import get_artifact_store

    with keel.start_run(experiment="exp-a") as run:
        keel.log_text("the real bytes", "a.txt")
    digest = keel.get_run(run.id).artifacts[0]["digest"]
    blob = get_artifact_store().backend._path(f"sha256/{digest[:2]}/{digest[2:]}")  # type: ignore[attr-defined]
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    r = await ui_client.get(f"/runs/{run.id}/artifacts/a.txt")
    assert r.status_code == 409 and "corrupted" in r.text and "tampered" not in r.text
