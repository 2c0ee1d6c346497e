"""keel deploy start|stop: the desired state in the store (checked first, audited), leases, and the supervisor's real child processes."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel.deployments.processes import Supervisor, last_line
from keel.deployments.services import (
    Replica,
    find_service,
    get_service,
    hold,
    list_services,
    record,
    start_service,
    stop_service,
)
from keel.deployments.specs import build_spec, delete_deployment, deploy, history
from keel.errors import ConflictError, NotFoundError, ValidationError
from tests.serving.conftest import train_model


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Deployment ``live`` (churn@live) on a SQLite or a PostgreSQL metadata store."""
    request.getfixturevalue("pg_project" if request.param == "postgresql" else "project")
    train_model(alias="live")
    deploy(build_spec("live", model="churn@live"))
    return "live"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _taken_port_after_a_free_one() -> Iterator[int]:
    """A port held open here whose predecessor is free (the two-replica case starts one below it)."""
    for _ in range(100):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port - 1))
            except OSError:
                taken.close()
                continue
        taken.listen()
        try:
            yield port
        finally:
            taken.close()
        return
    raise AssertionError("no port with a free predecessor found")


def test_start_and_stop_check_everything_before_anything_changes(live: str) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        start_service("nope")
    with pytest.raises(ValidationError, match="--replicas 0 is not between 1 and 64"):
        start_service(live, replicas=0)
    with _taken_port_after_a_free_one() as port:
        with pytest.raises(ValidationError, match=f"Port {port} on 127.0.0.1 is in use"):
            start_service(live, replicas=1, port=port)
        with pytest.raises(ValidationError, match=f"Port {port} on 127.0.0.1 is in use"):  # the second replica's port
            start_service(live, replicas=2, port=port - 1)
    with pytest.raises(ValidationError, match="not a port"):
        start_service(live, port=70000)
    with pytest.raises(ValidationError, match=r"--host '192\.0\.2\.1' is not an interface"):
        start_service(live, host="192.0.2.1")  # TEST-NET: no machine's own address
    assert list_services() == []  # nothing was written
    with pytest.raises(NotFoundError, match="never been started"):
        stop_service(live)

    svc = start_service(live, replicas=2, reason="go live")
    assert (svc.replicas, svc.desired, svc.state, len(set(svc.ports))) == (2, "running", "waiting", 2)
    assert [r.state for r in svc.replica_state] == ["pending", "pending"]
    with pytest.raises(ConflictError, match="already started"):
        start_service(live, replicas=3)
    assert get_service(live).replicas == 2
    assert stop_service(live, reason="done").desired == "stopped"
    with pytest.raises(ConflictError, match="not running"):
        stop_service(live)
    from keel.config import settings

    me = settings().acting_user
    events = [(e["action"], e["user"], e["reason"], (e["detail"] or {}).get("replicas")) for e in history(live)]
    assert events[-2:] == [("start", me, "go live", 2), ("stop", me, "done", 2)]
    again = start_service(live, replicas=1)  # a stopped service starts again
    assert again.replicas == 1 and again.desired == "running"
    with pytest.raises(ConflictError, match="Stop it first"):  # a running deployment is not deleted from under its replicas
        delete_deployment(live)
    assert [e["action"] for e in history(live)][-1] == "start"  # nothing written
    stop_service(live)
    delete_deployment(live, reason="retired")


def test_one_worker_holds_a_service_until_its_lease_expires(live: str) -> None:
    start_service(live, replicas=1)
    assert [s.name for s in hold("w1", 60_000)] == ["live"]
    assert hold("w2", 60_000) == []  # held by w1
    assert [s.name for s in hold("w1", 60_000)] == ["live"]  # renewed
    assert get_service(live).owner == "w1"
    port = get_service(live).ports[0]
    assert record(live, "w1", [Replica(0, port, state="running", pid=123456, started_ms=1)])
    hold("w1", 0)  # w1 renews with a lease that ends now, and then stops renewing (killed)
    taken = wait_for("w2 to take over", lambda: hold("w2", 60_000))
    assert [s.name for s in taken] == ["live"] and get_service(live).owner == "w2"
    assert taken[0].replica_state == [Replica(0, port, state="pending", pid=None, started_ms=1)]  # not w1's process
    assert not record(live, "w1", [])  # w1 lost it: its writes are refused
    stop_service(live)
    assert [s.desired for s in hold("w2", 60_000)] == ["stopped"]  # its owner still sees it, to drain it
    assert hold("w3", 60_000) == []  # nobody else takes a stopped service


def test_cli_start_stop_status(live: str) -> None:
    from keel.cli.main import app

    r = CliRunner()
    bad = r.invoke(app, ["deploy", "start", "nope"])
    assert bad.exit_code == 1 and "No deployment named 'nope'" in bad.output and "Traceback" not in bad.output
    bad = r.invoke(app, ["deploy", "start", live, "--replicas", "0"])
    assert bad.exit_code == 1 and "--replicas 0" in bad.output
    out = r.invoke(app, ["deploy", "start", live, "--replicas", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["state"] == "waiting"
    again = r.invoke(app, ["deploy", "start", live])
    assert again.exit_code == 1 and "already started" in again.output
    out = r.invoke(app, ["deploy", "status", live])
    assert out.exit_code == 0 and "service: waiting" in out.output and "pending" in out.output, out.output
    out = r.invoke(app, ["deploy", "stop", live])
    assert out.exit_code == 0 and "stop recorded" in out.output
    helped = r.invoke(app, ["deploy", "--help"]).output
    assert "start" in helped and "stop" in helped and "--replicas" in helped


def test_last_line_reads_the_tail(tmp_path: Path) -> None:
    p = tmp_path / "x.log"
    p.write_text("a\n" * 10_000 + "error: boom\n\n")
    assert last_line(p) == "error: boom"
    assert last_line(tmp_path / "missing.log") == "" and last_line(None) == ""


@pytest.mark.slow
def test_a_crashing_replica_is_restarted_with_back_off_then_given_up_with_the_reason(live: str, tmp_path: Path) -> None:
    """The deployment vanishes after start (removed behind keel's back: `keel deploy delete` refuses a running one):
    each `keel serve --deployment` exits 1 saying so; after max_restarts it is failed."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.deployments import deployments

    start_service(live, replicas=1)
    with pytest.raises(ConflictError, match=r"is running .*Stop it first: keel deploy stop live"):
        delete_deployment(live, reason="pulled")
    get_metadata_store().transact(lambda conn: conn.execute(sa.update(deployments).where(deployments.c.name == live).values(deleted_ms=now_ms())))
    sup = Supervisor(owner="test-worker", lease_seconds=30, max_restarts=1, backoff_seconds=0.05, log_dir=tmp_path / "logs")
    try:
        svc = wait_for("the replica to be given up", lambda: next((s for s in sup.tick() if s.replica_state[0].state == "failed"), None))
    finally:
        sup.shutdown()
    rep = svc.replica_state[0]
    assert rep.restarts == 1 and rep.failures == 2 and rep.pid is None
    assert rep.last_error is not None and rep.last_error.startswith("exit status 1: ")
    assert "error: No deployment named 'live'" in rep.last_error, rep.last_error
    assert Path(str(rep.log)).read_text().count("--- keel worker test-worker") == 2
    stored = get_service(live)
    assert stored.state == "waiting" and stored.replica_state[0].state == "failed"  # released by shutdown, still failed
    failed = [e for e in history(live) if e["action"] == "replica_failed"]
    assert len(failed) == 1 and failed[0]["user"] == "keel" and failed[0]["detail"]["last_error"] == rep.last_error
    assert find_service(live) is not None


def test_routes_start_and_stop_as_the_authenticated_user_with_the_role_of_set(project: Path, auth_people: dict[str, str]) -> None:
    from tests.server._api import api_client
    from tests.server.auth_fixtures import bearer

    train_model(alias="live")
    deploy(build_spec("live", model="churn@live"))
    with api_client(auth=True) as api:
        viewer, member = bearer(auth_people["viewer"]), bearer(auth_people["member"])
        assert api.post("/v1/deployments/live/start", json={"replicas": 2}, headers=viewer).status_code == 403
        assert api.post("/v1/deployments/nope/start", json={}, headers=member).status_code == 404
        r = api.post("/v1/deployments/live/start", json={"replicas": 0}, headers=member)
        assert r.status_code == 422 and "replicas" in r.text
        assert find_service("live") is None  # refused before anything was written
        r = api.post("/v1/deployments/live/start", json={"replicas": 2, "reason": "launch"}, headers=member)
        assert r.status_code == 200, r.text
        assert r.json()["replicas"] == 2 and r.json()["state"] == "waiting" and len(r.json()["replica_state"]) == 2
        assert api.post("/v1/deployments/live/start", json={}, headers=member).status_code == 409
        status = api.get("/v1/deployments/live/status", headers=viewer).json()
        assert status["service"]["desired"] == "running"
        assert api.post("/v1/deployments/live/stop", json={}, headers=viewer).status_code == 403
        r = api.post("/v1/deployments/live/stop", json={"reason": "enough"}, headers=member)
        assert r.status_code == 200 and r.json()["desired"] == "stopped"
        assert api.post("/v1/deployments/live/stop", json={}, headers=member).status_code == 409
    events = [(e["action"], e["user"], e["reason"]) for e in history("live") if e["action"] in ("start", "stop")]
    assert events == [("start", "r_member", "launch"), ("stop", "r_member", "enough")]


def _alive(pid: int) -> bool:
    """The process runs (a zombie nobody has reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        import os

        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.slow
def test_a_killed_workers_replicas_end_and_another_worker_takes_over_once_the_lease_expires(project: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    train_model(alias="live")
    deploy(build_spec("live", model="churn@live"))
    start_service("live", replicas=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", "from keel.cli.main import main; main()", "worker", "--poll", "0.2", "--lease", "3"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]

    def worker(log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)

    def running_under(proc: subprocess.Popen[bytes]) -> Any:
        s = get_service("live")
        return s.state == "running" and (s.owner or "").split(":")[1] == str(proc.pid) and s

    a = worker(logs[0])
    b = None
    try:
        first = wait_for("worker a to run the replica", lambda: running_under(a), timeout=180).replica_state[0]
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        wait_for("the replica of the killed worker to end itself", lambda: not _alive(int(str(first.pid))), timeout=60)
        b = worker(logs[1])
        second = wait_for("worker b to take over", lambda: running_under(b), timeout=180).replica_state[0]
        assert second.pid != first.pid and second.port == first.port and second.restarts == 1
        b.send_signal(signal.SIGTERM)  # b drains its replica and releases the service for the next worker
        assert b.wait(60) == 0, logs[1].read_text()
        released = get_service("live")
        assert released.owner is None and released.state == "waiting" and released.replica_state[0].state == "pending"
        assert not _alive(int(str(second.pid)))
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
