"""Baselines: a fitted reference stored once per model version.

``build_baseline(model, data)`` scores ``data`` with the version, fits the drift
reference on its inputs and outputs (``prediction`` and, for classifiers,
``score``), computes the validation performance when the target is there, and
stores it: the reference sample (at most 100,000 rows, a uniform sample kept in
the data's order) as a lake dataset, the profile (bin edges, quantiles, top
categories with shares, null rate, min/max, counts, the learned-threshold null
samples, the PCA model) and the performance in the metadata store. A monitor
run then reads only its window of the prediction log.

Built automatically when a version is registered, by a subscriber to the
registry's events (installed when ``keel.monitoring`` is imported), from the
run's dataset logged with context ``validation`` (or ``evaluation``/``test``); a
monitor that finds no baseline tries the same before saying how to create one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import NotFoundError, ValidationError
from keel.monitoring.reference import Reference, fit_reference

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("keel.monitoring")
SAMPLE_ROWS = 100_000
VALIDATION_CONTEXTS = ("validation", "evaluation", "eval", "test")
TARGET_COLUMN = "__target__"


@dataclass
class Baseline:
    """A model version's stored reference (``.reference``) and validation performance."""

    model: str
    version: int
    reference: Reference
    task: str | None
    performance: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    source: str = ""
    created_time: datetime | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.reference.columns)

    def labelled_sample(self) -> tuple[Any, Any] | None:
        """(score, 0/1 label) of the reference sample, for calibrating estimates; None without labels."""
        sample = self.reference.sample
        if sample is None or TARGET_COLUMN not in sample.column_names or "score" not in sample.column_names:
            return None
        from keel.monitoring.reference import as_float

        return as_float(sample["score"]), as_float(sample[TARGET_COLUMN])

    def to_dict(self) -> dict[str, Any]:
        cols = {
            name: {"kind": c.kind, "dtype": c.dtype, "null_rate": c.null_rate, "count": c.count, "summary": c.summary,
                   "edges": None if c.edges is None else [float(e) for e in c.edges], "categories": c.categories[:20]}
            for name, c in self.reference.columns.items()
        }
        return {"model": self.model, "version": self.version, "task": self.task, "rows": self.rows, "sample_rows": self.reference.rows,
                "source": self.source, "created_time": self.created_time, "performance": self.performance, "columns": cols,
                "multivariate": None if not self.reference.multivariate else {"columns": self.reference.multivariate["columns"],
                                                                                 "components": len(self.reference.multivariate["components"])}}


def _dataset(model: str, version: int) -> str:
    return f"monitoring/baselines/{model}/{version}"


def _read_data(data: Any) -> pa.Table:
    from keel.monitoring.drift import as_table

    return as_table(data, "baseline data")


def _sample(table: pa.Table, rows: int, seed: int = 0) -> pa.Table:
    if table.num_rows <= rows:
        return table
    keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
    return table.take(keep)


def score_table(model: Any, table: pa.Table) -> tuple[pa.Table, str | None]:
    """The model's inputs from ``table`` plus ``prediction`` (and ``score`` for a binary classifier)."""
    import pyarrow as pa

    names = list(model.signature.names) if getattr(model, "signature", None) is not None else []
    inputs = [c for c in names if c in table.column_names] or [c for c in table.column_names if c != TARGET_COLUMN]
    missing = [c for c in names if c not in table.column_names]
    if missing:
        raise ValidationError(f"The baseline data lacks the model's input columns {missing}.", hint="Pass the data the version was validated on.")
    frame = table.select(inputs).to_pandas()
    out = table.select(inputs)
    pred = np.asarray(model.predict(frame)).reshape(-1)
    out = out.append_column("prediction", pa.array(pred))
    task = None
    if callable(getattr(model, "predict_proba", None)) and (getattr(model, "meta", {}) or {}).get("has_predict_proba", True):
        try:
            proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
        except Exception:  # a model whose predict_proba does not apply (e.g. a regressor's wrapper)
            proba = None
        if proba is not None and proba.ndim == 2 and proba.shape[1] == 2:
            out = out.append_column("score", pa.array(proba[:, 1]))
            task = "binary"
        elif proba is not None and proba.ndim == 2:
            task = "multiclass"
    if task is None:
        task = "regression" if np.issubdtype(pred.dtype, np.floating) else "multiclass"
    return out, task


def _performance(model: Any, table: pa.Table, target: str, task: str | None) -> dict[str, float]:
    from keel.evaluation.evaluate import point_metrics, predict
    from keel.registry.gates import infer_task

    frame = table.to_pandas()
    task = task if task in ("binary", "regression") else infer_task(frame[target])
    p = predict(model, frame, target, task)
    return {k: float(v) for k, v in point_metrics(p, 0.5, {}, None).items()}


def build_baseline(
    model: str,
    data: Any,
    *,
    version: int | str | None = None,
    target: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
    n_chunks: int = 20,
    bins: int = 10,
    categorical: list[str] | None = None,
) -> Baseline:
    """Score ``data`` with the version (default: the latest), fit and store its baseline; replaces an older one."""
    from keel.registry.versions import resolve_version

    mv = resolve_version(model, version if version is not None else "latest")
    loaded = mv.load()
    table = _read_data(data)
    if table.num_rows == 0:
        raise ValidationError(f"The baseline data for {model} v{mv.version} has no rows.", hint="Pass the validation data the version was evaluated on.")
    if target is not None and target not in table.column_names:
        from keel.errors import did_you_mean

        raise ValidationError(f"Target column {target!r} is not in the baseline data." + did_you_mean(target, table.column_names),
                              hint="Pass target= the label column, or leave it out.")
    inputs = table.drop_columns([target]) if target else table
    scored, task = score_table(loaded, inputs)
    performance = _performance(loaded, table, target, task) if target else {}
    if target:
        scored = scored.append_column(TARGET_COLUMN, table[target])
    sample = _sample(scored, sample_rows)
    fit_cols = [c for c in sample.column_names if c != TARGET_COLUMN]
    ref = fit_reference(sample, fit_cols, categorical=categorical, n_chunks=n_chunks, bins=bins)
    source = str(data) if isinstance(data, str | Path) else type(data).__name__
    baseline = Baseline(mv.model, mv.version, ref, task, performance, table.num_rows, source)
    _store(baseline, sample)
    return baseline


def _store(b: Baseline, sample: pa.Table) -> None:
    import sqlalchemy as sa

    from keel.config import settings
    from keel.store.lake import get_lake
    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.monitoring import monitoring_baselines as t

    lake = get_lake()
    name = _dataset(b.model, b.version)
    lake.delete(name)
    lake.append(name, sample)
    row = {"model": b.model, "version": b.version, "dataset": name, "source": b.source[:1024], "rows": b.rows, "task": b.task,
           "profile": json.dumps(b.reference.to_dict()), "performance": json.dumps(b.performance),
           "created_by": settings().acting_user, "created_ms": now_ms()}
    with get_metadata_store().write() as conn:
        conn.execute(sa.delete(t).where(t.c.model == b.model, t.c.version == b.version))
        conn.execute(sa.insert(t).values(**row))
    log.info("baseline of %s v%s stored (%d sample rows)", b.model, b.version, sample.num_rows)


def _row(model: str, version: int) -> Any:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import monitoring_baselines as t

    with get_metadata_store().read() as conn:
        return conn.execute(sa.select(t).where(t.c.model == model, t.c.version == int(version))).first()


def has_baseline(model: str, version: int) -> bool:
    return _row(model, version) is not None


def get_baseline(model: str, version: int) -> Baseline:
    """The stored baseline of ``model`` v``version``; NotFoundError says how to create it."""
    from keel.store.lake import get_lake
    from keel.store.metadata import ms_to_datetime

    row = _row(model, version)
    if row is None:
        raise NotFoundError(
            f"Model {model!r} version {version} has no baseline.",
            hint=f"Create one with: keel monitor baseline {model} --version {version} --data VALIDATION.parquet [--target LABEL]",
        )
    sample = get_lake().read(row.dataset)
    ref = Reference.from_dict(json.loads(row.profile), sample)
    return Baseline(row.model, row.version, ref, row.task, json.loads(row.performance or "{}"), row.rows, row.source, ms_to_datetime(row.created_ms))


def list_baselines(model: str | None = None) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store, ms_to_datetime
    from keel.store.schema.monitoring import monitoring_baselines as t

    q = sa.select(t.c.model, t.c.version, t.c.rows, t.c.task, t.c.source, t.c.created_ms, t.c.performance)
    if model is not None:
        q = q.where(t.c.model == model)
    with get_metadata_store().read() as conn:
        rows = conn.execute(q.order_by(t.c.model, t.c.version)).all()
    return [{"model": r.model, "version": r.version, "rows": r.rows, "task": r.task, "source": r.source,
             "created_time": ms_to_datetime(r.created_ms), "performance": json.loads(r.performance or "{}")} for r in rows]


def validation_source(model: str, version: int) -> tuple[str, str | None] | None:
    """(path, target) of the data a version was validated on: its run's validation dataset, or its last evaluation's file."""
    import sqlalchemy as sa

    from keel.registry.versions import evaluations, get_version
    from keel.store.metadata import get_metadata_store
    from keel.store.schema import datasets

    mv = get_version(model, version)
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(datasets.c.context, datasets.c.source, datasets.c.extra).where(datasets.c.run_id == mv.run_id)).all()
    for context in VALIDATION_CONTEXTS:
        for r in rows:
            if r.context == context and r.source and Path(r.source).exists():
                extra = json.loads(r.extra or "{}")
                return r.source, extra.get("target") or mv.meta.get("target")
    for ev in evaluations(model, version):
        if ev.get("dataset") and Path(str(ev["dataset"])).exists():
            return str(ev["dataset"]), mv.meta.get("target")
    return None


def baseline_from_registry(model: str, version: int) -> Baseline | None:
    """Build the baseline from the version's validation data if it can be found; None otherwise."""
    found = validation_source(model, version)
    if found is None:
        return None
    path, target = found
    try:
        columns = _columns(path)
    except Exception:
        columns = []
    if target not in columns:
        from keel.registry.versions import get_version

        signature = get_version(model, version).meta.get("signature") or {}
        inputs = {str(c["name"]) for c in signature.get("inputs") or []}
        extra = [c for c in columns if c not in inputs]
        target = extra[0] if inputs and len(extra) == 1 else None  # the one column the model does not take is its label
    return build_baseline(model, path, version=version, target=target)


def _columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    if path.endswith(".csv"):
        return Path(path).read_text().splitlines()[0].split(",")
    return list(pq.read_schema(path).names)


def on_registry_event(event: dict[str, Any]) -> None:
    """Registry subscriber: a registered (or promoted) version without a baseline gets one."""
    if event.get("outcome") not in ("applied", "forced") or event.get("to_version") is None:
        return
    if event.get("action") not in ("register", "promote", "alias"):
        return
    model, version = str(event["model"]), int(event["to_version"])
    if has_baseline(model, version):
        return
    if baseline_from_registry(model, version) is None:
        log.info("no validation data found for %s v%s: no baseline built (keel monitor baseline %s --data ...)", model, version, model)


_unsubscribe: Any = None


def subscribe_to_registry() -> None:
    """Install the registry subscriber once per process."""
    global _unsubscribe
    if _unsubscribe is None:
        from keel.registry.events import subscribe

        _unsubscribe = subscribe(on_registry_event)
