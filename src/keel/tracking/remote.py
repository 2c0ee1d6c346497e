"""Tracking through a keel server (``KEEL_TRACKING_URI``): the client side of ``/v1/experiments`` and ``/v1/runs``.

The public functions (``keel.start_run``, ``log_metric``, ``search_runs``,
``get_run``...) switch here when a server is configured. A run's id is chosen
here, so a retried creation never makes a second run; metrics stay buffered
and the writer thread sends each flush as one batch per run, with a batch id
the server stores once; params, tags and status are idempotent writes.
"""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.config import settings
from keel.errors import ConflictError
from keel.store.remote import RemoteBlobs, RemoteClient
from keel.tracking import _writer
from keel.tracking.runs import Run

if TYPE_CHECKING:
    import pandas as pd

    from keel.tracking.query import RunInfo


def b64(array: Any) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def unb64(text: str, dtype: str) -> Any:
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype=dtype)


EARLY_BATCH = 20_000  # values buffered that start a flush without waiting for the interval


class RemoteMetricWriter(_writer.MetricWriter):
    """The buffered writer, flushing over HTTP: one ``POST /v1/runs/{id}/batch`` per run and flush."""

    def __init__(self, remote: RemoteClient, flush_interval: float, heartbeat_interval: float) -> None:
        self.remote = remote
        super().__init__(None, flush_interval, heartbeat_interval)  # type: ignore[arg-type]
        self.uri = ",".join(remote.uris)
        # Send smaller batches early: the server stores one while this process logs the next.
        self._early = min(self._early, EARLY_BATCH)

    def _prepare(self, rows: list[_writer.Row]) -> Any:
        chunks, _latest = _writer.encode_chunks(rows, summaries=False)  # the server keeps the summaries
        by_run: dict[str, list[dict[str, Any]]] = {}
        for run_id, key, n, _lo, _hi, steps, ts, vals in chunks:
            by_run.setdefault(run_id, []).append({
                "key": key, "n": n,
                "steps": base64.b64encode(steps).decode("ascii"),
                "ts": base64.b64encode(ts).decode("ascii"),
                "values": base64.b64encode(vals).decode("ascii"),
            })
        # the batch id is fixed here: a batch sent again after a failure is the same batch
        return [[run_id, uuid.uuid4().hex, metrics] for run_id, metrics in by_run.items()]

    def _send(self, prepared: Any) -> None:
        while prepared:
            run_id, batch_id, metrics = prepared[0]
            self.remote.post_json(f"/v1/runs/{run_id}/batch", {"batch_id": batch_id, "metrics": metrics})
            prepared.pop(0)

    def beat(self) -> None:
        ids = list(self._runs)
        import time

        self._last_beat = time.monotonic()
        if ids:
            self.remote.post_json("/v1/runs/heartbeat", {"run_ids": ids})


def remote_writer(remote: RemoteClient) -> RemoteMetricWriter:
    s = settings()
    key = "remote:" + ",".join(remote.uris)
    w = _writer.shared_writer(key, lambda beat: RemoteMetricWriter(remote, float(s.flush_interval), beat), float(s.heartbeat_timeout))
    assert isinstance(w, RemoteMetricWriter)
    return w


class RemoteRun(Run):
    """An open run on a keel server; the same methods as :class:`Run`."""

    def __init__(self, remote: RemoteClient, run_id: str, experiment_id: int, name: str, parent_id: str | None) -> None:
        self.remote = remote
        self.store = None  # type: ignore[assignment]  # no local metadata store: everything goes through the server
        self.id = run_id
        self.experiment_id = experiment_id
        self.name = name
        self.parent_id = parent_id
        self.ended = False
        self._writer = remote_writer(remote)
        self._writer.watch(run_id)
        self._steps: dict[str, int] = {}
        self._params: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<keel.Run {self.id} name={self.name!r} on {self.remote.base}>"

    def _write_params(self, values: dict[str, str]) -> None:
        self.remote.post_json(f"/v1/runs/{self.id}/params", {"params": values})

    def _write_tags(self, values: dict[str, str]) -> None:
        self.remote.post_json(f"/v1/runs/{self.id}/tags", {"tags": values})

    def _write_end(self, status: str, error: str | None) -> None:
        self.remote.json("PATCH", f"/v1/runs/{self.id}", json={"status": status, "error": error})

    def log_files(self, local: Path, name: str) -> list[tuple[str, str, int, str | None]]:
        """Upload a file or folder as artifact ``name`` and record it with the run."""
        from keel.tracking.artifacts import store_path

        rows = store_path(RemoteBlobs(self.remote), local, name)  # type: ignore[arg-type]
        record_remote(self.remote, self.id, rows)
        return rows


def record_remote(remote: RemoteClient, run_id: str, rows: list[tuple[str, str, int, str | None]]) -> None:
    if rows:
        remote.post_json(f"/v1/runs/{run_id}/artifacts",
                         {"files": [{"path": p, "digest": d, "size": n, "media_type": m} for p, d, n, m in rows]})


def start_remote_run(
    remote: RemoteClient, name: str | None, experiment: str | None, *, nested: bool, tags: Mapping[str, Any] | None,
    run_id: str | None, description: str | None, parent: Run | None, activate: bool,
) -> Run:
    from keel.tracking import runs as runs_mod

    if parent is not None:
        nested = True
    else:
        parent = runs_mod.active_run()
    if parent is not None and not nested and run_id is None:
        raise ConflictError(
            f"Run {parent.id} ({parent.name}) is already active.",
            hint="Pass nested=True for a child run, or end the active run first (keel.end_run()).",
        )
    s = settings()
    if run_id is not None:
        row = remote.json("PATCH", f"/v1/runs/{run_id}", json={"status": "running"})
        run: Run = RemoteRun(remote, row["id"], row["experiment_id"], row["name"], row["parent_id"])
    else:
        rid = uuid.uuid4().hex  # chosen here: a retried creation finds this run instead of making another
        run_name = runs_mod.check_run_name(name or runs_mod._default_name(rid))
        child = parent is not None and nested
        env: dict[str, Any] = {}
        env_rows: list[dict[str, Any]] = []
        if not child and s.capture_environment:
            from keel.tracking import environment

            env, env_rows = environment.capture(rid, blobs=RemoteBlobs(remote))
        parent_id = parent.id if child and parent else None
        body = {
            "id": rid, "name": run_name, "parent_id": parent_id,
            "experiment": None if (experiment is None and child) else (experiment or runs_mod._experiment_override or str(s.experiment)),
            "host": socket.gethostname(), "env": env,
            "env_artifacts": [{"path": r["path"], "digest": r["digest"], "size": r["size"], "media_type": r["media_type"]} for r in env_rows],
        }
        row = remote.post_json("/v1/runs", body)
        run = RemoteRun(remote, rid, int(row["experiment_id"]), run_name, parent_id)
    if activate:
        with runs_mod._stack_lock:
            runs_mod._stack.append(run)
    runs_mod._after_start(run, run_id, parent, nested, description, tags)
    return run


# -- reading back ------------------------------------------------------------------------------

def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def get_run(remote: RemoteClient, ref: str) -> RunInfo:
    from keel.tracking.query import RunInfo, _nan

    _writer.flush_all()
    d = remote.json("GET", f"/v1/runs/{quote(ref, safe='')}")
    d["start_time"], d["end_time"] = _dt(d.get("start_time")), _dt(d.get("end_time"))
    d["metrics"] = {k: _nan(v) for k, v in (d.get("metrics") or {}).items()}
    return RunInfo(**d)


def get_metric_history(remote: RemoteClient, run_id: str, key: str, max_points: int | None) -> pd.DataFrame:
    import pandas as pd

    _writer.flush_all()
    params = {"max_points": max_points} if max_points is not None else None
    d = remote.json("GET", f"/v1/runs/{quote(run_id, safe='')}/metrics/{quote(key, safe='')}", params=params)
    return pd.DataFrame({
        "step": unb64(d["steps"], "<i8").astype("int64"),
        "timestamp": pd.to_datetime(unb64(d["ts"], "<i8").astype("int64"), unit="ms", utc=True),
        "value": unb64(d["values"], "<f8").astype("float64"),
    })


def search_runs(remote: RemoteClient, body: dict[str, Any]) -> pd.DataFrame:
    import pyarrow as pa

    _writer.flush_all()
    response = remote.request("POST", "/v1/runs/search", json={**body, "format": "arrow"})
    with pa.ipc.open_stream(response.content) as reader:
        table = reader.read_all()
    frame = table.to_pandas()
    frame.attrs["next_page_token"] = response.headers.get("X-Keel-Next-Page-Token") or None
    return frame


def list_experiments(remote: RemoteClient) -> list[dict[str, Any]]:
    rows = remote.json("GET", "/v1/experiments")
    for r in rows:
        r["created"], r["last_run"] = _dt(r.get("created")), _dt(r.get("last_run"))
    return list(rows)


def delete_runs(remote: RemoteClient, refs: list[str]) -> list[str]:
    _writer.flush_all()
    return list(remote.post_json("/v1/runs/delete", {"runs": refs})["deleted"])


def list_artifacts(remote: RemoteClient, run_id: str) -> list[dict[str, Any]]:
    return list(remote.json("GET", f"/v1/runs/{quote(run_id, safe='')}/artifacts"))


def artifact_path(run_id: str, path: str) -> str:
    return f"/v1/runs/{quote(run_id, safe='')}/artifacts/{quote(path)}"


def set_tracking_uri(uri: str | None, token: str | None = None) -> None:
    """Send tracking, models and the registry through the keel server at ``uri`` (None: back to the local stores).

    The same as ``KEEL_TRACKING_URI`` (several URIs, comma-separated, fail over)
    and, with ``token``, ``KEEL_TRACKING_TOKEN``; child processes inherit both.

    Example::

        keel.set_tracking_uri("http://keel.internal:5000", token=os.environ["KEEL_TOKEN"])
    """
    import os

    from keel.store.remote import parse_uris

    if not uri:
        os.environ.pop("KEEL_TRACKING_URI", None)
        if token is None:
            os.environ.pop("KEEL_TRACKING_TOKEN", None)
    else:
        os.environ["KEEL_TRACKING_URI"] = ",".join(parse_uris(uri))
    if token:
        os.environ["KEEL_TRACKING_TOKEN"] = token
