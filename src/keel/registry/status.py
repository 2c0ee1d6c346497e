"""``keel models status``: the five questions, answered from recorded lineage.

For each environment: which version runs there, when it was trained and by
which run, its validation metrics beside the previous version's, what changed
since the previous version (params, data fingerprint, features, code,
packages), and which version a rollback would restore.
"""

from __future__ import annotations

from typing import Any

from keel.registry import config as C
from keel.registry.audit import history
from keel.registry.transitions import list_requests, rollback_target
from keel.registry.versions import ModelVersion, evaluations, get_model, resolve_version


def _metrics_side_by_side(cur: ModelVersion, prev: ModelVersion | None) -> tuple[str, list[dict[str, Any]]]:
    """(source, rows of metric/current/previous): a shared stored evaluation first, else the runs' metrics."""
    if prev is not None:
        theirs = {e["fingerprint"]: e for e in evaluations(prev.model, prev.version)}
        for e in evaluations(cur.model, cur.version):
            if e["fingerprint"] in theirs:
                a, b = e["metrics"], theirs[e["fingerprint"]]["metrics"]
                return f"evaluation on {e['dataset']} ({e['fingerprint'][:12]})", [
                    {"metric": k, "current": a.get(k), "previous": b.get(k)} for k in a
                ]
    mine = evaluations(cur.model, cur.version)
    if prev is None and mine:
        return f"evaluation on {mine[0]['dataset']}", [{"metric": k, "current": v, "previous": None} for k, v in mine[0]["metrics"].items()]
    a = cur.lineage.get("metrics") or {}
    b = (prev.lineage.get("metrics") or {}) if prev else {}
    return "training run metrics", [{"metric": k, "current": a.get(k), "previous": b.get(k)} for k in sorted(set(a) | set(b))]


def changes(prev: ModelVersion, cur: ModelVersion) -> dict[str, list[dict[str, Any]]]:
    """What changed from ``prev`` to ``cur``: params, data, features, code, packages."""
    from keel.errors import NotFoundError
    from keel.tracking.diff import diff_runs

    out: dict[str, list[dict[str, Any]]] = {"params": [], "data": [], "features": [], "code": [], "packages": []}
    try:
        d = diff_runs(prev.run_id, cur.run_id).to_dict()
        for key in ("params", "data", "code", "packages"):
            out[key] = [{"key": r["key"], "previous": r["a"], "current": r["b"]} for r in d[key]]
    except NotFoundError:  # a deleted run: fall back to the lineage recorded on the versions
        la, lb = prev.lineage, cur.lineage
        out["params"] = [{"key": k, "previous": la.get("params", {}).get(k), "current": lb.get("params", {}).get(k)}
                         for k in sorted(set(la.get("params", {})) | set(lb.get("params", {}))) if la.get("params", {}).get(k) != lb.get("params", {}).get(k)]
        if la.get("training_fingerprint") != lb.get("training_fingerprint"):
            out["data"] = [{"key": "training", "previous": la.get("training_fingerprint"), "current": lb.get("training_fingerprint")}]
        if la.get("code") != lb.get("code"):
            out["code"] = [{"key": "commit", "previous": (la.get("code") or {}).get("commit"), "current": (lb.get("code") or {}).get("commit")}]
        if la.get("package_lock_sha256") != lb.get("package_lock_sha256"):
            out["packages"] = [{"key": "lock", "previous": la.get("package_lock_sha256"), "current": lb.get("package_lock_sha256")}]
    for key in ("feature_service", "feature_service_version", "definitions_version"):
        a, b = prev.lineage.get(key), cur.lineage.get(key)
        if a != b:
            out["features"].append({"key": key, "previous": a, "current": b})
    sig_a = [c["name"] for c in (prev.meta.get("signature") or {}).get("inputs", [])]
    sig_b = [c["name"] for c in (cur.meta.get("signature") or {}).get("inputs", [])]
    if sig_a != sig_b:
        out["features"].append({"key": "inputs", "previous": ", ".join(c for c in sig_a if c not in sig_b) or None,
                                "current": ", ".join(c for c in sig_b if c not in sig_a) or None})
    return out


def status(name: str) -> dict[str, Any]:
    """What runs where, when it was trained and by which run, metrics beside the previous
    version's, what changed, and what a rollback would restore."""
    from datetime import UTC, datetime

    model = get_model(name)
    events = history(name)
    envs = []
    for env in C.environments():
        version = model.environments.get(env)
        entry: dict[str, Any] = {"environment": env, "version": version}
        if version is None:
            envs.append(entry)
            continue
        cur = resolve_version(name, version)
        moved = [e for e in events if e["target"] == env and e["outcome"] in ("applied", "forced") and e["to_version"] == version]
        last = moved[-1] if moved else None
        prev_v = rollback_target(name, env)
        prev = resolve_version(name, prev_v) if prev_v is not None else None
        source, rows = _metrics_side_by_side(cur, prev)
        trained_ms = cur.lineage.get("trained_end_ms") or cur.lineage.get("trained_start_ms")
        entry.update({
            "run_id": cur.run_id,
            "run_name": cur.lineage.get("run_name"),
            "trained_time": None if trained_ms is None else datetime.fromtimestamp(trained_ms / 1000, tz=UTC),
            "trained_by": cur.lineage.get("trained_by"),
            "registered_time": cur.created_time,
            "since": None if last is None else last["time"],
            "moved_by": None if last is None else last["user"],
            "how": None if last is None else f"{last['action']} ({last['outcome']})" + (f": {last['reason']}" if last.get("reason") else ""),
            "training_data": cur.lineage.get("training_fingerprint"),
            "feature_service": cur.lineage.get("feature_service"),
            "feature_service_version": cur.lineage.get("feature_service_version"),
            "code_commit": (cur.lineage.get("code") or {}).get("commit"),
            "previous_version": prev_v,
            "metrics_source": source,
            "metrics": rows,
            "changes": None if prev is None else changes(prev, cur),
            "rollback_to": prev_v,
        })
        envs.append(entry)
    return {
        "model": name, "owners": model.owners, "description": model.description, "tags": model.tags,
        "latest_version": model.latest_version, "environments": envs, "aliases": model.aliases,
        "pending_requests": list_requests(name, "pending"),
    }
