"""Helpers for the retraining policy tests: a project pipeline that retrains on a window, and labelled data."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd

PIPES = '''
from __future__ import annotations

import pandas as pd

import keel
from keel.pipelines import FileRef

COLS = ["charges", "tenure", "control", "plan"]


@keel.step
def load(data: FileRef, window_start: str | None, window_end: str | None) -> pd.DataFrame:
    frame = pd.read_parquet(str(data))
    if window_start is not None:
        frame = frame[(frame["ts"] >= pd.Timestamp(window_start)) & (frame["ts"] < pd.Timestamp(window_end))]
    if frame.empty:
        raise ValueError(f"no labelled rows between {window_start} and {window_end}")
    return frame.sort_values("ts").reset_index(drop=True)


@keel.step(produces=["model:churn"])
def fit_register(frame: pd.DataFrame) -> dict:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cut = int(len(frame) * 0.7)
    train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    pre = ColumnTransformer([("num", StandardScaler(), ["charges", "tenure", "control"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    model = make_pipeline(pre, LogisticRegression(max_iter=500)).fit(train[COLS], train["churn"])
    path = f"holdout-{keel.active_run().id}.parquet"
    holdout[[*COLS, "churn"]].to_parquet(path)
    keel.log_dataset(path, "valid", context="validation")
    info = keel.log_model(model, input_example=train[COLS].head(5))
    version = keel.register_model(info.uri, "churn")
    return {"version": version.version, "data": path, "target": "churn"}


@keel.pipeline(experiment="churn")
def retrain(window_start: str | None = None, window_end: str | None = None, data: FileRef = FileRef("labelled.parquet")) -> dict:
    return fit_register(load(data, window_start, window_end))


@keel.pipeline(experiment="churn")
def no_window(data: FileRef = FileRef("labelled.parquet")) -> dict:
    return fit_register(load(data, None, None))


@keel.step
def explode(frame: pd.DataFrame) -> dict:
    raise RuntimeError("the feature store is down")


@keel.pipeline(experiment="churn")
def broken(window_start: str | None = None, window_end: str | None = None, data: FileRef = FileRef("labelled.parquet")) -> dict:
    return explode(load(data, window_start, window_end))


@keel.step(produces=["exports"])
def export(frame: pd.DataFrame) -> dict:
    return {"rows": len(frame)}


@keel.pipeline(experiment="churn")
def exporting(window_start: str | None = None, window_end: str | None = None, data: FileRef = FileRef("labelled.parquet")) -> dict:
    return export(load(data, window_start, window_end))
'''


def write_pipes(folder: Path) -> str:
    """Write the pipelines module under a name of its own (modules are cached per process); returns its module name."""
    name = f"loop_pipes_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(PIPES)
    return name


def labelled(frame: pd.DataFrame, start: Any, step_s: float) -> pd.DataFrame:
    """``frame`` with a ``ts`` column from ``start``, one row every ``step_s`` seconds."""
    out = frame.copy()
    out["ts"] = pd.Timestamp(start) + pd.to_timedelta(range(len(out)), unit="s") * step_s
    return out


def append_labelled(folder: Path, frame: pd.DataFrame) -> None:
    path = folder / "labelled.parquet"
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    frame.to_parquet(path, index=False)
