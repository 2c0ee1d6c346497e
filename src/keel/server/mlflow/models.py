"""MLflow 3 logged models and the model registry (``/api/2.0/mlflow/logged-models``, ``registered-models``, ``model-versions``).

A logged model (``m-<id>``) keeps MLflow's files as it uploaded them. When it is
finalized READY, keel also packages it into its source run as a keel package of
the ``mlflow`` flavor (``runs:/<run>/<name>``), and an MLflow model version is a
keel model version registered from that package with keel's own
``register_model`` — lineage, audit, gates and promotion included. The other
way round, a version registered by keel is offered to MLflow clients through
its package's ``MLmodel`` file.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response

from keel.config import settings
from keel.errors import NotFoundError, ValidationError
from keel.server.auth import Identity, authorize, identity
from keel.server.mlflow import runs as R
from keel.server.mlflow._protocol import (
    MlflowError,
    MlflowRoute,
    already_exists,
    body,
    integer,
    json_response,
    key_values,
    number,
    strings,
    text,
)
from keel.store.metadata import insert_ignore, now_ms
from keel.store.owners import owners_of_many, seed_owners
from keel.store.schema import artifacts
from keel.store.schema.mlflow import mlflow_logged_models, mlflow_run_models
from keel.store.schema.registry import model_versions, registered_models

router = APIRouter(prefix="/api/2.0/mlflow", route_class=MlflowRoute, tags=["mlflow"])
LM_STATUS = {"LOGGED_MODEL_PENDING": "PENDING", "LOGGED_MODEL_READY": "READY", "LOGGED_MODEL_UPLOAD_FAILED": "FAILED"}
LM_STATUS_OUT = {v: k for k, v in LM_STATUS.items()}
_LOGGED_URI = re.compile(r"^models:/(m-[0-9a-f]{32})/?$")
_RUNS_URI = re.compile(r"^runs:/([0-9a-f]{32})/(.+)$")
_ARTIFACTS_URI = re.compile(r"^mlflow-artifacts:/+(.+)$")


def _ok() -> Response:
    return json_response({})


# -- logged models ---------------------------------------------------------------------------

def logged_model_row(model_id: str) -> Any:
    with R.store().read() as conn:
        row = conn.execute(sa.select(mlflow_logged_models).where(mlflow_logged_models.c.id == model_id)).first()
    if row is None:
        raise NotFoundError(f"Logged model with ID '{model_id}' not found.", hint="Log one with mlflow.<flavor>.log_model().")
    return row


def logged_model_json(row: Any) -> dict[str, Any]:
    with R.store().read() as conn:
        regs = conn.execute(
            sa.select(registered_models.c.name, model_versions.c.version, model_versions.c.meta)
            .join(registered_models, registered_models.c.id == model_versions.c.model_id)
            .where(model_versions.c.run_id == (row.source_run_id or ""), model_versions.c.deleted_ms.is_(None))
        ).all()
        run_metrics = []
        if row.source_run_id:
            from keel.store.schema import metrics

            run_metrics = [{"key": m.key, "value": number(m.value), "timestamp": m.ts, "step": m.step,
                            "run_id": row.source_run_id}
                           for m in conn.execute(sa.select(metrics).where(metrics.c.run_id == row.source_run_id))]
    registrations = [{"name": n, "version": str(v)} for n, v, meta in regs if (json.loads(meta).get("mlflow") or {}).get("model_id") == row.id]
    info = {
        "model_id": row.id, "experiment_id": str(row.experiment_id), "name": row.name, "creation_timestamp_ms": row.created_ms,
        "last_updated_timestamp_ms": row.updated_ms, "artifact_uri": f"mlflow-artifacts:/{row.experiment_id}/models/{row.id}/artifacts",
        "status": LM_STATUS_OUT.get(row.status, "LOGGED_MODEL_STATUS_UNSPECIFIED"), "model_type": row.model_type or "",
        "source_run_id": row.source_run_id or "", "status_message": row.status_message or "",
        "tags": [{"key": k, "value": v} for k, v in json.loads(row.tags).items()], "registrations": registrations,
    }
    return {"info": info, "data": {"params": [{"key": k, "value": v} for k, v in json.loads(row.params).items()], "metrics": run_metrics}}


def _authorize_model(ident: Identity, row: Any, action: str) -> None:
    authorize(ident, action, experiment=R.experiment_name(int(row.experiment_id)))  # type: ignore[arg-type]


@router.post("/logged-models", summary="MLflow: create a logged model")
async def create_logged_model(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    exp_id = R.resolve_experiment(text(data, "experiment_id"))
    authorize(ident, "write", experiment=R.experiment_name(exp_id))
    run_id = text(data, "source_run_id")
    if run_id:
        R.run_experiment(run_id)
    mid = "m-" + uuid.uuid4().hex
    name = text(data, "name") or f"model-{mid[2:10]}"
    now = now_ms()
    with R.store().write() as conn:
        conn.execute(sa.insert(mlflow_logged_models).values(
            id=mid, experiment_id=exp_id, name=name[:255], source_run_id=run_id, model_type=(text(data, "model_type") or "")[:255] or None, status="PENDING",
            status_message=None, creator=settings().acting_user, created_ms=now, updated_ms=now,
            tags=json.dumps(key_values(data, "tags")), params=json.dumps(key_values(data, "params")),
        ))
    return json_response({"model": logged_model_json(logged_model_row(mid))})


@router.post("/logged-models/search", summary="MLflow: search logged models")
async def search_logged_models(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    exp_ids = [R.resolve_experiment(e) for e in strings(data, "experiment_ids")]
    for e in exp_ids:
        authorize(ident, "read", experiment=R.experiment_name(e))
    max_results = integer(data, "max_results", default=100) or 100
    offset = integer(data, "page_token", default=0) or 0
    q = sa.select(mlflow_logged_models).order_by(mlflow_logged_models.c.created_ms.desc(), mlflow_logged_models.c.id)
    if exp_ids:
        q = q.where(mlflow_logged_models.c.experiment_id.in_(exp_ids))
    flt = text(data, "filter")
    if flt:
        m = re.match(r"^\s*(name|source_run_id|model_id)\s*=\s*'([^']*)'\s*$", flt)
        if m is None:
            raise ValidationError(f"Unsupported logged-model filter {flt!r}.", hint="Filter with name = '...' or source_run_id = '...'.")
        col = {"name": mlflow_logged_models.c.name, "source_run_id": mlflow_logged_models.c.source_run_id, "model_id": mlflow_logged_models.c.id}[m.group(1)]
        q = q.where(col == m.group(2))
    with R.store().read() as conn:
        rows = conn.execute(q.offset(offset).limit(max_results + 1)).all()
    out: dict[str, Any] = {"models": [logged_model_json(r) for r in rows[:max_results]]}
    if len(rows) > max_results:
        out["next_page_token"] = str(offset + max_results)
    return json_response(out)


@router.get("/logged-models/{model_id}", summary="MLflow: get a logged model")
async def get_logged_model(model_id: str, ident: Identity = Depends(identity)) -> Response:
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "read")
    return json_response({"model": logged_model_json(row)})


@router.patch("/logged-models/{model_id}", summary="MLflow: finalize a logged model (READY or FAILED)")
async def finalize_logged_model(model_id: str, request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "write")
    status = text(data, "status", required=True) or ""
    if status not in LM_STATUS:
        raise ValidationError(f"Logged model status {status!r} is not one of {', '.join(LM_STATUS)}.")
    with R.store().write() as conn:
        conn.execute(sa.update(mlflow_logged_models).where(mlflow_logged_models.c.id == model_id)
                     .values(status=LM_STATUS[status], updated_ms=now_ms()))
    if LM_STATUS[status] == "READY":
        keel_package(model_id)
    return json_response({"model": logged_model_json(logged_model_row(model_id))})


@router.delete("/logged-models/{model_id}", summary="MLflow: delete a logged model")
async def delete_logged_model(model_id: str, ident: Identity = Depends(identity)) -> Response:
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "write")
    with R.store().write() as conn:
        conn.execute(sa.delete(mlflow_logged_models).where(mlflow_logged_models.c.id == model_id))
        conn.execute(sa.delete(mlflow_run_models).where(mlflow_run_models.c.model_id == model_id))
        conn.execute(sa.delete(artifacts).where(artifacts.c.owner_kind == "logged_model", artifacts.c.owner_id == model_id))
    return _ok()


def _update_json_column(model_id: str, column: str, change: dict[str, str | None]) -> None:
    with R.store().write() as conn:
        current = json.loads(conn.execute(sa.select(mlflow_logged_models.c[column]).where(mlflow_logged_models.c.id == model_id)).scalar_one())
        for k, v in change.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v
        conn.execute(sa.update(mlflow_logged_models).where(mlflow_logged_models.c.id == model_id)
                     .values(**{column: json.dumps(current), "updated_ms": now_ms()}))


@router.patch("/logged-models/{model_id}/tags", summary="MLflow: set logged model tags")
async def set_logged_model_tags(model_id: str, request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "write")
    _update_json_column(model_id, "tags", dict(key_values(data, "tags")))
    return json_response({"model": logged_model_json(logged_model_row(model_id))})


@router.delete("/logged-models/{model_id}/tags/{tag_key:path}", summary="MLflow: delete a logged model tag")
async def delete_logged_model_tag(model_id: str, tag_key: str, ident: Identity = Depends(identity)) -> Response:
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "write")
    if tag_key not in json.loads(row.tags):
        raise NotFoundError(f"Logged model {model_id} has no tag {tag_key!r}.")
    _update_json_column(model_id, "tags", {tag_key: None})
    return _ok()


@router.post("/logged-models/{model_id}/params", summary="MLflow: log logged model params")
async def log_logged_model_params(model_id: str, request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    row = logged_model_row(model_id)
    _authorize_model(ident, row, "write")
    _update_json_column(model_id, "params", dict(key_values(data, "params")))
    return _ok()


# -- the keel package of a logged model -------------------------------------------------------

def _package_path(row: Any) -> str:
    """Where the keel package of a logged model lives in its run: its name, unless an earlier model of the run took it."""
    with R.store().read() as conn:
        first = conn.execute(
            sa.select(mlflow_logged_models.c.id).where(mlflow_logged_models.c.source_run_id == row.source_run_id,
                                                       mlflow_logged_models.c.name == row.name)
            .order_by(mlflow_logged_models.c.created_ms, mlflow_logged_models.c.id).limit(1)
        ).scalar()
    return row.name if first == row.id else f"{row.name}-{row.id}"


def keel_package(model_id: str) -> tuple[str, str]:
    """(run id, path): the keel package of a logged model, written into its source run on first use."""
    from keel.models._mlflow import MlflowModel
    from keel.models.flavors import class_modules, packages_for
    from keel.models.package import META_FILE, write_package
    from keel.models.signature import ColSpec, Signature
    from keel.store.blobs import get_artifact_store
    from keel.tracking.artifacts import record, store_path

    row = logged_model_row(model_id)
    if not row.source_run_id:  # a model logged outside a run gets a run of its own, so that it has lineage
        rid = R.create_run(int(row.experiment_id), row.name, row.created_ms, {"mlflow.loggedModelId": row.id})
        R.update_run(rid, "FINISHED", None, None)
        with R.store().write() as conn:
            conn.execute(sa.update(mlflow_logged_models).where(mlflow_logged_models.c.id == model_id).values(source_run_id=rid))
        row = logged_model_row(model_id)
    path = _package_path(row)
    st = R.store()
    with st.read() as conn:
        have = conn.execute(sa.select(artifacts.c.id).where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == row.source_run_id,
                                                            artifacts.c.path == f"{path}/{META_FILE}")).first()
        files = conn.execute(sa.select(artifacts.c.path, artifacts.c.digest).where(
            artifacts.c.owner_kind == "logged_model", artifacts.c.owner_id == model_id)).all()
    if have is not None:
        return row.source_run_id, path
    if not files:
        raise NotFoundError(f"Logged model {model_id} has no files.", hint="Upload them before finalizing it (mlflow does this in log_model).")
    blobs = get_artifact_store()
    model = MlflowModel.from_files({p: blobs.get_bytes(d, what=f"{p} of logged model {model_id}") for p, d in files})
    cols = model.signature_inputs()
    signature = Signature([ColSpec(n, t, True) for n, t in cols]) if cols else None
    extra: dict[str, Any] = {"mlflow": {"model_id": model_id, "name": row.name, "flavors": model.flavors, "experiment_id": str(row.experiment_id)}}
    if model.loads_without_mlflow:
        inner = model.inner
        extra["class"] = f"{type(inner).__module__}.{type(inner).__qualname__}"
        extra["packages"] = packages_for("sklearn", class_modules(inner))
    else:  # opened with mlflow.pyfunc where it is loaded; the server does not need mlflow to register it
        loader = (model.mlmodel["flavors"].get("python_function") or {}).get("loader_module")
        extra["class"] = f"mlflow.pyfunc:{loader or '?'}"
        extra["packages"] = {"mlflow": str(model.mlmodel.get("mlflow_version") or "")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pkg"
        write_package(model, folder, flavor="mlflow", signature=signature, extra=extra)
        record(st, "run", row.source_run_id, store_path(blobs, folder, path))
    return row.source_run_id, path


# -- registered models ------------------------------------------------------------------------

def _model_row(conn: sa.Connection, name: str) -> Any:
    row = conn.execute(sa.select(registered_models).where(registered_models.c.name == name, registered_models.c.deleted_ms.is_(None))).first()
    if row is None:
        raise NotFoundError(f"Registered Model with name={name} not found", hint="Register one with mlflow.register_model(...).")
    return row


def version_json(conn: sa.Connection, name: str, row: Any, held: dict[int, list[str]] | None = None) -> dict[str, Any]:
    meta = json.loads(row.meta)
    mf = meta.get("mlflow") or {}
    if held is None:
        from keel.store.schema.registry import model_aliases

        held = {}
        for n, v in conn.execute(sa.select(model_aliases.c.name, model_aliases.c.version).where(model_aliases.c.model_id == row.model_id)):
            held.setdefault(int(v), []).append(n)
    out = {
        "name": name, "version": str(row.version), "creation_timestamp": row.created_ms, "last_updated_timestamp": row.created_ms,
        "user_id": row.created_by, "current_stage": "None", "description": row.description or "",
        "source": f"models:/{mf['model_id']}" if mf.get("model_id") else f"runs:/{row.run_id}/{row.artifact_path}",
        "run_id": row.run_id, "status": "READY", "tags": [{"key": k, "value": v} for k, v in (meta.get("mlflow_tags") or {}).items()],
        "aliases": sorted(held.get(int(row.version), [])),
    }
    if mf.get("model_id"):
        out["model_id"] = mf["model_id"]
    return out


def registered_model_json(conn: sa.Connection, row: Any) -> dict[str, Any]:
    from keel.store.schema.registry import model_aliases

    held: dict[int, list[str]] = {}
    aliases = []
    for n, v in conn.execute(sa.select(model_aliases.c.name, model_aliases.c.version).where(model_aliases.c.model_id == row.id).order_by(model_aliases.c.name)):
        held.setdefault(int(v), []).append(n)
        aliases.append({"alias": n, "version": str(v)})
    latest = conn.execute(sa.select(model_versions).where(model_versions.c.model_id == row.id, model_versions.c.deleted_ms.is_(None))
                          .order_by(model_versions.c.version.desc()).limit(1)).first()
    out: dict[str, Any] = {
        "name": row.name, "creation_timestamp": row.created_ms, "last_updated_timestamp": row.updated_ms,
        "user_id": ", ".join(owners_of_many("model", [row.name], conn).get(row.name, [])),
        "description": row.description or "", "tags": [{"key": k, "value": v} for k, v in json.loads(row.tags or "{}").items()],
        "aliases": aliases,
    }
    if latest is not None:
        out["latest_versions"] = [version_json(conn, row.name, latest, held)]
    return out


@router.post("/registered-models/create", summary="MLflow: create a registered model")
async def create_registered_model(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import check_model_name

    data = await body(request)
    name = check_model_name(text(data, "name", required=True))
    authorize(ident, "write", model=name)
    now = now_ms()
    with R.store().write() as conn:
        created = insert_ignore(conn, registered_models, {
            "name": name, "description": text(data, "description"),
            "tags": json.dumps(key_values(data, "tags")), "created_ms": now, "updated_ms": now}, ["name"])
        if not created:
            raise already_exists(f"Registered Model (name={name}) already exists.", hint="Create a version of it instead.")
        seed_owners(conn, "model", name, [settings().acting_user])
        return json_response({"registered_model": registered_model_json(conn, _model_row(conn, name))})


@router.get("/registered-models/get", summary="MLflow: get a registered model")
async def get_registered_model(request: Request, ident: Identity = Depends(identity)) -> Response:
    name = text(await body(request), "name", required=True) or ""
    authorize(ident, "read", model=name)
    with R.store().read() as conn:
        return json_response({"registered_model": registered_model_json(conn, _model_row(conn, name))})


_MODEL_FILTER = re.compile(r"^\s*name\s*(=|!=|LIKE|ILIKE)\s*(['\"])(.*)\2\s*$", re.IGNORECASE)


def _name_condition(flt: str | None, column: Any) -> Any:
    if not flt:
        return None
    m = _MODEL_FILTER.match(flt)
    if m is None:
        raise ValidationError(f"Unsupported filter {flt!r}.", hint="Filter on the name: name = 'x' or name LIKE 'x%'.")
    op, value = m.group(1).lower(), m.group(3)
    return {"=": column == value, "!=": column != value, "like": column.like(value), "ilike": column.ilike(value)}[op]


@router.get("/registered-models/search", summary="MLflow: search registered models")
async def search_registered_models(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    authorize(ident, "read")
    max_results = integer(data, "max_results", default=100) or 100
    offset = integer(data, "page_token", default=0) or 0
    q = sa.select(registered_models).where(registered_models.c.deleted_ms.is_(None)).order_by(registered_models.c.name)
    cond = _name_condition(text(data, "filter"), registered_models.c.name)
    if cond is not None:
        q = q.where(cond)
    with R.store().read() as conn:
        rows = conn.execute(q.offset(offset).limit(max_results + 1)).all()
        out: dict[str, Any] = {"registered_models": [registered_model_json(conn, r) for r in rows[:max_results]]}
    if len(rows) > max_results:
        out["next_page_token"] = str(offset + max_results)
    return json_response(out)


@router.patch("/registered-models/update", summary="MLflow: update a registered model's description")
async def update_registered_model(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import update_model

    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "write", model=name)
    update_model(name, description=text(data, "description", default="") or "")
    with R.store().read() as conn:
        return json_response({"registered_model": registered_model_json(conn, _model_row(conn, name))})


@router.post("/registered-models/set-tag", summary="MLflow: set a registered model tag")
async def set_registered_model_tag(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import update_model

    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "write", model=name)
    update_model(name, tags={text(data, "key", required=True) or "": text(data, "value", default="") or ""})
    return _ok()


@router.post("/registered-models/alias", summary="MLflow: point an alias at a version")
async def set_alias(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.transitions import set_alias as keel_set_alias

    data = await body(request)
    name, alias = text(data, "name", required=True) or "", text(data, "alias", required=True) or ""
    version = integer(data, "version")
    if version is None:
        raise ValidationError("Missing value for required parameter 'version'.")
    authorize(ident, "write", model=name)
    keel_set_alias(name, alias, version)
    return _ok()


@router.delete("/registered-models/alias", summary="MLflow: delete an alias")
async def delete_alias(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.transitions import delete_alias as keel_delete_alias

    data = await body(request)
    name, alias = text(data, "name", required=True) or "", text(data, "alias", required=True) or ""
    authorize(ident, "write", model=name)
    keel_delete_alias(name, alias)
    return _ok()


@router.get("/registered-models/alias", summary="MLflow: the version an alias points at")
async def get_version_by_alias(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.models.loader import resolve_alias

    data = await body(request)
    name, alias = text(data, "name", required=True) or "", text(data, "alias", required=True) or ""
    authorize(ident, "read", model=name)
    with R.store().read() as conn:
        model = _model_row(conn, name)
        try:
            version, _rev = resolve_alias(conn, model.id, name, alias)
        except NotFoundError as exc:  # MLflow's server answers a missing alias as a bad parameter
            raise MlflowError(exc.message, code="INVALID_PARAMETER_VALUE", status=400, hint=exc.hint) from None
        row = conn.execute(sa.select(model_versions).where(model_versions.c.model_id == model.id, model_versions.c.version == version)).one()
        return json_response({"model_version": version_json(conn, name, row)})


@router.get("/registered-models/get-latest-versions", summary="MLflow: the latest version", operation_id="mlflow_registered_models_get_latest_versions_get")
@router.post("/registered-models/get-latest-versions", summary="MLflow: the latest version", operation_id="mlflow_registered_models_get_latest_versions_post")
async def get_latest_versions(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "read", model=name)
    with R.store().read() as conn:
        out = registered_model_json(conn, _model_row(conn, name)).get("latest_versions", [])
    return json_response({"model_versions": out})


# -- model versions ---------------------------------------------------------------------------

def _source_package(source: str | None, run_id: str | None, model_id: str | None) -> tuple[str, str]:
    """(run id, path) of the keel package behind an MLflow version source."""
    if model_id:
        return keel_package(model_id)
    if source:
        m = _LOGGED_URI.match(source)
        if m:
            return keel_package(m.group(1))
        m = _RUNS_URI.match(source)
        if m:
            return m.group(1), m.group(2).strip("/")
        m = _ARTIFACTS_URI.match(source)
        if m:
            from keel.server.mlflow.artifacts import parse_path

            kind, owner, rel = parse_path(m.group(1))
            if kind == "logged_model":
                return keel_package(owner)
            if kind == "run" and rel:
                return owner, rel.strip("/")
    raise ValidationError(
        f"Cannot register a version from source {source!r}.",
        hint="Pass models:/m-<id> (MLflow 3 log_model), runs:/<run_id>/<path> or the model's mlflow-artifacts URI.",
    )


def _version_row(conn: sa.Connection, name: str, version: str | None) -> tuple[Any, Any]:
    model = _model_row(conn, name)
    if version is None or not str(version).isdigit():
        raise ValidationError(f"Model version {version!r} is not a number.", hint="Pass the version number, e.g. 1.")
    row = conn.execute(sa.select(model_versions).where(model_versions.c.model_id == model.id, model_versions.c.version == int(version),
                                                       model_versions.c.deleted_ms.is_(None))).first()
    if row is None:
        raise NotFoundError(f"Model Version (name={name}, version={version}) not found.")
    return model, row


@router.post("/model-versions/create", summary="MLflow: create a model version")
async def create_model_version(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import register_model

    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "write", model=name)
    with R.store().read() as conn:
        _model_row(conn, name)  # MLflow creates the registered model first; so must the client here
    run_id, path = _source_package(text(data, "source"), text(data, "run_id"), text(data, "model_id"))
    mv = register_model(f"runs:/{run_id}/{path}", name, description=text(data, "description"))
    vtags = key_values(data, "tags")
    with R.store().write() as conn:
        _model, row = _version_row(conn, name, str(mv.version))
        if vtags:
            meta = json.loads(row.meta)
            meta["mlflow_tags"] = {**(meta.get("mlflow_tags") or {}), **vtags}
            conn.execute(sa.update(model_versions).where(model_versions.c.id == row.id).values(meta=json.dumps(meta, default=str)))
            row = conn.execute(sa.select(model_versions).where(model_versions.c.id == row.id)).one()
        return json_response({"model_version": version_json(conn, name, row)})


@router.get("/model-versions/get", summary="MLflow: get a model version")
async def get_model_version(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "read", model=name)
    with R.store().read() as conn:
        _model, row = _version_row(conn, name, text(data, "version"))
        return json_response({"model_version": version_json(conn, name, row)})


@router.patch("/model-versions/update", summary="MLflow: update a model version's description")
async def update_model_version(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "write", model=name)
    with R.store().write() as conn:
        _model, row = _version_row(conn, name, text(data, "version"))
        conn.execute(sa.update(model_versions).where(model_versions.c.id == row.id).values(description=text(data, "description", default="")))
        row = conn.execute(sa.select(model_versions).where(model_versions.c.id == row.id)).one()
        return json_response({"model_version": version_json(conn, name, row)})


@router.post("/model-versions/set-tag", summary="MLflow: set a model version tag")
async def set_model_version_tag(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "write", model=name)
    with R.store().write() as conn:
        _model, row = _version_row(conn, name, text(data, "version"))
        meta = json.loads(row.meta)
        meta["mlflow_tags"] = {**(meta.get("mlflow_tags") or {}), text(data, "key", required=True) or "": text(data, "value", default="") or ""}
        conn.execute(sa.update(model_versions).where(model_versions.c.id == row.id).values(meta=json.dumps(meta, default=str)))
    return _ok()


@router.get("/model-versions/get-download-uri", summary="MLflow: where a version's files are")
async def get_download_uri(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True) or ""
    authorize(ident, "read", model=name)
    with R.store().read() as conn:
        _model, row = _version_row(conn, name, text(data, "version"))
    return json_response({"artifact_uri": download_uri(row)})


def download_uri(row: Any) -> str:
    mf = json.loads(row.meta).get("mlflow") or {}
    if mf.get("model_id"):  # MLflow's own files, as it uploaded them
        return f"mlflow-artifacts:/{mf.get('experiment_id', '0')}/models/{mf['model_id']}/artifacts"
    return f"mlflow-artifacts:/keel/model-versions/{row.id}/{row.artifact_path}"  # the keel package, with its MLmodel file


def version_model_name(version_row_id: int) -> str:
    with R.store().read() as conn:
        name = conn.execute(sa.select(registered_models.c.name).join(model_versions, model_versions.c.model_id == registered_models.c.id)
                            .where(model_versions.c.id == version_row_id)).scalar()
    if name is None:
        raise NotFoundError(f"No model version with id {version_row_id}.")
    return str(name)


_VERSION_FILTER = re.compile(r"^\s*(name|run_id)\s*=\s*(['\"])(.*)\2\s*$", re.IGNORECASE)


@router.get("/model-versions/search", summary="MLflow: search model versions")
async def search_model_versions(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    authorize(ident, "read")
    max_results = integer(data, "max_results", default=10_000) or 10_000
    offset = integer(data, "page_token", default=0) or 0
    q = (sa.select(model_versions, registered_models.c.name.label("model_name"))
         .join(registered_models, registered_models.c.id == model_versions.c.model_id)
         .where(model_versions.c.deleted_ms.is_(None)).order_by(registered_models.c.name, model_versions.c.version.desc()))
    flt = text(data, "filter")
    if flt:
        m = _VERSION_FILTER.match(flt)
        if m is None:
            cond = _name_condition(flt, registered_models.c.name)
        else:
            cond = (registered_models.c.name if m.group(1).lower() == "name" else model_versions.c.run_id) == m.group(3)
        q = q.where(cond)
    with R.store().read() as conn:
        rows = conn.execute(q.offset(offset).limit(max_results + 1)).all()
        out: dict[str, Any] = {"model_versions": [version_json(conn, r.model_name, r) for r in rows[:max_results]]}
    if len(rows) > max_results:
        out["next_page_token"] = str(offset + max_results)
    return json_response(out)



