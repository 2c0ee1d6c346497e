"""The churn training pipeline (created by `keel quickstart`).

    keel pipelines run pipelines:training            # the full path
    keel pipelines run pipelines:training --smoke    # the same on a sample, in seconds

usage feed ─► contract ─► feature definitions (30-day aggregates included) ─► point-in-time
training set ─► time split ─► tuned LightGBM (Optuna) ─► registry: log, register,
evaluate against the champion, promote to production through the gates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

import keel
from keel.pipelines import FileRef

MODEL = "churn"
SERVICE = "churn_v1"
CATEGORICAL = ["plan", "region"]
RETRAIN_HOLDOUT = 0.15  # the share of the newest labels a retrain holds out for its gates (training holds out 25 %)


@keel.step
def validate_usage(usage: FileRef) -> dict:
    """Check the usage feed against contracts/usage_feed.yaml; an error-level failure stops the run here."""
    from keel.contracts import enforce

    report = enforce("usage_feed", str(usage), stage="pipeline")
    return {"checks": 0 if report is None else len(report.results), "passed": True}


@keel.step
def apply_features(definitions: FileRef, usage: FileRef, contract: dict) -> dict:
    """Store the definitions in features.py as a new version when anything changed.

    The 30-day aggregates are Aggregation definitions in features.py: the training set
    computes them as of each label, serving as of now, from the same definition.
    """
    from keel.features import apply
    from keel.store.blobs import sha256_file

    result = apply()
    # the usage data's hash: a new day of usage makes a new training set
    return {"definitions_version": result.definitions_version, "changes": len(result.changes), "usage": sha256_file(Path(str(usage)))}


@keel.step(sample=True)
def training_set(labels: FileRef, features: dict) -> pd.DataFrame:
    """One row per label: the feature values as they were at the label's time (nothing from the future)."""
    frame = pd.read_parquet(str(labels))[["customer_id", "event_timestamp", "churned"]]
    return keel.get_training_set(frame, SERVICE)


@keel.step
def split(data: pd.DataFrame, valid_share: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the past, validate on the most recent labels."""
    cut = data["event_timestamp"].quantile(1 - valid_share)
    return data[data["event_timestamp"] < cut], data[data["event_timestamp"] >= cut]


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input, from a training set or an online lookup alike: numbers as float64 (NaN for missing)."""
    x = frame.drop(columns=["customer_id", "event_timestamp", "churned"], errors="ignore")
    numeric = [c for c in x.columns if c not in CATEGORICAL]
    x[numeric] = x[numeric].astype("float64")
    x[CATEGORICAL] = x[CATEGORICAL].astype("object").where(x[CATEGORICAL].notna(), "unknown")
    return x


def make_model(params: dict[str, Any]) -> Any:
    import lightgbm
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL), remainder="passthrough")
    return make_pipeline(encode, lightgbm.LGBMClassifier(n_estimators=150, random_state=0, n_jobs=1, verbose=-1, **params))


@keel.tune(
    space={"num_leaves": (8, 64), "learning_rate": (0.02, 0.2, "log"), "min_child_samples": (5, 80)},
    n_trials=12,
    direction="maximize",
    smoke_trials=2,
)
def train(train_df: pd.DataFrame, valid_df: pd.DataFrame, *, params: dict, trial: Any) -> tuple[float, Any]:
    """Each trial a child run; the best trial's params and model go on."""
    from sklearn.metrics import roc_auc_score

    model = make_model(params).fit(features_of(train_df), train_df["churned"])
    auc = float(roc_auc_score(valid_df["churned"], model.predict_proba(features_of(valid_df))[:, 1]))
    keel.log_metric("valid_roc_auc", auc)
    return auc, model


@keel.step(produces=["model:churn"])
def register(tuned: dict, train_df: pd.DataFrame, valid_df: pd.DataFrame) -> dict:
    """Package the best model, register it, evaluate it against the champion and promote it through the gates.

    In a smoke run (--smoke) registration and promotion are dry runs: the gates
    are evaluated and the verdict recorded ("would promote ... yes/no"), but no
    version is stored and nothing moves.
    """
    from keel import registry

    keel.log_dataset(train_df, name="train", context="training")
    keel.log_params(tuned["params"])
    keel.log_model(tuned["model"], name="model", signature=features_of(train_df), input_example=features_of(valid_df).head(5))
    run = keel.active_run()
    assert run is not None
    version = keel.register_model(f"runs:/{run.id}/model", MODEL)
    evaluation = keel.evaluate(version, valid_df, target="churned", task="binary", slices=["region"])
    try:
        moved = keel.promote(MODEL, version, to="production", data=valid_df, target="churned")
        outcome = moved.status if moved.status != "dry-run" else moved.explain()
    except registry.GatesFailed as exc:
        outcome = f"refused: {exc}"
    return {"version": version.version, "roc_auc": evaluation.metrics.get("roc_auc"), "promotion": outcome}


def labelled_features(usage: Any, labels: Any, definitions: Any) -> Any:
    """The data path both pipelines share: contract -> feature definitions -> point-in-time training set."""
    checked = validate_usage(usage)
    defs = apply_features(definitions, usage, checked)
    return training_set(labels, defs)


@keel.pipeline(experiment="churn")
def training(
    usage: FileRef = FileRef("data/usage.parquet"),
    labels: FileRef = FileRef("data/labels.parquet"),
    definitions: FileRef = FileRef("features.py"),
) -> Any:
    train_df, valid_df = split(labelled_features(usage, labels, definitions))
    tuned = train(train_df, valid_df)
    return register(tuned, train_df, valid_df)


# -- retraining (the policy `churn-retrain` runs this; keel retraining show churn-retrain) --------

@keel.step
def in_window(data: pd.DataFrame, window_start: str | None = None, window_end: str | None = None) -> pd.DataFrame:
    """The labels inside the retraining policy's window (all of them without one)."""
    if window_start is None or window_end is None:
        return data
    ts = data["event_timestamp"]
    return data[(ts >= pd.Timestamp(window_start)) & (ts < pd.Timestamp(window_end))].reset_index(drop=True)


@keel.step(produces=["model:churn"])
def register_candidate(train_df: pd.DataFrame, valid_df: pd.DataFrame) -> dict:
    """Refit with the champion's tuned parameters and register; the policy runs the gates and the rollout.

    The refit holds out only the most recent 15 % of the window's labels (the champion held out
    25 %), so it learns from newer labels than the champion did. Returns that fresh holdout for the
    gates: the candidate and the champion are compared on it (neither trained on it).
    """
    from keel.registry import get_version

    champion = keel.get_run(get_version(MODEL, "production").run_id).params
    params = {k: (float(champion[k]) if k == "learning_rate" else int(champion[k])) for k in ("num_leaves", "learning_rate", "min_child_samples")}
    model = make_model(params).fit(features_of(train_df), train_df["churned"])
    keel.log_dataset(train_df, name="train", context="training")
    keel.log_params(params)
    keel.log_model(model, name="model", signature=features_of(train_df), input_example=features_of(valid_df).head(5))
    run = keel.active_run()
    assert run is not None
    version = keel.register_model(f"runs:/{run.id}/model", MODEL)
    holdout = Path("data") / f"holdout-{run.id[:12]}.parquet"
    features_of(valid_df).assign(churned=valid_df["churned"].to_numpy()).to_parquet(holdout, index=False)
    return {"version": version.version, "data": str(holdout), "target": "churned"}


@keel.pipeline(experiment="churn")
def retrain(
    window_start: str | None = None,
    window_end: str | None = None,
    usage: FileRef = FileRef("data/usage.parquet"),
    labels: FileRef = FileRef("data/labels.parquet"),
    definitions: FileRef = FileRef("features.py"),
) -> Any:
    train_df, valid_df = split(in_window(labelled_features(usage, labels, definitions), window_start, window_end), valid_share=RETRAIN_HOLDOUT)
    return register_candidate(train_df, valid_df)
