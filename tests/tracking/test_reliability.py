"""Many processes on one SQLite file; a process killed in the middle of a run."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import keel

WORKER = textwrap.dedent(
    """
    import sys, keel
    n, tag = int(sys.argv[1]), sys.argv[2]
    with keel.start_run(name=tag, experiment="concurrent") as run:
        keel.log_param("worker", tag)
        for i in range(n):
            keel.log_metric("v", float(i), step=i)
            if i % 500 == 0:
                keel.set_tag("progress", str(i))  # small write transactions interleave with the flushes
    print(run.id)
    """
)


@pytest.mark.slow
def test_eight_processes_log_into_one_sqlite_store_without_loss(project: Path) -> None:
    n = 5_000
    env = {**os.environ, "KEEL_HOME": str(project), "KEEL_FLUSH_INTERVAL": "0.05"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(n), f"w{i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    run_ids = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert "database is locked" not in err
        run_ids.append(out.strip().splitlines()[-1])
    for rid in run_ids:
        hist = keel.get_metric_history(rid, "v")
        assert list(hist["step"]) == list(range(n)), f"run {rid} lost values"
        assert list(hist["value"]) == [float(i) for i in range(n)]
        assert keel.get_run(rid).status == "finished"


KILLED = textwrap.dedent(
    """
    import sys, time, keel
    with keel.start_run(name="doomed") as run:
        print(run.id, flush=True)
        for i in range(100):
            keel.log_metric("v", float(i), step=i)
        time.sleep(1.5)  # more than one flush interval: the values above are on disk
        print("flushed", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.slow
def test_sigkill_leaves_a_readable_store_and_a_crashed_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "KEEL_HOME": str(project), "KEEL_HEARTBEAT_TIMEOUT": "1.5", "KEEL_FLUSH_INTERVAL": "0.5"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "flushed"
    monkeypatch.setenv("KEEL_HEARTBEAT_TIMEOUT", "1.5")
    assert keel.get_run(run_id).status == "running"  # alive and beating
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(2.0)
    info = keel.get_run(run_id)
    assert info.status == "crashed"
    assert list(keel.get_metric_history(run_id, "v")["step"]) == list(range(100))
    assert info.end_time is None


def test_uncaught_exception_in_a_script_marks_the_run_failed(project: Path) -> None:
    script = "import keel\nrun = keel.start_run(name='s')\nprint(run.id, flush=True)\nkeel.log_metric('a', 1)\nraise RuntimeError('boom')\n"
    env = {**os.environ, "KEEL_HOME": str(project)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    info = keel.get_run(out.stdout.strip())
    assert info.status == "failed" and "RuntimeError: boom" in (info.error or "")
    assert info.metrics == {"a": 1.0}


def test_script_without_context_manager_finishes_at_exit(project: Path) -> None:
    script = "import keel\nfor i in range(1000):\n    keel.log_metric('a', i)\nprint(keel.active_run().id)\n"
    env = {**os.environ, "KEEL_HOME": str(project)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rid = out.stdout.strip()
    assert keel.get_run(rid).status == "finished"
    assert len(keel.get_metric_history(rid, "a")) == 1000
