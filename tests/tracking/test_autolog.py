"""keel.autolog for scikit-learn, LightGBM and XGBoost: what a fit records, and what it never breaks."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification, make_regression

import keel
from keel.tracking import autolog as al
from keel.tracking.artifacts import download_artifact
from keel.tracking.query import RunInfo


@pytest.fixture(autouse=True)
def _autolog(project: Path) -> Iterator[None]:
    keel.autolog()
    yield
    keel.autolog(disable=True)


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    return pd.DataFrame(X, columns=[f"col_{i}" for i in range(6)]), y


def _runs() -> list[RunInfo]:
    frame = keel.search_runs()
    return [keel.get_run(rid) for rid in frame["run_id"]]


def _only_run() -> RunInfo:
    runs = _runs()
    assert len(runs) == 1, [(r.name, r.tags.get("estimator_name")) for r in runs]
    return runs[0]


def _download(run_id: str, name: str, tmp_path: Path) -> Path:
    return download_artifact(run_id, name, tmp_path / "dl" / name)


def _history(run_id: str, key: str) -> pd.DataFrame:
    return keel.get_metric_history(run_id, key)


# -- scikit-learn ------------------------------------------------------------------


def test_sklearn_classifier_records_params_metrics_features_and_model(data, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    X, y = data
    model = LogisticRegression(C=0.5, max_iter=200).fit(X, y)

    run = _only_run()
    assert run.status == "finished"
    assert run.tags["autolog"] == "sklearn"
    assert run.tags["estimator_name"] == "LogisticRegression"
    assert run.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert run.params["C"] == "0.5" and run.params["max_iter"] == "200" and run.params["class_weight"] == "None"
    assert run.metrics["training_accuracy"] == pytest.approx(accuracy_score(y, model.predict(X)))
    assert run.metrics["training_log_loss"] == pytest.approx(log_loss(y, model.predict_proba(X)))
    assert run.metrics["training_roc_auc"] == pytest.approx(roc_auc_score(y, model.predict_proba(X)[:, 1]))
    assert {"training_precision", "training_recall", "training_f1"} <= set(run.metrics)
    assert [d["name"] for d in run.datasets] == ["train"] and run.datasets[0]["num_rows"] == 300

    features = json.loads(_download(run.id, "features.json", tmp_path).read_text())
    assert features == {"feature_names": list(X.columns), "n_features": 6}
    folder = _download(run.id, "model", tmp_path)
    meta = json.loads((folder / "keel-model.json").read_text())
    assert meta["flavor"] == "sklearn"
    assert meta["class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert meta["feature_names"] == list(X.columns)
    assert meta["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "scikit-learn" in meta["packages"] and "numpy" in meta["packages"]
    loaded = pickle.loads((folder / "model.pkl").read_bytes())
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_autologged_model_is_the_package_log_model_writes(data, tmp_path: Path) -> None:
    """One package writer: autolog's model/ has log_model's metadata, a typed signature and an example."""
    from sklearn.linear_model import LogisticRegression

    X, y = data
    model = LogisticRegression(max_iter=200).fit(X, y)
    run = _only_run()
    auto = json.loads((_download(run.id, "model", tmp_path / "a") / "keel-model.json").read_text())
    with keel.start_run():
        info = keel.log_model(model, input_example=X.head(5))
    logged = json.loads((_download(info.run_id, "model", tmp_path / "b") / "keel-model.json").read_text())
    assert set(auto) == set(logged)
    assert auto["signature"] == logged["signature"]
    assert [c["type"] for c in auto["signature"]["inputs"]] == ["double"] * 6
    assert auto["input_example"] == "input_example.parquet"
    assert auto["training_fingerprint"] == run.datasets[0]["fingerprint"]
    loaded = keel.load_model(f"runs:/{run.id}/model")
    np.testing.assert_array_equal(np.asarray(loaded.predict(X.head(20))), model.predict(X.head(20)))


def test_sklearn_regressor_records_error_metrics() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    X, y = make_regression(n_samples=200, n_features=4, noise=5.0, random_state=1)
    model = Ridge(alpha=2.0).fit(X, y)

    run = _only_run()
    pred = model.predict(X)
    assert run.metrics["training_mse"] == pytest.approx(mean_squared_error(y, pred))
    assert run.metrics["training_rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)))
    assert run.metrics["training_mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert run.metrics["training_r2"] == pytest.approx(r2_score(y, pred))
    assert "training_accuracy" not in run.metrics


def test_pipeline_logs_once_for_the_outermost_fit(data, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)

    run = _only_run()
    assert run.tags["estimator_name"] == "Pipeline"
    assert set(run.params) >= {"steps", "memory", "verbose"}
    assert "C" not in run.params  # the inner estimator's fit was not logged
    assert "training_accuracy" in run.metrics
    loaded = pickle.loads((_download(run.id, "model", tmp_path) / "model.pkl").read_bytes())
    np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))


def test_transformer_fit_transform_logs_once(data) -> None:
    from sklearn.preprocessing import StandardScaler

    X, _ = data
    StandardScaler().fit_transform(X)

    run = _only_run()
    assert run.tags["estimator_name"] == "StandardScaler"
    assert run.params["with_mean"] == "True"
    assert not any(k.startswith("training_") for k in run.metrics)


def test_grid_search_records_best_params_cv_results_and_candidates(data, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = data
    search = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.01, 1.0, 100.0]}, cv=3).fit(X, y)

    runs = _runs()
    parents = [r for r in runs if r.parent_id is None]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.tags["estimator_name"] == "GridSearchCV"
    assert parent.params["best_C"] == str(search.best_params_["C"])
    assert parent.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert "training_accuracy" in parent.metrics

    table = pd.read_parquet(_download(parent.id, "cv_results.parquet", tmp_path))
    assert len(table) == 3
    np.testing.assert_allclose(table["mean_test_score"], search.cv_results_["mean_test_score"])

    children = [r for r in runs if r.parent_id == parent.id]
    assert sorted(c.params["C"] for c in children) == ["0.01", "1.0", "100.0"]
    for child in children:
        i = int(child.tags["candidate"])
        assert child.metrics["mean_test_score"] == pytest.approx(search.cv_results_["mean_test_score"][i])


def test_max_tuning_runs_caps_child_runs(data) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RandomizedSearchCV

    keel.autolog(max_tuning_runs=2)
    X, y = data
    search = RandomizedSearchCV(LogisticRegression(max_iter=200), {"C": [0.01, 0.1, 1.0, 10.0]}, n_iter=4, cv=2, random_state=0)
    search.fit(X, y)

    runs = _runs()
    children = [r for r in runs if r.parent_id is not None]
    assert len(runs) == 3 and len(children) == 2
    best = int(np.argmin(search.cv_results_["rank_test_score"]))
    assert best in {int(c.tags["candidate"]) for c in children}


def test_fit_inside_an_active_run_logs_into_it(data) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, y = data
    with keel.start_run(name="mine") as run:
        DecisionTreeClassifier(max_depth=3).fit(X, y)
        assert keel.active_run() is run  # not ended by autolog
    info = _only_run()
    assert info.id == run.id and info.name == "mine" and info.status == "finished"
    assert info.params["max_depth"] == "3"
    assert "autolog" not in info.tags  # the user's run, not one autolog started


def test_failing_fit_marks_the_auto_started_run_failed_and_reraises(data) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = data
    with pytest.raises(ValueError, match="solver"):
        LogisticRegression(solver="no-such-solver").fit(X, y)
    run = _only_run()
    assert run.status == "failed"
    assert "no-such-solver" in (run.error or "") and "Traceback" in (run.error or "")
    assert keel.active_run() is None


def test_failing_fit_inside_an_active_run_leaves_the_run_to_its_owner(data) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = data
    with keel.start_run() as run:
        with pytest.raises(ValueError):
            LogisticRegression(solver="no-such-solver").fit(X, y)
        assert keel.active_run() is run
    assert keel.get_run(run.id).status == "finished"


def test_logging_failure_is_one_warning_and_the_fit_still_returns(data) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = data
    with keel.start_run() as run:
        keel.log_param("C", "something else")  # autolog's C=1.0 now collides with it
        with pytest.warns(al.AutologWarning, match="params") as caught:
            model = LogisticRegression().fit(X, y)
    assert len(caught) == 1
    assert hasattr(model, "coef_")
    info = keel.get_run(run.id)
    assert info.params["C"] == "something else"
    assert "training_accuracy" in info.metrics  # the later steps still ran


def test_silent_turns_the_warning_into_a_debug_line(data, caplog: pytest.LogCaptureFixture) -> None:
    from sklearn.linear_model import LogisticRegression

    keel.autolog(silent=True)
    X, y = data
    with caplog.at_level(logging.DEBUG, logger="keel.autolog"), keel.start_run():
        keel.log_param("C", "something else")
        LogisticRegression().fit(X, y)  # a warning would be an error here
    assert any("could not record" in r.getMessage() for r in caplog.records)


def test_log_models_false_skips_the_model(data) -> None:
    from sklearn.linear_model import LogisticRegression

    keel.autolog(log_models=False)
    X, y = data
    LogisticRegression().fit(X, y)
    paths = [a["path"] for a in _only_run().artifacts]
    assert "features.json" in paths and not any(p.startswith("model/") for p in paths)


def test_disable_restores_the_original_functions(data) -> None:
    import lightgbm
    import lightgbm.sklearn
    import xgboost
    import xgboost.sklearn
    from sklearn.base import TransformerMixin
    from sklearn.linear_model import LogisticRegression

    assert al.is_patched(LogisticRegression, "fit") and al.is_patched(lightgbm, "train") and al.is_patched(xgboost, "train")
    originals = {"lr": LogisticRegression.fit.__wrapped__, "lgb": lightgbm.train.__wrapped__}  # type: ignore[attr-defined]
    keel.autolog(disable=True)
    for owner, name in [
        (LogisticRegression, "fit"), (TransformerMixin, "fit_transform"), (lightgbm, "train"),
        (lightgbm.sklearn, "train"), (lightgbm.sklearn.LGBMModel, "fit"), (xgboost, "train"),
        (xgboost.sklearn, "train"), (xgboost.sklearn.XGBModel, "fit"),
    ]:
        assert not al.is_patched(owner, name), (owner, name)
    assert LogisticRegression.__dict__["fit"] is originals["lr"] and lightgbm.train is originals["lgb"]
    X, y = data
    LogisticRegression().fit(X, y)
    assert _runs() == []


def test_autolog_is_idempotent_and_per_library(data) -> None:
    import xgboost
    from sklearn.linear_model import LogisticRegression

    keel.autolog()
    keel.autolog()
    wrapped = LogisticRegression.fit.__wrapped__  # type: ignore[attr-defined]
    assert al.is_patched(LogisticRegression, "fit") and not getattr(wrapped, "__keel_autolog__", False)  # wrapped once
    keel.autolog(xgboost=False)
    assert al.enabled_flavors() == ["sklearn", "lightgbm"]
    assert not al.is_patched(xgboost, "train")
    X, y = data
    LogisticRegression().fit(X, y)
    assert len(_runs()) == 1


def test_metric_keys_are_made_valid() -> None:
    assert al.metric_key("valid_0-ndcg@5") == "valid_0-ndcg_5"
    assert al.metric_key("map@3-") == "map_3-"


# -- LightGBM ----------------------------------------------------------------------


def test_lightgbm_train_records_every_iteration(data, tmp_path: Path) -> None:
    import lightgbm as lgb

    X, y = data
    train, valid = lgb.Dataset(X[:200], y[:200]), lgb.Dataset(X[200:], y[200:])
    recorded: dict = {}
    params = {"objective": "binary", "metric": ["binary_logloss", "auc"], "verbose": -1, "num_leaves": 7, "num_threads": 1}
    booster = lgb.train(
        params, train, num_boost_round=7, valid_sets=[train, valid], valid_names=["train", "valid"],
        callbacks=[lgb.record_evaluation(recorded)],
    )

    run = _only_run()
    assert run.tags["autolog"] == "lightgbm"
    assert run.params["num_boost_round"] == "7" and run.params["num_leaves"] == "7"
    assert run.params["metric"] == "['binary_logloss', 'auc']"
    for name in ("train", "valid"):
        for metric in ("binary_logloss", "auc"):
            hist = _history(run.id, f"{name}-{metric}")
            assert hist["step"].tolist() == list(range(7))
            np.testing.assert_allclose(hist["value"], recorded[name][metric])
    assert run.metrics["stopped_iteration"] == 7
    assert "best_iteration" not in run.metrics  # no early stopping

    importance = json.loads(_download(run.id, "feature_importance.json", tmp_path).read_text())
    assert set(importance) == {"split", "gain"}
    assert importance["split"] == dict(zip(X.columns, map(float, booster.feature_importance("split")), strict=True))
    folder = _download(run.id, "model", tmp_path)
    meta = json.loads((folder / "keel-model.json").read_text())
    assert meta["flavor"] == "lightgbm" and meta["native"] == ["model.txt"]
    assert meta["feature_names"] == list(X.columns) and "lightgbm" in meta["packages"]
    native = lgb.Booster(model_file=str(folder / "model.txt"))
    np.testing.assert_allclose(native.predict(X), booster.predict(X))
    np.testing.assert_allclose(pickle.loads((folder / "model.pkl").read_bytes()).predict(X), booster.predict(X))


def test_lightgbm_sklearn_api_logs_once_with_early_stopping(data, tmp_path: Path) -> None:
    import lightgbm as lgb

    X, y = data
    model = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.3, num_leaves=15, verbose=-1, n_jobs=1)
    model.fit(
        X[:200], y[:200], eval_X=(X[200:],), eval_y=(y[200:],), eval_names=["valid"],
        callbacks=[lgb.early_stopping(3, verbose=False)],
    )

    run = _only_run()
    assert run.tags["estimator_name"] == "LGBMClassifier"
    assert run.params["n_estimators"] == "200" and run.params["learning_rate"] == "0.3"
    stopped = model.best_iteration_ + 3  # early stopping ran 3 rounds past the best
    assert stopped < 200
    hist = _history(run.id, "valid-binary_logloss")
    assert hist["step"].tolist() == list(range(stopped))  # each iteration once: no double logging
    assert run.metrics["stopped_iteration"] == stopped
    assert run.metrics["best_iteration"] == model.best_iteration_
    assert run.metrics["best_valid-binary_logloss"] == pytest.approx(model.best_score_["valid"]["binary_logloss"])
    assert "training_accuracy" in run.metrics
    loaded = pickle.loads((_download(run.id, "model", tmp_path) / "model.pkl").read_bytes())
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_lightgbm_inside_a_pipeline_logs_once(data) -> None:
    import lightgbm as lgb
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = data
    make_pipeline(StandardScaler(), lgb.LGBMClassifier(n_estimators=5, verbose=-1, n_jobs=1)).fit(X, y)
    run = _only_run()
    assert run.tags["autolog"] == "sklearn" and run.tags["estimator_name"] == "Pipeline"


# -- XGBoost -----------------------------------------------------------------------


def test_xgboost_train_records_every_iteration(data, tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = data
    dtrain, dvalid = xgb.DMatrix(X[:200], y[:200]), xgb.DMatrix(X[200:], y[200:])
    recorded: dict = {}
    params = {"objective": "binary:logistic", "eval_metric": ["logloss", "error"], "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, dtrain, 6, evals=[(dtrain, "train"), (dvalid, "valid")], evals_result=recorded, verbose_eval=False)

    run = _only_run()
    assert run.tags["autolog"] == "xgboost"
    assert run.params["num_boost_round"] == "6" and run.params["max_depth"] == "3"
    for name in ("train", "valid"):
        for metric in ("logloss", "error"):
            hist = _history(run.id, f"{name}-{metric}")
            assert hist["step"].tolist() == list(range(6))
            np.testing.assert_allclose(hist["value"], recorded[name][metric])
    assert run.metrics["stopped_iteration"] == 6

    importance = json.loads(_download(run.id, "feature_importance.json", tmp_path).read_text())
    assert importance["weight"] == {k: float(v) for k, v in booster.get_score(importance_type="weight").items()}
    assert set(importance) == {"weight", "gain", "cover"}
    folder = _download(run.id, "model", tmp_path)
    meta = json.loads((folder / "keel-model.json").read_text())
    assert meta["flavor"] == "xgboost" and meta["native"] == ["model.json"]
    assert meta["feature_names"] == list(X.columns)
    native = xgb.Booster(model_file=str(folder / "model.json"))
    dall = xgb.DMatrix(X)
    np.testing.assert_allclose(native.predict(dall), booster.predict(dall))


def test_xgboost_sklearn_api_logs_once_with_early_stopping(tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = make_regression(n_samples=300, n_features=5, noise=10.0, random_state=2)
    model = xgb.XGBRegressor(n_estimators=300, learning_rate=0.5, max_depth=3, early_stopping_rounds=3, n_jobs=1)
    model.fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])], verbose=False)

    run = _only_run()
    assert run.tags["estimator_name"] == "XGBRegressor"
    assert run.params["n_estimators"] == "300" and run.params["early_stopping_rounds"] == "3"
    rounds = model.get_booster().num_boosted_rounds()
    assert rounds < 300
    hist = _history(run.id, "validation_0-rmse")
    assert hist["step"].tolist() == list(range(rounds))
    assert run.metrics["best_iteration"] == model.best_iteration
    assert "training_rmse" in run.metrics
    meta = json.loads((_download(run.id, "model", tmp_path) / "keel-model.json").read_text())
    assert {"xgboost", "scikit-learn"} <= set(meta["packages"])
    folder = tmp_path / "dl" / "model"
    loaded = pickle.loads((folder / "model.pkl").read_bytes())
    np.testing.assert_allclose(loaded.predict(X), model.predict(X))
    native = xgb.XGBRegressor()
    native.load_model(str(folder / "model.json"))
    np.testing.assert_allclose(native.predict(X), model.predict(X))


# -- import behaviour --------------------------------------------------------------


@pytest.mark.slow
def test_autolog_patches_libraries_on_their_first_import(project: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import keel
        from keel.tracking import autolog as al
        keel.autolog()
        for name in ("sklearn", "lightgbm", "xgboost"):
            assert name not in sys.modules, f"{name} imported too early"
        assert al.enabled_flavors() == ["sklearn", "lightgbm", "xgboost"]
        from sklearn.linear_model import LogisticRegression
        assert al.is_patched(LogisticRegression, "fit")
        import lightgbm
        assert al.is_patched(lightgbm, "train") and al.is_patched(lightgbm.sklearn.LGBMModel, "fit")
        assert lightgbm.__spec__.loader.__class__.__name__ != "_HookLoader"
        assert "xgboost" not in sys.modules
        keel.autolog(disable=True)
        assert not al.is_patched(lightgbm, "train") and not al.is_patched(LogisticRegression, "fit")
        import xgboost
        assert not al.is_patched(xgboost, "train")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=project, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pipeline_fit_transform_logs_once_and_keeps_hasattr(data) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _ = data
    out = make_pipeline(StandardScaler(), PCA(n_components=2)).fit_transform(X)
    assert out.shape == (300, 2)
    run = _only_run()
    assert run.tags["estimator_name"] == "Pipeline"
    assert not hasattr(make_pipeline(StandardScaler(), LogisticRegression()), "fit_transform")


def test_fits_in_worker_threads_belong_to_the_outer_fit(data) -> None:
    from joblib import parallel_backend
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    keel.autolog(max_tuning_runs=0)
    X, y = data
    with parallel_backend("threading", n_jobs=2):
        GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, cv=2, n_jobs=2).fit(X, y)
    run = _only_run()
    assert run.tags["estimator_name"] == "GridSearchCV" and "C" not in run.params


def test_cross_val_score_is_one_run_with_fold_scores(data, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = data
    scores = cross_val_score(LogisticRegression(C=2.0), X, y, cv=4)

    run = _only_run()
    assert run.tags["sklearn_function"] == "cross_validate" and run.tags["estimator_name"] == "LogisticRegression"
    assert run.params["C"] == "2.0"
    assert run.metrics["cv_test_score_mean"] == pytest.approx(scores.mean())
    assert run.metrics["cv_test_score_std"] == pytest.approx(scores.std())
    folds = json.loads(_download(run.id, "cv_scores.json", tmp_path).read_text())
    np.testing.assert_allclose(folds["test_score"], scores)


def test_cross_val_predict_records_out_of_fold_metrics(data) -> None:
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    X, y = data
    pred = cross_val_predict(DecisionTreeClassifier(max_depth=2, random_state=0), X, y, cv=3)
    run = _only_run()
    assert run.metrics["cv_accuracy"] == pytest.approx(accuracy_score(y, pred))


def test_multiclass_classifier_metrics() -> None:
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=3)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    run = _only_run()
    proba = model.predict_proba(X)
    assert run.metrics["training_log_loss"] == pytest.approx(log_loss(y, proba))
    assert run.metrics["training_roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    features = keel.get_run(run.id).tags["n_features"]
    assert features == "6"


@pytest.mark.parametrize("n_classes", [2, 3])
def test_training_metrics_have_the_definitions_of_keel_evaluate(n_classes: int) -> None:
    """One definition per metric name: autolog's training_* equal keel.evaluate's metrics on the same rows."""
    from sklearn.linear_model import LogisticRegression

    from keel.evaluation import metrics as em

    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=n_classes, random_state=5)
    model = LogisticRegression(max_iter=500).fit(X, y)
    run = _only_run()
    proba = model.predict_proba(X)
    W = np.ones((1, len(y)))
    expected = em.binary(W, y, proba[:, 1], 0.5) if n_classes == 2 else em.multiclass(W, y, proba)
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
        assert run.metrics[f"training_{name}"] == pytest.approx(float(expected[name][0]), rel=1e-6), name


@pytest.mark.postgres
def test_iteration_metrics_and_model_on_postgres(pg_project: Path, data, tmp_path: Path) -> None:
    import xgboost as xgb

    X, y = data
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(X, y, eval_set=[(X, y)], verbose=False)
    run = _only_run()
    assert _history(run.id, "validation_0-logloss")["step"].tolist() == list(range(5))
    folder = _download(run.id, "model", tmp_path)
    np.testing.assert_allclose(pickle.loads((folder / "model.pkl").read_bytes()).predict_proba(X), model.predict_proba(X))


def test_unreachable_store_still_trains_with_one_warning(data, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LogisticRegression

    from keel import config
    from keel.store import metadata

    monkeypatch.setenv("KEEL_METADATA_URI", "postgresql+psycopg://postgres@127.0.0.1:9/nowhere")
    config.reset()
    metadata.reset_stores()
    X, y = data
    with pytest.warns(al.AutologWarning, match="the run") as caught:
        model = LogisticRegression().fit(X, y)
    assert len(caught) == 1
    assert "StoreError" in str(caught[0].message)
    assert hasattr(model, "coef_")


def test_xgboost_user_early_stopping_callback_does_not_hide_the_last_iteration(data) -> None:
    import xgboost as xgb

    X, y = data
    dtrain, dvalid = xgb.DMatrix(X[:200], y[:200]), xgb.DMatrix(X[200:], y[200:])
    params = {"objective": "binary:logistic", "eta": 0.9, "max_depth": 6, "nthread": 1}
    stop = xgb.callback.EarlyStopping(rounds=2)
    booster = xgb.train(params, dtrain, 300, evals=[(dvalid, "valid")], callbacks=[stop], verbose_eval=False)
    run = _only_run()
    assert booster.num_boosted_rounds() < 300
    assert len(_history(run.id, "valid-logloss")) == booster.num_boosted_rounds()
    assert run.metrics["best_iteration"] == booster.best_iteration


def test_interrupted_training_marks_the_run_killed(data) -> None:
    import lightgbm as lgb

    X, y = data

    def interrupt(env: object) -> None:
        if env.iteration == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 10,
                  valid_sets=[lgb.Dataset(X, y)], callbacks=[interrupt])
    run = _only_run()
    assert run.status == "killed"
    # iteration 2's values were never recorded: the user's callback ran first and interrupted
    assert _history(run.id, "valid_0-binary_logloss")["step"].tolist() == [0, 1]
