"""Tuning: an Optuna study as a step, each trial a child run, pruning, the best model passed on."""

from __future__ import annotations

import pytest

import keel
from keel.errors import ValidationError

TUNED = '''
import keel
import optuna


@keel.step
def data(n: int) -> list:
    return list(range(n))


@keel.tune(space={"x": (0.0, 10.0), "depth": [1, 2, 3]}, n_trials={n_trials}, direction="maximize", seed=1)
def search(xs: list, *, params, trial):
    score = 0.0
    for epoch in range(5):
        score = params["x"] * (epoch + 1) / 5 + params["depth"] * 0.01
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score, {"model": "m", "x": params["x"], "n": len(xs)}


@keel.step
def evaluate(best: dict, model: dict) -> dict:
    return {"x": best["x"], "model_x": model["x"], "n": model["n"]}


@keel.pipeline(experiment="tuning")
def tuned(n: int = 5):
    result = search(data(n))
    return evaluate(result["params"], result["model"])
'''


def test_tuning_runs_trials_as_child_runs_prunes_and_passes_the_best_model(write_module) -> None:
    mod = write_module("tuned_mod", TUNED.replace("{n_trials}", "14"))
    r = mod.tuned.run()
    out = r.output
    tuning = r.load("search")
    assert tuning["trials"] == 14 and tuning["pruned"] >= 1
    assert out == {"x": tuning["params"]["x"], "model_x": tuning["params"]["x"], "n": 5}
    step_run = keel.get_run(r.steps["search"].run_id)
    trials = [keel.get_run(c) for c in step_run.children]
    assert len(trials) == 14
    assert {t.tags["keel.trial.state"] for t in trials} == {"complete", "pruned"}
    complete = [t for t in trials if t.tags["keel.trial.state"] == "complete"]
    best = max(complete, key=lambda t: t.metrics["value"])
    assert step_run.tags["keel.tune.best_run"] == best.id
    assert float(best.params["x"]) == pytest.approx(tuning["params"]["x"])
    assert step_run.metrics["best_value"] == pytest.approx(best.metrics["value"])
    assert len(keel.get_metric_history(trials[0].id, "intermediate")) >= 1
    assert mod.tuned.run().steps["search"].cache_hit  # the study is cached like any step


def test_smoke_runs_few_trials(write_module) -> None:
    mod = write_module("tuned_smoke_mod", TUNED.replace("{n_trials}", "14"))
    r = mod.tuned.run(smoke=True)
    assert r.load("search")["trials"] == 2


def test_bad_search_space_and_signature_are_refused_at_import(project) -> None:
    def f(xs: list, *, params: dict) -> float:
        return 1.0

    with pytest.raises(ValidationError, match=r"Search space 'x' of step f at .*test_tuning\.py:\d+: low 3 is not below high 1"):
        keel.tune(space={"x": (3, 1)})(f)
    with pytest.raises(ValidationError, match="takes no `params` argument"):

        @keel.tune(space={"x": [1, 2]})
        def g(xs: list) -> float:
            return 1.0


MISSING = '''
import keel


@keel.step
def data(n: int) -> list:
    return list(range(n))


@keel.tune(space={"x": (0.0, 1.0)}, n_trials=6, seed=0)
def search(xs: list, *, params):
    import lightgbm_not_installed_here  # noqa: F401
    return params["x"]


@keel.step
def fit(xs: list) -> int:
    import xgboost_missing.sub  # noqa: F401
    return 1


@keel.pipeline(experiment="missing")
def tuned(n: int = 3):
    return search(data(n))


@keel.pipeline(experiment="missing")
def plain(n: int = 3):
    return fit(data(n))
'''


@pytest.mark.parametrize("engine", ["local", "process"])
def test_a_missing_package_in_a_trial_names_the_install_not_pruning(write_module, monkeypatch, engine: str) -> None:
    from keel.pipelines import StepFailed, executors

    monkeypatch.setitem(executors.EXTRAS, "lightgbm_not_installed_here", "lightgbm")
    mod = write_module("missing_pkgs", MISSING)
    with pytest.raises(StepFailed) as info:
        mod.tuned.run(engine=engine, max_workers=2)
    text = str(info.value)
    assert "pruning" not in text
    # the worker's error is mapped where the study runs, the same for every engine
    assert "needs the 'lightgbm_not_installed_here' package, which is not installed." in text
    assert "pip install 'keel[lightgbm]'" in text
    assert "\n" not in text
    assert info.value.result.steps["search"].status == "failed"
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema import tags

    with get_metadata_store().read() as conn:
        trials = conn.execute(sa.select(sa.func.count()).select_from(tags).where(tags.c.key == "keel.kind", tags.c.value == "trial")).scalar()
    assert trials is not None and trials <= 2  # the study stops at the first missing package instead of failing all 6


def test_a_missing_package_in_a_step_names_the_extra(write_module, monkeypatch) -> None:
    from keel.pipelines import StepFailed, executors

    monkeypatch.setitem(executors.EXTRAS, "xgboost_missing", "xgboost")
    mod = write_module("missing_pkgs2", MISSING)
    with pytest.raises(StepFailed) as info:
        mod.plain.run()
    text = str(info.value)
    assert "Step fit (" in text and "needs the 'xgboost_missing' package, which is not installed." in text
    assert "Install it with: pip install 'keel[xgboost]', then run `keel pipelines resume" in text
    assert info.value.result.steps["fit"].error == "needs the 'xgboost_missing' package, which is not installed. Install it with: pip install 'keel[xgboost]'"


def test_missing_package_maps_known_modules_to_extras() -> None:
    from keel.pipelines.executors import missing_package

    err = missing_package(ModuleNotFoundError("No module named 'lightgbm'", name="lightgbm"))
    assert err is not None and err.hint == "Install it with: pip install 'keel[lightgbm]'"
    wrapped = RuntimeError("worker failed")
    wrapped.__cause__ = ModuleNotFoundError("No module named 'optuna.storages'")  # a pickled error loses .name
    err = missing_package(wrapped)
    assert err is not None and "'optuna'" in err.message and "keel[tuning]" in (err.hint or "")
    assert missing_package(ValueError("x")) is None
