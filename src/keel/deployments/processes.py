"""The supervisor ``keel worker`` runs: a started deployment's model servers as child processes.

Each tick it claims or renews (with a lease) the services of
:mod:`keel.deployments.services` that no live worker holds, and makes each so:

- a missing replica is started as ``keel serve --deployment NAME --port P`` in the
  worker's folder and environment (the same stores), its output appended to
  ``.keel/services/NAME.I.log``; it is ``running`` once ``/v2/health/ready`` answers;
- a replica that exits is restarted after a back-off that doubles (1 s, 2 s, 4 s ...
  up to a minute); after ``max_restarts`` exits in a row without a stable run
  (``stable_seconds`` ready) it is given up: ``failed``, with its exit status and last
  output line, and a ``replica_failed`` deployment event;
- a stopped service's replicas are drained (SIGTERM, so each finishes its requests
  and flushes its prediction log; SIGKILL after ``drain_seconds``) and the service
  released.

A worker that stops (SIGTERM) drains its replicas and releases its services, so
another worker takes them over at once; one that is killed stops renewing, its
replicas end with it (each watches its parent) and another worker takes over once
the lease expires.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from keel.deployments import services as S
from keel.deployments.services import Replica, Service

# The child: ends itself (gracefully, SIGTERM) when the worker that started it is gone, then runs `keel serve`.
_CHILD = (
    "import os, signal, sys, threading, time\n"
    "parent = os.getppid()\n"
    "def watch():\n"
    "    while os.getppid() == parent:\n"
    "        time.sleep(0.5)\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "threading.Thread(target=watch, name='keel-replica-parent', daemon=True).start()\n"
    "sys.argv[0] = 'keel'\n"
    "from keel.cli.main import main\n"
    "main()\n"
)


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float
    ready_at: float | None = None


def last_line(path: str | Path | None, limit: int = 300) -> str:
    """The last non-empty line of a log file (its tail only is read)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


def _ready(host: str, port: int) -> bool:
    addr = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    try:
        with urllib.request.urlopen(f"http://{addr}:{port}/v2/health/ready", timeout=0.5) as r:
            return bool(r.status == 200)
    except Exception:  # not listening yet, or not ready
        return False


class Supervisor:
    """Runs the services this worker holds; :meth:`tick` once, or :meth:`run` until told to stop."""

    def __init__(self, *, owner: str | None = None, lease_seconds: float = 60.0, poll_seconds: float = 1.0, max_restarts: int = 5,
                 backoff_seconds: float = 1.0, max_backoff_seconds: float = 60.0, stable_seconds: float = 30.0,
                 drain_seconds: float = 30.0, log_dir: Path | None = None, cwd: Path | None = None,
                 on_event: Callable[[str, str, Replica], None] | None = None) -> None:
        from keel.config import settings
        from keel.pipelines.triggers import scheduler_id

        self.owner = owner or scheduler_id()
        self.lease_ms = int(lease_seconds * 1000)
        self.poll_seconds = poll_seconds
        self.max_restarts = max_restarts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stable_seconds = stable_seconds
        self.drain_seconds = drain_seconds
        self.cwd = cwd or Path.cwd()
        self.log_dir = log_dir or settings().state_dir / "services"
        self.on_event = on_event
        self.children: dict[tuple[str, int], _Child] = {}
        self.retry_at: dict[tuple[str, int], float] = {}

    def _tell(self, kind: str, name: str, replica: Replica) -> None:
        if self.on_event is not None:
            self.on_event(kind, name, replica)

    # ---- one pass -----------------------------------------------------------------

    def tick(self) -> list[Service]:
        """Claim and renew, then make every held service as wanted; returns them as written."""
        held = S.hold(self.owner, self.lease_ms)
        names = {s.name for s in held}
        for key in [k for k in self.children if k[0] not in names]:  # lost the lease: another worker runs it now
            self._drain([key])
        out = []
        for svc in held:
            if svc.desired == S.STOPPED:
                reps = self._stop(svc)
                S.record(svc.name, self.owner, reps, release=True)
            else:
                reps = [self._reconcile(svc, i) for i in range(svc.replicas)]
                if reps != svc.replica_state and not S.record(svc.name, self.owner, reps):  # written when it changed
                    self._drain([(svc.name, i) for i in range(svc.replicas)])
                    continue
            out.append(replace(svc, replica_state=reps))
        return out

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Tick every ``poll_seconds`` until ``until()``; then drain every replica and release the services."""
        try:
            while until is None or not until():
                try:
                    self.tick()
                except Exception as exc:  # the store is briefly unreachable: the children go on; try again
                    print(f"keel worker: services: {type(exc).__name__}: {exc}", file=sys.stderr)
                end = time.monotonic() + self.poll_seconds
                while time.monotonic() < end and (until is None or not until()):
                    time.sleep(min(0.1, self.poll_seconds))
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Drain every replica this worker runs and release its services (another worker takes them at once)."""
        self._drain(list(self.children))
        for svc in S.list_services():
            if svc.owner == self.owner:
                name = svc.name
                reps = [replace(r, state="stopped" if svc.desired == S.STOPPED else r.state if r.state == "failed" else "pending", pid=None)
                        for r in svc.replica_state]
                S.record(name, self.owner, reps, release=True)

    # ---- one replica ----------------------------------------------------------------

    def _reconcile(self, svc: Service, i: int) -> Replica:
        key = (svc.name, i)
        port = svc.ports[i]
        rep = svc.replica_state[i] if i < len(svc.replica_state) else Replica(i, port)
        child = self.children.get(key)
        now = time.monotonic()
        if child is not None:
            rc = child.proc.poll()
            if rc is None:
                if child.ready_at is None and _ready(svc.host, port):
                    child.ready_at = now
                    self._tell("running", svc.name, rep)
                if child.ready_at is not None:
                    stable = now - child.ready_at >= self.stable_seconds
                    return replace(rep, state="running", pid=child.proc.pid, failures=0 if stable else rep.failures)
                return replace(rep, state="starting", pid=child.proc.pid)
            self._close(key)
            failures = rep.failures + 1
            err = f"exit status {rc}" + (f": {line}" if (line := last_line(rep.log)) else "")
            if failures > self.max_restarts:
                rep = replace(rep, state="failed", pid=None, failures=failures, last_error=err)
                S.record_gave_up(svc.name, rep, self.max_restarts)
                self._tell("failed", svc.name, rep)
                return rep
            self.retry_at[key] = now + min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (failures - 1))
            rep = replace(rep, state="backoff", pid=None, failures=failures, last_error=err)
            self._tell("exited", svc.name, rep)
            return rep
        if rep.state == "failed" or now < self.retry_at.get(key, 0.0):
            return rep
        restarted = rep.started_ms is not None  # it ran before (here, or under a worker that stopped or died)
        rep = self._spawn(svc, i, rep)
        return replace(rep, restarts=rep.restarts + (1 if restarted else 0))

    def _spawn(self, svc: Service, i: int, rep: Replica) -> Replica:
        from keel.store.metadata import now_ms

        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{svc.name}.{i}.log"
        log = open(path, "ab")  # noqa: SIM115 (open while the child runs; closed when it ends)
        log.write(f"--- keel worker {self.owner}: replica {i} of {svc.name} on {svc.host}:{svc.ports[i]} ---\n".encode())
        log.flush()
        argv = [sys.executable, "-c", _CHILD, "serve", "--deployment", svc.name, "--host", svc.host, "--port", str(svc.ports[i])]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            # a session of its own: Ctrl-C at the worker's terminal reaches the worker, which drains the replicas itself
            proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:  # the folder is gone, no more processes...: counted as an exit, retried after the back-off
            log.close()
            failures = rep.failures + 1
            self.retry_at[(svc.name, i)] = time.monotonic() + min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (failures - 1))
            return replace(rep, state="failed" if failures > self.max_restarts else "backoff", pid=None, failures=failures, log=str(path),
                           last_error=f"could not start: {exc}")
        self.children[(svc.name, i)] = _Child(proc, log, time.monotonic())
        rep = replace(rep, state="starting", pid=proc.pid, log=str(path), started_ms=now_ms())
        self._tell("started", svc.name, rep)
        return rep

    def _stop(self, svc: Service) -> list[Replica]:
        keys = [(svc.name, i) for i in range(svc.replicas)]
        codes = self._drain(keys)
        out = []
        for i in range(svc.replicas):
            rep = svc.replica_state[i] if i < len(svc.replica_state) else Replica(i, svc.ports[i])
            rep = replace(rep, state="stopped", pid=None)
            if (svc.name, i) in codes:
                self._tell("stopped", svc.name, rep)
            out.append(rep)
            self.retry_at.pop((svc.name, i), None)
        return out

    def _drain(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """SIGTERM these children at once, wait for them (SIGKILL after drain_seconds); their exit codes."""
        live = {k: self.children[k] for k in keys if k in self.children}
        for c in live.values():
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds
        codes = {}
        for k, c in live.items():
            try:
                codes[k] = c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                codes[k] = c.proc.wait(10)
            self._close(k)
        return codes

    def _close(self, key: tuple[str, int]) -> None:
        child = self.children.pop(key, None)
        if child is not None:
            child.log.close()


def supervise(until: Callable[[], bool] | None = None, **options: Any) -> None:
    """Run :class:`Supervisor` (``keel worker`` does, beside its queue) until ``until()`` says stop."""
    Supervisor(**options).run(until)
