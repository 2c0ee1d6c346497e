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
