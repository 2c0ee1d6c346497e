import math
from pathlib import Path

import pytest

import keel
from keel.errors import ConflictError, NotFoundError, ValidationError


@pytest.fixture(params=["sqlite", "postgres"])
def any_project(request: pytest.FixtureRequest) -> Path:
    """The same tests on the embedded store and on PostgreSQL."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_project")
    return request.getfixturevalue("project")


def test_run_records_params_metrics_tags_and_finishes(any_project: Path) -> None:
    with keel.start_run(name="first", experiment="exp") as run:
        keel.log_params({"lr": 0.1, "model": "lgbm"})
        keel.set_tag("team", "risk")
        for i in range(5):
            keel.log_metric("loss", 1.0 / (i + 1))
        keel.log_metrics({"auc": 0.91, "acc": 0.8})
    info = keel.get_run(run.id)
    assert info.status == "finished"
    assert info.experiment == "exp"
    assert info.params == {"lr": "0.1", "model": "lgbm"}
    assert info.tags["team"] == "risk"
    assert info.metrics["loss"] == pytest.approx(0.2)
    assert info.metrics["auc"] == pytest.approx(0.91)
    hist = keel.get_metric_history(run.id, "loss")
    assert list(hist["step"]) == [0, 1, 2, 3, 4]
    assert str(hist["timestamp"].dt.tz) == "UTC"
    assert info.end_time is not None and info.start_time is not None and info.end_time >= info.start_time


def test_nan_and_infinite_metrics_are_kept(any_project: Path) -> None:
    with keel.start_run() as run:
        keel.log_metric("loss", float("nan"))
        keel.log_metric("grad", float("inf"))
        keel.log_metric("neg", float("-inf"))
    info = keel.get_run(run.id)
    assert math.isnan(info.metrics["loss"])
    assert info.metrics["grad"] == math.inf
    assert info.metrics["neg"] == -math.inf
    assert math.isnan(keel.get_metric_history(run.id, "loss")["value"][0])


def test_latest_metric_is_the_largest_step(any_project: Path) -> None:
    with keel.start_run() as run:
        keel.log_metric("m", 5.0, step=10)
        keel.log_metric("m", 1.0, step=3)  # late, smaller step: not the latest
        run.flush()
        keel.log_metric("m", 2.0, step=2)
    assert keel.get_run(run.id).metrics["m"] == 5.0


def test_failed_run_keeps_the_traceback(any_project: Path) -> None:
    with pytest.raises(ZeroDivisionError), keel.start_run() as run:
        keel.log_metric("x", 1.0)
        1 / 0  # noqa: B018
    info = keel.get_run(run.id)
    assert info.status == "failed"
    assert "ZeroDivisionError" in (info.error or "")
    assert info.metrics["x"] == 1.0


def test_nested_runs_and_active_run_conflict(any_project: Path) -> None:
    with keel.start_run(name="parent", experiment="outer") as parent:
        with pytest.raises(ConflictError, match="already active"):
            keel.start_run()
        with keel.start_run(name="child", nested=True) as child:
            keel.log_metric("c", 1)
        assert keel.active_run() is parent
    assert keel.get_run(child.id).parent_id == parent.id
    assert keel.get_run(child.id).experiment == keel.get_run(parent.id).experiment
    assert keel.get_run(parent.id).children == [child.id]
    assert keel.active_run() is None


def test_param_cannot_change_and_nothing_is_half_written(any_project: Path) -> None:
    with keel.start_run() as run:
        keel.log_param("lr", 0.1)
        keel.log_param("lr", 0.1)  # the same value again is fine
        with pytest.raises(ValidationError, match=r"Param 'lr'.*already '0.1'"):
            keel.log_params({"depth": 3, "lr": 0.2})
    assert keel.get_run(run.id).params == {"lr": "0.1"}  # 'depth' was not written either


@pytest.mark.parametrize("bad", ["", " lead", "a" * 251, "semi;colon", "new\nline", "a//b"])
def test_invalid_names_are_rejected(project: Path, bad: str) -> None:
    with keel.start_run(), pytest.raises(ValidationError, match="Invalid metric name"):
        keel.log_metric(bad, 1.0)


@pytest.mark.parametrize("value", ["0.5", None, [1], object()])
def test_non_numeric_metric_values_are_rejected(project: Path, value: object) -> None:
    with keel.start_run(), pytest.raises(ValidationError, match="not a number"):
        keel.log_metric("m", value)


def test_values_over_the_size_limit_are_rejected(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MAX_VALUE_LENGTH", "10")
    with keel.start_run() as run:
        with pytest.raises(ValidationError, match="11 characters long; the limit is 10"):
            keel.log_param("p", "x" * 11)
        with pytest.raises(ValidationError, match="limit is 10"):
            keel.set_tag("t", "y" * 11)
    info = keel.get_run(run.id)
    assert "p" not in info.params and "t" not in info.tags


def test_numpy_scalars_are_numbers(project: Path) -> None:
    import numpy as np

    with keel.start_run() as run:
        keel.log_metric("a", np.float32(0.5))
        keel.log_metric("b", np.int64(3))
    assert keel.get_run(run.id).metrics == {"a": 0.5, "b": 3.0}


def test_history_is_downsampled_in_the_database(project: Path) -> None:
    with keel.start_run() as run:
        for i in range(10_000):
            keel.log_metric("loss", 100.0 if i == 4321 else 1.0 / (i + 1))
    full = keel.get_metric_history(run.id, "loss")
    small = keel.get_metric_history(run.id, "loss", max_points=300)
    assert len(full) == 10_000
    assert 2 <= len(small) <= 300
    assert small["value"].max() == 100.0  # the spike survives
    assert small["step"].iloc[0] == 0 and small["step"].iloc[-1] == 9_999
    assert small["step"].is_monotonic_increasing


def test_unknown_run_and_metric_suggest(project: Path) -> None:
    with pytest.raises(NotFoundError, match="No run"):
        keel.get_run("nope-nope")
    with keel.start_run() as run:
        keel.log_metric("accuracy", 1.0)
    with pytest.raises(NotFoundError, match="Did you mean 'accuracy'"):
        keel.get_metric_history(run.id, "acuracy")


def test_reproducibility_record_is_captured(project: Path) -> None:
    keel.seed(7)
    with keel.start_run() as run:
        pass
    info = keel.get_run(run.id)
    env = info.env
    assert env["python"].count(".") == 2
    assert env["seeds"]["python"] == 7
    assert env["argv"] and env["platform"]
    assert len(env["lock_sha256"]) == 64
    assert any(a["path"] == "keel/requirements.lock" and a["digest"] == env["lock_sha256"] for a in info.artifacts)
    assert env["git"]["repo"] is None  # the temp project is no git repository


def test_seed_rejects_bad_values(project: Path) -> None:
    with pytest.raises(ValidationError, match="Seed"):
        keel.seed(-1)


def test_delete_really_deletes(project: Path) -> None:
    from keel.tracking.query import delete_runs

    with keel.start_run() as parent:
        keel.log_param("a", 1)
        keel.log_metric("m", 1)
        with keel.start_run(nested=True) as child:
            keel.log_metric("m", 2)
    deleted = delete_runs([parent.id])
    assert set(deleted) == {parent.id, child.id}
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema import artifacts, metric_history, metrics, params, runs

    with get_metadata_store().read() as conn:
        for table, col in ((runs, runs.c.id), (params, params.c.run_id), (metrics, metrics.c.run_id), (metric_history, metric_history.c.run_id), (artifacts, artifacts.c.owner_id)):
            assert conn.execute(sa.select(sa.func.count()).select_from(table).where(col.in_(deleted))).scalar() == 0


def test_runs_diff_shows_params_metrics_and_data(project: Path) -> None:
    import pandas as pd

    from keel.tracking.diff import diff_runs

    with keel.start_run() as a:
        keel.log_params({"lr": 0.1, "depth": 3})
        keel.log_metric("auc", 0.8)
        keel.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), name="train")
    with keel.start_run() as b:
        keel.log_params({"lr": 0.2, "depth": 3})
        keel.log_metric("auc", 0.85)
        keel.log_dataset(pd.DataFrame({"x": [1, 2, 4]}), name="train")
    d = diff_runs(a.id, b.id)
    assert d.params == [("lr", "0.1", "0.2")]
    assert [m[0] for m in d.metrics] == ["auc"]
    assert [k for k, _, _ in d.data] == ["training:train"]
    assert d.packages == []  # same interpreter, same lock


def test_dataset_fingerprint_is_content_based(project: Path, tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    df.to_parquet(tmp_path / "d.parquet")
    with keel.start_run() as run:
        fp1 = keel.log_dataset(df, name="df")
        fp2 = keel.log_dataset(df.copy(), name="df2")
        fp3 = keel.log_dataset(df.assign(a=[1, 3]), name="df3")
        keel.log_dataset(tmp_path / "d.parquet", name="file")
    assert fp1 == fp2 != fp3
    ds = {d["name"]: d for d in keel.get_run(run.id).datasets}
    assert ds["file"]["num_rows"] == 2 and set(ds["file"]["schema"]) == {"a", "b"}
    assert ds["df"]["schema"]["a"] == "int64" and ds["df"]["schema"]["b"] in {"object", "str", "string"}


def test_training_set_attrs_are_recorded(project: Path) -> None:
    import pandas as pd

    from keel.store.fingerprint import frame_fingerprint

    df = pd.DataFrame({"x": [1]})
    df.attrs["keel"] = {"kind": "training_set", "fingerprint": frame_fingerprint(df), "feature_service": "churn_v1", "definitions_version": "abc"}
    with keel.start_run() as run:
        assert keel.log_dataset(df, name="train") == frame_fingerprint(df)
    extra = keel.get_run(run.id).datasets[0]["extra"]
    assert extra["feature_service"] == "churn_v1" and "derived_from" not in extra


def test_a_frame_derived_from_a_training_set_gets_its_own_fingerprint(project: Path) -> None:
    """pandas carries attrs through drop/filter: the recorded fingerprint must not stick to other data."""
    import pandas as pd

    from keel.store.fingerprint import frame_fingerprint

    train = pd.DataFrame({"x": [1, 2, 3], "label": [0, 1, 0]})
    train.attrs["keel"] = {"kind": "training_set", "fingerprint": frame_fingerprint(train), "feature_service": "churn_v1"}
    X = train.drop(columns=["label"])
    assert X.attrs["keel"]["fingerprint"] == frame_fingerprint(train)  # what pandas does
    with keel.start_run() as run:
        fp = keel.log_dataset(X, name="features")
    assert fp == frame_fingerprint(X) != frame_fingerprint(train)
    extra = keel.get_run(run.id).datasets[0]["extra"]
    assert extra["derived_from"] == frame_fingerprint(train) and extra["feature_service"] == "churn_v1"


def test_the_same_data_gets_one_fingerprint_through_every_path(project: Path, tmp_path: Path) -> None:
    """log_dataset (frame, Arrow, Parquet file), training sets and keel.evaluate agree on a fingerprint."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from keel.evaluation.evaluate import read_data
    from keel.features.offline import fingerprint as training_set_fingerprint

    df = pd.DataFrame({
        "id": np.arange(50, dtype="int64"),
        "score": np.linspace(0, 1, 50),
        "city": ["a", None, "bb", "c", "d"] * 10,
        "ts": pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC"),
        "label": [0, 1] * 25,
    })
    path = tmp_path / "eval.parquet"
    df.to_parquet(path)
    arrow_backed = df.convert_dtypes(dtype_backend="pyarrow")  # as keel's training sets hold it
    with keel.start_run():
        fps = {
            "frame": keel.log_dataset(df, name="a"),
            "arrow table": keel.log_dataset(pa.Table.from_pandas(df, preserve_index=False), name="b"),
            "parquet file": keel.log_dataset(str(path), name="c"),
            "arrow-backed frame": keel.log_dataset(arrow_backed, name="d"),
        }
    fps["training set"] = training_set_fingerprint(arrow_backed)
    fps["evaluate(path)"] = read_data(str(path))[2]
    fps["evaluate(frame)"] = read_data(df)[2]
    assert len(set(fps.values())) == 1, fps


def test_run_can_be_reopened(project: Path) -> None:
    with keel.start_run() as run:
        keel.log_metric("train_auc", 0.9)
    with keel.start_run(run_id=run.id):
        keel.log_metric("test_auc", 0.8)
    info = keel.get_run(run.id)
    assert info.status == "finished" and set(info.metrics) == {"train_auc", "test_auc"}


def test_experiment_lookup_suggests(project: Path) -> None:
    from keel.store.metadata import get_metadata_store
    from keel.tracking.runs import experiment_id

    keel.set_experiment("churn")
    with pytest.raises(NotFoundError, match="Did you mean 'churn'"):
        experiment_id(get_metadata_store(), "chrun")


def test_children_open_side_by_side_and_inherit_the_record(project: Path) -> None:
    with keel.start_run(name="pipeline") as parent:
        a = keel.start_run(name="step-a", parent=parent, activate=False)
        b = keel.start_run(name="step-b", parent=parent, activate=False)
        assert keel.active_run() is parent  # neither child took over
        a.log_metric("m", 1.0)
        b.log_metric("m", 2.0)
        a.end()
        b.end("failed")
    pa, ia, ib = keel.get_run(parent.id), keel.get_run(a.id), keel.get_run(b.id)
    assert set(pa.children) == {a.id, b.id}
    assert (ia.metrics["m"], ib.metrics["m"], ib.status) == (1.0, 2.0, "failed")
    assert ia.env["inherited_from"] == parent.id and ia.env["lock_sha256"] == pa.env["lock_sha256"]
    assert {x["digest"] for x in ia.artifacts} == {x["digest"] for x in pa.artifacts}
