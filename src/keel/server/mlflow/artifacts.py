"""MLflow's proxied artifact service (``/api/2.0/mlflow-artifacts/artifacts``) over keel's blob store.

Paths name their owner the way MLflow lays them out: ``<exp>/<run_id>/artifacts/<file>``
for a run, ``<exp>/models/<model_id>/artifacts/<file>`` for a logged model, and
(read only) ``keel/model-versions/<id>/<path>`` for a keel model version. An
upload streams to a temporary file, is stored once by its sha256 and recorded
as the owner's artifact, exactly as ``keel.log_artifact`` records one; a
download is verified against its sha256 before it is sent.
"""

from __future__ import annotations

import mimetypes
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from keel.errors import NotFoundError, ValidationError
from keel.server.auth import Identity, authorize, identity
from keel.server.mlflow import runs as R
from keel.server.mlflow._protocol import MlflowRoute, body, json_response, text
from keel.store.blobs import check_artifact_path, get_artifact_store
from keel.store.metadata import like_escape
from keel.store.schema import artifacts

router = APIRouter(prefix="/api/2.0", route_class=MlflowRoute, tags=["mlflow"])
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_path(path: str) -> tuple[str, str, str]:
    """(owner kind, owner id, path inside the owner) of an mlflow-artifacts path."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[2] == "artifacts" and _RUN_ID.match(parts[1]):
        return "run", parts[1], "/".join(parts[3:])
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        return "logged_model", parts[2], "/".join(parts[4:])
    if len(parts) >= 3 and parts[:2] == ["keel", "model-versions"] and parts[2].isdigit():
        return "model_version", parts[2], "/".join(parts[3:])
    raise NotFoundError(f"Artifact path {path!r} names no run, logged model or model version.",
                        hint="Use the artifact_uri MLflow returned: <experiment>/<run_id>/artifacts/<file>.")


def _authorize(ident: Identity, kind: str, owner: str, action: str) -> None:
    if kind == "run":
        authorize(ident, action, experiment=R.experiment_name(R.run_experiment(owner)))  # type: ignore[arg-type]
    elif kind == "logged_model":
        from keel.server.mlflow.models import logged_model_row

        authorize(ident, action, experiment=R.experiment_name(int(logged_model_row(owner).experiment_id)))  # type: ignore[arg-type]
    else:
        if action != "read":
            raise ValidationError("Model version files are read only.", hint="Register a new version instead.")
        from keel.server.mlflow.models import version_model_name

        authorize(ident, "read", model=version_model_name(int(owner)))


def record_files(kind: str, owner: str, files: list[tuple[str, str, int, str | None]]) -> None:
    from keel.tracking.artifacts import record

    record(R.store(), kind, owner, files)


@router.put("/mlflow-artifacts/artifacts/{path:path}", summary="MLflow: upload an artifact")
async def upload(path: str, request: Request, ident: Identity = Depends(identity)) -> Response:
    kind, owner, rel = parse_path(path)
    if not rel:
        raise ValidationError(f"Artifact path {path!r} names a folder, not a file.", hint="Append the file name.")
    rel = check_artifact_path(rel)
    _authorize(ident, kind, owner, "write")
    fd, tmp = tempfile.mkstemp(prefix="keel-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
        digest, size = get_artifact_store().put_file(Path(tmp))
    finally:
        os.unlink(tmp)
    record_files(kind, owner, [(rel, digest, size, request.headers.get("content-type") or mimetypes.guess_type(rel)[0])])
    return json_response({})


@router.get("/mlflow-artifacts/artifacts/{path:path}", summary="MLflow: download an artifact")
async def download(path: str, ident: Identity = Depends(identity)) -> Response:
    kind, owner, rel = parse_path(path)
    _authorize(ident, kind, owner, "read")
    with R.store().read() as conn:
        row = conn.execute(sa.select(artifacts.c.digest).where(
            artifacts.c.owner_kind == kind, artifacts.c.owner_id == owner, artifacts.c.path == rel)).first()
    if row is None:
        raise NotFoundError(f"No artifact {rel!r} under {path.rsplit('/', 1)[0] if '/' in path else path!r}.",
                            hint="List them with GET /api/2.0/mlflow-artifacts/artifacts?path=...")
    fd, tmp = tempfile.mkstemp(prefix="keel-download-")
    os.close(fd)
    get_artifact_store().get_file(row.digest, Path(tmp), what=rel)
    return FileResponse(tmp, media_type=mimetypes.guess_type(rel)[0] or "application/octet-stream",
                        background=BackgroundTask(os.unlink, tmp))


def list_children(kind: str, owner: str, prefix: str) -> list[dict[str, Any]]:
    """Files and folders directly under ``prefix`` of an owner (a file's own path lists nothing)."""
    prefix = prefix.strip("/")
    with R.store().read() as conn:
        q = sa.select(artifacts.c.path, artifacts.c.size).where(artifacts.c.owner_kind == kind, artifacts.c.owner_id == owner)
        if prefix:
            q = q.where(artifacts.c.path.like(like_escape(prefix) + "/%", escape="\\"))
        rows = conn.execute(q.order_by(artifacts.c.path)).all()
    cut = len(prefix) + 1 if prefix else 0
    files: dict[str, dict[str, Any]] = {}
    for p, size in rows:
        rest = p[cut:]
        head, sep, _tail = rest.partition("/")
        if sep:
            files.setdefault(head, {"path": head, "is_dir": True})
        else:
            files[head] = {"path": head, "is_dir": False, "file_size": int(size)}
    return list(files.values())


@router.get("/mlflow-artifacts/artifacts", summary="MLflow: list artifacts")
async def list_artifacts(request: Request, ident: Identity = Depends(identity)) -> Response:
    path = text(await body(request), "path") or ""
    try:
        kind, owner, rel = parse_path(path)
    except NotFoundError:
        authorize(ident, "read")
        return json_response({"files": []})
    _authorize(ident, kind, owner, "read")
    return json_response({"files": list_children(kind, owner, rel)})


@router.get("/mlflow/artifacts/list", summary="MLflow: list a run's artifacts")
async def list_run_artifacts(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    rid = text(data, "run_id") or text(data, "run_uuid")
    if rid is None:
        raise ValidationError("Missing value for required parameter 'run_id'.")
    exp = R.run_experiment(rid)
    authorize(ident, "read", experiment=R.experiment_name(exp))
    rel = text(data, "path") or ""
    base = R.artifact_uri(exp, rid)
    files = list_children("run", rid, rel)
    for f in files:
        f["path"] = f"{rel.strip('/')}/{f['path']}" if rel.strip("/") else f["path"]
    return json_response({"root_uri": base, "files": files})
