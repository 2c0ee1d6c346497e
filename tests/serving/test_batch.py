"""Batch scoring: chunks, row ids, bad rows by row number, the prediction log with a batch id, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from keel.cli.main import app
from keel.errors import ValidationError
from tests.serving.conftest import make_data, train_model


def _input(path: Path, n: int = 1000, nulls: tuple[int, ...] = ()) -> pd.DataFrame:
    df = make_data(n, seed=3)[["a", "b", "plan"]]
    for i in nulls:
        df.loc[i, "plan"] = None
    df.to_parquet(path, index=False)
    return df


def test_score_in_chunks_writes_row_ids_outputs_and_logs(served_model: Any, proj: Path) -> None:
    import keel
    from keel.serving import score

    df = _input(proj / "in.parquet", 1000)
    seen: list[tuple[int, int]] = []
    result = score("models:/churn@live", proj / "in.parquet", proj / "out.parquet", chunk_rows=300, progress=lambda d, t: seen.append((d, t)))
    assert result.rows_in == result.rows_scored == 1000 and result.chunks == 4 and result.rows_skipped == 0
    assert seen[-1] == (1000, 1000) and len(seen) == 4
    out = pq.read_table(proj / "out.parquet").to_pandas()
    assert out["row_id"].tolist() == list(range(1000)) and (out["model_version"] == served_model.version).all()
    want = keel.load_model("models:/churn@live").predict_proba(df)[:, 1]
    assert np.allclose(out["score"], want) and set(out["prediction"]) <= {0, 1}
    logged = keel.predictions("churn")
    assert len(logged) == 1000 and set(logged["batch_id"]) == {result.batch_id}
    assert logged["request_id"].iloc[0] == f"{result.batch_id}:0"


def test_bad_rows_fail_or_are_skipped_with_their_row_numbers(local: Path) -> None:
    from keel.serving import score

    train_model()
    _input(local / "in.parquet", 500, nulls=(7, 420))
    with pytest.raises(ValidationError, match="row 7") as info:
        score("models:/churn@live", local / "in.parquet", local / "out.parquet", chunk_rows=100)
    assert info.value.detail["rows"] == [7]
    assert not (local / "out.parquet").exists()  # nothing half-written
    result = score("models:/churn@live", local / "in.parquet", local / "out.parquet", chunk_rows=100, on_error="skip", log=False)
    assert result.rows_scored == 498 and result.rows_skipped == 2 and [b["row"] for b in result.bad_rows] == [7, 420]
    out = pq.read_table(local / "out.parquet")
    assert 7 not in out["row_id"].to_pylist() and 420 not in out["row_id"].to_pylist()
    # a column of the wrong type spoils its chunk
    df = pd.read_parquet(local / "in.parquet").dropna()
    df["a"] = df["a"].astype(str)
    df.to_parquet(local / "bad.parquet", index=False)
    with pytest.raises(ValidationError, match="cannot be scored"):
        score("models:/churn@live", local / "bad.parquet", local / "out2.parquet")


def test_cli_score_and_predictions_query(local: Path) -> None:
    train_model()
    _input(local / "in.parquet", 200)
    runner = CliRunner()
    r = runner.invoke(app, ["score", "models:/churn@live", "-i", "in.parquet", "-o", "scores.parquet", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["rows_scored"] == 200
    r = runner.invoke(app, ["predictions", "query", "SELECT batch_id, count(*) AS n FROM predictions GROUP BY batch_id", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [{"batch_id": result["batch_id"], "n": 200}]
    r = runner.invoke(app, ["predictions", "query", "SELECT model, count(*) AS n FROM predictions GROUP BY model"])
    assert r.exit_code == 0 and "churn" in r.output and "200" in r.output
    r = runner.invoke(app, ["predictions", "query", "DROP TABLE predictions"])
    assert r.exit_code == 1 and "Only SELECT" in r.output
    r = runner.invoke(app, ["predictions", "query", "SELECT * FROM read_csv('/etc/passwd')"])
    assert r.exit_code == 1 and "disabled" in r.output
    r = runner.invoke(app, ["score", "models:/nope@live", "-i", "in.parquet", "-o", "x.parquet"])
    assert r.exit_code == 1 and "nope" in r.output
    r = runner.invoke(app, ["serve", "models:/nope/1"])
    assert r.exit_code == 1 and "No registered model" in r.output


def test_read_filters_by_time_version_and_route(local: Path) -> None:
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa

    from keel.store import predictions

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(minutes=40 * i) for i in range(6)]
    predictions.append(pa.table({"request_id": [f"r{i}" for i in range(6)], "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                                 "model": ["m"] * 6, "version": [1, 1, 2, 2, 2, 1], "route": ["default"] * 5 + ["shadow"],
                                 "x": [0.1 * i for i in range(6)], "prediction": [0, 1, 0, 1, 0, 1]}))
    assert len(predictions.partitions("m")) == 4  # one per (version, hour)
    t = predictions.read("m", start=t0 + timedelta(hours=1), end=t0 + timedelta(hours=3))
    assert t["request_id"].to_pylist() == ["r2", "r3", "r4"]
    assert predictions.read("m", version=1)["request_id"].to_pylist() == ["r0", "r1", "r5"]
    assert predictions.read("m", route="shadow", columns=["request_id", "x"]).to_pylist() == [{"request_id": "r5", "x": 0.5}]
    assert predictions.read("nobody").num_rows == 0 and "request_id" in predictions.read("nobody").column_names
    assert predictions.read("m").schema.field("ts").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValidationError, match="request_id"):
        predictions.append(pa.table({"model": ["m"], "version": [1]}))
