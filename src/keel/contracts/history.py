"""Every validation kept in the metadata store, and the profiles references use."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.contracts.profile import Profile
from keel.contracts.report import CheckResult, Report
from keel.errors import ConflictError, NotFoundError
from keel.store.metadata import get_metadata_store, ms_to_datetime, now_ms
from keel.store.owners import seed_owners
from keel.store.schema.contracts import contract_profiles, contract_results, contract_validations
from keel.store.schema.tracking import artifacts


def save_report(
    report: Report,
    *,
    dataset_fingerprint: str | None = None,
    source: str | None = None,
    profile: Profile | None = None,
    batch_time: datetime | None = None,
    owners: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Store ``report`` (and the accepted batch's profile) in one transaction; returns its id.

    ``owners`` ({contract: owners}) become each contract's first owners when it has none yet.

    ``batch_time`` (default: now) is the time the batch stands for; history is ordered by it.
    """
    store = get_metadata_store()
    vid = uuid.uuid4().hex
    created = now_ms() if batch_time is None else int(batch_time.timestamp() * 1000)
    digest = size = None
    if profile is not None:
        from keel.store.blobs import get_artifact_store

        digest, size = get_artifact_store().put_bytes(profile.to_json())
    with store.write() as conn:
        conn.execute(
            contract_validations.insert().values(
                id=vid, target=report.target, contract=report.contract, contract_hash=report.contract_hash,
                stage=report.stage, run_id=report.run_id, dataset_fingerprint=dataset_fingerprint, source=source,
                num_rows=report.num_rows, passed=report.passed, errors=len(report.errors),
                warnings=len(report.warnings), duration_ms=int(report.duration_s * 1000), created_ms=created,
            )
        )
        rows = [
            (
                vid, r.check_id, r.kind, r.column, r.severity, r.status, r.expected,
                json.dumps(r.to_dict()["observed"]), r.failing_count, _finite(r.failing_fraction),
                json.dumps(r.to_dict()["sample"]), r.message or None,
            )
            for r in report.results
        ]
        store.insert_many(conn, contract_results, rows)
        if profile is not None and digest is not None and size is not None:
            _insert_profile(conn, report.target, "batch", None, vid, digest, size, profile.num_rows, created, created)
        for name, users in (owners or {}).items():
            seed_owners(conn, "contract", name, users)
    report.validation_id = vid
    report.created = ms_to_datetime(created)
    return vid


def save_profile(target: str, profile: Profile, *, kind: str = "snapshot", name: str | None = None, batch_time: datetime | None = None) -> int:
    """Store a profile (a pinned snapshot when ``name`` is given); returns its id."""
    from keel.store.blobs import get_artifact_store

    digest, size = get_artifact_store().put_bytes(profile.to_json())
    created = now_ms()
    batch_ms = created if batch_time is None else int(batch_time.timestamp() * 1000)
    with get_metadata_store().write() as conn:
        if name is not None:
            found = conn.execute(sa.select(contract_profiles.c.id).where(contract_profiles.c.name == name)).first()
            if found is not None:
                raise ConflictError(
                    f"A snapshot named {name!r} already exists.",
                    hint="Pick another name; pinned snapshots never change, so references to them stay reproducible.",
                )
        return _insert_profile(conn, target, kind, name, None, digest, size, profile.num_rows, batch_ms, created)


def _insert_profile(conn: sa.Connection, target: str, kind: str, name: str | None, vid: str | None, digest: str, size: int, num_rows: int, batch_ms: int, created: int) -> int:
    res = conn.execute(
        contract_profiles.insert().values(
            target=target, kind=kind, name=name, validation_id=vid, digest=digest,
            num_rows=num_rows, batch_ms=batch_ms, created_ms=created,
        )
    )
    pid = int(res.inserted_primary_key[0])  # type: ignore[index]
    conn.execute(
        artifacts.insert().values(
            owner_kind="contract_profile", owner_id=str(pid), path="profile.json", digest=digest,
            size=size, media_type="application/json", created_ms=created,
        )
    )
    return pid


def load_profile(row: Any) -> Profile:
    from keel.store.blobs import get_artifact_store

    return Profile.from_json(get_artifact_store().get_bytes(row.digest, what=f"profile {row.id}"))


def find_profile(target: str | None = None, *, name: str | None = None, kind: str = "batch", start_ms: int | None = None, end_ms: int | None = None) -> Any:
    """The newest matching profile row, or None."""
    t = contract_profiles
    query = sa.select(t)
    if name is not None:
        query = query.where(t.c.name == name)
    else:
        query = query.where(t.c.target == target, t.c.kind == kind)
    if start_ms is not None:
        query = query.where(t.c.batch_ms >= start_ms)
    if end_ms is not None:
        query = query.where(t.c.batch_ms < end_ms)
    with get_metadata_store().read() as conn:
        return conn.execute(query.order_by(t.c.batch_ms.desc(), t.c.id.desc()).limit(1)).first()


def snapshot_names() -> list[str]:
    with get_metadata_store().read() as conn:
        return [r[0] for r in conn.execute(sa.select(contract_profiles.c.name).where(contract_profiles.c.name.is_not(None)))]


@dataclass
class CheckHistory:
    """One check's story over a target's validations (oldest first)."""

    check_id: str
    severity: str
    status: str  # latest status
    failing_since: datetime | None  # start of the current failing streak
    first_failed: datetime | None
    last_passed: datetime | None
    failures: int
    validations: int
    statuses: list[str]


def history(target: str, *, limit: int = 50) -> tuple[list[dict[str, Any]], list[CheckHistory]]:
    """The last ``limit`` validations of ``target`` and, per check, when it started failing."""
    v, r = contract_validations, contract_results
    with get_metadata_store().read() as conn:
        vals = conn.execute(
            sa.select(v).where(v.c.target == target).order_by(v.c.created_ms.desc(), v.c.id.desc()).limit(limit)
        ).mappings().all()
        if not vals:
            known = [x[0] for x in conn.execute(sa.select(v.c.target).distinct())]
            from keel.errors import did_you_mean

            raise NotFoundError(
                f"No validations recorded for {target!r}.{did_you_mean(target, known)}",
                hint="Run `keel validate` first; known targets: " + (", ".join(sorted(known)[:10]) or "none") + ".",
            )
        ids = [x["id"] for x in vals]
        res = conn.execute(sa.select(r.c.validation_id, r.c.check_id, r.c.severity, r.c.status).where(r.c.validation_id.in_(ids))).all()
    order = {vid: i for i, vid in enumerate(reversed(ids))}
    when = {x["id"]: ms_to_datetime(x["created_ms"]) for x in vals}
    per_check: dict[str, list[tuple[int, str, str, str]]] = {}
    for vid, cid, sev, status in res:
        per_check.setdefault(cid, []).append((order[vid], vid, sev, status))
    out = []
    for cid, items in per_check.items():
        items.sort()
        statuses = [s for _, _, _, s in items]
        failed = [(i, vid) for i, vid, _, s in items if s in ("fail", "error")]
        passed = [(i, vid) for i, vid, _, s in items if s == "pass"]
        since = None
        if statuses[-1] in ("fail", "error"):
            k = len(items) - 1
            while k > 0 and items[k - 1][3] in ("fail", "error"):
                k -= 1
            since = when[items[k][1]]
        out.append(
            CheckHistory(
                cid, items[-1][2], statuses[-1], since,
                when[failed[0][1]] if failed else None, when[passed[-1][1]] if passed else None,
                len(failed), len(items), statuses,
            )
        )
    out.sort(key=lambda h: (h.status not in ("fail", "error"), h.failing_since.timestamp() if h.failing_since else 0.0, h.check_id))
    validations = [
        {
            "id": x["id"], "created": when[x["id"]], "contract": x["contract"], "stage": x["stage"],
            "run_id": x["run_id"], "num_rows": x["num_rows"], "passed": bool(x["passed"]),
            "errors": x["errors"], "warnings": x["warnings"], "source": x["source"],
        }
        for x in vals
    ]
    return validations, out


def load_report(validation_id: str) -> Report:
    """A stored report by id."""
    v, r = contract_validations, contract_results
    with get_metadata_store().read() as conn:
        row = conn.execute(sa.select(v).where(v.c.id == validation_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"No validation with id {validation_id!r}.")
        results = conn.execute(sa.select(r).where(r.c.validation_id == validation_id)).mappings().all()
    return Report(
        contract=row["contract"], target=row["target"], contract_hash=row["contract_hash"], num_rows=row["num_rows"],
        results=[
            CheckResult(
                x["check_id"], x["kind"], x["column"], x["severity"], x["status"], x["expected"],
                json.loads(x["observed"]) if x["observed"] else None, x["failing_count"], x["failing_fraction"],
                json.loads(x["sample"]) if x["sample"] else [], x["message"] or "",
            )
            for x in results
        ],
        stage=row["stage"], run_id=row["run_id"], validation_id=row["id"], created=ms_to_datetime(row["created_ms"]),
        duration_s=row["duration_ms"] / 1000,
    )


def _finite(v: float | None) -> float | None:
    if v is None or v != v or v in (float("inf"), float("-inf")):
        return None
    return v
