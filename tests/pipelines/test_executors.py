"""Engines: the process pool and Ray give the same results as the in-process default."""

from __future__ import annotations

import pytest

import keel

PARALLEL = '''
import keel


@keel.step
def base(n: int) -> list:
    return list(range(n))


@keel.step
def square(xs: list) -> list:
    keel.log_metric("items", len(xs))
    return [x * x for x in xs]


@keel.step
def cube(xs: list) -> list:
    return [x ** 3 for x in xs]


@keel.step
def combine(a: list, b: list) -> int:
    return sum(a) + sum(b)


@keel.tune(space={"x": (0, 20)}, n_trials=4, parallel=2, pruner=None)
def search(xs: list, *, params, trial):
    return float(-abs(params["x"] - 7)), {"x": params["x"], "n": len(xs)}


@keel.pipeline(experiment="engines")
def par(n: int = 8):
    xs = base(n)
    return combine(square(xs), cube(xs)), search(xs)["model"]
'''


def digests(result) -> dict[str, str | None]:
    return {n: s.digest for n, s in result.steps.items() if n != "search"}


def test_process_pool_gives_the_same_results_as_local(write_module) -> None:
    mod = write_module("par_mod", PARALLEL)
    local = mod.par.run(engine="local")
    pooled = mod.par.run(engine="process", refresh=True, max_workers=2)
    assert pooled.output[0] == local.output[0] == sum(x * x + x**3 for x in range(8))
    assert digests(pooled) == digests(local)
    assert all(s.status == "finished" for s in pooled.steps.values())
    square_run = keel.get_run(pooled.steps["square"].run_id)
    assert square_run.parent_id == pooled.run_id and square_run.status == "finished"
    assert square_run.metrics["items"] == 8  # logged inside the worker, into the step's run
    search = keel.get_run(pooled.steps["search"].run_id)
    trials = [keel.get_run(c) for c in search.children]
    assert len(trials) == 4 and all(t.status == "finished" and "value" in t.metrics for t in trials)
    assert pooled.output[1]["n"] == 8


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_gives_the_same_results_as_local(write_module, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("ray")
    from keel.pipelines.executors import shutdown_ray

    mod = write_module("par_ray_mod", PARALLEL)
    local = mod.par.run(engine="local")
    request.addfinalizer(shutdown_ray)
    on_ray = mod.par.run(engine="ray", refresh=True)
    assert on_ray.output[0] == local.output[0]
    assert digests(on_ray) == digests(local)
    assert keel.get_run(on_ray.steps["square"].run_id).metrics["items"] == 8
    assert keel.get_run(on_ray.run_id).tags["keel.engine"] == "ray"
    assert mod.par.run(engine="ray").cached == len(local.steps)


def test_unknown_engine_is_refused(flow) -> None:
    with pytest.raises(keel.KeelError, match=r"Unknown engine 'rey'\. Did you mean 'ray'"):
        flow.flow.run(engine="rey")
