"""MLflow's view of keel's tracking tables: experiments and runs read and written as MLflow entities.

An MLflow run is a keel run (same 32-hex id, same params, metrics, tags and
artifacts), so ``keel runs ls`` lists what an MLflow client logged. MLflow's
experiment "0" is keel's default experiment ("Default"). The run's user is
the authenticated caller (``settings().acting_user``), never the client's
``user_id``. Metrics go into the same NumPy-chunk history the keel client
writes, one insert per key per batch.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from keel.config import settings
from keel.errors import NotFoundError, ValidationError
from keel.server.mlflow._protocol import already_exists, number
from keel.store.metadata import MetadataStore, get_metadata_store, insert_ignore, now_ms
from keel.store.schema import datasets, experiments, metric_history, metrics, params, runs, tags
from keel.store.schema.mlflow import mlflow_experiment_tags, mlflow_run_models
from keel.tracking import _writer
from keel.tracking.runs import (
    _as_number,
    _default_name,
    _value_limit,
    _value_str,
    check_name,
    get_or_create_experiment,
)

STATUS_TO_KEEL = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}
STATUS_TO_MLFLOW = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
_CONTEXTS = {"train": "training", "training": "training", "eval": "evaluation", "evaluation": "evaluation", "test": "test"}


def store() -> MetadataStore:
    return get_metadata_store()


# -- experiments ----------------------------------------------------------------------------

def resolve_experiment(ref: str | None) -> int:
    """A keel experiment id from an MLflow experiment id ("0" is keel's default experiment)."""
    if ref is None or str(ref) == "0":
        return get_or_create_experiment(store(), str(settings().experiment))
    if not str(ref).isdigit():
        raise ValidationError(f"Experiment id {ref!r} is not a number.", hint="Pass the experiment_id MLflow returned.")
    if (store().uri, int(ref)) in _experiment_names:  # known to exist (keel keeps experiments)
        return int(ref)
    with store().read() as conn:
        found = conn.execute(sa.select(experiments.c.id).where(experiments.c.id == int(ref))).scalar()
    if found is None:
        raise NotFoundError(f"No experiment with id {ref}.", hint="Create it with mlflow.set_experiment(NAME), or list them with `keel experiments ls`.")
    return int(found)


def experiment_json(conn: sa.Connection, row: Any) -> dict[str, Any]:
    etags = conn.execute(sa.select(mlflow_experiment_tags.c.key, mlflow_experiment_tags.c.value)
                         .where(mlflow_experiment_tags.c.experiment_id == row.id)).all()
    out: dict[str, Any] = {
        "experiment_id": str(row.id), "name": row.name, "artifact_location": f"mlflow-artifacts:/{row.id}",
        "lifecycle_stage": "active", "creation_time": row.created_ms, "last_update_time": row.created_ms,
        "tags": [{"key": k, "value": v} for k, v in etags],
    }
    if row.description:
        out["tags"].append({"key": "mlflow.note.content", "value": row.description})
    return out


def get_experiment(exp_id: int) -> dict[str, Any]:
    with store().read() as conn:
        row = conn.execute(sa.select(experiments).where(experiments.c.id == exp_id)).first()
        if row is None:
            raise NotFoundError(f"No experiment with id {exp_id}.", hint="List them with `keel experiments ls`.")
        return experiment_json(conn, row)


def get_experiment_by_name(name: str) -> dict[str, Any]:
    with store().read() as conn:
        row = conn.execute(sa.select(experiments).where(experiments.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"Could not find experiment with name '{name}'.", hint="Create it with mlflow.set_experiment(NAME).")
        return experiment_json(conn, row)


def create_experiment(name: str, etags: dict[str, str]) -> int:
    if not name.strip() or len(name) > 255:
        raise ValidationError(f"Invalid experiment name {name!r}.", hint="Use a non-empty name of at most 255 characters.")
    with store().write() as conn:
        if not insert_ignore(conn, experiments, {"name": name, "created_ms": now_ms()}, ["name"]):
            raise already_exists(f"Experiment '{name}' already exists.", hint="Use mlflow.set_experiment(NAME), which reuses it.")
        exp_id = int(conn.execute(sa.select(experiments.c.id).where(experiments.c.name == name)).scalar_one())
        if etags:
            conn.execute(sa.insert(mlflow_experiment_tags), [{"experiment_id": exp_id, "key": k, "value": v} for k, v in etags.items()])
    return exp_id


def set_experiment_tag(exp_id: int, key: str, value: str) -> None:
    check_name("tag", key)
    with store().write() as conn:
        conn.execute(sa.delete(mlflow_experiment_tags).where(mlflow_experiment_tags.c.experiment_id == exp_id, mlflow_experiment_tags.c.key == key))
        conn.execute(sa.insert(mlflow_experiment_tags).values(experiment_id=exp_id, key=key, value=value))


def search_experiments(name_op: tuple[str, str] | None, max_results: int, offset: int) -> tuple[list[dict[str, Any]], int | None]:
    q = sa.select(experiments).order_by(experiments.c.created_ms.desc(), experiments.c.id.desc())
    if name_op is not None:
        op, value = name_op
        col = experiments.c.name
        cond = {"=": col == value, "!=": col != value, "like": col.like(value), "ilike": col.ilike(value)}[op]
        q = q.where(cond)
    with store().read() as conn:
        rows = conn.execute(q.offset(offset).limit(max_results + 1)).all()
        out = [experiment_json(conn, r) for r in rows[:max_results]]
    return out, (offset + max_results if len(rows) > max_results else None)


# -- runs -----------------------------------------------------------------------------------

# Statements of the hot paths, built once: the values travel as parameters, and SQLAlchemy
# compiles each statement once (building one per call costs more than running it on SQLite).
_INSERT_RUN = sa.insert(runs)
_INSERT_TAGS = sa.insert(tags)
_INSERT_PARAMS = sa.insert(params)
_TOUCH_RUN = sa.update(runs).where(runs.c.id == sa.bindparam("b_run_id")).values(heartbeat_ms=sa.bindparam("b_heartbeat_ms"))
_RUN_PARAMS = sa.select(params.c.key, params.c.value).where(params.c.run_id == sa.bindparam("b_run_id"),
                                                            params.c.key.in_(sa.bindparam("b_keys", expanding=True)))


def artifact_uri(exp_id: int, run_id: str) -> str:
    return f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"


def create_run(exp_id: int, run_name: str | None, start_ms: int | None, run_tags: dict[str, str]) -> str:
    return create_run_json(exp_id, run_name, start_ms, run_tags)["info"]["run_id"]


def create_run_json(exp_id: int, run_name: str | None, start_ms: int | None, run_tags: dict[str, str]) -> dict[str, Any]:
    """Create a run; its MLflow Run object, built from what was written (no read back)."""
    rid = uuid.uuid4().hex
    name = run_name or run_tags.get(RUN_NAME_TAG) or _default_name(rid)
    if len(name) > 255:
        raise ValidationError(f"Run name {name[:40]!r}... is {len(name)} characters long; the limit is 255.")
    run_tags = {k: v for k, v in run_tags.items() if k != RUN_NAME_TAG}
    rows = _tag_rows(rid, run_tags)
    parent = run_tags.get(PARENT_TAG)
    start = start_ms or now_ms()
    env = {"source": "mlflow", "git": {"commit": run_tags["mlflow.source.git.commit"]}} if "mlflow.source.git.commit" in run_tags else {"source": "mlflow"}
    user = settings().acting_user
    with store().write() as conn:
        conn.execute(_INSERT_RUN, {
            "id": rid, "experiment_id": exp_id, "name": name, "parent_id": parent, "status": "running", "start_ms": start, "end_ms": None,
            "heartbeat_ms": now_ms(), "user": user, "host": socket.gethostname(), "error": None, "env": json.dumps(env),
        })
        if rows:
            conn.execute(_INSERT_TAGS, rows)
    _run_cache.put(rid, exp_id)
    info = {"id": rid, "name": name, "experiment_id": exp_id, "user": user, "status": "running", "start_ms": start, "end_ms": None}
    return {
        "info": run_info(SimpleNamespace(**info)),
        "data": {"metrics": [], "params": [], "tags": [{"key": r["key"], "value": r["value"]} for r in rows] + [{"key": RUN_NAME_TAG, "value": name}]},
        "inputs": {"dataset_inputs": [], "model_inputs": []},
        "outputs": {"model_outputs": []},
    }


class _RunCache:
    """run id -> experiment id of runs known to exist (runs never change experiment)."""

    def __init__(self, size: int = 10_000) -> None:
        self.items: OrderedDict[str, int] = OrderedDict()
        self.size = size
        self.lock = threading.Lock()

    def get(self, rid: str) -> int | None:
        with self.lock:
            return self.items.get(rid)

    def put(self, rid: str, exp_id: int) -> None:
        with self.lock:
            self.items[rid] = exp_id
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def drop(self, rid: str) -> None:
        with self.lock:
            self.items.pop(rid, None)


_run_cache = _RunCache()


def run_experiment(run_id: str) -> int:
    """The experiment of a run; RESOURCE_DOES_NOT_EXIST for an unknown run."""
    found = _run_cache.get(run_id)
    if found is not None:
        return found
    with store().read() as conn:
        exp = conn.execute(sa.select(runs.c.experiment_id).where(runs.c.id == run_id)).scalar()
    if exp is None:
        raise NotFoundError(f"Run '{run_id}' not found.", hint="Create it with mlflow.start_run(); list runs with `keel runs ls`.")
    _run_cache.put(run_id, int(exp))
    return int(exp)


_experiment_names: dict[tuple[str, int], str] = {}


def experiment_name(exp_id: int) -> str:
    """The name of an experiment, for authorization (cached: experiments are not renamed)."""
    key = (store().uri, exp_id)
    name = _experiment_names.get(key)
    if name is None:
        with store().read() as conn:
            found = conn.execute(sa.select(experiments.c.name).where(experiments.c.id == exp_id)).scalar()
        if found is None:
            return str(exp_id)
        name = _experiment_names[key] = str(found)
    return name


def update_run(run_id: str, status: str | None, end_ms: int | None, name: str | None) -> dict[str, Any]:
    """Set a run's status, end time or name; its MLflow RunInfo as stored, from the same statement."""
    values: dict[str, Any] = {"heartbeat_ms": now_ms()}
    if status is not None:
        if status not in STATUS_TO_KEEL:
            raise ValidationError(f"Run status {status!r} is not one of {', '.join(STATUS_TO_KEEL)}.")
        values["status"] = STATUS_TO_KEEL[status]
        if values["status"] != "running":
            values["end_ms"] = end_ms or now_ms()
        else:
            values["end_ms"] = None
    elif end_ms is not None:
        values["end_ms"] = end_ms
    if name:
        values["name"] = name[:255]
    cols = [runs.c.id, runs.c.name, runs.c.experiment_id, runs.c.user, runs.c.status, runs.c.start_ms, runs.c.end_ms]
    with store().write() as conn:
        row = conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values).returning(*cols)).first()
    if row is None:
        raise NotFoundError(f"Run '{run_id}' not found.", hint="List runs with `keel runs ls`.")
    return run_info(row)


def _tag_rows(rid: str, values: dict[str, str], limit: int | None = None) -> list[dict[str, Any]]:
    limit = _value_limit() if limit is None else limit
    return [{"run_id": rid, "key": check_name("tag", k), "value": _value_str("tag", k, v, limit)} for k, v in values.items()]


def log_batch(run_id: str, metric_items: list[dict[str, Any]], param_values: dict[str, str], tag_values: dict[str, str]) -> None:
    """Params, tags and metric values of one run in one transaction; all checked before anything is written."""
    limit = _value_limit()
    new_params = {check_name("param", k): _value_str("param", k, v, limit) for k, v in param_values.items()}
    name = tag_values.get(RUN_NAME_TAG)
    parent = tag_values.get(PARENT_TAG)
    tag_rows = _tag_rows(run_id, {k: v for k, v in tag_values.items() if k != RUN_NAME_TAG}, limit)
    rows = _metric_rows(run_id, metric_items)
    linked = {(m.get("key"), int(m.get("step") or 0), int(m.get("timestamp") or 0)) for m in metric_items if m.get("model_id")}
    if linked:  # MLflow 3 re-logs a run's metrics to link them to a logged model: a value already in the history is not repeated
        have = _history_points(run_id, {k for k, _s, _t in linked})
        rows = [r for r in rows if (r[1], r[2], r[3]) not in linked or (r[1], r[2], r[3]) not in have]
    chunks, latest = _writer.encode_chunks(rows) if rows else ([], [])
    st = store()
    with st.write() as conn:
        if new_params:
            existing = dict(conn.execute(_RUN_PARAMS, {"b_run_id": run_id, "b_keys": list(new_params)}).all())
            for k, v in new_params.items():
                if k in existing and existing[k] != v:
                    raise ValidationError(
                        f"Changing param values is not allowed. Param with key='{k}' was already logged with "
                        f"value='{existing[k]}' for run ID='{run_id}'. Attempted logging new value '{v}'.",
                        hint="Params are immutable: start a new run, or log the changing value as a metric or tag.",
                    )
            fresh = [{"run_id": run_id, "key": k, "value": v, "num": _as_number(v)} for k, v in new_params.items() if k not in existing]
            if fresh:
                conn.execute(_INSERT_PARAMS, fresh)
        if tag_rows:
            conn.execute(sa.delete(tags).where(tags.c.run_id == run_id, tags.c.key.in_([r["key"] for r in tag_rows])))
            conn.execute(_INSERT_TAGS, tag_rows)
        if chunks:
            st.insert_many(conn, metric_history, chunks, _writer.HISTORY_COLUMNS)
            conn.execute(_writer._UPSERT, latest)
        if name or parent:
            values: dict[str, Any] = {"heartbeat_ms": now_ms()}
            if name:
                values["name"] = name[:255]
            if parent:
                values["parent_id"] = parent[:32]
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
        else:
            conn.execute(_TOUCH_RUN, {"b_run_id": run_id, "b_heartbeat_ms": now_ms()})


def _history_points(run_id: str, keys: set[Any]) -> set[tuple[str, int, int]]:
    import numpy as np

    with store().read() as conn:
        chunks = conn.execute(sa.select(metric_history.c.key, metric_history.c.steps, metric_history.c.ts)
                              .where(metric_history.c.run_id == run_id, metric_history.c.key.in_([str(k) for k in keys]))).all()
    out: set[tuple[str, int, int]] = set()
    for c in chunks:
        out.update((c.key, s, t) for s, t in zip(np.frombuffer(c.steps, "<i8").tolist(), np.frombuffer(c.ts, "<i8").tolist(), strict=True))
    return out


def _metric_rows(run_id: str, metric_items: list[dict[str, Any]]) -> list[_writer.Row]:
    out: list[_writer.Row] = []
    now = time.time_ns() // 1_000_000
    for m in metric_items:
        key = m.get("key")
        if not isinstance(key, str):
            raise ValidationError(f"A metric needs a string 'key', got {m!r}.")
        check_name("metric", key)
        raw = m.get("value")
        if isinstance(raw, str):
            try:
                raw = float(raw)  # "NaN", "Infinity" as proto3 JSON writes them
            except ValueError:
                raise ValidationError(f"Metric '{key}' got {raw!r}, which is not a number.") from None
        if raw is None:
            raise ValidationError(f"Metric '{key}' has no value.", hint="Pass a number.")
        value = _writer.clean_value(key, raw)
        try:
            step = int(m.get("step") or 0)
            ts = int(m.get("timestamp") or now)
        except (TypeError, ValueError):
            raise ValidationError(f"Metric '{key}' has a step or timestamp that is not an integer: {m!r}.") from None
        out.append((run_id, key, step, ts, value))
    return out


def delete_tag(run_id: str, key: str) -> None:
    with store().write() as conn:
        gone = conn.execute(sa.delete(tags).where(tags.c.run_id == run_id, tags.c.key == key)).rowcount
    if not gone:
        raise NotFoundError(f"No tag with name: {key} in run with id {run_id}.")


def log_inputs(run_id: str, dataset_inputs: list[dict[str, Any]], model_ids: list[str]) -> None:
    rows = []
    for item in dataset_inputs:
        ds = item.get("dataset") or {}
        if not isinstance(ds, dict) or not ds.get("name") or not ds.get("digest"):
            raise ValidationError(f"A dataset input needs a dataset with a name and a digest, got {item!r}.")
        itags = {t.get("key"): t.get("value") for t in item.get("tags") or [] if isinstance(t, dict)}
        context = str(itags.get("mlflow.data.context") or "input")
        rows.append({
            "run_id": run_id, "name": str(ds["name"])[:255], "context": _CONTEXTS.get(context, context)[:64],
            "fingerprint": str(ds["digest"])[:64], "num_rows": _num_rows(ds.get("profile")), "schema": ds.get("schema"),
            "source": json.dumps({"source_type": ds.get("source_type"), "source": ds.get("source")}),
            "extra": json.dumps({"mlflow": {"tags": itags, "profile": ds.get("profile"), "context": context}}), "created_ms": now_ms(),
        })
    check_model_ids(model_ids)
    with store().write() as conn:
        for r in rows:
            insert_ignore(conn, datasets, r, ["run_id", "name", "context"])
        for mid in model_ids:
            insert_ignore(conn, mlflow_run_models, {"run_id": run_id, "model_id": mid, "direction": "input", "step": 0},
                          ["run_id", "model_id", "direction"])


def _num_rows(profile: Any) -> int | None:
    try:
        value = json.loads(profile).get("num_rows") if isinstance(profile, str) else None
        return int(value) if value is not None else None
    except (ValueError, AttributeError, TypeError):
        return None


def check_model_ids(ids: list[str]) -> list[str]:
    for mid in ids:
        if len(mid) > 64:
            raise ValidationError(f"Logged model id {mid[:40]!r}... is not one keel or MLflow hands out.", hint="Pass the model_id of a logged model (m-<32 hex>).")
    return ids


def log_outputs(run_id: str, outputs: list[tuple[str, int]]) -> None:
    from keel.store.metadata import upsert

    check_model_ids([m for m, _s in outputs])
    with store().write() as conn:
        for mid, step in outputs:
            upsert(conn, mlflow_run_models, {"run_id": run_id, "model_id": mid, "direction": "output", "step": step},
                   ["run_id", "model_id", "direction"])


# -- reading runs as MLflow entities --------------------------------------------------------

def run_info(r: Any) -> dict[str, Any]:
    """MLflow's RunInfo of a runs row."""
    info: dict[str, Any] = {
        "run_id": r.id, "run_uuid": r.id, "run_name": r.name, "experiment_id": str(r.experiment_id), "user_id": r.user,
        "status": STATUS_TO_MLFLOW.get(r.status, "RUNNING"), "start_time": r.start_ms, "artifact_uri": artifact_uri(r.experiment_id, r.id),
        "lifecycle_stage": "active",
    }
    if r.end_ms is not None:
        info["end_time"] = r.end_ms
    return info


def get_run_info(run_id: str) -> dict[str, Any]:
    with store().read() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise NotFoundError(f"Run '{run_id}' not found.", hint="List runs with `keel runs ls`.")
    return run_info(row)


def _run_queries(single: bool) -> tuple[Any, ...]:
    """The four queries of :func:`runs_json`, built once: one run by ``b_id``, or a list by ``b_ids``."""
    key = "one" if single else "many"
    if key not in _RUN_QUERIES:
        def of(col: Any) -> Any:  # one run (runs/get) is an equality: no IN list to expand per call
            return col == sa.bindparam("b_id") if single else col.in_(sa.bindparam("b_ids", expanding=True))

        _RUN_QUERIES[key] = (
            sa.select(runs).where(of(runs.c.id)),
            # metrics, params and tags in one statement (one round trip to PostgreSQL, not three)
            sa.union_all(
                sa.select(sa.literal_column("'m'").label("kind"), metrics.c.run_id, metrics.c.key, sa.cast(sa.null(), sa.Text).label("text"),
                          metrics.c.value.label("num"), metrics.c.ts.label("ts"), metrics.c.step.label("step")).where(of(metrics.c.run_id)),
                *(sa.select(sa.literal_column(f"'{kind}'"), t.c.run_id, t.c.key, t.c.value, sa.cast(sa.null(), sa.Float),
                            sa.cast(sa.null(), sa.BigInteger), sa.cast(sa.null(), sa.BigInteger)).where(of(t.c.run_id))
                  for kind, t in (("p", params), ("t", tags))),
            ),
            sa.select(datasets).where(of(datasets.c.run_id)),
            sa.select(mlflow_run_models).where(of(mlflow_run_models.c.run_id)),
        )
    return _RUN_QUERIES[key]


_RUN_QUERIES: dict[str, tuple[Any, ...]] = {}


def runs_json(conn: sa.Connection, ids: list[str]) -> list[dict[str, Any]]:
    """The MLflow Run objects of ``ids``, in that order, in four queries whatever their number."""
    if not ids:
        return []
    q_runs, q_data, q_datasets, q_models = _run_queries(len(ids) == 1)
    bind = {"b_id": ids[0]} if len(ids) == 1 else {"b_ids": ids}
    head = {r.id: r for r in conn.execute(q_runs, bind).all()}
    by_run: dict[str, dict[str, list[Any]]] = {i: {"metrics": [], "params": [], "tags": [], "datasets": [], "inputs": [], "outputs": []} for i in head}
    for r in conn.execute(q_data, bind):
        if r.kind == "m":
            by_run[r.run_id]["metrics"].append({"key": r.key, "value": number(r.num), "timestamp": r.ts, "step": r.step})
        else:
            by_run[r.run_id]["params" if r.kind == "p" else "tags"].append({"key": r.key, "value": r.text})
    for r in conn.execute(q_datasets, bind):
        by_run[r.run_id]["datasets"].append(_dataset_input(r))
    for r in conn.execute(q_models, bind):
        if r.direction == "input":
            by_run[r.run_id]["inputs"].append({"model_id": r.model_id})
        else:
            by_run[r.run_id]["outputs"].append({"model_id": r.model_id, "step": r.step})
    out = []
    for rid in ids:
        if rid not in head:
            continue
        r = head[rid]
        d = by_run[rid]
        run_tags = d["tags"]
        if not any(t["key"] == RUN_NAME_TAG for t in run_tags):
            run_tags.append({"key": RUN_NAME_TAG, "value": r.name})
        out.append({
            "info": run_info(r),
            "data": {"metrics": d["metrics"], "params": d["params"], "tags": run_tags},
            "inputs": {"dataset_inputs": d["datasets"], "model_inputs": d["inputs"]},
            "outputs": {"model_outputs": d["outputs"]},
        })
    return out


def _dataset_input(r: Any) -> dict[str, Any]:
    extra = json.loads(r.extra) if r.extra else {}
    mf = extra.get("mlflow") or {}
    source = json.loads(r.source) if r.source and r.source.startswith("{") else {"source_type": "keel", "source": r.source}
    ds = {"name": r.name, "digest": r.fingerprint, "source_type": source.get("source_type") or "keel",
          "source": source.get("source") or "", "schema": r.schema or ""}
    if mf.get("profile"):
        ds["profile"] = mf["profile"]
    itags = mf.get("tags") or {"mlflow.data.context": r.context}
    return {"tags": [{"key": k, "value": v} for k, v in itags.items()], "dataset": ds}


def get_run(run_id: str) -> dict[str, Any]:
    with store().reads() as conn:
        found = runs_json(conn, [run_id])
    if not found:
        raise NotFoundError(f"Run '{run_id}' not found.", hint="List runs with `keel runs ls`.")
    return found[0]


def history(run_id: str, key: str, page: slice | None = None) -> tuple[list[dict[str, Any]], int]:
    """The values of a run's metric in step order (``page`` of them), and how many there are in all."""
    import numpy as np

    h = metric_history
    with store().reads() as conn:
        chunks = conn.execute(sa.select(h.c.steps, h.c.ts, h.c.vals).where(h.c.run_id == run_id, h.c.key == key)
                              .order_by(h.c.min_step, h.c.id)).all()
    if not chunks:
        return [], 0
    steps = np.concatenate([np.frombuffer(c.steps, dtype="<i8") for c in chunks])
    ts = np.concatenate([np.frombuffer(c.ts, dtype="<i8") for c in chunks])
    vals = np.concatenate([np.frombuffer(c.vals, dtype="<f8") for c in chunks])
    order = np.lexsort((ts, steps))
    total = len(order)
    if page is not None:
        order = order[page]
    steps_l, ts_l, vals_o = steps[order].tolist(), ts[order].tolist(), vals[order]
    # proto3 JSON writes NaN and infinities as strings; a history without any needs no per-value check
    vals_l: list[Any] = vals_o.tolist() if np.isfinite(vals_o).all() else [number(v) for v in vals_o.tolist()]
    return [{"key": key, "value": v, "timestamp": t, "step": s} for s, t, v in zip(steps_l, ts_l, vals_l, strict=True)], total
