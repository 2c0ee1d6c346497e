"""The embedded predictor: signature checks with per-column detail, feature fetch by entity key, logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.errors import ValidationError
from keel.serving import InputError, Predictor
from keel.serving.validation import BadRequest


def test_predict_returns_labels_scores_and_logs_every_row(served_model: Any) -> None:
    import keel

    p = Predictor("models:/churn@live")
    out = p.predict([{"a": 1.0, "b": 2, "plan": "pro"}, {"a": -2.0, "b": -1.0, "plan": "basic"}], request_id="req-1")
    assert out.model == "churn" and out.version == served_model.version
    assert out.predictions == [1, 0] and len(out.scores or []) == 2 and out.scores[0] > 0.5 > out.scores[1]
    assert out.row_ids == ["req-1:0", "req-1:1"]
    # the same answer as the model itself
    frame = pd.DataFrame({"a": [1.0, -2.0], "b": [2.0, -1.0], "plan": ["pro", "basic"]})
    assert np.allclose(out.scores, keel.load_model("models:/churn@live").predict_proba(frame)[:, 1])
    logged = keel.predictions("churn")
    assert list(logged["request_id"]) == ["req-1:0", "req-1:1"]
    assert list(logged["prediction"]) == [1, 0] and np.allclose(logged["score"], out.scores)
    assert logged["a"].dtype == "float64" and logged["b"].tolist() == [2.0, -1.0] and logged["plan"].tolist() == ["pro", "basic"]
    assert set(logged["route"]) == {"default"} and set(logged["status"]) == {"ok"} and logged["batch_id"].isna().all()
    assert (logged["version"] == served_model.version).all() and (logged["latency_ms"] > 0).all()
    assert str(logged["ts"].dtype) == "datetime64[us, UTC]"


def test_every_bad_column_is_reported_at_once(local: Path) -> None:
    from tests.serving.conftest import train_model

    train_model()
    p = Predictor("models:/churn@live", log=False)
    with pytest.raises(InputError) as info:
        p.predict({"a": ["x", "y"], "plan": ["pro", None], "extra": [1, 2]})
    problems = {e.column: e.problem for e in info.value.errors}
    assert problems == {"a": "wrong_type", "b": "missing", "plan": "null", "extra": "unexpected"}
    body = info.value.to_dict()
    assert info.value.http_status == 422 and len(body["detail"]["errors"]) == 4
    null = next(e for e in info.value.errors if e.column == "plan")
    assert null.rows == [1]
    # integers are fine for a double column, whole floats for an integer one; booleans are not numbers
    assert len(p.predict({"a": [1], "b": [2], "plan": ["pro"]})) == 1
    with pytest.raises(InputError, match="boolean"):
        p.predict({"a": [True], "b": [2.0], "plan": ["pro"]})
    with pytest.raises(BadRequest, match="no rows"):
        p.predict([])


def test_log_false_logs_nothing(local: Path) -> None:
    import keel
    from tests.serving.conftest import train_model

    train_model()
    Predictor("models:/churn@live", log=False).predict([{"a": 1.0, "b": 2.0, "plan": "pro"}])
    assert keel.predictions("churn").empty


def test_feature_service_model_takes_entity_keys(feature_project: Path) -> None:
    import keel

    p = Predictor("models:/churn_fs@live")
    assert {c.name for c in p.request_columns} == {"customer_id", "discount"}
    out = p.predict([{"customer_id": 3, "discount": 0.1}, {"customer_id": 999, "discount": 0.0}], request_id="fs")
    assert len(out) == 2 and out.missing_features[0] == [] and len(out.missing_features[1]) > 0
    # the same values as the online lookup, fed to the model
    online = keel.get_online_features("churn_v1", [{"customer_id": 3, "discount": 0.1}]).to_df()
    model = keel.load_model("models:/churn_fs@live")
    x = online[model.signature.names].astype("float64")
    assert np.isclose(out.scores[0], model.predict_proba(x)[0, 1])
    logged = keel.predictions("churn_fs")
    assert logged["customer_id"].tolist() == [3, 999]
    assert logged["missing_features"].iloc[1].tolist() == out.missing_features[1] + out.stale_features[1]
    assert {"sessions", "fee_per_minute"} <= set(logged.columns)
    with pytest.raises(InputError) as info:
        p.predict([{"customer": 3}])
    assert {e.problem for e in info.value.errors} >= {"missing", "unexpected"}


def test_defaults_fill_a_feature_no_entity_of_the_request_has(feature_project: Path) -> None:
    """Every customer unknown: each fetched column is all null (Arrow gives it no type); the defaults still fill it."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    import keel

    labels = pd.read_parquet(feature_project / "data" / "usage.parquet")[["customer_id", "event_timestamp"]].iloc[::4].reset_index(drop=True)
    labels["churned"], labels["discount"] = labels["customer_id"] % 3 == 0, 0.1
    ts = keel.get_training_set(labels, "churn_v1")
    ts = ts.dropna(subset=["plan", "sessions"]).reset_index(drop=True)
    X = ts[["plan", "sessions"]].astype({"plan": object, "sessions": "float64"})
    model = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["plan"]), remainder="passthrough"),
                          LogisticRegression()).fit(X, ts["churned"])
    with keel.start_run():
        keel.log_dataset(ts, "train")
        info = keel.log_model(model, input_example=X.head(3))
    keel.register_model(info.uri, "churn_plan")
    p = Predictor("models:/churn_plan/1", defaults={"plan": "unknown", "sessions": 0.0}, log=False)
    out = p.predict([{"customer_id": 998, "discount": 0.0}, {"customer_id": 999, "discount": 0.0}])
    assert len(out) == 2 and out.scores[0] == out.scores[1]
    assert all({"plan", "sessions"} <= set(m) for m in out.missing_features)  # reported missing, though filled


def test_missing_features_reject_policy(feature_project: Path) -> None:
    p = Predictor("models:/churn_fs@live", missing_features="reject", log=False)
    assert len(p.predict([{"customer_id": 3, "discount": 0.1}])) == 1
    with pytest.raises(ValidationError, match="lack features") as info:
        p.predict([{"customer_id": 3, "discount": 0.1}, {"customer_id": 999, "discount": 0.1}])
    assert info.value.detail["rows"][0]["row"] == 1 and info.value.detail["rows"][0]["missing"]
    with pytest.raises(ValidationError, match="policy"):
        Predictor("models:/churn_fs@live", missing_features="zero")


def test_reload_swaps_to_the_aliased_version(local: Path) -> None:
    from keel.registry.transitions import set_alias
    from tests.serving.conftest import train_model

    v1 = train_model()
    p = Predictor("models:/churn@live", log=False)
    v2 = train_model(C=0.01, alias=None)
    assert not p.reload() and p.version == v1.version
    set_alias("churn", "live", v2.version)
    assert p.reload() and p.version == v2.version
    assert p.predict([{"a": 1.0, "b": 2.0, "plan": "pro"}]).version == v2.version
