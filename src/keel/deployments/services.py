"""Services: what ``keel deploy start`` asks for, stored in the metadata store.

    keel deploy start churn-live --replicas 2 --port 8100
    keel deploy status churn-live      # the replicas: port, pid, state, restarts, last error
    keel deploy stop churn-live

``start`` only records the desired state (the deployment, how many replicas on
which ports); a ``keel worker`` (:mod:`keel.deployments.processes`) takes the
service with a lease, runs its ``keel serve --deployment`` processes and writes
their state back. ``stop`` records ``stopped``; the worker drains the replicas
(SIGTERM) and releases the service. Every start and stop is an event in the
deployment's history, by the acting (authenticated) user; a replica given up on
is one by ``keel``. All checks happen before anything is written.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from keel.deployments.specs import SYSTEM_USER, _event, _user, get_deployment
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store.metadata import get_metadata_store, insert_ignore, now_ms
from keel.store.schema.services import services

MAX_REPLICAS = 64
RUNNING, STOPPED = "running", "stopped"


@dataclass(frozen=True)
class Replica:
    """One model-server process of a service, as its worker last wrote it."""

    index: int
    port: int
    state: str = "pending"  # pending | starting | running | backoff | failed | stopped
    pid: int | None = None
    restarts: int = 0  # restarts since the service was started
    failures: int = 0  # exits in a row without a stable run (given up after max_restarts)
    last_error: str | None = None  # "exit status N: <the child's last output line>"
    log: str | None = None  # the replica's log file (on the worker's machine)
    started_ms: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Replica:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Service:
    name: str
    replicas: int
    host: str
    ports: list[int]
    desired: str  # running | stopped
    owner: str | None
    lease_expires_ms: int | None
    replica_state: list[Replica] = field(default_factory=list)
    requested_by: str = ""
    requested_ms: int = 0
    updated_ms: int = 0

    @property
    def held(self) -> bool:
        """A worker holds it (its lease has not expired)."""
        return self.owner is not None and (self.lease_expires_ms or 0) >= now_ms()

    @property
    def state(self) -> str:
        """One word for the whole service: stopped, stopping, waiting (for a worker), starting, running, degraded or failed."""
        states = [r.state for r in self.replica_state]
        if self.desired == STOPPED:
            return "stopping" if self.held else STOPPED
        if not self.held:
            return "waiting"
        if states and all(s == "running" for s in states):
            return "running"
        if states and all(s == "failed" for s in states):
            return "failed"
        if any(s in ("failed", "backoff") for s in states):
            return "degraded"
        return "starting"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state
        return out


def _row(row: Any) -> Service:
    reps = [Replica.from_dict(r) for r in json.loads(row.replica_state or "[]")]
    return Service(row.name, row.replicas, row.host, [int(p) for p in json.loads(row.ports)], row.desired, row.owner, row.lease_expires_ms,
                   reps, row.requested_by, row.requested_ms, row.updated_ms)


def _dump(replicas: list[Replica]) -> str:
    return json.dumps([asdict(r) for r in replicas])


def get_service(name: str) -> Service:
    """The service of deployment ``name`` (NotFoundError when it was never started)."""
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(services).where(services.c.name == name)).first()
    if row is None:
        get_deployment(name)  # an unknown deployment: its own error, with suggestions
        raise NotFoundError(f"Deployment {name!r} has never been started.", hint=f"Start it with keel deploy start {name} --replicas 2.")
    return _row(row)


def find_service(name: str) -> Service | None:
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(services).where(services.c.name == name)).first()
    return None if row is None else _row(row)


def list_services() -> list[Service]:
    with get_metadata_store().read() as conn:
        return [_row(r) for r in conn.execute(sa.select(services).order_by(services.c.name))]


def _check_ports(host: str, replicas: int, port: int | None) -> list[int]:
    """The replicas' ports: port, port+1, ... (each checked free on this machine), or free ones the system picks."""
    bind = "127.0.0.1" if host in ("", "localhost") else host
    try:
        with socket.socket() as s:
            s.bind((bind, 0))
    except (OSError, OverflowError, TypeError) as exc:
        raise ValidationError(f"--host {host!r} is not an interface of this machine ({exc}).",
                              hint="Use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    if port is None:
        socks = []
        try:
            for _ in range(replicas):
                s = socket.socket()
                s.bind((bind, 0))
                socks.append(s)
            return [int(s.getsockname()[1]) for s in socks]
        finally:
            for s in socks:
                s.close()
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535 - replicas + 1:
        raise ValidationError(f"--port {port!r} is not a port for {replicas} replica(s) (they take {port}..{port}+{replicas - 1}).",
                              hint="Give a port between 1024 and 65000, e.g. --port 8100, or leave it out to use free ports.")
    ports = list(range(port, port + replicas))
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for uvicorn too
            try:
                s.bind((bind, p))
            except OSError as exc:
                raise ValidationError(f"Port {p} on {bind} is in use ({exc.strerror or exc}).",
                                      hint="Pick another --port, or leave it out to use free ports.", port=p) from None
    return ports


def start_service(name: str, *, replicas: int = 1, port: int | None = None, host: str = "127.0.0.1", reason: str | None = None) -> Service:
    """Ask for ``replicas`` model servers of deployment ``name``; a ``keel worker`` starts them.

    Checked before anything is written: the deployment exists, 1 <= replicas <= 64,
    the ports are free here, and the service is not already started (or still stopping).
    """
    dep = get_deployment(name)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise ValidationError(f"--replicas {replicas!r} is not between 1 and {MAX_REPLICAS}.", hint="e.g. --replicas 2.")
    host = str(host or "127.0.0.1").strip()
    current = find_service(name)
    if current is not None and current.desired == RUNNING:
        raise ConflictError(f"Deployment {name!r} is already started ({current.replicas} replica(s) on ports "
                            f"{', '.join(map(str, current.ports))}; {current.state}).",
                            hint=f"See keel deploy status {name}; to change it, keel deploy stop {name} and start it again.")
    if current is not None and current.held:
        raise ConflictError(f"Deployment {name!r} is still stopping (worker {current.owner} drains its replicas).",
                            hint="Wait a moment and start it again.")
    ports = _check_ports(host, replicas, port)
    who = _user()
    state = _dump([Replica(i, p) for i, p in enumerate(ports)])

    def txn(conn: sa.Connection) -> None:
        t = now_ms()
        values = {"replicas": replicas, "host": host, "ports": json.dumps(ports), "desired": RUNNING, "owner": None, "lease_expires_ms": None,
                  "replica_state": state, "requested_by": who, "requested_ms": t, "updated_ms": t}
        if current is None:
            if not insert_ignore(conn, services, {"name": name, **values}, ["name"]):
                raise ConflictError(f"Deployment {name!r} was started by someone else at the same moment.", hint=f"See keel deploy status {name}.")
        else:
            done = conn.execute(sa.update(services).where(services.c.name == name, services.c.desired == STOPPED,
                                                          services.c.updated_ms == current.updated_ms).values(**values))
            if done.rowcount != 1:
                raise ConflictError(f"Deployment {name!r} was started or changed by someone else at the same moment.",
                                    hint=f"See keel deploy status {name}.")
        _event(conn, name, dep.revision, "start", who, reason, None, None, {"replicas": replicas, "host": host, "ports": ports})

    get_metadata_store().transact(txn)
    return get_service(name)


def stop_service(name: str, *, reason: str | None = None) -> Service:
    """Record that the service of ``name`` is to stop; its worker drains the replicas (SIGTERM)."""
    current = get_service(name)
    if current.desired == STOPPED:
        raise ConflictError(f"Deployment {name!r} is not running (stopped {'and draining' if current.held else 'already'}).",
                            hint=f"Start it with keel deploy start {name}.")
    who = _user()
    revision = _revision(name)

    def txn(conn: sa.Connection) -> None:
        done = conn.execute(sa.update(services).where(services.c.name == name, services.c.desired == RUNNING)
                            .values(desired=STOPPED, requested_by=who, requested_ms=now_ms(), updated_ms=now_ms()))
        if done.rowcount != 1:
            raise ConflictError(f"Deployment {name!r} was stopped by someone else at the same moment.", hint=f"See keel deploy status {name}.")
        _event(conn, name, revision, "stop", who, reason, None, None, {"replicas": current.replicas, "ports": current.ports})

    get_metadata_store().transact(txn)
    return get_service(name)


def _revision(name: str) -> int:
    try:
        return get_deployment(name).revision
    except NotFoundError:  # deleted while it ran: its history goes on
        return 0


# ---- what the worker calls ----------------------------------------------------------

def hold(owner: str, lease_ms: int) -> list[Service]:
    """Claim (or renew) every service a worker should run: started ones no live worker holds, and the ones
    ``owner`` already holds (running or stopping). One conditional UPDATE each, so one worker wins; a service
    taken over shows its replicas ``pending`` (not the last owner's processes) until the new owner starts them."""
    t = now_ms()
    free = sa.and_(services.c.desired == RUNNING, sa.or_(services.c.owner.is_(None), services.c.lease_expires_ms < t))
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(services).where(sa.or_(services.c.owner == owner, free))).fetchall()
    names = []
    for row in rows:
        mine = row.owner == owner
        values: dict[str, Any] = {"owner": owner, "lease_expires_ms": t + lease_ms}
        if not mine:
            values["replica_state"] = _dump([r if r.state == "failed" else replace(r, state="pending", pid=None) for r in _row(row).replica_state])
        with get_metadata_store().write() as conn:
            done = conn.execute(sa.update(services).where(services.c.name == row.name, services.c.owner == owner if mine else free).values(**values))
            if done.rowcount == 1:
                names.append(row.name)
    with get_metadata_store().read() as conn:
        return [_row(r) for r in conn.execute(sa.select(services).where(services.c.name.in_(names), services.c.owner == owner))]


def record(name: str, owner: str, replicas: list[Replica], *, release: bool = False) -> bool:
    """Write the replicas' state (only while ``owner`` holds the service); ``release`` lets it go. False: the lease was lost."""
    values: dict[str, Any] = {"replica_state": _dump(replicas), "updated_ms": now_ms()}
    if release:
        values.update(owner=None, lease_expires_ms=None)
    with get_metadata_store().write() as conn:
        done = conn.execute(sa.update(services).where(services.c.name == name, services.c.owner == owner).values(**values))
        return bool(done.rowcount == 1)


def record_gave_up(name: str, replica: Replica, max_restarts: int) -> None:
    """The deployment event of a replica given up on (by keel, with the reason)."""
    with get_metadata_store().write() as conn:
        _event(conn, name, _revision(name), "replica_failed", SYSTEM_USER,
               f"replica {replica.index} exited {replica.failures} times in a row (more than {max_restarts}); given up",
               None, None, {"replica": replica.index, "port": replica.port, "last_error": replica.last_error, "log": replica.log})
