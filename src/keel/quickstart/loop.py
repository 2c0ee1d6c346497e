"""The quickstart's loop stage: a shift in one feature, the alert, the retraining policy, shadow, canary, the promotion.

The policy ``churn-retrain`` (declared here, stored in the metadata store)
retrains ``churn`` when the monitor ``churn-daily`` alerts: it runs the
project's ``pipelines:retrain`` on the last 90 days of labels (the window's
``window_start`` / ``window_end``), runs the registry's gates against the
champion on the fresh holdout, and rolls the new version out in stages
(``promotion.production: shadow,canary:50``) in the deployment ``churn-live``
(``churn@production``, sticky by customer):

1. as the shadow beside ``churn@production``: every customer is replayed as a
   request through the deployment's router (the model server's routing code: the
   champion answers, the shadow scores the same rows off the request path, both
   logged under one request id), the labels are fed back, and ``keel deploy
   compare churn-live``'s comparison is printed: agreement, score differences,
   paired quality with its interval, the recommendation. The policy judges the
   shadow on that comparison and, as it passes, puts the same version out
2. as a canary answering 50 % of customers (sticky: a customer always meets the
   same model): every customer replayed again, labels fed back, the canary's own
   comparison (unpaired, only this stage's rows) printed briefly, and the policy
   promotes the version once it passes.

Each step is printed with its time; the loop's own overhead is everything but
the pipeline run and the replayed traffic (the stand-in for the world's requests
and labels).

A rerun finds the policy in its cooldown: the alert fires again, the policy
records the trigger as skipped (with why) and nothing is retrained, so the
quickstart's pipelines stay "N of N steps from cache".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

MODEL = "churn"
POLICY = "churn-retrain"
MONITOR = "churn-daily"
DEPLOYMENT = "churn-live"
SHIFTED, SEGMENT, FACTOR = "minutes_30d", ("plan", "basic"), 0.5
REQUEST_ROWS = 100  # customers per replayed request: 30 requests for the default 3,000 customers (a request costs ~0.1 s, mostly fixed)
ROLLOUT = "shadow,canary:50"  # shadow first; once its live comparison passes, a canary at 50 %; once that passes, promoted
STICKY_BY = "customer_id"  # the deployment sticks by customer: a customer always meets the same model
LIVE_MIN_LABELS, LIVE_MARGIN, LIVE_SINCE = 100, 0.1, "1d"  # the live comparison each stage must pass
WRITER = "quickstart-loop"


def declare() -> dict[str, Any]:
    from keel.loop.policies import RetrainingPolicy, declare_policy

    return declare_policy(RetrainingPolicy(
        POLICY, MODEL, triggers=[{"alert": MONITOR}], pipeline="pipelines:retrain", window="90d",
        window_source="data/labels.parquet", window_column="event_timestamp",
        promotion={"staging": "none", "production": ROLLOUT}, deployment=DEPLOYMENT,
        live={"min_labels": LIVE_MIN_LABELS, "margin": LIVE_MARGIN, "since": LIVE_SINCE}, cooldown="6h", max_retrains=3, per="7d",
    ))


def _online() -> Any:
    """Every customer's online features (looked up once: both replays use them)."""
    import pandas as pd

    import keel

    n = int(pd.read_parquet("data/customers.parquet", columns=["customer_id"])["customer_id"].max())
    return keel.get_online_features("churn_v1", [{"customer_id": i} for i in range(1, n + 1)]).to_df()


_models: dict[int, Any] = {}  # the versions scored in this stage (cleared at its start: another project has other versions)


def _model(version: int) -> Any:
    import keel

    if version not in _models:
        _models[version] = keel.load_model(f"models:/{MODEL}/{version}")
    return _models[version]


def _log(frame: Any, x: Any, version: int, route: str, start: datetime, step: timedelta, tag: str) -> list[str]:
    """Score ``x`` with ``version`` and append it to the prediction log as ``route``; returns the request ids."""
    import numpy as np
    import pyarrow as pa

    from keel.store import predictions

    n = len(x)
    if n == 0:
        return []
    score = _model(version).predict_proba(x)[:, 1]
    ids = [f"{WRITER}-{tag}-{start:%Y%m%dT%H%M}-{route}-{i}" for i in range(n)]
    cols: dict[str, Any] = {
        "request_id": pa.array(ids), "ts": pa.array([start + step * i for i in range(n)], pa.timestamp("us", tz="UTC")),
        "model": pa.array([MODEL] * n), "version": pa.array(np.full(n, version, np.int64)), "route": pa.array([route] * n),
        "batch_id": pa.array([WRITER] * n), "customer_id": pa.array(frame["customer_id"].to_numpy(np.int64)),
        **{c: pa.array(x[c].to_numpy()) for c in x.columns},
        "prediction": pa.array((score >= 0.5).astype(np.int64)), "score": pa.array(score.astype(np.float64)),
    }
    predictions.write(predictions.normalize(pa.table(cols)), writer=f"{WRITER}-{tag}-{route}")
    return ids


def _this_hour(now: datetime, n: int) -> tuple[datetime, timedelta]:
    """Timestamps from the start of this hour to now: after the windows the monitoring stage replays (whole hours), so its rerun sees the same rows."""
    start = now.replace(minute=0, second=0, microsecond=0)
    return start, (now - start) / max(n + 1, 1)


def _shifted_traffic(online: Any, features_of: Any, version: int, now: datetime) -> int:
    """This hour's traffic, with the fault: minutes_30d halved for basic-plan customers."""
    frame = online.copy()
    basic = frame[SEGMENT[0]] == SEGMENT[1]
    frame.loc[basic, SHIFTED] = frame.loc[basic, SHIFTED] * FACTOR
    return len(_log(frame, features_of(frame), version, "default", *_this_hour(now, len(frame)), "shift"))


def _deployment() -> bool:
    """``churn-live``: churn@production, sticky by customer (created once; the policy's rollout stages change it). True: created now."""
    from keel.deployments.specs import build_spec, deploy, get_deployment
    from keel.errors import NotFoundError

    try:
        get_deployment(DEPLOYMENT)
        return False
    except NotFoundError:
        deploy(build_spec(DEPLOYMENT, model=f"{MODEL}@production", sticky_by=STICKY_BY), reason="the quickstart: churn in production")
        return True


def _replay(customers: list[int], stage: str) -> dict[str, Any]:
    """Every customer once as a request through the deployment's router, then their labels.

    The router (the model server's own routing code) picks the answering route by the request's
    customer (sticky), and calls a shadow on the same rows, with the same request ids, off the
    request path; every row is logged with its route, so the comparison pairs a shadow with the
    champion, and the labels attach to all. Customers are sent in requests of ``REQUEST_ROWS``,
    each request of customers that stick to one route (the router picks by the first one's key),
    so every customer is answered by the model it sticks to.
    """
    import pandas as pd

    import keel
    from keel.deployments.routing import Router
    from keel.store.prediction_log import active_log

    router = Router(DEPLOYMENT, defaults={"plan": "unknown", "region": "unknown"}, refresh_s=3600)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    ids: list[str] = []
    answered: dict[str, int] = {}
    unstuck = requests = 0
    try:
        groups: dict[str, list[int]] = {}
        for c in customers:
            groups.setdefault(router.pick(c).name, []).append(c)
        order: list[int] = []
        for route, group in groups.items():
            for k in range(0, len(group), REQUEST_ROWS):
                chunk = group[k:k + REQUEST_ROWS]
                answer = router.predict([{STICKY_BY: c} for c in chunk], request_id=f"{WRITER}-{stage}-{stamp}-{requests}", batch_id=WRITER)
                requests += 1
                answered[answer.route] = answered.get(answer.route, 0) + len(chunk)
                unstuck += 0 if answer.route == route else len(chunk)
                ids += answer.prediction.row_ids
                order += chunk
        router.drain()
        stats = router.stats()
    finally:
        router.close()
    plog = active_log()
    if plog is not None:
        plog.flush()  # the comparison reads the lake: compact what was just logged
    labels = pd.read_parquet("data/labels.parquet").sort_values("event_timestamp").groupby("customer_id")["churned"].last()
    y = labels.reindex(order).to_numpy()
    known = [i for i, v in enumerate(y) if v == v]
    keel.log_feedback([ids[i] for i in known], [int(y[i]) for i in known], model=MODEL)
    shadow = stats["routes"].get("shadow", {})
    return {"stage": stage, "requests": requests, "rows": len(ids), "answered": answered, "unstuck": unstuck, "labelled": len(known),
            "shadow_scored": int(shadow.get("requests", 0)), "shadow_dropped": stats["shadow_dropped"], "shadow_failed": stats["shadow_failed"]}


def _stage_comparison() -> dict[str, Any]:
    """``keel deploy compare churn-live`` on the current stage's rows only (since the stage began): once, printed and judged."""
    from keel.deployments.compare import compare
    from keel.loop.policies import pending_rollout

    pending = pending_rollout(POLICY) or {}
    since = datetime.fromtimestamp(int(pending["since"]) / 1000, tz=UTC) if pending.get("since") else LIVE_SINCE
    return compare(DEPLOYMENT, since=since, min_labels=LIVE_MIN_LABELS, margin=LIVE_MARGIN)


def _quality(q: dict[str, Any] | None, challenger: str) -> str:
    nan = float("nan")
    q = q or {}
    return (f"{q.get('metric', '?')} {challenger} {q.get('challenger', nan):.3f} vs champion {q.get('champion', nan):.3f} "
            f"({q.get('difference', nan):+.3f}, [{q.get('low', nan):+.3f}, {q.get('high', nan):+.3f}])")


def run(features_of: Any) -> dict[str, Any]:
    """Declare the policy, shift, alert, retrain through the scheduler, shadow, compare, promote; returns what the stage shows."""
    from keel.loop.retraining import advance, history
    from keel.monitoring import run_monitor
    from keel.pipelines.triggers import tick
    from keel.registry.versions import resolve_version

    t0 = time.perf_counter()
    _models.clear()
    steps: list[dict[str, Any]] = []

    def step(what: str, since: float) -> float:
        now = time.perf_counter()
        steps.append({"step": what, "seconds": round(now - since, 3)})
        return now

    t = t0
    created = _deployment()
    declared = declare()
    t = step((f"deployment {DEPLOYMENT}: {MODEL}@production, sticky by {STICKY_BY}; " if created else "")
             + f"policy {POLICY} " + (f"declared (v{declared['version']})" if declared["changed"] else f"already declared (v{declared['version']})")
             + f": alert of {MONITOR} → pipelines:retrain on 90 days → gates → shadow, then canary at 50 % in {DEPLOYMENT} → promotion", t)
    before = resolve_version(MODEL, "production").version
    now = datetime.now(UTC)
    online = _online()
    replayed = _shifted_traffic(online, features_of, before, now)
    traffic = time.perf_counter() - t
    t = step(f"{replayed:,} predictions of this hour replayed, {SHIFTED} x{FACTOR} for {SEGMENT[0]} = {SEGMENT[1]}", t)
    result = run_monitor(MONITOR, end=now)
    alert = next((a for a in result.alerts if a["subject"] == SHIFTED), None)
    t = step(f"monitor {MONITOR}: " + (escape(alert["message"][:160]) if alert else f"no alert on {SHIFTED}"), t)
    last_seen = max((e["id"] for e in history(POLICY, limit=1)), default=0)
    tick()
    events = [e for e in reversed(history(POLICY)) if e["id"] > last_seen]
    training = sum(float((e.get("detail") or {}).get("duration_s") or 0) for e in events if e["action"] == "pipeline" and e["outcome"] == "finished")
    t = step("the scheduler fired the policy: " + "; ".join(_event_text(e) for e in events if e["action"] != "backoff"), t)
    out: dict[str, Any] = {"policy": POLICY, "declared": declared, "replayed": replayed, "alert": alert and alert["message"],
                           "events": [{"action": e["action"], "outcome": e["outcome"], "version": e["model_version"]} for e in events],
                           "before": before, "training_s": training}
    rollout = next((e for e in events if e["action"] == "shadow" and e["outcome"] == "started"), None)
    if rollout is not None:
        from keel.deployments.specs import get_deployment

        customers = [int(c) for c in online["customer_id"]]
        judged: dict[str, Any] = {}
        for stage in ("shadow", "canary"):
            dep = get_deployment(DEPLOYMENT)
            if dep.spec.mode != stage:
                break
            t0_traffic = time.perf_counter()
            replay = _replay(customers, stage)
            traffic += time.perf_counter() - t0_traffic
            if stage == "shadow":
                what = (f"{replay['requests']:,} requests of up to {REQUEST_ROWS} customers answered by the champion, {replay['rows']:,} rows "
                        "scored by the shadow off the request path")
            else:
                what = (f"{replay['requests']:,} requests, every customer answered by the model it sticks to: "
                        + ", ".join(f"{r} {n:,}" for r, n in sorted(replay["answered"].items())))
            t = step(f"replayed traffic through {DEPLOYMENT}'s router ({dep.spec.describe()}): {what}, {replay['labelled']:,} labels fed back", t)
            replay["comparison"] = _stage_comparison()
            t = step(f"keel deploy compare {DEPLOYMENT} (revision {dep.revision}, this stage's rows): {replay['comparison']['recommendation']}", t)
            judged = advance(POLICY, comparison=replay["comparison"])
            then = (f"{judged['status']}: v{judged['version']} is now the canary at 50 % (revision {judged['revision']})"
                    if judged["status"] == "advanced" else judged["status"])
            t = step(f"the policy judged the {stage}: {_quality(judged.get('comparison'), stage)} → {then}", t)
            replay["judged"] = {k: v for k, v in judged.items() if k != "transition"}
            out[stage] = replay
        out["judged"] = {k: v for k, v in judged.items() if k != "transition"}
        version = resolve_version(MODEL, "production").version
        if version != before:
            _baseline(version)
            t = step(f"churn v{version} is production; its baseline is stored for monitoring", t)
    out["after"] = resolve_version(MODEL, "production").version
    total = time.perf_counter() - t0
    # the loop's own overhead: everything but training and the replayed traffic (the stand-in for the world's requests and labels)
    out.update(steps=steps, total_s=round(total, 3), traffic_s=round(traffic, 3), overhead_s=round(total - training - traffic, 3))
    return out


def _baseline(version: int) -> None:
    """The new version's monitoring baseline, from the fresh holdout its pipeline run returned (the model's inputs and the label)."""
    import pandas as pd

    from keel.loop.policies import history
    from keel.monitoring.baselines import build_baseline, has_baseline

    if has_baseline(MODEL, version):
        return
    finished = next(e for e in history(POLICY) if e["action"] == "pipeline" and e["outcome"] == "finished" and e["model_version"] == version)
    output = (finished.get("detail") or {}).get("output") or {}
    build_baseline(MODEL, pd.read_parquet(output["data"]), version=version, target=output["target"])


def _event_text(e: dict[str, Any]) -> str:
    d = e.get("detail") or {}
    v = f" v{e['model_version']}" if e.get("model_version") else ""
    extra = d.get("reason") or d.get("error") or ""
    if e["action"] == "pipeline" and e["outcome"] == "finished":
        extra = f"{d.get('duration_s', 0):.1f} s, {d.get('cached_steps', 0)} of {d.get('steps', 0)} steps cached"
    if e["action"] == "gates":
        res = (d.get("gates") or {}).get("results") or []
        extra = ", ".join(f"{r['name']}: {r['status']}" for r in res)
    if e["action"] in ("canary", "shadow"):
        extra = d.get("spec", "")
    return f"{e['action']} {e['outcome']}{v}" + (f" ({escape(str(extra))[:200]})" if extra else "")


def show(console: Console, out: dict[str, Any]) -> None:
    if not out:
        return
    t = Table(title=f"The loop: {MONITOR} alert → {POLICY} → churn v{out['after']} in production", header_style="bold")
    t.add_column("step", overflow="fold")
    t.add_column("seconds", justify="right")
    for s in out["steps"]:
        t.add_row(s["step"], f"{s['seconds']:.2f}")
    console.print(t)
    if out.get("shadow"):
        show_comparison(console, out["shadow"]["comparison"])
    if out.get("canary"):
        show_brief(console, out["canary"]["comparison"])
    console.print(f"  loop total {out['total_s']:.1f} s: training (the pipeline run) {out['training_s']:.1f} s, replayed traffic and labels "
                  f"{out['traffic_s']:.1f} s, the loop's own overhead {out['overhead_s']:.1f} s", highlight=False)
    console.print(f"  keel retraining history {POLICY} · keel models diagnose churn@production · keel lineage model churn/{out['after']}",
                  highlight=False)


def show_brief(console: Console, c: dict[str, Any]) -> None:
    """A canary's comparison in a few lines: per route requests and labels, the unpaired quality, the recommendation."""
    routes = ", ".join(f"{name} ({r['model']}/{','.join(str(v) for v in r['versions']) or r['ref']}, {r['weight']:g} %) {r['requests']:,} requests, "
                       f"{r['labelled']:,} labelled" for name, r in c["routes"].items())
    console.print(f"keel deploy compare {c['deployment']} (revision {c['revision']}, {c['mode']}, since {c['since'][:19]}): {routes}", highlight=False)
    q = c.get("quality")
    if q:
        console.print(f"  quality ({'paired' if q['paired'] else 'unpaired'}): {q['metric']} champion {q['champion']:.4f}, {c['mode']} "
                      f"{q['challenger']:.4f}, difference {q['difference']:+.4f} [{q['low']:+.4f}, {q['high']:+.4f}] at {q['confidence']:.0%}",
                      highlight=False)
    console.print(f"  [bold]recommendation:[/] {c['recommendation']}", highlight=False)


def show_comparison(console: Console, c: dict[str, Any]) -> None:
    """``keel deploy compare``'s report: per route traffic, errors, latency and labels; the shadow's agreement, its quality, the recommendation."""
    t = Table(title=f"keel deploy compare {c['deployment']} (revision {c['revision']}, {c['mode']}, since {c['since'][:16]})", header_style="bold")
    for col in ("route", "version", "share", "requests", "errors", "p50 ms", "p99 ms", "labelled"):
        t.add_column(col, justify="left" if col in ("route", "version", "share") else "right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for name, r in c["routes"].items():
        t.add_row(name, f"{r['model']}/{','.join(str(v) for v in r['versions']) or r['ref']}", "shadow" if r["shadow"] else f"{r['weight']:g} %",
                  f"{r['requests']:,}", f"{r['errors']:,}", ms(r["latency_p50_ms"]), ms(r["latency_p99_ms"]), f"{r['labelled']:,}")
    console.print(t)
    sh = c.get("shadow") or {}
    if sh.get("paired_requests"):
        d = sh.get("score_difference") or {}
        diff = (f"; score difference (shadow - champion) mean {d['mean']:+.4f}, |mean| {d['mean_abs']:.4f}, p5 {d['p5']:+.4f}, "
                f"median {d['p50']:+.4f}, p95 {d['p95']:+.4f}") if d else ""
        console.print(f"  paired on {sh['paired_requests']:,} requests: agreement {sh.get('agreement', float('nan')):.1%}{diff}", highlight=False)
    q = c.get("quality")
    if q:
        lab = q["labelled"]
        labelled = f"{lab:,}" if isinstance(lab, int) else ", ".join(f"{k} {v:,}" for k, v in lab.items())
        console.print(f"  quality ({'paired' if q['paired'] else 'unpaired'}, {labelled} labelled): {q['metric']} champion {q['champion']:.4f}, "
                      f"shadow {q['challenger']:.4f}, difference {q['difference']:+.4f} [{q['low']:+.4f}, {q['high']:+.4f}] at {q['confidence']:.0%}",
                      highlight=False)
    console.print(f"  [bold]recommendation:[/] {c['recommendation']}", highlight=False)
