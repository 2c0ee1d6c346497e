"""Champion vs challenger, from the prediction log: traffic, latency, errors, agreement, and quality once labels arrive.

``compare("churn-live")`` reads the deployment's routes' rows of the prediction
log in a window and reports, per route, requests, errors and latency p50/p99.
For a shadow, whose rows share request ids with the champion's, it pairs them:
the agreement rate and the distribution of score differences, available at once.
Once labels arrive (``keel.monitoring`` feedback) it compares quality: paired on
the same requests for a shadow (a paired bootstrap of the metric's difference, as
the registry's gates do), unpaired for a canary or an A/B split (independent
bootstraps), and recommends:

- ``promote``  the challenger is not worse than the champion by more than
  ``margin`` at the given confidence (the interval's worse end is within it);
- ``keep``     the challenger is worse (the whole interval is past ``margin``);
- ``not enough data``  fewer than ``min_labels`` labelled requests, or an
  interval too wide to tell.

The metric is the task's primary one (ROC AUC for binary classifiers with scores,
accuracy without, RMSE for regression), as the registry's default gate uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from keel.deployments.specs import DeploymentSpec, get_deployment
from keel.errors import ValidationError

BOOTSTRAP = 1000


def _since(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return datetime.now(UTC) - value
    from keel.monitoring.feedback import parse_duration

    return datetime.now(UTC) - parse_duration(value)


def _rows(spec: DeploymentSpec, start: datetime) -> Any:
    """The routes' logged rows (request_id, route, version, latency_ms, status, prediction, score) as one pandas frame."""
    import pandas as pd

    from keel.store.predictions import read

    frames = []
    for model in sorted({r.model for r in spec.routes}):
        names = [r.name for r in spec.routes if r.model == model]
        t = read(model, start=start)
        if t.num_rows == 0:
            continue
        df = t.select([c for c in ("request_id", "ts", "route", "version", "latency_ms", "status", "prediction", "score") if c in t.column_names]).to_pandas()
        df["model"] = model
        frames.append(df[df["route"].isin(names)])
    if not frames:
        return pd.DataFrame(columns=["request_id", "ts", "route", "version", "latency_ms", "status", "prediction", "score", "model"])
    return pd.concat(frames, ignore_index=True)


def _labels(spec: DeploymentSpec, df: Any) -> Any:
    """``df`` with ``label_value`` (null without a label), joined by request id."""
    import pyarrow as pa

    from keel.monitoring.feedback import join_labels

    if df.empty:
        df["label_value"] = np.nan
        return df
    out = []
    for model, part in df.groupby("model"):
        window = pa.Table.from_pandas(part[["request_id", "ts"]].reset_index(drop=True), preserve_index=False)
        joined = join_labels(str(model), window).to_pandas()
        part = part.reset_index(drop=True)
        part["label_value"] = joined["label_value"].to_numpy(dtype=float, na_value=np.nan)
        out.append(part)
    import pandas as pd

    return pd.concat(out, ignore_index=True)


def _task(y: Any, score: Any) -> str:
    values = set(np.unique(y[~np.isnan(y)]).tolist())
    if values <= {0.0, 1.0} and score is not None and not np.all(np.isnan(score)):
        return "binary"
    if values <= {0.0, 1.0}:
        return "accuracy"
    return "regression"


def _metric(task: str, W: Any, y: Any, pred: Any, score: Any) -> Any:
    from keel.evaluation import metrics as M

    if task == "binary":
        return M.binary(W, y, score, 0.5)["roc_auc"]
    if task == "accuracy":
        return W @ (pred == y) / W.sum(axis=1)
    return M.regression(W, y, pred)["rmse"]


METRIC_NAME = {"binary": "roc_auc", "accuracy": "accuracy", "regression": "rmse"}
GREATER = {"binary": True, "accuracy": True, "regression": False}


def _numeric(values: Any) -> Any:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return np.asarray([float("nan")] * len(values))


def _interval(diffs: Any, confidence: float) -> tuple[float, float]:
    d = diffs[~np.isnan(diffs)]
    if len(d) == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def _verdict(delta_low: float, delta_high: float, greater: bool, margin: float, n: int, min_labels: int) -> str:
    if n < min_labels or np.isnan(delta_low):
        return "not enough data"
    worse_end = delta_low if greater else -delta_high  # the challenger's worst plausible change, as a gain
    best_end = delta_high if greater else -delta_low
    if worse_end >= -margin:
        return "promote"
    if best_end < -margin:
        return "keep"
    return "not enough data"


def compare(name: str, *, since: Any = "7d", min_labels: int = 100, margin: float = 0.0, confidence: float = 0.95,
            seed: int = 0) -> dict[str, Any]:
    """The comparison of the deployment's routes (see the module docstring), JSON-ready."""
    if not 0 < confidence < 1:
        raise ValidationError(f"confidence {confidence!r} is not between 0 and 1.", hint="e.g. 0.95.")
    dep = get_deployment(name)
    spec = dep.spec
    start = _since(since)
    df = _labels(spec, _rows(spec, start))
    out: dict[str, Any] = {"deployment": name, "revision": dep.revision, "mode": spec.mode, "since": start.isoformat(),
                           "routes": {}, "shadow": None, "quality": None, "recommendation": "not enough data"}
    for r in spec.routes:
        part = df[df["route"] == r.name]
        lat = part["latency_ms"].dropna().to_numpy(dtype=float) if len(part) else np.array([])
        errors = int((part["status"].fillna("ok") != "ok").sum()) if len(part) else 0
        out["routes"][r.name] = {
            "model": r.model, "ref": r.ref, "versions": sorted({int(v) for v in part["version"].dropna()}) if len(part) else [],
            "weight": r.weight, "shadow": r.shadow, "requests": len(part), "errors": errors,
            "error_rate": errors / len(part) if len(part) else None,
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "labelled": int(part["label_value"].notna().sum()) if len(part) else 0,
        }
    champ, chal = spec.champion, spec.challenger
    if chal is None:
        return out
    a = df[df["route"] == champ.name].drop_duplicates("request_id", keep="last").set_index("request_id")
    b = df[df["route"] == chal.name].drop_duplicates("request_id", keep="last").set_index("request_id")
    rng = np.random.default_rng(seed)
    if chal.shadow:
        both = a.merge(b, how="inner", left_index=True, right_index=True, suffixes=("_a", "_b"))
        shadow: dict[str, Any] = {"paired_requests": len(both)}
        if len(both):
            shadow["agreement"] = float((both["prediction_a"].astype(str) == both["prediction_b"].astype(str)).mean())
            if "score_a" in both and both["score_a"].notna().any():
                diff = (_numeric(both["score_b"]) - _numeric(both["score_a"]))
                diff = diff[~np.isnan(diff)]
                if len(diff):
                    shadow["score_difference"] = {"mean": float(diff.mean()), "mean_abs": float(np.abs(diff).mean()),
                                                  **{f"p{q}": float(np.percentile(diff, q)) for q in (1, 5, 50, 95, 99)}}
        out["shadow"] = shadow
        lab = both[both["label_value_a"].notna()]
        n = len(lab)
        if n:
            y = lab["label_value_a"].to_numpy(dtype=float)
            sa, sb = (_numeric(lab["score_a"]) if "score_a" in lab else None), (_numeric(lab["score_b"]) if "score_b" in lab else None)
            task = _task(y, sa)
            pa_, pb_ = _numeric(lab["prediction_a"]), _numeric(lab["prediction_b"])
            ones = np.ones((1, n))
            W = rng.multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP).astype(float)
            ma, mb = _metric(task, ones, y, pa_, sa)[0], _metric(task, ones, y, pb_, sb)[0]
            low, high = _interval(_metric(task, W, y, pb_, sb) - _metric(task, W, y, pa_, sa), confidence)
            out["quality"] = {"paired": True, "labelled": n, "metric": METRIC_NAME[task], "champion": float(ma), "challenger": float(mb),
                              "difference": float(mb - ma), "low": low, "high": high, "confidence": confidence}
            out["recommendation"] = _verdict(low, high, GREATER[task], margin, n, min_labels)
        return out
    la, lb = a[a["label_value"].notna()], b[b["label_value"].notna()]
    if len(la) and len(lb):
        ya, yb = la["label_value"].to_numpy(dtype=float), lb["label_value"].to_numpy(dtype=float)
        sa = _numeric(la["score"]) if "score" in la else None
        sb = _numeric(lb["score"]) if "score" in lb else None
        task = _task(np.concatenate([ya, yb]), sa)
        pa_, pb_ = _numeric(la["prediction"]), _numeric(lb["prediction"])
        ma = _metric(task, np.ones((1, len(ya))), ya, pa_, sa)[0]
        mb = _metric(task, np.ones((1, len(yb))), yb, pb_, sb)[0]
        Wa = rng.multinomial(len(ya), np.full(len(ya), 1.0 / len(ya)), size=BOOTSTRAP).astype(float)
        Wb = rng.multinomial(len(yb), np.full(len(yb), 1.0 / len(yb)), size=BOOTSTRAP).astype(float)
        low, high = _interval(_metric(task, Wb, yb, pb_, sb) - _metric(task, Wa, ya, pa_, sa), confidence)
        n = min(len(ya), len(yb))
        out["quality"] = {"paired": False, "labelled": {champ.name: len(ya), chal.name: len(yb)}, "metric": METRIC_NAME[task],
                          "champion": float(ma), "challenger": float(mb), "difference": float(mb - ma), "low": low, "high": high,
                          "confidence": confidence}
        out["recommendation"] = _verdict(low, high, GREATER[task], margin, n, min_labels)
    return out
