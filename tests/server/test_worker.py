"""`keel worker`: claims queued runs with a lease, runs them with the project's code, records how they ended;
two workers never run one twice (SQLite and PostgreSQL); a killed worker's run is marked crashed, not run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.server._flows import write_pipelines

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(params=["sqlite", "postgres"])
def flows(request: pytest.FixtureRequest) -> Iterator[Path]:
    root: Path = request.getfixturevalue("project" if request.param == "sqlite" else "pg_project")
    write_pipelines(root)
    yield root
    sys.modules.pop("pipelines", None)


def _worker(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(root)])}
    return subprocess.Popen([sys.executable, "-c", "from keel.cli.main import main; main()", "worker", "--poll", "0.2", *args],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _starts(queue_id: str) -> int:
    """How many pipeline runs a queued row started."""
    from keel.store.metadata import get_metadata_store
    from keel.store.schema.pipelines import pipeline_runs

    with get_metadata_store().read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(pipeline_runs).where(pipeline_runs.c.trigger == f"queue:{queue_id}")).scalar_one())


@pytest.mark.slow
def test_worker_runs_queued_runs_and_records_status(flows: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config
    from keel.pipelines import queue

    monkeypatch.setenv("KEEL_USER", "dana")
    config.reset()
    good = queue.enqueue("training", {"n": 4, "k": 3})
    bad = queue.enqueue("training", {"n": -1})
    proc = _worker(flows, "--drain", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err  # one run failed
    assert sorted(r["status"] for r in json.loads(out)) == ["failed", "finished"]
    ok, failed = queue.get(good.id), queue.get(bad.id)
    assert ok.status == "finished" and ok.run_id and ok.worker and ok.started_time and ok.ended_time
    assert failed.status == "failed" and "n must not be negative" in (failed.error or "")
    steps = {s["step"]: s["status"] for s in queue.steps(ok)}
    assert steps == {"load": "finished", "total": "finished"}
    assert {s["step"]: s["status"] for s in queue.steps(failed)}["load"] == "failed"

    import keel

    result = keel.get_run(ok.run_id)
    assert result.tags["keel.queue"] == good.id and result.tags["keel.requested_by"] == "dana"
    assert result.user == "dana"  # the run belongs to the requester, not the worker's OS user
    assert _starts(good.id) == 1 and _starts(bad.id) == 1


@pytest.mark.slow
def test_two_workers_never_run_one_twice(flows: Path) -> None:
    from keel.pipelines import queue

    ids = [queue.enqueue("training", {"n": i}, refresh=True).id for i in range(8)]
    workers = [_worker(flows, "--drain", "--concurrency", "2") for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    rows = [queue.get(i) for i in ids]
    assert [r.status for r in rows] == ["finished"] * 8
    assert [_starts(i) for i in ids] == [1] * 8
    assert len({r.run_id for r in rows}) == 8


@pytest.mark.slow
def test_sigterm_lets_the_running_run_finish_and_claims_nothing_more(flows: Path) -> None:
    import signal
    import time

    from keel.pipelines import queue

    first = queue.enqueue("training", {"n": 3, "pause": 4.0})
    proc = _worker(flows)
    deadline = time.time() + 120
    while queue.get(first.id).status == "queued" and time.time() < deadline:
        time.sleep(0.2)
    assert queue.get(first.id).status == "running"
    second = queue.enqueue("training", {"n": 1})
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert queue.get(first.id).status == "finished"
    assert queue.get(second.id).status == "queued"  # left for another worker


@pytest.mark.slow
def test_a_sigkilled_worker_leaves_a_crashed_run_that_nobody_restarts(flows: Path) -> None:
    import time

    from keel.pipelines import queue
    from keel.pipelines.runner import run_steps

    item = queue.enqueue("training", {"n": 3, "pause": 8.0})
    proc = _worker(flows, "--lease", "2")
    deadline = time.time() + 120
    while queue.get(item.id).run_id is None and time.time() < deadline:
        time.sleep(0.2)
    run_id = queue.get(item.id).run_id
    assert run_id is not None
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate(timeout=30)
    time.sleep(10)  # past the lease, and past the step's pause had its process lived on
    other = _worker(flows, "--drain")
    _, err = other.communicate(timeout=180)
    assert other.returncode == 0, err
    row = queue.get(item.id)
    assert row.status == "crashed" and "stopped renewing" in (row.error or "")
    steps = {s["step"]: s["status"] for s in run_steps(run_id)[1]}
    assert steps["load"] != "finished" and steps["total"] == "pending"  # the run's process ended with its worker
    assert _starts(item.id) == 1  # and it was never started again


def test_a_dead_workers_run_is_marked_crashed_and_never_restarted(flows: Path) -> None:
    from keel.pipelines import queue

    item = queue.enqueue("training", {"n": 2})
    claimed = queue.claim("dead-host:1:x", lease_ms=1)
    assert claimed is not None and claimed.id == item.id and claimed.status == "running"
    assert queue.claim("other:2:y", lease_ms=60_000) is None  # nothing else is queued
    import time

    time.sleep(0.05)
    crashed = queue.reap_crashed()
    assert [(c.id, c.status) for c in crashed] == [(item.id, "crashed")]
    assert "stopped renewing" in (queue.get(item.id).error or "")
    assert queue.reap_crashed() == [] and queue.claim("w", 60_000) is None
    assert queue.work(drain=True, poll_seconds=0.05) == []  # a worker finds nothing to run
    assert _starts(item.id) == 0


def test_a_lease_is_renewed_only_by_its_owner(flows: Path) -> None:
    from keel.pipelines import queue

    queue.enqueue("training", {"n": 2})
    item = queue.claim("me", lease_ms=60_000)
    assert item is not None
    assert queue.renew("someone-else", 60_000) == 0 and queue.renew("me", 60_000) == 1
    assert queue.finish(item, "someone-else", None, None).status == "running"  # only the owner records the end
    assert queue.finish(item, "me", None, "boom").status == "failed"
