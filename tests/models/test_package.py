"""keel.log_model / keel.load_model: flavors, signatures, environment, integrity, alias cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import IntegrityError, NotFoundError, ValidationError

pytestmark = pytest.mark.slow  # trains and packages real models


class Doubler:
    """A plain Python model: predict(DataFrame) -> array."""

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return (df["x"] * 2).to_numpy()


def _data(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"age": rng.normal(40, 10, n), "visits": rng.integers(0, 20, n), "plan": rng.choice(["a", "b"], n)})
    y = pd.Series(((X["age"] - 40) / 10 + X["visits"] / 10 + rng.normal(0, 1, n) > 1).astype(int))
    return X, y


def _numeric(X: pd.DataFrame) -> pd.DataFrame:
    return X[["age", "visits"]]


def test_sklearn_roundtrip_with_signature_environment_and_native(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    model = LogisticRegression().fit(_numeric(X), y)
    with keel.start_run():
        info = keel.log_model(model, input_example=_numeric(X).head(5))
    assert info.flavor == "sklearn"
    assert info.meta["packages"]["scikit-learn"]
    assert "numpy" in info.meta["packages"]
    assert info.meta["signature"]["inputs"] == [
        {"name": "age", "type": "double", "nullable": False},
        {"name": "visits", "type": "integer", "nullable": False},
    ]
    loaded = keel.load_model(info.uri)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(_numeric(X)))  # extra column dropped
    assert loaded.input_example.shape == (5, 2)
    assert loaded.environment_warnings == []


def test_signature_violations_name_the_column(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(_numeric(X), y), input_example=_numeric(X).head(5))
    m = keel.load_model(info.uri)
    with pytest.raises(ValidationError, match=r"missing column 'visits'") as exc:
        m.predict(X[["age"]].assign(visit=1))
    assert "Did you mean 'visit'" in str(exc.value)
    with pytest.raises(ValidationError, match=r"'visits'.*type string"):
        m.predict(_numeric(X).assign(visits="3"))
    bad = _numeric(X).copy()
    bad.loc[3, "age"] = np.nan
    with pytest.raises(ValidationError, match=r"'age'.*1 null"):
        m.predict(bad)
    # an integer column may arrive as whole floats only when the signature allows nulls; here it does not
    with pytest.raises(ValidationError, match=r"'visits'"):
        m.predict(_numeric(X).assign(visits=X["visits"].astype(float)))


def test_lightgbm_and_xgboost_flavors_write_native_files(project: Path) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    X, y = _data()
    Xn = _numeric(X)
    lg = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(Xn, y)
    xg = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(Xn, y)
    with keel.start_run() as run:
        a = keel.log_model(lg, name="lgb", input_example=Xn.head(3))
        b = keel.log_model(xg, name="xgb", input_example=Xn.head(3))
    paths = {x["path"] for x in keel.get_run(run.id).artifacts}
    assert {"lgb/model.txt", "lgb/model.pkl", "lgb/keel-model.json", "xgb/model.json", "xgb/model.pkl"} <= paths
    assert a.flavor == "lightgbm" and "lightgbm" in a.meta["packages"]
    assert b.flavor == "xgboost" and "xgboost" in b.meta["packages"]
    np.testing.assert_allclose(keel.load_model(a.uri).predict_proba(Xn), lg.predict_proba(Xn))
    np.testing.assert_allclose(keel.load_model(b.uri).predict_proba(Xn), xg.predict_proba(Xn))


def test_plain_python_class(project: Path) -> None:
    with keel.start_run():
        info = keel.log_model(Doubler(), name="doubler", input_example=pd.DataFrame({"x": [1.0, 2.0]}))
    assert info.flavor == "python"
    assert info.meta["class"].endswith("Doubler")
    assert list(keel.load_model(info.uri).predict({"x": [3.0]})) == [6.0]


def test_model_without_predict_is_refused(project: Path) -> None:
    with keel.start_run(), pytest.raises(ValidationError, match=r"no predict method"):
        keel.log_model(object())


def test_tampered_artifact_is_refused_with_both_hashes(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from keel.store.blobs import get_artifact_store

    X, y = _data()
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(_numeric(X), y), input_example=_numeric(X).head(2))
    mv = keel.register_model(info.uri, "churn")
    digest = next(a["digest"] for a in keel.get_run(info.run_id).artifacts if a["path"] == "model/model.pkl")
    blob = Path(get_artifact_store().backend.root) / "sha256" / digest[:2] / digest[2:]  # type: ignore[attr-defined]
    blob.write_bytes(pickle.dumps(Doubler()))  # a different, loadable pickle: must never be unpickled
    found = __import__("hashlib").sha256(blob.read_bytes()).hexdigest()
    with pytest.raises(IntegrityError) as exc:
        keel.load_model(f"models:/churn/{mv.version}", cache=False)
    msg = str(exc.value)
    assert "model version churn/1" in msg and digest in msg and found in msg


def test_alias_resolution_is_cached_until_the_alias_moves(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from keel.registry import set_alias

    X, y = _data()
    versions = []
    for c in (0.1, 1.0):
        with keel.start_run():
            info = keel.log_model(LogisticRegression(C=c).fit(_numeric(X), y), input_example=_numeric(X).head(2))
        versions.append(keel.register_model(info.uri, "churn").version)
    set_alias("churn", "champion", versions[0])
    first = keel.load_model("models:/churn@champion")
    assert keel.load_model("models:/churn@champion") is first
    set_alias("churn", "champion", versions[1])
    moved = keel.load_model("models:/churn@champion")
    assert moved is not first and moved.source.version == versions[1]


def test_uri_errors(project: Path) -> None:
    with pytest.raises(ValidationError, match=r"not understood"):
        keel.load_model("churn@production")
    with pytest.raises(NotFoundError, match=r"No registered model named 'churn'"):
        keel.load_model("models:/churn@production")


def test_autolog_layout_loads(project: Path) -> None:
    """The autolog engineer's folder: model/model.pkl + keel-model.json without a signature."""
    from sklearn.linear_model import LinearRegression

    X, y = _data()
    model = LinearRegression().fit(_numeric(X), y)
    folder = project / "auto" / "model"
    folder.mkdir(parents=True)
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    meta = {"format_version": 1, "flavor": "sklearn", "class": "sklearn.linear_model.LinearRegression", "python": "3.11.0",
            "packages": {"scikit-learn": "0.0"}, "feature_names": ["age", "visits"], "files": {"pickle": "model.pkl"}}
    (folder / "keel-model.json").write_text(json.dumps(meta))
    with keel.start_run() as run:
        keel.log_artifact(folder, name="model")
    loaded = keel.load_model(f"runs:/{run.id}/model")
    np.testing.assert_allclose(loaded.predict(X), model.predict(_numeric(X)))
    assert any("scikit-learn==0.0" in w for w in loaded.environment_warnings)
    with pytest.raises(ValidationError, match=r"missing column 'visits'"):
        loaded.predict(X[["age"]])


def test_feature_service_from_training_set_is_kept(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    from keel.store.fingerprint import frame_fingerprint

    train = _numeric(X).assign(label=y)
    train.attrs["keel"] = {"kind": "training_set", "fingerprint": frame_fingerprint(train), "feature_service": "churn_fs",
                           "feature_service_version": 3, "definitions_version": 7, "features": ["age", "visits"]}
    with keel.start_run():
        keel.log_dataset(train, "train")
        info = keel.log_model(LogisticRegression().fit(_numeric(X), y), input_example=_numeric(X).head(2))
    assert (info.meta["feature_service"], info.meta["feature_service_version"], info.meta["definitions_version"]) == ("churn_fs", 3, 7)
    assert info.meta["training_fingerprint"] == frame_fingerprint(train)
    mv = keel.register_model(info.uri, "churn")
    assert mv.lineage["feature_service_version"] == 3 and mv.lineage["definitions_version"] == 7


def test_signature_outside_feature_service_is_refused(project: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    train = X.assign(label=y)
    train.attrs["keel"] = {"fingerprint": "e" * 64, "feature_service": "churn_fs", "feature_service_version": 1, "features": ["age"]}
    with keel.start_run():
        keel.log_dataset(train, "train")
        with pytest.raises(ValidationError, match=r"'visits' is not a feature of service 'churn_fs'"):
            keel.log_model(LogisticRegression().fit(_numeric(X), y), input_example=_numeric(X).head(2))


def test_arrow_backed_input_reaches_the_model_as_numpy(project: Path) -> None:
    """keel's training sets are Arrow-backed with pd.NA; sklearn models get float64 with NaN."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x = pd.DataFrame({"a": rng.normal(size=300), "b": rng.integers(0, 5, 300)})
    x.loc[::7, "a"] = np.nan
    y = (x["b"] > 2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20).fit(x, y)
    with keel.start_run() as run:
        keel.log_model(model, signature=x)
    loaded = keel.load_model(f"runs:/{run.id}/model")
    arrow = x.astype({"a": "double[pyarrow]", "b": "int64[pyarrow]"})
    assert arrow["a"].isna().sum() > 0
    np.testing.assert_allclose(loaded.predict_proba(arrow), model.predict_proba(x))


def test_float_inputs_are_nullable_for_models_that_take_nan(project: Path) -> None:
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (x["a"] > 0).astype(int)
    with keel.start_run():
        strict = keel.log_model(LogisticRegression().fit(x, y), name="strict", signature=x)
        lenient = keel.log_model(lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y), name="lenient", signature=x)
    with_nan = x.head(3).assign(a=[np.nan, 0.1, 0.2])
    assert len(keel.load_model(lenient.uri).predict(with_nan)) == 3  # LightGBM takes NaN: the signature lets it through
    with pytest.raises(ValidationError, match=r"'a'.*1 null"):
        keel.load_model(strict.uri).predict(with_nan)  # LogisticRegression does not: a clear error instead of sklearn's
