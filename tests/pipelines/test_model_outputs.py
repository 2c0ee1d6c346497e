"""Step outputs that are models: stored as keel model packages, loadable and registrable by URI."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import keel
from keel.errors import IntegrityError, NotFoundError, ValidationError
from keel.pipelines import StepFailed, serializers
from keel.store.metadata import get_metadata_store
from keel.store.schema import artifacts, runs

SKLEARN_FLOW = '''
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import keel


@keel.step
def data(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + x[:, 1] > 0).astype("int64")})


@keel.step
def train(df: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression().fit(df[["a", "b"]], df["y"])


@keel.step
def score(model: LogisticRegression, df: pd.DataFrame) -> dict:
    assert type(model) is LogisticRegression  # the estimator itself, not a wrapper
    return {"accuracy": float(model.score(df[["a", "b"]], df["y"]))}


@keel.pipeline(experiment="models")
def fit(n: int = 200):
    df = data(n)
    return score(train(df), df)


@keel.tune(space={"C": (0.1, 10.0, "log")}, n_trials=2, pruner=None)
def search(df: pd.DataFrame, *, params):
    model = LogisticRegression(C=params["C"]).fit(df[["a", "b"]], df["y"])
    return float(model.score(df[["a", "b"]], df["y"])), model


@keel.pipeline(experiment="models")
def tuned(n: int = 200):
    return search(data(n))["params"]
'''

LIGHTGBM_FLOW = '''
import lightgbm
import numpy as np
import pandas as pd

import keel


@keel.step
def data(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x[:, 0] - x[:, 2] > 0).astype("int64")})


@keel.step
def train(df: pd.DataFrame) -> dict:
    model = lightgbm.LGBMClassifier(n_estimators=20, random_state=0, n_jobs=1, verbose=-1)
    model.fit(df[["a", "b", "c"]], df["y"])
    return {"model": model, "metrics": {"rows": len(df)}}


@keel.step
def evaluate(out: dict, model: lightgbm.LGBMClassifier, df: pd.DataFrame) -> dict:
    assert type(out["model"]) is lightgbm.LGBMClassifier and type(model) is lightgbm.LGBMClassifier
    proba = model.predict_proba(df[["a", "b", "c"]])[:, 1]
    return {"rows": out["metrics"]["rows"], "mean_proba": float(proba.mean())}


@keel.pipeline(experiment="gbm")
def gbm(n: int = 300):
    df = data(n)
    out = train(df)
    return evaluate(out, out["model"], df)
'''

CUSTOM_FLOW = '''
import numpy as np
import pandas as pd

import keel


class Threshold:
    """A hand-written model: anything with predict(DataFrame)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def predict(self, frame):
        return (frame["a"].to_numpy() > self.at).astype("int64")


@keel.step(serializer="model")
def rule(at: float) -> Threshold:
    return Threshold(at)


@keel.step
def plain_rule(at: float) -> Threshold:
    return Threshold(at)


@keel.step(serializer="model")
def stats(n: int):
    return {"mean": float(n) / 2}


@keel.step
def apply(model: Threshold, other: Threshold) -> list:
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0]})
    return model.predict(frame).tolist() + other.predict(frame).tolist()


@keel.pipeline(experiment="custom")
def rules(at: float = 0.5):
    return apply(rule(at), plain_rule(at))


@keel.pipeline(experiment="custom")
def not_a_model(n: int = 4):
    return stats(n)
'''

LINT_FLOW = '''
import pandas as pd

import keel


@keel.step(serializer="model")
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"a": range(n)})


@keel.pipeline
def wrong(n: int = 3):
    return frame(n)
'''

SELF_LOGGED_FLOW = '''
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

import keel


@keel.step
def train(n: int) -> DecisionTreeClassifier:
    x = pd.DataFrame({"a": [float(i) for i in range(n)]})
    model = DecisionTreeClassifier(random_state=0).fit(x, [i % 2 for i in range(n)])
    keel.log_model(model, name="model", input_example=x.head(3))
    return model


@keel.pipeline(experiment="selflog")
def logged(n: int = 10):
    return train(n)
'''


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + x[:, 1] > 0).astype("int64")})


def test_a_fitted_sklearn_model_is_packaged_loadable_cached_and_registrable(write_module) -> None:
    mod = write_module("sk_models", SKLEARN_FLOW)
    first = mod.fit.run()
    train = first.steps["train"]
    assert train.serializer == "model" and first.output["accuracy"] > 0.9
    uri = first.model_uri("train")
    assert uri == f"runs:/{train.run_id}/model" and train.models == {"model": uri}
    assert json.loads(keel.get_run(train.run_id).tags["keel.output.models"]) == {"model": uri}
    assert type(first.load("train")).__name__ == "LogisticRegression"

    df = _frame()
    original = mod.train(mod.data(200))  # the plain functions, outside the pipeline
    loaded = keel.load_model(uri)
    assert loaded.flavor == "sklearn" and loaded.signature.names == ["a", "b"]
    np.testing.assert_array_equal(loaded.predict(df[["a", "b"]]), original.predict(df[["a", "b"]]))
    np.testing.assert_allclose(loaded.predict_proba(df[["a", "b"]]), original.predict_proba(df[["a", "b"]]))

    second = mod.fit.run()
    hit = second.steps["train"]
    assert second.cached == 3 and hit.cache_hit and hit.source_run_id == train.run_id
    assert second.model_uri("train") == uri  # the package lives with the run that produced it
    assert json.loads(keel.get_run(hit.run_id).tags["keel.output.models"]) == {"model": uri}

    version = keel.register_model(second.model_uri("train"), "fitted")
    assert version.version == 1 and version.run_id == train.run_id and version.flavor == "sklearn"
    np.testing.assert_array_equal(keel.load_model(version.uri).predict(df[["a", "b"]]), original.predict(df[["a", "b"]]))


def test_a_dict_output_packages_its_lightgbm_model_under_its_key(write_module) -> None:
    pytest.importorskip("lightgbm")
    mod = write_module("gbm_models", LIGHTGBM_FLOW)
    result = mod.gbm.run()
    train = result.steps["train"]
    assert train.serializer == "model"
    assert result.output["rows"] == 300
    out = result.load("train")
    assert list(out) == ["model", "metrics"] and out["metrics"] == {"rows": 300}
    uri = result.model_uri("train", "model")
    assert uri == result.model_uri("train") == f"runs:/{train.run_id}/model"
    files = {a["path"] for a in keel.get_run(train.run_id).artifacts}
    assert {"model/model.pkl", "model/model.txt", "model/keel-model.json", "output"} <= files

    df = mod.data(300)[["a", "b", "c"]]
    loaded = keel.load_model(uri)
    assert loaded.flavor == "lightgbm" and type(loaded.model).__name__ == "LGBMClassifier"
    np.testing.assert_allclose(loaded.predict_proba(df), out["model"].predict_proba(df))

    again = mod.gbm.run()
    assert again.steps["train"].cache_hit and again.model_uri("train", "model") == uri
    version = keel.register_model(again.model_uri("train", "model"), "gbm")
    assert version.flavor == "lightgbm" and version.meta["native"] == ["model.txt"]
    with pytest.raises(NotFoundError, match=r"no model 'modle'.*Did you mean 'model'"):
        again.model_uri("train", "modle")
    with pytest.raises(NotFoundError, match="stored no model package"):
        again.model_uri("data")


def test_a_python_model_is_packaged_only_when_the_step_declares_it(write_module) -> None:
    mod = write_module("custom_models", CUSTOM_FLOW)
    result = mod.rules.run()
    assert result.output == [0, 1, 1, 0, 1, 1]
    assert result.steps["rule"].serializer == "model"
    assert result.steps["plain_rule"].serializer == "pickle" and result.steps["plain_rule"].models == {}
    loaded = keel.load_model(result.model_uri("rule"))
    assert loaded.flavor == "python" and type(loaded.model).__name__ == "Threshold"
    assert loaded.predict(pd.DataFrame({"a": [0.0, 3.0]})).tolist() == [0, 1]


def test_an_output_that_cannot_be_packaged_fails_with_the_reason(write_module) -> None:
    mod = write_module("custom_models2", CUSTOM_FLOW)
    with pytest.raises(StepFailed) as info:
        mod.not_a_model.run()
    assert info.value.step == "stats"
    assert "Serializer 'model' cannot package a builtins.dict output: none of the dict's values has a predict method" in str(info.value)


def test_lint_refuses_a_model_serializer_on_a_step_that_returns_data(write_module) -> None:
    mod = write_module("lint_models", LINT_FLOW)
    with pytest.raises(ValidationError, match=r"declares serializer='model' but returns a DataFrame, which is not a model") as info:
        mod.wrong.run()
    assert "lint_models.py" in str(info.value) and "nothing ran" in str(info.value)
    with get_metadata_store().read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 0


def test_a_package_the_step_logged_itself_is_kept(write_module) -> None:
    mod = write_module("selflog_models", SELF_LOGGED_FLOW)
    result = mod.logged.run()
    uri = result.model_uri("train")
    model = keel.load_model(uri)
    assert model.input_example is not None  # keel.log_model's package (with its input example), not replaced
    assert model.predict(pd.DataFrame({"a": [2.0, 3.0]})).tolist() == [0, 1]


def test_a_cache_hit_records_the_package_again_when_the_producing_run_lost_it(write_module) -> None:
    mod = write_module("sk_models2", SKLEARN_FLOW)
    first = mod.fit.run()
    source = first.steps["train"].run_id
    store = get_metadata_store()
    with store.write() as conn:  # as if the producing run had been deleted
        conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == source, artifacts.c.path.like("model/%")))
    second = mod.fit.run()
    hit = second.steps["train"]
    assert hit.cache_hit and second.model_uri("train") == f"runs:/{hit.run_id}/model"
    df = _frame()
    assert (keel.load_model(second.model_uri("train")).predict(df[["a", "b"]]) == first.load("train").predict(df[["a", "b"]])).all()


def test_the_process_pool_packages_model_outputs_too(write_module) -> None:
    mod = write_module("sk_models_pool", SKLEARN_FLOW)
    local = mod.fit.run()
    pooled = mod.fit.run(engine="process", refresh=True, max_workers=2)
    assert pooled.steps["train"].digest == local.steps["train"].digest  # the same bytes on every engine
    uri = pooled.model_uri("train")
    assert uri == f"runs:/{pooled.steps['train'].run_id}/model"
    df = _frame()
    np.testing.assert_array_equal(keel.load_model(uri).predict(df[["a", "b"]]), local.load("train").predict(df[["a", "b"]]))


def test_a_tuning_step_packages_its_best_model(write_module) -> None:
    mod = write_module("sk_models_tune", SKLEARN_FLOW)
    result = mod.tuned.run()
    search = result.steps["search"]
    assert search.serializer == "model" and set(result.output) == {"C"}
    best = result.load("search")
    assert type(best["model"]).__name__ == "LogisticRegression" and best["params"] == result.output
    loaded = keel.load_model(result.model_uri("search"))
    df = _frame()
    np.testing.assert_array_equal(loaded.predict(df[["a", "b"]]), best["model"].predict(df[["a", "b"]]))


# -- the serializer itself ---------------------------------------------------------


def _fitted() -> object:
    from sklearn.linear_model import LogisticRegression

    df = _frame(60)
    return LogisticRegression().fit(df[["a", "b"]], df["y"])


def test_the_model_serializer_is_chosen_for_models_and_writes_the_same_bytes_each_time() -> None:
    model = _fitted()
    assert serializers.choose(model).name == "model"
    assert serializers.choose({"model": model, "auc": 0.9}).name == "model"
    assert serializers.choose({"auc": 0.9}).name == "json"
    assert serializers.choose({"a b": model}).name == "pickle"  # not a package name: pickled as before
    ser = serializers.get("model")
    assert list(serializers.SERIALIZERS).index("model") < list(serializers.SERIALIZERS).index("pickle")
    assert "model=" + ser.version in serializers.versions() and ser.version != serializers.get("pickle").version
    data = ser.dumps(model)
    assert data == ser.dumps(model)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names == sorted(names) and {"keel-output.json", "model/model.pkl", "model/keel-model.json"} <= set(names)
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zipfile.ZipFile(io.BytesIO(data)).infolist())
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("model/keel-model.json"))
    assert meta["flavor"] == "sklearn" and meta["class"].endswith("LogisticRegression") and meta["feature_names"] == ["a", "b"]
    assert meta["has_predict_proba"] is True and "scikit-learn" in meta["packages"]


@pytest.mark.parametrize("library", ["sklearn", "lightgbm", "xgboost"])
def test_each_flavor_round_trips_to_a_working_estimator(library: str) -> None:
    pytest.importorskip(library)
    df = _frame(80)
    x, y = df[["a", "b"]], df["y"]
    if library == "lightgbm":
        import lightgbm

        model: Any = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1, n_jobs=1).fit(x, y)
    elif library == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=5, n_jobs=1).fit(x, y)
    else:
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    ser = serializers.choose(model)
    assert ser.name == "model"
    data = ser.dumps(model)
    back = ser.loads(data)
    assert type(back) is type(model) and data == ser.dumps(model)
    np.testing.assert_allclose(back.predict(x), model.predict(x))
    meta = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("model/keel-model.json"))
    assert meta["flavor"] == library


def test_the_model_serializer_refuses_a_package_that_does_not_match_its_index() -> None:
    ser = serializers.get("model")
    data = ser.dumps({"model": _fitted(), "note": "kept"})
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            body = src.read(info.filename)
            out.writestr(info, body if info.filename != "model/model.pkl" else body + b"tampered")
    with pytest.raises(IntegrityError, match=r"model/model.pkl in a model step output does not match its recorded sha256"):
        ser.loads(buf.getvalue())
    with pytest.raises(IntegrityError, match="is not a zip file"):
        ser.loads(b"not a zip")
    assert ser.loads(data)["note"] == "kept"


def test_declaring_the_model_serializer_for_an_object_without_predict_says_why() -> None:
    with pytest.raises(ValidationError, match=r"cannot package a builtins.list output: it has no predict method"):
        serializers.choose([1, 2], "model")
    with pytest.raises(ValidationError, match=r"its key 'output' cannot name a model package"):
        serializers.choose({"output": _fitted()}, "model")


def test_a_step_model_package_has_a_typed_signature_and_an_input_example_like_log_model(write_module) -> None:
    mod = write_module("sk_models_typed", SKLEARN_FLOW)
    result = mod.fit.run()
    loaded = keel.load_model(result.model_uri("train"))
    assert [(c.name, c.type, c.nullable) for c in loaded.signature.inputs] == [("a", "double", False), ("b", "double", False)]
    assert loaded.signature.outputs == {"type": "integer", "shape": [-1]}
    example = loaded.input_example
    assert list(example.columns) == ["a", "b"] and len(example) == 5
    pd.testing.assert_frame_equal(example, mod.data(200)[["a", "b"]].head(5))
    with pytest.raises(ValidationError, match="'b'"):
        loaded.predict(pd.DataFrame({"a": [1.0]}))  # the signature is enforced on a missing column


def test_an_input_example_in_a_dict_output_is_used_first(write_module) -> None:
    mod = write_module("sk_models_example", """
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import keel

    @keel.step
    def train(n: int) -> dict:
        x = pd.DataFrame({"k": list(range(n)), "w": [float(i) / 2 for i in range(n)]})
        return {"model": LinearRegression().fit(x, x["w"] * 2), "input_example": x.head(2)}

    @keel.pipeline(experiment="examples")
    def p(n: int = 8):
        return train(n)
    """)
    loaded = keel.load_model(mod.p.run().model_uri("train"))
    assert [(c.name, c.type) for c in loaded.signature.inputs] == [("k", "integer"), ("w", "double")]
    assert len(loaded.input_example) == 2


def test_every_tuning_trial_model_is_a_package_keel_load_model_opens(write_module) -> None:
    mod = write_module("sk_models_trials", SKLEARN_FLOW)
    result = mod.tuned.run()
    search = result.steps["search"]
    best_run = keel.get_run(search.run_id).tags["keel.tune.best_run"]
    df = _frame()
    with get_metadata_store().read() as conn:
        trial_runs = list(conn.execute(sa.select(runs.c.id).where(runs.c.parent_id == search.run_id)).scalars())
    assert len(trial_runs) == 2 and best_run in trial_runs
    for run_id in trial_runs:
        loaded = keel.load_model(f"runs:/{run_id}/model")
        assert loaded.flavor == "sklearn" and [c.type for c in loaded.signature.inputs] == ["double", "double"]
        assert loaded.input_example is not None and loaded.predict(df[["a", "b"]]).shape == (200,)
