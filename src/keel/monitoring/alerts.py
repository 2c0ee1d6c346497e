"""Alerts with context, their state in the metadata store, and the sinks that deliver them.

An alert is raised per monitor + subject (a feature, ``multivariate``, a service
objective or ``performance:<metric>``) and says what moved and by how much::

    charges: mean 64.9 → 84.9 (+31 %), ks 0.42 > 0.05 — v3, window 2026-01-08 → 2026-01-09, 1,204 predictions;
    top segments: charges in [80, 95) (31 % of traffic, 6 % in the reference)

with the distribution comparison as numbers and as an image (SVG; emails also attach
a PNG when matplotlib is installed), the model
version, the window, the affected prediction count and the report link.

Dedup: one open (or acknowledged) alert per monitor + subject; a repeat updates
it and counts the occurrence, and notifies again only after the cooldown (never
while acknowledged). ``keel alerts ls|ack|resolve``.

Sinks: ``log``; ``webhook`` (``format: slack`` for Slack-compatible
``{"text", "blocks"}``, else the alert as generic JSON), retried with exponential
back-off; ``email`` over SMTP (``host``, ``port``, ``from``, ``to``, optional
``username`` and ``password_env``: the *name* of an environment variable, so no
secret is stored). A delivery that fails is recorded on the alert (undelivered,
with the error) and retried on the next run. URLs are stored and reported
without their path or query (webhook tokens live there).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from keel.monitoring.monitors import MonitorResult, MonitorSpec

log = logging.getLogger("keel.monitoring.alerts")
SINKS = ("log", "webhook", "email")
STATUSES = ("open", "acked", "resolved")


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def safe_url(url: str) -> str:
    """scheme://host[:port] only: the path and query of a webhook often hold its token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


# -- building alerts from a result ------------------------------------------------

def _drift_alerts(spec: MonitorSpec, result: MonitorResult) -> list[dict[str, Any]]:
    from keel.monitoring.html import column_svg

    out = []
    for vr in result.versions:
        d = vr.drift
        if d is None:
            continue
        for c in d.columns:
            if not c.drifted:
                continue
            segs = d.top_segments(c.column, by=spec.segments or None)
            seg_text = "; top segments: " + ", ".join(
                f"{s['segment']} ({s['current_share'] * 100:.0f} % of traffic, {s['reference_share'] * 100:.0f} % in the reference)" for s in segs
            ) if segs else ""
            out.append({
                "subject": c.column, "level": "alert", "version": vr.version,
                "message": f"{c.describe()} — {spec.model} v{vr.version}, window {_window_text(result)}, {vr.rows:,} predictions{seg_text}",
                "context": {
                    "kind": "drift", "feature": c.column, "method": c.method, "statistic": c.statistic, "threshold": c.threshold,
                    "threshold_kind": c.threshold_kind, "shift": c.shift(), "reference": c.reference_summary, "current": c.current_summary,
                    "distribution": d.histogram(c.column), "image_svg": column_svg(d, c.column), "top_segments": segs,
                    "new_categories": c.new_categories, "affected_predictions": vr.rows, "version": vr.version,
                    "window_start": result.window_start, "window_end": result.window_end, "note": c.note,
                },
            })
        m = d.multivariate or {}
        if m.get("drifted"):
            out.append({"subject": "multivariate", "level": "alert", "version": vr.version,
                        "message": f"multivariate: PCA reconstruction error {m['statistic']:.4g} outside {m['lower']:.4g} … {m['upper']:.4g} "
                                   f"(reference {m['reference']:.4g}): the columns' joint distribution moved; {spec.model} v{vr.version}, window {_window_text(result)}",
                        "context": {"kind": "multivariate", **m, "affected_predictions": vr.rows, "version": vr.version}})
    return out


def _other_alerts(spec: MonitorSpec, result: MonitorResult) -> list[dict[str, Any]]:
    from keel.evaluation.metrics import GREATER_IS_BETTER

    out = []
    for key, o in result.service.get("objectives", {}).items():
        if o["level"] == "alert":
            op = "<" if key == "min_volume" else ">"
            out.append({"subject": key, "level": "alert", "version": None,
                        "message": f"{key}: {o['value']:.4g} {op} objective {o['limit']:.4g} — {spec.model}, window {_window_text(result)}",
                        "context": {"kind": "service", "objective": key, **o}})
    for vr in result.versions:
        base = vr.baseline_performance
        for source, metrics in (("performance", vr.performance.get("metrics", {})), ("estimated", vr.estimated)):
            for metric, value in metrics.items():
                if metric not in base or metric not in GREATER_IS_BETTER:
                    continue
                drop = (base[metric] - value) if GREATER_IS_BETTER[metric] else (value - base[metric])
                if drop > spec.performance_drop:
                    cov = vr.performance.get("coverage")
                    extra = f", label coverage {cov * 100:.0f} %" if source == "performance" and cov is not None else " (estimated without labels)"
                    out.append({"subject": f"{source}:{metric}", "level": "alert", "version": vr.version,
                                "message": f"{metric} {value:.3f} vs {base[metric]:.3f} at validation ({-drop:+.3f}){extra} — {spec.model} v{vr.version}, window {_window_text(result)}",
                                "context": {"kind": source, "metric": metric, "value": value, "baseline": base[metric], "drop": drop,
                                            "coverage": cov, "version": vr.version, "affected_predictions": vr.rows}})
    return out


def _window_text(result: MonitorResult) -> str:
    return f"{result.window_start:%Y-%m-%d %H:%M} → {result.window_end:%Y-%m-%d %H:%M} UTC"


def raise_alerts(spec: MonitorSpec, result: MonitorResult) -> list[dict[str, Any]]:
    """Open or update the alerts a result calls for, deliver what is due; returns them."""
    from keel.monitoring.feedback import parse_duration

    found = _drift_alerts(spec, result) + _other_alerts(spec, result)
    cooldown_ms = int(parse_duration(spec.cooldown).total_seconds() * 1000)
    now = int(time.time() * 1000)
    raised = []
    for a in found:
        a["context"]["report"] = f"keel monitor report {spec.name} -o {spec.name}.html"
        alert, notify = _upsert(spec.name, spec.model, a, now, cooldown_ms)
        if notify:
            alert["deliveries"] = deliver(alert, spec.alerts)
            _save_deliveries(alert["id"], alert["deliveries"], now)
        raised.append(alert)
    retry_undelivered(spec)
    return raised


def record_alert(source: str, model: str, subject: str, message: str, context: dict[str, Any], *, version: int | None = None,
                 sinks: list[dict[str, Any]] | None = None, cooldown: str = "6h") -> dict[str, Any]:
    """Open (or update, deduplicated like a monitor's) an alert raised by something other than a monitor run.

    ``source`` takes the monitor's place (e.g. ``retraining:churn-retrain`` for a failed
    retraining); the alert is delivered to ``sinks`` (default: the log).
    """
    from keel.monitoring.feedback import parse_duration

    now = int(time.time() * 1000)
    a = {"subject": subject, "level": "alert", "version": version, "message": message, "context": context}
    alert, notify = _upsert(source, model, a, now, int(parse_duration(cooldown).total_seconds() * 1000))
    if notify:
        alert["deliveries"] = deliver(alert, sinks if sinks is not None else [{"kind": "log"}])
        _save_deliveries(alert["id"], alert["deliveries"], now)
    return alert


def _upsert(monitor: str, model: str, a: dict[str, Any], now: int, cooldown_ms: int) -> tuple[dict[str, Any], bool]:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    context = json.dumps(a["context"], default=str)
    with get_metadata_store().write() as conn:
        row = conn.execute(sa.select(t).where(t.c.monitor == monitor, t.c.subject == a["subject"], t.c.status.in_(("open", "acked")))).first()
        if row is None:
            aid = conn.execute(sa.insert(t).values(
                monitor=monitor, model=model, version=a["version"], subject=a["subject"], level=a["level"], status="open",
                message=a["message"], context=context, deliveries="[]", occurrences=1, first_ms=now, last_ms=now, notified_ms=None,
            )).inserted_primary_key[0]  # type: ignore[index]
            notify = True
        else:
            aid = row.id
            conn.execute(sa.update(t).where(t.c.id == aid).values(message=a["message"], context=context, version=a["version"],
                                                                  occurrences=row.occurrences + 1, last_ms=now))
            notify = row.status == "open" and (row.notified_ms is None or now - row.notified_ms >= cooldown_ms)
        stored = conn.execute(sa.select(t).where(t.c.id == aid)).one()
    return _as_dict(stored), notify


def _save_deliveries(aid: int, deliveries: list[dict[str, Any]], now: int) -> None:
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    with get_metadata_store().write() as conn:
        conn.execute(sa.update(t).where(t.c.id == aid).values(deliveries=json.dumps(deliveries, default=str), notified_ms=now))


def retry_undelivered(spec: MonitorSpec) -> None:
    """Deliver again, to the sinks that failed, the open alerts of this monitor."""
    for alert in list_alerts(monitor=spec.name, status="open"):
        failed = [d for d in alert["deliveries"] if not d.get("delivered")]
        if not failed or not alert["deliveries"]:
            continue
        names = {d["sink"] for d in failed}
        sinks = [s for s in spec.alerts if sink_name(s) in names]
        again = {d["sink"]: d for d in deliver(alert, sinks)}
        merged = [again.get(d["sink"], d) for d in alert["deliveries"]]
        _save_deliveries(alert["id"], merged, int(time.time() * 1000))


# -- sinks ------------------------------------------------------------------------

def sink_name(sink: dict[str, Any]) -> str:
    kind = sink.get("kind")
    if kind == "webhook":
        return f"webhook:{safe_url(str(sink.get('url', '')))}"
    if kind == "email":
        return f"email:{','.join(sink.get('to') or [])}"
    return str(kind)


def deliver(alert: dict[str, Any], sinks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send ``alert`` to each sink; one record per sink: delivered, attempts, error."""
    out = []
    for sink in sinks:
        kind = sink.get("kind")
        name = sink_name(sink)
        try:
            if kind == "log":
                log.warning("[%s] %s", alert["monitor"], alert["message"])
                out.append({"sink": name, "delivered": True, "attempts": 1})
            elif kind == "webhook":
                out.append({"sink": name, **_webhook(alert, sink)})
            elif kind == "email":
                out.append({"sink": name, **_email(alert, sink)})
            else:
                out.append({"sink": name, "delivered": False, "attempts": 0, "error": f"unknown sink kind {kind!r} (use {', '.join(SINKS)})"})
        except Exception as exc:  # a sink never breaks the monitor run; the failure is kept on the alert
            out.append({"sink": name, "delivered": False, "attempts": 1, "error": f"{type(exc).__name__}: {exc}"})
    return out


def _slack_body(alert: dict[str, Any]) -> dict[str, Any]:
    ctx = alert["context"]
    lines = [f"*{alert['monitor']}* — {alert['message']}"]
    for s in ctx.get("top_segments") or []:
        lines.append(f"• {s['segment']}: {s['current_share'] * 100:.1f} % of traffic (reference {s['reference_share'] * 100:.1f} %)")
    return {"text": alert["message"], "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]}


def _generic_body(alert: dict[str, Any]) -> dict[str, Any]:
    ctx = {k: v for k, v in alert["context"].items() if k != "image_svg"}
    return {"id": alert["id"], "monitor": alert["monitor"], "model": alert["model"], "version": alert["version"], "subject": alert["subject"],
            "level": alert["level"], "status": alert["status"], "message": alert["message"], "occurrences": alert["occurrences"], "context": ctx}


def _webhook(alert: dict[str, Any], sink: dict[str, Any]) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    url = str(sink.get("url") or "")
    if not url.startswith(("http://", "https://")):
        return {"delivered": False, "attempts": 0, "error": "webhook url must start with http:// or https://"}
    body = _slack_body(alert) if sink.get("format") == "slack" else _generic_body(alert)
    data = json.dumps(body, default=str).encode()
    retries, backoff = int(sink.get("retries", 3)), float(sink.get("backoff", 0.5))
    error = ""
    for attempt in range(1, retries + 1):
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=float(sink.get("timeout", 5))) as resp:
                if 200 <= resp.status < 300:
                    return {"delivered": True, "attempts": attempt}
                error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code != 429:
                return {"delivered": False, "attempts": attempt, "error": error}  # a client error does not heal by retrying
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{type(reason).__name__}: {reason}".replace(url, safe_url(url))
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    return {"delivered": False, "attempts": retries, "error": error}


def _email(alert: dict[str, Any], sink: dict[str, Any]) -> dict[str, Any]:
    import os
    import smtplib
    from email.message import EmailMessage

    to = list(sink.get("to") or [])
    if not to or not sink.get("host"):
        return {"delivered": False, "attempts": 0, "error": "email sink needs host and to"}
    msg = EmailMessage()
    msg["Subject"] = f"[keel] {alert['monitor']}: {alert['subject']} ({alert['level']})"
    msg["From"] = str(sink.get("from") or "keel@localhost")
    msg["To"] = ", ".join(to)
    ctx = alert["context"]
    text = [alert["message"], ""]
    for s in ctx.get("top_segments") or []:
        text.append(f"- {s['segment']}: {s['current_share'] * 100:.1f} % of traffic (reference {s['reference_share'] * 100:.1f} %)")
    dist = ctx.get("distribution")
    if dist:
        text += ["", "distribution (reference → current share):"]
        labels = dist.get("labels") or [f"{a:.4g}…{b:.4g}" for a, b in zip(dist["edges"][:-1], dist["edges"][1:], strict=True)]
        text += [f"  {lab}: {r * 100:.1f} % → {c * 100:.1f} %" for lab, r, c in zip(labels, dist["reference"], dist["current"], strict=True)]
    text += ["", f"report: {ctx.get('report', '')}"]
    msg.set_content("\n".join(text))
    if ctx.get("image_svg"):
        msg.add_attachment(ctx["image_svg"].encode(), maintype="image", subtype="svg+xml", filename=f"{alert['subject']}.svg")
    png = distribution_png(dist, alert["message"].split(" — ")[0]) if dist else None
    if png is not None:  # mail clients that do not show SVG show this
        msg.add_attachment(png, maintype="image", subtype="png", filename=f"{alert['subject']}.png")
    password = os.environ.get(str(sink["password_env"])) if sink.get("password_env") else None
    with smtplib.SMTP(str(sink["host"]), int(sink.get("port", 25)), timeout=float(sink.get("timeout", 10))) as smtp:
        if sink.get("starttls"):
            smtp.starttls()
        if sink.get("username") and password:
            smtp.login(str(sink["username"]), password)
        smtp.send_message(msg)
    return {"delivered": True, "attempts": 1}


def distribution_png(dist: dict[str, Any], title: str) -> bytes | None:
    """The distribution comparison as a PNG (matplotlib, when installed: ``keel[plots]``); None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.2))
    try:
        if dist.get("edges"):
            edges = np.asarray(dist["edges"])
            ax.stairs(dist["reference"], edges, fill=True, alpha=0.5, label="reference")
            ax.stairs(dist["current"], edges, fill=True, alpha=0.5, label="current")
        else:
            x = np.arange(len(dist.get("labels") or []))
            ax.bar(x - 0.2, dist["reference"], 0.4, label="reference")
            ax.bar(x + 0.2, dist["current"], 0.4, label="current")
            ax.set_xticks(x, dist.get("labels") or [], rotation=45, ha="right")
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("share of rows")
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    finally:
        plt.close(fig)


# -- state --------------------------------------------------------------------------

def _as_dict(row: Any) -> dict[str, Any]:
    from keel.store.metadata import ms_to_datetime

    d = dict(row._mapping)
    d["context"] = json.loads(d["context"])
    d["deliveries"] = json.loads(d["deliveries"])
    d["delivered"] = bool(d["deliveries"]) and all(x.get("delivered") for x in d["deliveries"])
    for k in ("first_ms", "last_ms", "notified_ms", "resolved_ms"):
        d[k.replace("_ms", "_time")] = ms_to_datetime(d.pop(k))
    return d


def list_alerts(*, status: str | None = None, monitor: str | None = None, limit: int | None = None,
                offset: int = 0) -> list[dict[str, Any]]:
    """Alerts, newest first; ``status`` open | acked | resolved; ``limit``/``offset`` page them."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    if status is not None and status not in STATUSES:
        from keel.errors import did_you_mean

        raise ValidationError(f"Alert status {status!r} is not known." + did_you_mean(status, STATUSES), hint=f"Use {', '.join(STATUSES)}.")
    q = sa.select(t)
    if status:
        q = q.where(t.c.status == status)
    if monitor:
        q = q.where(t.c.monitor == monitor)
    with get_metadata_store().read() as conn:
        q = q.order_by(t.c.id.desc())
        if limit is not None:
            q = q.limit(int(limit)).offset(int(offset))
        return [_as_dict(r) for r in conn.execute(q).all()]


def count_alerts(*, by: str = "monitor") -> dict[tuple[str, str], int]:
    """``{(monitor or model, status): count}`` from one aggregate query (``by``: monitor | model)."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    if by not in ("monitor", "model"):
        raise ValidationError(f"count_alerts(by={by!r}): use monitor or model.")
    key = t.c[by]
    with get_metadata_store().read() as conn:
        rows = conn.execute(sa.select(key, t.c.status, sa.func.count()).group_by(key, t.c.status)).all()
    return {(str(k), str(s)): int(n) for k, s, n in rows}


def get_alert(alert_id: int) -> dict[str, Any]:
    """One alert by id."""
    import sqlalchemy as sa

    from keel.store.metadata import get_metadata_store
    from keel.store.schema.monitoring import alerts as t

    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == int(alert_id))).first()
    if row is None:
        raise NotFoundError(f"Alert {alert_id} does not exist.", hint="List alerts with: keel alerts ls")
    return _as_dict(row)


def without_image(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert without the inline SVG of its context (for listings: ``keel alerts ls --json``, the server)."""
    return {k: v for k, v in alert.items() if k != "context"} | {"context": {k: v for k, v in (alert.get("context") or {}).items() if k != "image_svg"}}


def _transition(alert_id: int, status: str, user: str | None) -> dict[str, Any]:
    import sqlalchemy as sa

    from keel.config import settings
    from keel.store.metadata import get_metadata_store, now_ms
    from keel.store.schema.monitoring import alerts as t

    with get_metadata_store().write() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == int(alert_id))).first()
        if row is None:
            raise NotFoundError(f"Alert {alert_id} does not exist.", hint="List alerts with: keel alerts ls")
        if row.status == "resolved":
            raise ValidationError(f"Alert {alert_id} is already resolved.", hint="A new occurrence opens a new alert.")
        values: dict[str, Any] = {"status": status}
        if status == "acked":
            values["acked_by"] = user or settings().acting_user
        else:
            values["resolved_ms"] = now_ms()
            values["resolved_by"] = user or settings().acting_user
        conn.execute(sa.update(t).where(t.c.id == row.id).values(**values))
        return _as_dict(conn.execute(sa.select(t).where(t.c.id == row.id)).one())


def ack_alert(alert_id: int, user: str | None = None) -> dict[str, Any]:
    """Acknowledge: it stays open for dedup but sends no more notifications."""
    return _transition(alert_id, "acked", user)


def resolve_alert(alert_id: int, user: str | None = None) -> dict[str, Any]:
    """Resolve: the next occurrence opens a new alert. Records who (``user``, default the acting user)."""
    return _transition(alert_id, "resolved", user)


def check_sinks(sinks: list[dict[str, Any]]) -> None:
    for s in sinks:
        if s.get("kind") not in SINKS:
            from keel.errors import did_you_mean

            raise ValidationError(f"Alert sink kind {s.get('kind')!r} is not known." + did_you_mean(str(s.get("kind")), SINKS), hint=f"Use {', '.join(SINKS)}.")

