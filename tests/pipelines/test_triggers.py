"""The scheduler under concurrency: leases, one run per occurrence, crashes, jobs of other kinds, runs off the loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.pipelines.schedule import add_schedule
from keel.pipelines.triggers import claim_schedule, fires, run_scheduler, tick
from keel.store.metadata import get_metadata_store
from keel.store.schema import tags
from keel.store.schema.pipelines import pipeline_runs, schedule_fires

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

JOBS = '''
import os
import time
from pathlib import Path

import keel
from keel.pipelines.jobs import JobOutcome, register_job_kind


@keel.step
def work(n: int, event) -> int:
    return n + 1


@keel.pipeline(experiment="scheduled")
def quick(n: int = 1, event: dict | None = None):
    return work(n, event)


@keel.step(cache=False)
def nap(seconds: float) -> float:
    Path("napping").write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


@keel.pipeline(experiment="scheduled")
def slow(seconds: float = 60.0):
    return nap(seconds)


def run_note(target, params, event, *, trigger, tags):
    """A job that is not a pipeline: it writes a note (with when it ran)."""
    start = time.time()
    time.sleep(float(params.get("sleep", 0)))
    Path(target).mkdir(exist_ok=True)
    (Path(target) / f"{os.getpid()}-{start}.json").write_text(
        __import__("json").dumps({"start": start, "end": time.time(), "event": event, "trigger": trigger})
    )
    return JobOutcome(run_id=None)


def check_note(target, params, trigger_kind):
    return dict(params)


register_job_kind("note", run_note, check=check_note)
'''


def _keel(project: Path, *args: str, **kw) -> subprocess.Popen[str]:
    """A real `keel` process in the project (this checkout's code first on the path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(project), *[p for p in sys.path if p]])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    code = "import sys, jobs_mod; from keel.cli.main import main; sys.argv = ['keel', *sys.argv[1:]]; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _pipeline_runs_by_schedule() -> Counter[str]:
    with get_metadata_store().read() as conn:
        rows = conn.execute(
            sa.select(tags.c.value).join(pipeline_runs, pipeline_runs.c.run_id == tags.c.run_id).where(tags.c.key == "keel.schedule")
        ).scalars()
        return Counter(rows)


def _two_schedulers_never_double_fire(project: Path, write_module) -> None:
    mod = write_module("jobs_mod", JOBS)
    # the experiment exists first: two processes creating it at once is the tracking store's race (issue 11, point 3)
    mod.quick.run({"n": 0})
    names = [f"every-minute-{i:02d}" for i in range(8)]
    for name in names:
        add_schedule(name, "jobs_mod:quick", cron="* * * * *", now=T0)
    for minute in (3, 7):  # two rounds: each schedule is due once per round (missed minutes coalesce)
        now = (T0 + timedelta(minutes=minute)).isoformat()
        procs = [_keel(project, "scheduler", "--once", "--now", now, "--json") for _ in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, out + err
        reported = [f for out, _ in outs for f in json.loads(out)]
        assert sorted(f["schedule"] for f in reported) == names  # every due schedule once, by one of the two
        assert all(f["status"] == "finished" for f in reported)
    assert _pipeline_runs_by_schedule() == Counter({n: 2 for n in names})
    with get_metadata_store().read() as conn:
        keys = list(conn.execute(sa.select(schedule_fires.c.schedule, schedule_fires.c.fire_key, schedule_fires.c.status)))
    assert len(keys) == 16 and {k.status for k in keys} == {"finished"}


@pytest.mark.slow
def test_two_scheduler_processes_start_each_run_once_on_sqlite(project: Path, write_module) -> None:
    _two_schedulers_never_double_fire(project, write_module)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_scheduler_processes_start_each_run_once_on_postgres(pg_project: Path, write_module) -> None:
    assert get_metadata_store().dialect == "postgresql"
    _two_schedulers_never_double_fire(pg_project, write_module)


def test_the_schedule_lease_has_one_holder_until_it_expires(project: Path, write_module) -> None:
    write_module("jobs_mod", JOBS)
    add_schedule("held", "jobs_mod:quick", cron="* * * * *", now=T0)
    assert claim_schedule("held", "a", 60_000)
    assert claim_schedule("held", "a", 60_000)  # renewing one's own lease
    assert not claim_schedule("held", "b", 60_000)
    assert tick(T0 + timedelta(minutes=5), owner="b") == []  # b cannot evaluate it while a holds it
    with get_metadata_store().write() as conn:  # a's lease runs out (a crashed while evaluating)
        conn.execute(sa.text("UPDATE schedules SET lease_expires_ms = 0 WHERE name = 'held'"))
    (fired,) = tick(T0 + timedelta(minutes=5), owner="b")
    assert fired.status == "finished" and fired.event["due"] == (T0 + timedelta(minutes=1)).isoformat()


@pytest.mark.slow
def test_a_scheduler_killed_mid_run_never_gets_its_run_started_again(project: Path, write_module) -> None:
    write_module("jobs_mod", JOBS)
    add_schedule("long", "jobs_mod:slow", cron="* * * * *", now=T0)
    now = (T0 + timedelta(minutes=2)).isoformat()
    first = _keel(project, "scheduler", "--once", "--now", now, "--lease", "60", start_new_session=True)
    deadline = time.time() + 120
    while not (project / "napping").exists():
        assert first.poll() is None, first.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the scheduler and the job it runs, as a machine that died
    first.communicate()
    (row,) = fires("long")
    assert row["status"] == "running"
    second = _keel(project, "scheduler", "--once", "--now", now, "--json")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert json.loads(out) == []  # the occurrence is claimed and its lease still runs: not started again
    with get_metadata_store().write() as conn:  # the lease runs out: nobody renews it
        conn.execute(sa.update(schedule_fires).where(schedule_fires.c.schedule == "long").values(lease_expires_ms=1))
    third = _keel(project, "scheduler", "--once", "--now", now, "--json")
    out, err = third.communicate(timeout=120)
    assert third.returncode == 1, err  # a crashed run is reported as a failure
    (crashed,) = json.loads(out)
    assert crashed["status"] == "crashed" and "stopped renewing its lease" in crashed["error"]
    (row,) = fires("long")
    assert row["status"] == "crashed"
    assert _pipeline_runs_by_schedule() == Counter({"long": 1})


def test_a_registered_job_kind_that_is_not_a_pipeline_runs_from_a_schedule(project: Path, write_module) -> None:
    write_module("jobs_mod", JOBS)
    (project / "incoming").mkdir()
    add_schedule("notes", "notes_out", job="note", on_source="incoming")
    (project / "incoming" / "a.csv").write_text("x\n1\n")
    (fired,) = tick()
    assert fired.status == "finished" and fired.run_id is None
    (note,) = [json.loads(p.read_text()) for p in (project / "notes_out").iterdir()]
    assert note["event"]["kind"] == "source" and note["trigger"] == "schedule:notes"
    from keel.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"Job kind 'nite' is not registered.*Did you mean 'note'"):
        add_schedule("bad", "x", job="nite", cron="* * * * *")


@pytest.mark.slow
def test_jobs_run_off_the_tick_loop_in_worker_processes(project: Path, write_module) -> None:
    write_module("jobs_mod", JOBS)
    for i in range(2):
        add_schedule(f"sleepy-{i}", "notes_out", job="note", cron="* * * * *", params={"sleep": 3}, now=T0)
    seen: list[tuple[str, str, float]] = []
    start = time.time()
    clock_start = T0 + timedelta(minutes=1)

    def clock() -> datetime:
        return clock_start + timedelta(seconds=time.time() - start)

    fired = run_scheduler(poll_seconds=0.2, until=clock_start + timedelta(seconds=4), clock=clock, workers=2,
                          on_fire=lambda f: seen.append((f.schedule, f.status, time.time() - start)))
    assert sorted((f.schedule, f.status) for f in fired) == [("sleepy-0", "finished"), ("sleepy-1", "finished")]
    started = [t for _, status, t in seen if status == "started"]
    assert len(started) == 2 and max(started) < 2.5  # both started at once: neither waited for the other to end
    notes = [json.loads(p.read_text()) for p in (project / "notes_out").iterdir()]
    a, b = sorted(notes, key=lambda n: n["start"])
    assert b["start"] < a["end"]  # they ran side by side, each in its own process
    assert len({p.name.split("-")[0] for p in (project / "notes_out").iterdir()}) == 2


def test_a_running_job_keeps_its_lease_alive_past_the_lease_time(project: Path, write_module) -> None:
    import threading

    from keel.pipelines.triggers import reap_crashed

    write_module("jobs_mod", JOBS)
    add_schedule("renewed", "notes_out", job="note", cron="* * * * *", params={"sleep": 2.5}, now=T0)
    reaped: list[object] = []
    stop = threading.Event()

    def other_scheduler() -> None:  # checks for crashed runs all along
        while not stop.wait(0.2):
            reaped.extend(reap_crashed())

    t = threading.Thread(target=other_scheduler)
    t.start()
    try:
        (fired,) = tick(T0 + timedelta(minutes=2), lease_seconds=0.6)
    finally:
        stop.set()
        t.join()
    assert fired.status == "finished" and reaped == []
    (row,) = fires("renewed")
    assert row["status"] == "finished" and row["ended_ms"] is not None
