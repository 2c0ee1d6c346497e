"""Row-level training-serving skew: recompute features offline and compare, value by value.

Against the online store (default): for a sample of entity keys, the offline path
(point-in-time join "as of now") and the online store must give the same value
for every feature. Against served values (``served=True``): for a sample of the
requests in the served-values log (:mod:`keel.features.served`), the offline path
as of each request's time must give the value that was actually served.

A value that differs while both sides hold the same event time is *skew* (the two
paths computed it differently); a differing event time is *staleness* (the online
store was behind the offline data: materialize), reported apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keel.errors import ValidationError
from keel.features.loader import Definitions, as_definitions
from keel.features.offline import EVENT, build_training_set, connect, q, view_relation
from keel.features.online import lookup
from keel.features.served import python_value

if TYPE_CHECKING:
    from keel.store.kv import KVStore


@dataclass
class FeatureSkew:
    feature: str
    compared: int = 0
    mismatches: int = 0
    stale: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SkewReport:
    service: str
    sample: int
    at: datetime
    features: list[FeatureSkew]
    against: str = "online"  # or "served"

    @property
    def ok(self) -> bool:
        return all(f.mismatches == 0 for f in self.features)

    @property
    def mismatched(self) -> list[FeatureSkew]:
        return [f for f in self.features if f.mismatches]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "against": self.against, "sample": self.sample, "at": self.at.isoformat(), "ok": self.ok,
            "features": [f.__dict__ for f in self.features],
        }


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return (math.isnan(fa) and math.isnan(fb)) or math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, datetime):
        return a.isoformat() == str(b) or a == b
    return bool(a == b)


def check_skew(
    service: Any,
    *,
    sample: int = 100,
    seed: int = 0,
    definitions: Definitions | str | None = None,
    store: KVStore | None = None,
    max_examples: int = 5,
    served: bool = False,
) -> SkewReport:
    """Compare offline values of ``service``'s feature-view features with the online store
    for ``sample`` entities, or with ``served`` values for ``sample`` logged requests."""
    import pandas as pd

    from keel.store.kv import get_kv_store

    if sample < 1:
        raise ValidationError(f"sample must be at least 1, got {sample}.")
    defs = as_definitions(definitions)
    selection = defs.select(service)
    refs = [f"{v.name}:{f.name}" for v in selection.views for f in v.features if f.name in selection.features]
    if not refs:
        raise ValidationError(f"{service!r} has no feature-view features to compare (on-demand features run the same function on both paths).")
    if served:
        return _served_skew(selection, refs, defs, sample=sample, seed=seed, max_examples=max_examples)
    keys = selection.join_keys
    anchor = next((v for v in selection.views if set(keys) <= set(v.join_keys)), None)
    if anchor is None:
        raise ValidationError(f"No single view of {service!r} holds every join key {keys}; check skew per view.")
    con = connect()
    rows = view_relation(con, anchor)
    cols = ", ".join(q(k) for k in keys)
    sampled = con.sql(
        f"SELECT {cols} FROM (SELECT DISTINCT {cols} FROM {q(rows)}) ORDER BY hash({cols}, {int(seed)}) LIMIT {int(sample)}"
    ).to_arrow_table().to_pandas()
    con.close()
    now = datetime.now(UTC)
    entity = sampled.assign(event_timestamp=pd.Timestamp(now))
    offline = build_training_set(entity, refs, include_event_times=True, definitions=defs, require_applied=False)
    online = lookup(defs.select(refs), sampled.to_dict("list"), store or get_kv_store(), now_us=int(pd.Timestamp(now).value // 1_000))
    name = service if isinstance(service, str) else getattr(service, "name", "<features>")
    report = SkewReport(str(name), len(sampled), now, [])
    for view in selection.views:
        off_ev = offline[f"{EVENT}_{view.name}"].tolist()
        on_ev = online.event_us[view.name]
        for f in view.features:
            if f.name not in selection.features:
                continue
            fs = FeatureSkew(f.name)
            off_vals = offline[f.name].tolist()
            on_vals = online.values[f.name]
            for i in range(len(sampled)):
                fs.compared += 1
                a = None if pd.isna(off_vals[i]) else off_vals[i]
                b = on_vals[i]
                if _same(a, b):
                    continue
                oe = None if pd.isna(off_ev[i]) else int(pd.Timestamp(off_ev[i]).value // 1_000)
                if oe != (on_ev[i] if online.status[f.name][i] == "present" else None):
                    fs.stale += 1
                    continue
                fs.mismatches += 1
                if len(fs.examples) < max_examples:
                    fs.examples.append({**{k: python_value(sampled[k].iloc[i]) for k in keys}, "offline": a, "online": b})
            report.features.append(fs)
    return report


def _served_skew(selection: Any, refs: list[str], defs: Definitions, *, sample: int, seed: int, max_examples: int) -> SkewReport:
    """Offline values as of each sampled request's time against the values that request was served."""
    import orjson
    import pandas as pd

    from keel.errors import NotFoundError
    from keel.features import served as served_log
    from keel.store.lake import get_lake

    if selection.service is None:
        raise ValidationError("Served values are logged per feature service; name a service, not feature references.")
    name = selection.service.name
    served_log.flush()
    lake, ds = get_lake(), served_log.dataset(name)
    if not lake.exists(ds):
        raise NotFoundError(
            f"No served values are logged for feature service '{name}'.",
            hint="Set KEEL_LOG_SERVED_FEATURES=true where get_online_features runs (serving does), then check again.",
        )
    keys = list(selection.join_keys)
    at = served_log.SERVED_AT
    cols = ", ".join(q(k) for k in [at, *keys])
    con = connect()
    try:
        scan = lake.scan_sql(ds)
        requests = con.sql(
            f"SELECT {cols} FROM (SELECT DISTINCT {cols} FROM {scan}) ORDER BY hash({cols}, {int(seed)}) LIMIT {int(sample)}"
        ).to_arrow_table()
        con.register("__requests", requests)
        on = " AND ".join(f"s.{q(c)} IS NOT DISTINCT FROM r.{q(c)}" for c in [at, *keys])
        logged = con.sql(f"SELECT s.* FROM {scan} s SEMI JOIN __requests r ON {on}").to_arrow_table().to_pylist()
    finally:
        con.close()
    entity = requests.to_pandas().rename(columns={at: "event_timestamp"})
    offline = build_training_set(entity, refs, include_event_times=True, definitions=defs, require_applied=False)
    row_of = {(r[at], *(r[k] for k in keys)): i for i, r in enumerate(requests.to_pylist())}
    view_of = {f.name: v.name for v in selection.views for f in v.features}
    by_feature = {f: FeatureSkew(f) for f in (r.split(":", 1)[1] for r in refs)}
    for entry in logged:
        fs = by_feature.get(entry["feature"])
        i = row_of.get((entry[at], *(entry[k] for k in keys)))
        if fs is None or i is None:
            continue
        fs.compared += 1
        off_value = offline[fs.feature].iloc[i]
        a = None if pd.isna(off_value) else off_value
        b = orjson.loads(entry["value"]) if entry["status"] == "present" else None
        if _same(a, b):
            continue
        off_ev = offline[f"{EVENT}_{view_of[fs.feature]}"].iloc[i]
        oe = None if pd.isna(off_ev) else int(pd.Timestamp(off_ev).value // 1_000)
        if oe != (entry["event_us"] if entry["status"] == "present" else None):
            fs.stale += 1  # the online store held another version than the offline data at that time
            continue
        fs.mismatches += 1
        if len(fs.examples) < max_examples:
            fs.examples.append({**{k: entry[k] for k in keys}, "served_at": entry[at].isoformat(), "offline": a, "served": b})
    return SkewReport(name, len(row_of), datetime.now(UTC), list(by_feature.values()), against="served")

