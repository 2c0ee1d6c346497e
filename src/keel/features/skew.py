"""Row-level training-serving skew: recompute features offline and compare, value by value.

Against the online store (default): for a sample of entity keys, the offline path
(point-in-time join "as of now") and the online store must give the same value
for every feature. Against served values (``served=True``): for a sample of the
requests in the prediction log (read through :mod:`keel.features.served`), the
offline path as of each request's time must give the value that was actually served.

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
    """Offline values as of each sampled request's time against the values that request was served (from the prediction log)."""
    import pandas as pd

    from keel.errors import NotFoundError
    from keel.features import served as served_log

    if selection.service is None:
        raise ValidationError("Served values are checked per feature service; name a service, not feature references.")
    name = selection.service.name
    served_log.flush()
    keys = list(selection.join_keys)
    wanted = [r.split(":", 1)[1] for r in refs]
    logged = served_log.sample(keys, wanted, size=sample, seed=seed)
    if logged is None or logged.num_rows == 0:
        raise NotFoundError(
            f"No prediction in the prediction log carries the features of service '{name}'.",
            hint="Serve a model trained from it (keel serve / keel.serving.Predictor log every request), then check again.",
        )
    at = served_log.SERVED_AT
    requests = logged.to_pandas()
    entity = requests[[at, *keys]].rename(columns={at: "event_timestamp"})
    present = [f for f in wanted if f in requests.columns]
    offline = build_training_set(entity, [r for r in refs if r.split(":", 1)[1] in present], include_event_times=True,
                                 definitions=defs, require_applied=False)
    absent = requests["missing_features"].map(lambda v: set() if v is None else set(v))
    report = SkewReport(name, len(requests), datetime.now(UTC), [], against="served")
    for f in present:
        fs = FeatureSkew(f)
        served_values, off_values = requests[f].tolist(), offline[f].tolist()
        not_served = absent.map(lambda s, f=f: f in s).tolist()
        for i in range(len(requests)):
            fs.compared += 1
            a = None if pd.isna(off_values[i]) else off_values[i]
            b = None if pd.isna(served_values[i]) else served_values[i]
            if _same(a, b):
                continue
            if not_served[i]:
                fs.stale += 1  # the online store had no fresh value where the offline data has one: materialize
                continue
            fs.mismatches += 1
            if len(fs.examples) < max_examples:
                fs.examples.append({**{k: python_value(requests[k].iloc[i]) for k in keys}, "served_at": requests[at].iloc[i].isoformat(),
                                    "offline": a, "served": b})
        report.features.append(fs)
    return report
