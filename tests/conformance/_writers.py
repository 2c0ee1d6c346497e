"""The concurrent write mix of the conformance suite (and of benchmarks/bench_metadata.py).

Each writer process makes 1,000 writes, interleaved: 100 get-or-create
experiments (half of them shared by every writer, created at the same time),
100 runs (start and end), 600 metric values in those runs and 200 alias moves
on one shared model. :func:`check` reads everything back.
"""

from __future__ import annotations

import os
import time
from typing import Any

STEPS = 100
SHARED = 50
METRICS = 6
ALIASES = 10
WRITES_PER_STEP = 1 + 1 + METRICS + 2


def expected_metric(worker: int, step: int, k: int) -> float:
    return worker * 1000 + step + k / 10


def writer(uri: str, home: str, worker: int, model: str, barrier: Any, results: Any) -> None:
    """One writer process: wait at ``barrier``, make its writes, put a summary on ``results``."""
    os.environ.update(KEEL_METADATA_URI=uri, KEEL_HOME=home, KEEL_CAPTURE_ENVIRONMENT="0", KEEL_USER=f"writer{worker}")
    from keel.registry import set_alias
    from keel.store.metadata import get_metadata_store
    from keel.tracking.runs import get_or_create_experiment, start_run

    store = get_metadata_store()
    store.ensure_schema()
    errors: list[str] = []
    writes = 0

    def attempt(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        try:
            out = fn(*args, **kwargs)
            writes += 1
            return out
        except Exception as exc:  # counted and reported: the test asserts there are none
            errors.append(f"{type(exc).__name__}: {exc}")
            return None

    barrier.wait()
    t0 = time.perf_counter()
    for step in range(STEPS):
        attempt(get_or_create_experiment, store, f"shared-{step}" if step < SHARED else f"own-{worker}-{step}")
        run = attempt(start_run, f"w{worker}-r{step}", experiment=f"shared-{step % SHARED}", activate=False)
        if run is not None:
            for k in range(METRICS):
                run.log_metric(f"m{k}", expected_metric(worker, step, k), step=0)
                writes += 1
            try:
                run.end()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        for j in range(2):
            attempt(set_alias, model, f"a{(step * 2 + j) % ALIASES}", 1 + (worker + step + j) % 2)
    results.put({"worker": worker, "seconds": time.perf_counter() - t0, "writes": writes, "errors": errors})


def run_writers(uri: str, home: str, model: str, processes: int) -> tuple[float, list[dict[str, Any]]]:
    """Start ``processes`` writers at once; (wall seconds from release to the last finish, their summaries)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=writer, args=(uri, home, w, model, barrier, results)) for w in range(processes)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    t0 = time.perf_counter()
    out = [results.get(timeout=900) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=60)
    return wall, sorted(out, key=lambda r: r["worker"])


def check(uri: str, model: str, processes: int) -> dict[str, Any]:
    """Read every write back; returns {"lost": [...problems...], counts...}."""
    import sqlalchemy as sa

    from keel.store.metadata import MetadataStore
    from keel.store.schema import experiments, metric_history, metrics, runs
    from keel.store.schema.registry import model_aliases, model_events, registered_models

    store = MetadataStore(uri, auto_create=False)
    lost: list[str] = []
    try:
        with store.read() as conn:
            names = set(conn.execute(sa.select(experiments.c.name)).scalars())
            exp_ids = dict(conn.execute(sa.select(experiments.c.name, experiments.c.id)).all())
            want = {f"shared-{s}" for s in range(SHARED)} | {f"own-{w}-{s}" for w in range(processes) for s in range(SHARED, STEPS)}
            lost += [f"experiment {n} missing" for n in sorted(want - names)]
            run_rows = {r.name: r for r in conn.execute(sa.select(runs.c.id, runs.c.name, runs.c.status, runs.c.experiment_id).where(runs.c.name.like("w%-r%")))}
            values = {(r.run_id, r.key): r.value for r in conn.execute(sa.select(metrics.c.run_id, metrics.c.key, metrics.c.value))}
            history_n = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(metric_history.c.n), 0))).scalar()
            for w in range(processes):
                for s in range(STEPS):
                    r = run_rows.get(f"w{w}-r{s}")
                    if r is None:
                        lost.append(f"run w{w}-r{s} missing")
                        continue
                    if r.status != "finished" or r.experiment_id != exp_ids.get(f"shared-{s % SHARED}"):
                        lost.append(f"run w{w}-r{s} is {r.status} in experiment {r.experiment_id}")
                    for k in range(METRICS):
                        if values.get((r.id, f"m{k}")) != expected_metric(w, s, k):
                            lost.append(f"metric m{k} of run w{w}-r{s} is {values.get((r.id, f'm{k}'))}")
            if history_n != processes * STEPS * METRICS:
                lost.append(f"metric history holds {history_n} values, not {processes * STEPS * METRICS}")
            mid = conn.execute(sa.select(registered_models.c.id).where(registered_models.c.name == model)).scalar()
            per_alias = processes * STEPS * 2 // ALIASES
            for a in range(ALIASES):
                row = conn.execute(sa.select(model_aliases).where(model_aliases.c.model_id == mid, model_aliases.c.name == f"a{a}")).first()
                events = conn.execute(
                    sa.select(model_events.c.from_version, model_events.c.to_version)
                    .where(model_events.c.model_id == mid, model_events.c.action == "alias", model_events.c.target == f"a{a}")
                    .order_by(model_events.c.id)
                ).all()
                if row is None or row.revision != per_alias or len(events) != per_alias:
                    lost.append(f"alias a{a}: revision {None if row is None else row.revision}, {len(events)} events, expected {per_alias}")
                    continue
                chain = [e.from_version for e in events[1:]] == [e.to_version for e in events[:-1]]
                if not chain or events[-1].to_version != row.version:
                    lost.append(f"alias a{a}: the audit trail is not a chain of the moves")
    finally:
        store.dispose()
    return {"lost": lost, "runs": len(run_rows), "experiments": len(names & want)}
