"""Reading runs back: one run, metric histories, experiments; and deleting runs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import NotFoundError, ValidationError
from keel.store.metadata import MetadataStore, get_metadata_store, like_escape, ms_to_datetime
from keel.store.remote import client
from keel.store.schema import (
    artifacts,
    datasets,
    experiments,
    metric_batches,
    metric_history,
    metrics,
    params,
    runs,
    tags,
)
from keel.tracking import _writer
from keel.tracking.runs import effective_status


@dataclass
class RunInfo:
    id: str
    experiment_id: int
    experiment: str
    name: str
    parent_id: str | None
    status: str
    start_time: datetime | None
    end_time: datetime | None
    user: str
    host: str
    error: str | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def resolve_run_id(conn: sa.Connection, ref: str) -> str:
    """A full run id from an id, a unique id prefix (>= 6 chars) or a unique run name."""
    if conn.execute(sa.select(runs.c.id).where(runs.c.id == ref)).scalar():
        return ref
    candidates: list[str] = []
    if len(ref) >= 6:
        candidates = list(conn.execute(sa.select(runs.c.id).where(runs.c.id.like(like_escape(ref) + "%", escape="\\")).limit(3)).scalars())
    if not candidates:
        candidates = list(conn.execute(sa.select(runs.c.id).where(runs.c.name == ref).limit(3)).scalars())
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise ValidationError(f"Run reference {ref!r} is ambiguous ({', '.join(c[:12] for c in candidates)}...).", hint="Give more of the id.")
    raise NotFoundError(f"No run with id or name {ref!r}.", hint="List runs with `keel runs ls`.")


def get_run(run_id: str, store: MetadataStore | None = None) -> RunInfo:
    """Everything recorded about a run (by id, unique id prefix or unique name)."""
    if store is None and (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.get_run(remote, run_id)
    store = store or get_metadata_store()
    _writer.flush_all()
    with store.read() as conn:
        rid = resolve_run_id(conn, run_id)
        r = conn.execute(sa.select(runs, experiments.c.name.label("experiment")).join(experiments, experiments.c.id == runs.c.experiment_id).where(runs.c.id == rid)).one()
        info = RunInfo(
            id=r.id, experiment_id=r.experiment_id, experiment=r.experiment, name=r.name, parent_id=r.parent_id,
            status=effective_status(r.status, r.heartbeat_ms), start_time=ms_to_datetime(r.start_ms), end_time=ms_to_datetime(r.end_ms),
            user=r.user, host=r.host, error=r.error, env=json.loads(r.env) if r.env else {},
        )
        info.params = dict(conn.execute(sa.select(params.c.key, params.c.value).where(params.c.run_id == rid)).all())
        info.metrics = {k: _nan(v) for k, v in conn.execute(sa.select(metrics.c.key, metrics.c.value).where(metrics.c.run_id == rid))}
        info.tags = dict(conn.execute(sa.select(tags.c.key, tags.c.value).where(tags.c.run_id == rid)).all())
        info.artifacts = [
            dict(a._mapping)
            for a in conn.execute(
                sa.select(artifacts.c.path, artifacts.c.digest, artifacts.c.size)
                .where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == rid)
                .order_by(artifacts.c.path)
            )
        ]
        info.datasets = [
            {**dict(d._mapping), "schema": json.loads(d.schema or "{}"), "extra": json.loads(d.extra) if d.extra else {}}
            for d in conn.execute(
                sa.select(datasets.c.name, datasets.c.context, datasets.c.fingerprint, datasets.c.num_rows, datasets.c.schema, datasets.c.source, datasets.c.extra)
                .where(datasets.c.run_id == rid)
                .order_by(datasets.c.name)
            )
        ]
        info.children = list(conn.execute(sa.select(runs.c.id).where(runs.c.parent_id == rid).order_by(runs.c.start_ms)).scalars())
    return info


def get_metric_history(run_id: str, key: str, max_points: int | None = None, store: MetadataStore | None = None) -> Any:
    """Every value of a metric as a DataFrame (step, timestamp, value), ordered by step.

    With ``max_points`` a long history is downsampled: the steps are cut into
    buckets and each bucket keeps its first, min and max values, plus the last
    point overall, so spikes survive and the shape stays right.
    """
    import numpy as np
    import pandas as pd

    if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2):
        raise ValidationError(f"max_points={max_points!r} must be an integer >= 2.")
    if store is None and (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.get_metric_history(remote, run_id, key, max_points)
    store = store or get_metadata_store()
    _writer.flush_all()
    h = metric_history
    with store.read() as conn:
        rid = resolve_run_id(conn, run_id)
        chunks = conn.execute(
            sa.select(h.c.steps, h.c.ts, h.c.vals).where(h.c.run_id == rid, h.c.key == key).order_by(h.c.min_step, h.c.id)
        ).all()
        if not chunks:
            known = list(conn.execute(sa.select(metrics.c.key).where(metrics.c.run_id == rid)).scalars())
            if key not in known:
                from keel.errors import did_you_mean

                raise NotFoundError(f"Run {rid} has no metric {key!r}." + did_you_mean(key, known))
    steps = np.concatenate([np.frombuffer(c.steps, dtype="<i8") for c in chunks]) if chunks else np.empty(0, "<i8")
    ts = np.concatenate([np.frombuffer(c.ts, dtype="<i8") for c in chunks]) if chunks else np.empty(0, "<i8")
    vals = np.concatenate([np.frombuffer(c.vals, dtype="<f8") for c in chunks]) if chunks else np.empty(0, "<f8")
    order = np.lexsort((ts, steps))
    steps, ts, vals = steps[order], ts[order], vals[order]
    if max_points is not None and len(steps) > max_points:
        keep = _downsample(steps, vals, max_points)
        steps, ts, vals = steps[keep], ts[keep], vals[keep]
    return pd.DataFrame(
        {"step": steps.astype("int64"), "timestamp": pd.to_datetime(ts.astype("int64"), unit="ms", utc=True), "value": vals.astype("float64")}
    )


def metric_histories(run_ids: list[str], keys: list[str] | None = None, store: MetadataStore | None = None) -> dict[tuple[str, str], tuple[Any, Any, Any]]:
    """Every logged value of several runs' metrics, read in one query, as NumPy arrays.

    ``{(run_id, key): (steps int64, timestamps_ms int64, values float64)}``, each ordered by
    step then time; ``keys=None`` reads every metric of the runs. For plotting many long
    curves at once (the UI's compare page: 10 runs x 100,000 points): the stored chunks are
    decoded with ``np.frombuffer`` and sorted only when they arrive out of order.
    """
    import numpy as np

    if not run_ids:
        return {}
    store = store or get_metadata_store()
    _writer.flush_all()
    h = metric_history
    query = sa.select(h.c.run_id, h.c.key, h.c.steps, h.c.ts, h.c.vals).where(h.c.run_id.in_(list(run_ids)))
    if keys is not None:
        query = query.where(h.c.key.in_(list(keys)))
    with store.read() as conn:
        rows = conn.execute(query.order_by(h.c.run_id, h.c.key, h.c.min_step, h.c.id)).all()
    grouped: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        grouped.setdefault((r.run_id, r.key), []).append(r)
    out: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
    for k, chunks in grouped.items():
        steps = np.concatenate([np.frombuffer(c.steps, dtype="<i8") for c in chunks]).astype("int64", copy=False)
        ts = np.concatenate([np.frombuffer(c.ts, dtype="<i8") for c in chunks]).astype("int64", copy=False)
        vals = np.concatenate([np.frombuffer(c.vals, dtype="<f8") for c in chunks]).astype("float64", copy=False)
        if len(steps) > 1 and not bool(np.all(np.diff(steps) >= 0)):
            order = np.lexsort((ts, steps))
            steps, ts, vals = steps[order], ts[order], vals[order]
        out[k] = (steps, ts, vals)
    return out


def _downsample(steps: Any, vals: Any, max_points: int) -> Any:
    """Indices to keep: per step bucket the first, min and max (NaN-aware), and the last point."""
    import numpy as np

    n_buckets = max(1, max_points // 3)
    lo, hi = int(steps[0]), int(steps[-1])
    bucket = ((steps - lo) * n_buckets // max(1, hi - lo + 1)).astype("int64")
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    filled = np.where(np.isnan(vals), np.inf, vals)
    mins = starts + np.array([int(np.argmin(filled[a:b])) for a, b in zip(starts, np.r_[starts[1:], len(vals)], strict=True)], dtype="int64")
    filled = np.where(np.isnan(vals), -np.inf, vals)
    maxs = starts + np.array([int(np.argmax(filled[a:b])) for a, b in zip(starts, np.r_[starts[1:], len(vals)], strict=True)], dtype="int64")
    return np.unique(np.concatenate([starts, mins, maxs, [len(steps) - 1]]))


def list_experiments(store: MetadataStore | None = None) -> list[dict[str, Any]]:
    if store is None and (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.list_experiments(remote)
    store = store or get_metadata_store()
    with store.read() as conn:
        counts = sa.select(runs.c.experiment_id, sa.func.count().label("n"), sa.func.max(runs.c.start_ms).label("last")).group_by(runs.c.experiment_id).subquery()
        rows = conn.execute(
            sa.select(experiments.c.id, experiments.c.name, experiments.c.created_ms, counts.c.n, counts.c.last)
            .outerjoin(counts, counts.c.experiment_id == experiments.c.id)
            .order_by(experiments.c.id)
        ).all()
    return [
        {"id": r.id, "name": r.name, "created": ms_to_datetime(r.created_ms), "runs": int(r.n or 0), "last_run": ms_to_datetime(r.last)}
        for r in rows
    ]


def delete_runs(run_refs: list[str], store: MetadataStore | None = None) -> list[str]:
    """Delete runs, their children and every row they own (blobs go with `keel gc`)."""
    if store is None and (remote := client()) is not None:
        from keel.tracking import remote as via

        return via.delete_runs(remote, list(run_refs))
    store = store or get_metadata_store()
    _writer.flush_all()
    with store.write() as conn:
        ids = [resolve_run_id(conn, r) for r in run_refs]
        frontier = list(ids)
        while frontier:  # children, grandchildren...
            frontier = [c for c in conn.execute(sa.select(runs.c.id).where(runs.c.parent_id.in_(frontier))).scalars() if c not in ids]
            ids.extend(frontier)
        for table in (params, tags, metrics, metric_history, metric_batches, datasets):
            conn.execute(sa.delete(table).where(table.c.run_id.in_(ids)))
        conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "run", artifacts.c.owner_id.in_(ids)))
        conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))
    return ids
