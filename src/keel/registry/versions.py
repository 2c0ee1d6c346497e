"""Registered models and their versions, created from a run with their lineage.

Lineage of a version: run -> training-set fingerprint (datasets table) ->
feature service / definitions version -> code commit (the run's git record) ->
package lock (its sha256). The version's artifact rows point at the run's
blobs under owner ``model_version`` so ``keel gc`` keeps them even if the run
is deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError, NotFoundError, ValidationError, WriteConflict
from keel.models.loader import model_id, parse_uri, version_row
from keel.models.package import META_FILE
from keel.store.metadata import get_metadata_store, insert_ignore, ms_to_datetime, now_ms
from keel.store.owners import add_owners, owners_of_many, seed_owners
from keel.store.schema import artifacts
from keel.store.schema.registry import (
    model_aliases,
    model_evaluations,
    model_versions,
    registered_models,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$")
SMOKE_TAG = "keel.smoke"  # on the runs of `--smoke` pipeline runs (sampled data, shrunk params)
_dry_versions: dict[tuple[str, int], ModelVersion] = {}  # dry-run versions handed out in this process


@dataclass
class RegisteredModel:
    name: str
    owners: list[str]
    description: str | None
    tags: dict[str, str]
    created_time: datetime | None
    updated_time: datetime | None
    latest_version: int | None = None
    environments: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    status: str = "active"  # active | archived | deleted
    archived_time: datetime | None = None
    deleted_time: datetime | None = None

    @property
    def owner(self) -> str:
        """The first owner (the one that created the model, unless removed)."""
        return self.owners[0] if self.owners else ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "owner": self.owner}  # "owner" kept for readers of the single-owner shape


@dataclass
class ModelVersion:
    model: str
    version: int
    run_id: str
    artifact_path: str
    flavor: str
    created_by: str
    created_time: datetime | None
    description: str | None
    meta: dict[str, Any]
    lineage: dict[str, Any]
    environments: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    status: str = "active"  # active | archived | deleted (a tombstone: lineage stays, files are released)
    archived_time: datetime | None = None
    deleted_time: datetime | None = None
    dry_run: bool = False  # from a smoke run: checked like a registration, never stored

    @property
    def uri(self) -> str:
        if self.dry_run:
            return f"runs:/{self.run_id}/{self.artifact_path}"
        return f"models:/{self.model}/{self.version}"

    def load(self) -> Any:
        from keel.models.loader import load_model

        return load_model(self.uri)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "uri": self.uri}


def version_from_dict(d: dict[str, Any]) -> ModelVersion:
    """A ModelVersion from its JSON form (the server's answer)."""
    from datetime import datetime as dt

    d = {k: v for k, v in d.items() if k != "uri"}
    for k in ("created_time", "archived_time", "deleted_time"):
        if d.get(k) is not None:
            d[k] = dt.fromisoformat(d[k])
    return ModelVersion(**d)


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"Invalid model name {name!r}.",
            hint="Use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit (e.g. 'churn').",
        )
    return name


def lifecycle_status(row: Any) -> str:
    """active, archived or deleted, from a registered_models or model_versions row."""
    return "deleted" if row.deleted_ms is not None else "archived" if row.archived_ms is not None else "active"


def _row_to_version(conn: sa.Connection, name: str, row: Any) -> ModelVersion:
    held = conn.execute(
        sa.select(model_aliases.c.name, model_aliases.c.kind).where(model_aliases.c.model_id == row.model_id, model_aliases.c.version == row.version)
    ).all()
    return ModelVersion(
        model=name, version=int(row.version), run_id=row.run_id, artifact_path=row.artifact_path, flavor=row.flavor,
        created_by=row.created_by, created_time=ms_to_datetime(row.created_ms), description=row.description,
        meta=json.loads(row.meta), lineage=json.loads(row.lineage),
        environments=sorted(n for n, k in held if k == "environment"), aliases=sorted(n for n, k in held if k == "alias"),
        status=lifecycle_status(row), archived_time=ms_to_datetime(row.archived_ms), deleted_time=ms_to_datetime(row.deleted_ms),
    )


def _lineage(run: Any, meta: dict[str, Any]) -> dict[str, Any]:
    git = run.env.get("git") or {}
    training = [d for d in run.datasets if d["context"] == "training"]
    return {
        "run_id": run.id,
        "run_name": run.name,
        "experiment": run.experiment,
        "trained_by": run.user,
        "trained_start_ms": int(run.start_time.timestamp() * 1000) if run.start_time else None,
        "trained_end_ms": int(run.end_time.timestamp() * 1000) if run.end_time else None,
        "data": [{"name": d["name"], "context": d["context"], "fingerprint": d["fingerprint"], "num_rows": d["num_rows"]} for d in run.datasets],
        "training_fingerprint": meta.get("training_fingerprint") or (training[0]["fingerprint"] if training else None),
        "feature_service": meta.get("feature_service"),
        "feature_service_version": meta.get("feature_service_version"),
        "definitions_version": meta.get("definitions_version"),
        "code": {"commit": git.get("commit"), "branch": git.get("branch"), "dirty": git.get("dirty"), "diff_sha256": git.get("diff_sha256")},
        "package_lock_sha256": run.env.get("lock_sha256"),
        "python": run.env.get("python") or meta.get("python"),
        "params": run.params,
        "metrics": {k: v for k, v in run.metrics.items()},
    }


def _source(source: Any) -> tuple[str, str]:
    """(run id ref, artifact path) from 'runs:/<id>/model', a ModelInfo, or a bare run id."""
    uri = getattr(source, "uri", source)
    if isinstance(uri, str) and uri.startswith("runs:/"):
        _kind, parts = parse_uri(uri)
        return parts["run"], parts["path"].strip("/")
    if isinstance(uri, str) and uri.startswith("models:/"):
        raise ValidationError(f"register_model got {uri!r}, which is already a registered version.", hint="Register from a run: 'runs:/<run_id>/model'.")
    if isinstance(uri, str) and uri:
        return uri, "model"
    raise ValidationError(f"Cannot register {source!r}.", hint="Pass 'runs:/<run_id>/model' or the value keel.log_model returned.")


def register_model(
    source: Any,
    name: str,
    *,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    owner: str | None = None,
    owners: Sequence[str] | None = None,
) -> ModelVersion:
    """Create the next version of model ``name`` from a logged model (``runs:/<run_id>/model``).

    The registered model is created on first use, owned by ``owners`` (or
    ``owner``; default: the acting user).
    Registering the same run's model twice returns the existing version.
    A model from a smoke run (``--smoke``) is checked as a registration would
    be and returned with ``dry_run=True``, numbered as the next version, but
    nothing is stored: such a model could never be promoted.
    """
    from keel.config import settings
    from keel.store.blobs import get_artifact_store
    from keel.store.remote import client
    from keel.tracking.query import get_run

    check_model_name(name)
    run_ref, path = _source(source)
    if (remote := client()) is not None:  # the server registers it, as the authenticated user
        body = {"source": f"runs:/{run_ref}/{path}", "description": description, "tags": tags, "owner": owner}
        return version_from_dict(remote.post_json(f"/v1/models/{name}/versions", body))
    run = get_run(run_ref)
    files = {a["path"]: a for a in run.artifacts if a["path"].startswith(path + "/")}
    meta_row = files.get(f"{path}/{META_FILE}")
    if meta_row is None:
        raise NotFoundError(
            f"Run {run.id} has no packaged model under '{path}/'.",
            hint="Log one with keel.log_model(model, name=...) inside the run, then register 'runs:/<run_id>/<name>'.",
        )
    meta = json.loads(get_artifact_store().get_bytes(meta_row["digest"], what=f"{path}/{META_FILE} of run {run.id}"))
    lineage = _lineage(run, meta)
    user = settings().acting_user
    store = get_metadata_store()
    if run.tags.get(SMOKE_TAG) == "true":
        with store.read() as conn:
            last = conn.execute(
                sa.select(sa.func.max(model_versions.c.version)).select_from(model_versions.join(registered_models, registered_models.c.id == model_versions.c.model_id))
                .where(registered_models.c.name == name)
            ).scalar()
        dry = ModelVersion(
            model=name, version=int(last or 0) + 1, run_id=run.id, artifact_path=path, flavor=str(meta.get("flavor") or "python"),
            created_by=user, created_time=None, description=description, meta=meta, lineage=lineage, dry_run=True,
        )
        _dry_versions[(name, dry.version)] = dry  # so promote(name, dry.version) finds it, as for a stored one
        return dry
    for attempt in range(5):
        try:
            with store.write() as conn:
                insert_ignore(
                    conn, registered_models,
                    {"name": name, "description": None, "tags": json.dumps({}), "created_ms": now_ms(), "updated_ms": now_ms()},
                    ["name"],
                )
                seed_owners(conn, "model", name, list(owners or ([owner] if owner else [user])))
                # The model row is locked (PostgreSQL) so that concurrent registrations number
                # their versions one after the other instead of colliding on max(version) + 1.
                model = conn.execute(sa.select(registered_models).where(registered_models.c.name == name).with_for_update()).one()
                mid = model.id
                if model.archived_ms is not None and model.deleted_ms is None:
                    raise ValidationError(
                        f"Model {name!r} is archived; it takes no new versions.",
                        hint=f"Restore it first: keel models archive {name} --restore.",
                    )
                if model.deleted_ms is not None:
                    # A deleted name comes back with its old versions still tombstoned: numbers are never reused.
                    conn.execute(sa.update(registered_models).where(registered_models.c.id == mid).values(deleted_ms=None, archived_ms=None))
                existing = conn.execute(
                    sa.select(model_versions).where(
                        model_versions.c.model_id == mid, model_versions.c.run_id == run.id, model_versions.c.artifact_path == path,
                        model_versions.c.deleted_ms.is_(None),
                    )
                ).first()
                if existing is not None:
                    return _row_to_version(conn, name, existing)
                last = conn.execute(sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.model_id == mid)).scalar()
                version = int(last or 0) + 1
                vid = conn.execute(
                    sa.insert(model_versions).values(
                        model_id=mid, version=version, run_id=run.id, artifact_path=path, flavor=str(meta.get("flavor") or "python"),
                        description=description, created_by=user, created_ms=now_ms(), meta=json.dumps(meta, default=str),
                        lineage=json.dumps(lineage, default=str),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                conn.execute(
                    sa.insert(artifacts),
                    [
                        {"owner_kind": "model_version", "owner_id": str(vid), "path": p, "digest": a["digest"], "size": a["size"], "media_type": None, "created_ms": now_ms()}
                        for p, a in files.items()
                    ],
                )
                conn.execute(sa.update(registered_models).where(registered_models.c.id == mid).values(updated_ms=now_ms()))
                if tags:
                    _merge_tags(conn, mid, tags)
                from keel.registry.audit import append_event

                event = append_event(conn, mid, name, "register", None, None, version, "applied", user, description)
                row = conn.execute(sa.select(model_versions).where(model_versions.c.id == vid)).one()
                mv = _row_to_version(conn, name, row)
            from keel.registry.events import emit

            emit(event)
            _record_feature_consumer(mv)
            return mv
        except WriteConflict:
            if attempt == 4:
                raise ConflictError(f"Could not register a version of {name!r}: concurrent registrations kept colliding.", hint="Retry.") from None
    raise AssertionError("unreachable")


def _record_feature_consumer(mv: ModelVersion) -> None:
    svc, ver = mv.meta.get("feature_service"), mv.meta.get("feature_service_version")
    if not svc or ver is None:
        return
    try:
        from keel.features.registry import record_consumer
    except ImportError:
        return
    record_consumer(str(svc), int(ver), "model", f"{mv.model}@v{mv.version}")


def _merge_tags(conn: sa.Connection, mid: int, tags: dict[str, str]) -> None:
    old = json.loads(conn.execute(sa.select(registered_models.c.tags).where(registered_models.c.id == mid)).scalar() or "{}")
    old.update({str(k): str(v) for k, v in tags.items()})
    conn.execute(sa.update(registered_models).where(registered_models.c.id == mid).values(tags=json.dumps(old), updated_ms=now_ms()))


def update_model(name: str, *, description: str | None = None, owners: Sequence[str] | None = None, tags: dict[str, str] | None = None) -> RegisteredModel:
    """Change a registered model's description or tags (merged), or add ``owners``.

    Owners are removed with :func:`keel.store.owners.remove_owners` (``keel owners rm``).
    """
    with get_metadata_store().write() as conn:
        mid = model_id(conn, name)
        values: dict[str, Any] = {"updated_ms": now_ms()}
        if description is not None:
            values["description"] = description
        conn.execute(sa.update(registered_models).where(registered_models.c.id == mid).values(**values))
        if tags:
            _merge_tags(conn, mid, tags)
    if owners:
        add_owners("model", name, owners)
    return get_model(name)


def _remote() -> Any:
    from keel.store.remote import client

    return client()


def _model_from_dict(d: dict[str, Any]) -> RegisteredModel:
    from datetime import datetime as dt

    for k in ("created_time", "updated_time", "archived_time", "deleted_time"):
        if d.get(k) is not None:
            d[k] = dt.fromisoformat(d[k])
    owner = d.pop("owner", None)  # the server's single-owner field, kept for old readers
    d.setdefault("owners", [o.strip() for o in str(owner or "").split(",") if o.strip()])
    return RegisteredModel(**{k: v for k, v in d.items() if k in RegisteredModel.__dataclass_fields__})


def get_model(name: str) -> RegisteredModel:
    if (remote := _remote()) is not None:
        from urllib.parse import quote

        return _model_from_dict(remote.json("GET", f"/v1/models/{quote(check_model_name(name))}"))
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        return _model(conn, mid)


def _model(conn: sa.Connection, mid: int) -> RegisteredModel:
    r = conn.execute(sa.select(registered_models).where(registered_models.c.id == mid)).one()
    latest = conn.execute(
        sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.model_id == mid, model_versions.c.deleted_ms.is_(None))
    ).scalar()
    held = conn.execute(sa.select(model_aliases.c.name, model_aliases.c.kind, model_aliases.c.version).where(model_aliases.c.model_id == mid)).all()
    return RegisteredModel(
        name=r.name, owners=owners_of_many("model", [r.name], conn).get(r.name, []), description=r.description, tags=json.loads(r.tags or "{}"),
        created_time=ms_to_datetime(r.created_ms), updated_time=ms_to_datetime(r.updated_ms), latest_version=latest,
        environments={n: int(v) for n, k, v in held if k == "environment"}, aliases={n: int(v) for n, k, v in held if k == "alias"},
        status=lifecycle_status(r), archived_time=ms_to_datetime(r.archived_ms), deleted_time=ms_to_datetime(r.deleted_ms),
    )


def list_models(*, include_deleted: bool = False, offset: int = 0, limit: int | None = None) -> list[RegisteredModel]:
    """Registered models by name; archived ones are listed (``status``), deleted ones only when asked.

    ``offset`` / ``limit`` page through them (the web UI lists 100 at a time).
    """
    if (remote := _remote()) is not None:
        found = [_model_from_dict(d) for d in remote.json("GET", "/v1/models", params={"include_deleted": include_deleted})]
        return found[offset:None if limit is None else offset + limit]
    q = sa.select(registered_models.c.id).order_by(registered_models.c.name).offset(max(0, int(offset)))
    if limit is not None:
        q = q.limit(max(0, int(limit)))
    if not include_deleted:
        q = q.where(registered_models.c.deleted_ms.is_(None))
    with get_metadata_store().read() as conn:
        ids = list(conn.execute(q).scalars())
        return [_model(conn, int(i)) for i in ids]


def _resolve_stored(name: str, version: Any) -> ModelVersion:
    check_model_name(name)
    other: str | None = None
    if isinstance(version, ModelVersion):
        other, version = version.model, version.version
    elif isinstance(version, str) and version.startswith("models:/"):
        _kind, parts = parse_uri(version)
        other = parts["name"]
        version = parts.get("version") or f"@{parts['alias']}"
    if other is not None and other != name:
        raise ValidationError(
            f"Version {version} belongs to model {other!r}, not {name!r}.",
            hint=f"Promote it as `keel models promote {other} {version} ...`, or register its run under {name!r} first.",
        )
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        ref: Any = version
        if isinstance(version, str) and not version.isdigit() and version != "latest":
            from keel.models.loader import resolve_alias

            ref = resolve_alias(conn, mid, name, version.lstrip("@"))[0]
        elif isinstance(version, bool) or not isinstance(version, int | str):
            raise ValidationError(f"Version {version!r} is not a number.", hint="Pass e.g. 3, 'latest' or an alias such as 'champion'.")
        return _row_to_version(conn, name, version_row(conn, mid, name, ref))


def resolve_version(name: str, version: Any) -> ModelVersion:
    """A version of ``name`` from an int, 'latest', an alias/environment, a models:/ URI or a ModelVersion.

    A version that belongs to another model is an error, not a silent switch. A
    number that is not stored but was handed out by a smoke run's dry-run
    registration in this process resolves to that dry-run version.
    """
    if isinstance(version, ModelVersion) and version.dry_run and version.model == name:
        return version
    if (remote := _remote()) is not None:
        from urllib.parse import quote

        ref = version.version if isinstance(version, ModelVersion) else version
        ref = str(ref).removeprefix(f"models:/{name}/").removeprefix(f"models:/{name}@").lstrip("@")
        return version_from_dict(remote.json("GET", f"/v1/models/{quote(check_model_name(name))}/versions/{quote(ref, safe='')}"))
    try:
        return _resolve_stored(name, version)
    except NotFoundError:
        dry = _dry_versions.get((name, version)) if isinstance(version, int) and not isinstance(version, bool) else None
        if dry is None:
            raise
        return dry


def get_version(name: str, version: Any) -> ModelVersion:
    return resolve_version(name, version)


def list_versions(name: str, *, include_deleted: bool = False, newest: int | None = None) -> list[ModelVersion]:
    """The versions of ``name``, oldest first; archived ones are listed (``status``), deleted ones only when asked.

    ``newest=N``: only the latest N versions, newest first (the web UI's page of versions).
    """
    if (remote := _remote()) is not None:
        from urllib.parse import quote

        found = [version_from_dict(d) for d in remote.json("GET", f"/v1/models/{quote(check_model_name(name))}/versions", params={"include_deleted": include_deleted})]
        return found if newest is None else found[::-1][:newest]
    q = sa.select(model_versions).order_by(model_versions.c.version)
    if newest is not None:
        q = sa.select(model_versions).order_by(model_versions.c.version.desc()).limit(max(0, int(newest)))
    if not include_deleted:
        q = q.where(model_versions.c.deleted_ms.is_(None))
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        rows = conn.execute(q.where(model_versions.c.model_id == mid)).all()
        return [_row_to_version(conn, name, r) for r in rows]


def evaluations(name: str, version: int | None = None) -> list[dict[str, Any]]:
    """Stored evaluation results (newest first)."""
    if (remote := _remote()) is not None:
        from datetime import datetime as dt
        from urllib.parse import quote

        found = remote.json("GET", f"/v1/models/{quote(check_model_name(name))}/evaluations", params=None if version is None else {"version": int(version)})
        return [{**e, "created_time": dt.fromisoformat(e["created_time"]) if e.get("created_time") else None} for e in found]
    with get_metadata_store().read() as conn:
        mid = model_id(conn, name)
        q = sa.select(model_evaluations).where(model_evaluations.c.model_id == mid)
        if version is not None:
            q = q.where(model_evaluations.c.version == int(version))
        rows = conn.execute(q.order_by(model_evaluations.c.id.desc())).all()
    return [
        {"id": r.id, "version": r.version, "dataset": r.dataset, "fingerprint": r.fingerprint, "task": r.task, "num_rows": r.num_rows,
         "created_by": r.created_by, "created_time": ms_to_datetime(r.created_ms), **json.loads(r.result)}
        for r in rows
    ]


def versions_of_run(run_id: str) -> list[ModelVersion]:
    """The model versions registered from run ``run_id`` (deleted ones left out), oldest first."""
    with get_metadata_store().read() as conn:
        rows = conn.execute(
            sa.select(model_versions, registered_models.c.name.label("model_name"))
            .join(registered_models, registered_models.c.id == model_versions.c.model_id)
            .where(model_versions.c.run_id == run_id, model_versions.c.deleted_ms.is_(None))
            .order_by(model_versions.c.created_ms, model_versions.c.id)
        ).all()
        return [_row_to_version(conn, r.model_name, r) for r in rows]
