"""Runs: child run per step, failures, resume (after a failure, a kill, from a step), concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

import keel
from keel.pipelines import StepFailed, resume
from keel.pipelines.runner import list_runs, run_steps
from keel.store.metadata import get_metadata_store
from keel.store.schema.pipelines import pipeline_cache

FRAGILE = '''
import os
import time
from pathlib import Path
import keel


@keel.step
def load(n: int) -> list:
    return list(range(n))


@keel.step
def fragile(xs: list) -> list:
    if Path("fail.flag").exists():
        raise RuntimeError("boom: the flag is up")
    if Path("kill.flag").exists():
        os.kill(os.getpid(), 9)
    time.sleep(float(os.environ.get("FRAGILE_SLEEP", "0")))
    return [x + 1 for x in xs]


@keel.step
def finish(xs: list) -> int:
    return sum(xs)


@keel.pipeline(experiment="fragile")
def fragile_flow(n: int = 4):
    return finish(fragile(load(n)))
'''


def test_every_step_is_a_child_run_with_status_and_cache_tags(flow) -> None:
    r = flow.flow.run({"n": 3})
    info = keel.get_run(r.run_id)
    assert info.status == "finished" and info.experiment == "flowexp"
    assert info.tags["keel.kind"] == "pipeline" and info.tags["keel.trigger"] == "manual"
    assert info.params == {"n": "3"}
    assert info.metrics["keel.steps"] == 3
    assert len(info.children) == 3
    for name, step in r.steps.items():
        child = keel.get_run(step.run_id)
        assert child.parent_id == r.run_id and child.name == name and child.status == "finished"
        assert child.tags["keel.cache"] == "miss" and child.tags["keel.step"] == name
        assert [a["path"] for a in child.artifacts if a["path"] == "output"] == ["output"]
        assert child.tags["keel.output.digest"] == step.digest
    lineage = json.loads(keel.get_run(r.steps["total"].run_id).tags["keel.inputs"])
    assert lineage == {
        "xs": [{"step": "load", "digest": r.steps["load"].digest}],
        "ys": [{"step": "double", "digest": r.steps["double"].digest}],
    }
    again = flow.flow.run({"n": 3})
    child = keel.get_run(again.steps["total"].run_id)
    assert child.tags["keel.cache"] == "hit"
    assert child.tags["keel.cache.source_run"] == r.steps["total"].run_id


def test_failing_step_fails_the_run_and_resume_reuses_finished_steps(write_module, project: Path) -> None:
    mod = write_module("fragile_mod", FRAGILE)
    (project / "fail.flag").write_text("")
    with pytest.raises(StepFailed, match=r"Step fragile \(.*fragile_mod.py:\d+\) failed: RuntimeError: boom") as err:
        mod.fragile_flow.run()
    failed = err.value.result
    assert failed.steps["load"].status == "finished"
    assert failed.steps["fragile"].status == "failed"
    assert failed.steps["finish"].status == "skipped"
    info = keel.get_run(failed.run_id)
    assert info.status == "failed" and "boom" in (info.error or "")
    step_run = keel.get_run(failed.steps["fragile"].run_id)
    assert step_run.status == "failed" and "RuntimeError: boom" in (step_run.error or "")
    (project / "fail.flag").unlink()
    r = resume(failed.run_id)
    assert r.status == "finished" and r.output == sum(range(1, 5))
    assert {n: s.cache_hit for n, s in r.steps.items()} == {"load": True, "fragile": False, "finish": False}
    assert keel.get_run(r.run_id).tags["keel.resume_of"] == failed.run_id
    again = resume(r.run_id, from_step="fragile")
    assert {n: s.status for n, s in again.steps.items()} == {"load": "cached", "fragile": "finished", "finish": "finished"}
    with pytest.raises(keel.KeelError, match=r"no step 'fragil'\. Did you mean 'fragile'"):
        resume(r.run_id, from_step="fragil")


@pytest.mark.slow
def test_killed_pipeline_can_be_resumed(write_module, project: Path, python) -> None:
    write_module("fragile_mod", FRAGILE)
    (project / "kill.flag").write_text("")
    proc = python("import fragile_mod\nfragile_mod.fragile_flow.run()")
    assert proc.returncode != 0
    (project / "kill.flag").unlink()
    runs = list_runs("fragile_flow")
    assert len(runs) == 1
    _row, steps = run_steps(runs[0]["run_id"])
    assert {s["step"]: s["status"] for s in steps} == {"load": "finished", "fragile": "running", "finish": "pending"}
    r = resume(runs[0]["run_id"])
    assert r.output == 10
    assert r.steps["load"].cache_hit and not r.steps["fragile"].cache_hit


@pytest.mark.slow
def test_two_concurrent_runs_do_not_corrupt_each_other_or_the_cache(write_module, project: Path, python) -> None:
    write_module("fragile_mod", FRAGILE)
    code = """
    import json, os
    os.environ["FRAGILE_SLEEP"] = "0.5"
    import fragile_mod
    r = fragile_mod.fragile_flow.run({"n": 50})
    print(json.dumps({"out": r.output, "run": r.run_id, "digests": {k: s.digest for k, s in r.steps.items()}}))
    """
    procs = [python(code, wait=False) for _ in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0]["out"] == outs[1]["out"] == sum(range(1, 51))
    assert outs[0]["digests"] == outs[1]["digests"]
    assert outs[0]["run"] != outs[1]["run"]
    with get_metadata_store().read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(pipeline_cache)).scalar() == 3
    assert {r["status"] for r in list_runs("fragile_flow")} == {"finished"}
    write_module("fragile_mod", FRAGILE)
    import fragile_mod

    assert fragile_mod.fragile_flow.run({"n": 50}).cached == 3


def test_output_of_tuple_steps_and_items(write_module) -> None:
    mod = write_module("tuples_mod", """
    import keel

    @keel.step
    def split(n: int) -> tuple[list, list]:
        xs = list(range(n))
        return xs[: n // 2], xs[n // 2 :]

    @keel.step
    def stats(n: int) -> dict:
        return {"n": n, "half": n / 2}

    @keel.step
    def add(a: list, b: list, half: float) -> float:
        return sum(a) + sum(b) + half

    @keel.pipeline
    def p(n: int = 6):
        a, b = split(n)
        s = stats(n)
        return {"total": add(a, b, s["half"]), "stats": s}
    """)
    r = mod.p.run()
    assert r.output == {"total": 15 + 3.0, "stats": {"n": 6, "half": 3.0}}
    assert r.load("split") == ([0, 1, 2], [3, 4, 5]) or r.load("split") == [[0, 1, 2], [3, 4, 5]]


def test_tables_and_arrays_round_trip_as_parquet_and_numpy(write_module) -> None:
    mod = write_module("tables_mod", """
    import numpy as np
    import pandas as pd
    import keel

    @keel.step
    def frame(n: int) -> pd.DataFrame:
        return pd.DataFrame({"a": np.arange(n), "b": np.arange(n) * 0.5})

    @keel.step
    def arr(df: pd.DataFrame) -> np.ndarray:
        return df["b"].to_numpy()

    @keel.pipeline
    def p(n: int = 5):
        df = frame(n)
        return df, arr(df)
    """)
    r = mod.p.run()
    assert r.steps["frame"].serializer == "parquet" and r.steps["arr"].serializer == "numpy"
    again = mod.p.run()
    df, arr = again.output
    assert list(df["a"]) == [0, 1, 2, 3, 4] and list(arr) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_retries_rerun_a_flaky_step(write_module, project: Path) -> None:
    mod = write_module("flaky_mod", """
    from pathlib import Path
    import keel

    @keel.step(retries=2)
    def flaky(n: int) -> int:
        marker = Path("attempts.txt")
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if attempts < 3:
            raise ConnectionError("try again")
        return n

    @keel.pipeline
    def p(n: int = 7):
        return flaky(n)
    """)
    assert mod.p.run().output == 7
    assert (project / "attempts.txt").read_text() == "3"
