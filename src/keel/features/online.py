"""The online path: feature values for entity keys, from the online store, in one round trip.

Each value comes with a status, ``present``, ``missing`` (no value for the key) or
``outside_ttl`` (the latest value is older than the view's TTL: returned as null,
exactly as a training set would hold null), and its age in seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.features.definitions import FeatureView
from keel.features.loader import Definitions, Selection, as_definitions
from keel.features.materialization import KEY_SEP, namespace

if TYPE_CHECKING:
    import pandas as pd

    from keel.store.kv import KVStore

PRESENT, MISSING, OUTSIDE_TTL = "present", "missing", "outside_ttl"



def _json_loads() -> Callable[[bytes], Any]:
    """orjson when installed (several times faster); the standard library otherwise."""
    try:
        import orjson

        return orjson.loads
    except ImportError:  # pragma: no cover
        return json.loads


_loads = _json_loads()


@dataclass
class OnlineFeatures:
    """Feature values for a batch of entity rows: ``values[feature][i]`` for row ``i``."""

    features: list[str]
    rows: dict[str, list[Any]]  # the entity rows (keys and request data), column-wise
    values: dict[str, list[Any]]
    status: dict[str, list[str]]
    age_seconds: dict[str, list[float | None]]
    event_us: dict[str, list[int | None]] = field(default_factory=dict, repr=False)  # event time, epoch microseconds

    def to_dict(self) -> dict[str, list[Any]]:
        """Entity columns and feature values, as Feast's ``OnlineResponse.to_dict()``."""
        return {**self.rows, **self.values}

    def to_df(self, *, with_status: bool = False) -> pd.DataFrame:
        import pandas as pd

        data: dict[str, Any] = dict(self.to_dict())
        if with_status:
            for f in self.features:
                data[f"{f}__status"] = self.status[f]
                data[f"{f}__age_seconds"] = self.age_seconds[f]
        return pd.DataFrame(data)


def _key_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "item"):
        value = value.item()
    return str(value)


def _columns(entity_rows: Any) -> tuple[dict[str, list[Any]], int]:
    if isinstance(entity_rows, Mapping):
        cols = {str(k): list(v) if isinstance(v, list | tuple) or hasattr(v, "__array__") else [v] for k, v in entity_rows.items()}
    elif isinstance(entity_rows, Sequence) and not isinstance(entity_rows, str):
        cols = {}
        for i, row in enumerate(entity_rows):
            if not isinstance(row, Mapping):
                raise ValidationError(f"Entity row {i} is {type(row).__name__}, not a mapping.", hint="Pass [{'customer_id': 1}, ...].")
            for k in row:
                cols.setdefault(str(k), [])
        for k in cols:
            cols[k] = [row.get(k) for row in entity_rows]
    elif hasattr(entity_rows, "to_dict"):
        cols = {str(k): list(v) for k, v in entity_rows.to_dict("list").items()}
    else:
        raise ValidationError(f"entity_rows must be a list of dicts, a dict of lists or a DataFrame, got {type(entity_rows).__name__}.")
    sizes = {len(v) for v in cols.values()}
    if len(sizes) > 1:
        raise ValidationError(f"The entity columns have different lengths {sorted(sizes)}.", hint="Give every column one value per row.")
    return cols, (sizes.pop() if sizes else 0)


def lookup(selection: Selection, entity_rows: Any, store: KVStore, *, now_us: int | None = None) -> OnlineFeatures:
    cols, n = _columns(entity_rows)
    for k in selection.join_keys:
        if k not in cols:
            from keel.errors import did_you_mean

            raise ValidationError(
                f"The entity rows have no '{k}' (a join key of the requested features)." + did_you_mean(k, cols),
                hint=f"Pass {{'{k}': ...}} in every row.",
            )
    requests = []
    for view in selection.views:
        if len(view.join_keys) == 1:
            keys = [_key_text(v) for v in cols[view.join_keys[0]]]
        else:
            parts = [cols[k] for k in view.join_keys]
            keys = [KEY_SEP.join(_key_text(v) for v in vals) for vals in zip(*parts, strict=True)]
        requests.append((namespace(view), keys))
    raw = store.get_many(requests)
    now = time.time_ns() // 1_000 if now_us is None else now_us
    values: dict[str, list[Any]] = {}
    status: dict[str, list[str]] = {}
    ages: dict[str, list[float | None]] = {}
    events: dict[str, list[int | None]] = {}
    loads = _loads
    for view, blobs in zip(selection.views, raw, strict=True):
        ttl_us = None if view.ttl is None else view.ttl // timedelta(microseconds=1)
        names = [f.name for f in view.features]
        # one decoder call for the whole batch: far cheaper than one per value
        decoded = loads(b"[" + b",".join(b"null" if b is None else b for b in blobs) + b"]")
        if view.aggregations:
            _aggregates(view, names, decoded, now, values, status, ages, events)
            continue
        ev = [None if d is None else d["__e"] for d in decoded]
        age = [None if e is None else (now - e) / 1_000_000 for e in ev]
        fresh = [d is not None and (ttl_us is None or now - d["__e"] <= ttl_us) for d in decoded]
        st = [PRESENT if ok else (MISSING if d is None else OUTSIDE_TTL) for ok, d in zip(fresh, decoded, strict=True)]
        events[view.name] = ev
        for name in names:
            values[name] = [d.get(name) if ok and d is not None else None for ok, d in zip(fresh, decoded, strict=True)]
            status[name] = [s if (s != PRESENT or d is None or name in d) else MISSING for s, d in zip(st, decoded, strict=True)]
            ages[name] = age
    if selection.on_demand:
        _on_demand(selection, cols, n, values, status, ages)
    out_values = {f: values[f] for f in selection.features}
    return OnlineFeatures(
        list(selection.features), cols, out_values, {f: status[f] for f in selection.features},
        {f: ages[f] for f in selection.features}, events,
    )


def _aggregates(
    view: FeatureView, names: list[str], states: list[Any], now: int, values: dict[str, list[Any]],
    status: dict[str, list[str]], ages: dict[str, list[float | None]], events: dict[str, list[int | None]],
) -> None:
    """Aggregates as of ``now`` from each entity's window state: ``present`` when the entity has a
    state, else ``missing`` with the aggregation's empty value (0 for counts), as offline."""
    from keel.features.aggregation_online import compute

    computed, last = compute(view, names, states, now)
    events[view.name] = last
    age = [None if e is None else (now - e) / 1_000_000 for e in last]
    st = [MISSING if d is None else PRESENT for d in states]
    for name in names:
        values[name] = computed[name]
        status[name] = st
        ages[name] = age


def _on_demand(
    selection: Selection, cols: dict[str, list[Any]], n: int, values: dict[str, list[Any]],
    status: dict[str, list[str]], ages: dict[str, list[float | None]],
) -> None:
    import pandas as pd

    from keel.features.offline import apply_on_demand

    frame = pd.DataFrame({**{k: v for k, v in cols.items()}, **values})
    for odfv in selection.on_demand:
        for name in odfv.input_features:
            if name in values:
                frame[name] = pd.array(values[name], dtype=_dtype_of(selection, name))
    frame = apply_on_demand(frame, selection)
    for odfv in selection.on_demand:
        inputs = odfv.input_features
        for out in odfv.features:
            f = out.name
            values[f] = [None if pd.isna(v) else v for v in frame[f].tolist()]
            status[f] = [
                PRESENT if all(status[i][r] == PRESENT for i in inputs) and values[f][r] is not None else MISSING
                for r in range(n)
            ]
            ages[f] = [None] * n


def _dtype_of(selection: Selection, feature: str) -> Any:
    import pandas as pd
    import pyarrow as pa

    for v in selection.views:
        for f in v.features:
            if f.name == feature:
                return pd.ArrowDtype(
                    {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
                     "string": pa.string(), "bool": pa.bool_()}.get(f.dtype, pa.string())
                )
    return None


_plans: dict[tuple[int, str], tuple[Definitions, Selection]] = {}
# The project's definitions and store, re-resolved at most every REFRESH seconds: resolving
# settings and stat-ing the features module cost more than a lookup itself.
REFRESH = 1.0
_context: tuple[float, Definitions, KVStore] | None = None


def _project_context() -> tuple[Definitions, KVStore]:
    """(definitions, online store) of the project, refreshed every REFRESH seconds."""
    global _context
    from keel.features.loader import load_definitions
    from keel.store.kv import get_kv_store

    now = time.monotonic()
    if _context is None or now - _context[0] > REFRESH:
        _context = (now, load_definitions(), get_kv_store())
    return _context[1], _context[2]


def get_online_features(
    features: Any,
    entity_rows: Any,
    *,
    definitions: Definitions | str | None = None,
    store: KVStore | None = None,
    definitions_version: int | None = None,
) -> OnlineFeatures:
    """The latest feature values for ``entity_rows``, with status and age, in one store round trip.

    ``features`` is a FeatureService (object or name) or "view:feature" references;
    ``entity_rows`` a list of dicts, a dict of lists or a DataFrame holding the join
    keys and any request data on-demand features need. Missing entities give
    nulls with status ``missing``, never an exception.

    ``definitions_version`` reads the values of an applied definitions version (the one
    a model was trained on) instead of the current definitions': each version of a view
    keeps its own values until it is retired.

    Example::

        keel.get_online_features("churn_v1", [{"customer_id": 42, "discount": 0.1}]).to_dict()
    """
    if definitions_version is not None:
        definitions = _definitions_at(definitions_version)
    if definitions is None or store is None:
        project_defs, project_store = _project_context()
        defs = project_defs if definitions is None else as_definitions(definitions)
        store = store or project_store
    else:
        defs = as_definitions(definitions)
    key = (id(defs), features if isinstance(features, str) else repr(features))
    hit = _plans.get(key)
    if hit is not None and hit[0] is defs:
        selection = hit[1]
    else:
        selection = defs.select(features)
        if len(_plans) > 256:
            _plans.clear()
        _plans[key] = (defs, selection)
    return lookup(selection, entity_rows, store)


_versions: dict[int, Definitions] = {}


def _definitions_at(version: int) -> Definitions:
    """Applied versions never change: rebuilt from the metadata store once per process."""
    hit = _versions.get(version)
    if hit is None:
        from keel.features.registry import definitions_at

        hit = _versions[version] = definitions_at(version)
    return hit


def reset_context() -> None:
    """Forget the cached project context (tests)."""
    global _context
    _context = None
    _plans.clear()
    _versions.clear()
