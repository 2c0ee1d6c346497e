"""Served feature values, read from the prediction log: what the online path actually gave a model.

Every prediction served for a model trained from a feature service is logged
with its entity keys and the feature values fetched for it (and the features
that were missing or stale), in the lake dataset of :mod:`keel.store.predictions`.
This module finds the logged models that carry a service's join keys and
features, and samples their requests for ``keel features skew SERVICE --served``,
which recomputes, point in time as of each request, what the offline path gives
and compares it with what was served. There is no second log: serving writes,
the feature store reads, through ``store/`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

SERVED_AT = "served_at"


def flush() -> None:
    """Compact what this process logged, so a check sees its latest requests."""
    from keel.store.prediction_log import active_log

    log = active_log()
    if log is not None:
        log.flush()


def _columns(files: list[str]) -> set[str]:
    import pyarrow.parquet as pq

    return {name for f in files[:20] for name in pq.read_schema(f).names}


def served_models(join_keys: list[str], features: list[str]) -> dict[str, list[str]]:
    """{logged model: its part files} of the models whose log holds ``join_keys`` and some of ``features``."""
    from keel.store import predictions

    out = {}
    for model in predictions.models():
        files = predictions.files(model)
        cols = _columns(files)
        if files and set(join_keys) <= cols and cols & set(features):
            out[model] = files
    return out


def sample(join_keys: list[str], features: list[str], *, size: int, seed: int = 0) -> pa.Table | None:
    """Up to ``size`` logged requests (``served_at``, the join keys, ``missing_features`` and the
    features they were served), sampled by hash of the request id; None when nothing is logged."""
    import duckdb

    from keel.store.lake import sql_string

    models = served_models(join_keys, features)
    if not models:
        return None
    files = [f for fs in models.values() for f in fs]
    cols = _columns(files)
    have = [f for f in features if f in cols]

    def q(c: str) -> str:
        return '"' + c.replace('"', '""') + '"'

    select = ", ".join([f"ts AS {SERVED_AT}", *(q(k) for k in join_keys), "missing_features", *(q(f) for f in have)])
    scan = f"read_parquet([{', '.join(sql_string(f) for f in files)}], union_by_name = true)"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(f"SELECT {select} FROM {scan} ORDER BY hash(request_id, {int(seed)}) LIMIT {int(size)}").to_arrow_table()
    finally:
        con.close()


def python_value(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds; anything else unchanged."""
    return value.item() if hasattr(value, "item") else value
