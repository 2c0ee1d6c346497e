"""A store for the deployments, monitoring and lineage pages, built through the library.

``build()``: two versions of ``churn`` (a logistic regression on charges, tenure, control
and plan, each with a validation set, so each gets a baseline), a shadow deployment
``churn-live`` (v1 answers, v2 shadows), six hourly windows of paired traffic (the last
three with ``charges`` shifted), labels for every request, and the monitor
``churn-hourly`` run on each window (so drift alerts are open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tests.monitoring.conftest import FEATURES, log_rows, make_data

WINDOWS = 6
ROWS = 240


@dataclass
class OpsStore:
    start: pd.Timestamp
    ends: list[pd.Timestamp]
    request_ids: list[str]


def _register(name: str, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import keel
    from keel.config import settings

    train = make_data(3000, seed)
    valid = make_data(2000, seed + 1)
    cols = [*FEATURES, "plan"]
    pre = ColumnTransformer([("num", StandardScaler(), FEATURES), ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    model = make_pipeline(pre, LogisticRegression(max_iter=500)).fit(train[cols], train["churn"])
    path = settings().root / f"valid_{name}_{seed}.parquet"
    valid.to_parquet(path)
    with keel.start_run(experiment="churn-ops"):
        keel.log_param("seed", seed)
        keel.log_dataset(train, "train")
        keel.log_dataset(str(path), "valid", context="validation")
        info = keel.log_model(model, input_example=train[cols].head(5))
    return keel.register_model(info.uri, name)


def build() -> OpsStore:
    from keel.deployments.specs import build_spec, deploy, set_deployment
    from keel.monitoring.feedback import log_feedback
    from keel.monitoring.monitors import define_monitor, run_monitor
    from keel.registry.transitions import set_alias

    _register("churn", 0)
    _register("churn", 5)
    set_alias("churn", "champion", 1)
    deploy(build_spec("churn-live", model="churn/1", shadow="churn/2"), reason="shadow the retrained model")
    set_deployment("churn-live", reason="objectives checked", max_p99_ms=250.0)
    start = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(hours=WINDOWS)
    ends = []
    ids: list[str] = []
    for k in range(WINDOWS):
        frame = make_data(ROWS, 100 + k, shift=25.0 if k >= WINDOWS // 2 else 0.0)
        t = start + pd.Timedelta(hours=k)
        step = 3600 / ROWS
        got = log_rows("churn", 1, frame, t, step_s=step, route="champion", prefix=f"w{k}", latency_ms=4.0 + k)
        log_rows("churn", 2, frame, t, step_s=step, route="shadow", prefix=f"w{k}", latency_ms=6.0 + k)
        log_feedback(got, frame["churn"].tolist(), model="churn")
        ids += got
        ends.append(t + pd.Timedelta(hours=1))
    define_monitor("churn-hourly", "churn", window="1h", segments=["plan", "charges"])
    for end in ends:
        run_monitor("churn-hourly", end=end.to_pydatetime())
    return OpsStore(start, ends, ids)
