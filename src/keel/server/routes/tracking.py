"""Routes of the platform API: tracking (``/v1/experiments``, ``/v1/runs``, ``/v1/blobs``).

Thin: each route checks its input, calls :func:`~keel.server.auth.authorize`
and then the same tracking functions the library uses. Every write is
idempotent, so a client may retry any of them: runs are created with the
client's run id, metric batches carry the client's batch id, params accept the
same value again, blobs are named by their sha256.

Artifacts stream: an upload is written to disk as it arrives and hashed on the
way (``PUT /v1/blobs/{sha256}``, or in parts for large files: ``PUT
/v1/blobs/{sha256}/parts/{n}`` then ``POST /v1/blobs/{sha256}/complete``); a
download is streamed from the store (``GET /v1/runs/{id}/artifacts/{path}``,
``Range: bytes=N-`` resumes) with its sha256 in ``X-Keel-Sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from keel.errors import IntegrityError, NotFoundError, ValidationError
from keel.server.auth import Identity, authorize, identity


class ErrorOut(BaseModel):
    """A refused request: a KeelError (``error``, ``message``, ``detail``) or FastAPI's request validation (``detail``)."""

    error: str | None = None
    message: str | None = None
    detail: dict[str, Any] | list[Any] | str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": what}
    for status, what in ((400, "Bad input"), (401, "No valid credentials"), (403, "Not allowed"), (404, "Not found"),
                         (409, "Conflict, or content that does not match its sha256"), (422, "Invalid input"),
                         (503, "A store is unreachable"))
}
router = APIRouter(tags=["tracking"], responses=ERRORS)
SHA256 = Path(pattern=r"^[0-9a-f]{64}$", description="sha256 of the blob's content")
# the names keel.tracking.runs.check_name accepts, as a schema (so a client can tell before sending)
KEY = r"^[A-Za-z0-9_\-./:]([A-Za-z0-9_\-./: ]{0,248}[A-Za-z0-9_\-./:])?$"
Key = Annotated[str, StringConstraints(pattern=KEY)]
_SHA = re.compile(r"^[0-9a-f]{64}$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20
MAX_PARTS = 100_000


def _store() -> Any:
    from keel.store.metadata import get_metadata_store

    return get_metadata_store()


def _blobs() -> Any:
    from keel.store.blobs import get_artifact_store

    return get_artifact_store()


def _run_experiment(run_ref: str) -> tuple[str, str]:
    """(full run id, experiment name) of a run reference (id, prefix or name)."""
    import sqlalchemy as sa

    from keel.store.schema import experiments, runs
    from keel.tracking.query import resolve_run_id

    with _store().read() as conn:
        rid = resolve_run_id(conn, run_ref)
        name = conn.execute(
            sa.select(experiments.c.name).join(runs, runs.c.experiment_id == experiments.c.id).where(runs.c.id == rid)
        ).scalar_one()
    return rid, str(name)


def _authorized_run(ident: Identity, run_ref: str, action: Literal["read", "write"]) -> str:
    rid, experiment = _run_experiment(run_ref)
    authorize(ident, action, experiment=experiment)
    return rid


def _check_sha(digest: str) -> str:
    if not _SHA.match(digest):
        raise ValidationError(f"{digest!r} is not a sha256 (64 lowercase hex digits).", hint="Name a blob by the sha256 of its content.")
    return digest


def _json(data: Any) -> Response:
    import orjson

    return Response(orjson.dumps(data, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), media_type="application/json")


# -- experiments ------------------------------------------------------------------------------

class ExperimentIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)


@router.get("/v1/experiments", summary="List experiments with their run counts")
def list_experiments(ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    from keel.tracking.query import list_experiments as listing

    authorize(ident, "read")
    return [{**r, "created": _iso(r["created"]), "last_run": _iso(r["last_run"])} for r in listing(_store())]


@router.post("/v1/experiments", summary="Create an experiment (or return the existing one of that name)")
def create_experiment(body: ExperimentIn, ident: Identity = Depends(identity)) -> dict[str, Any]:
    from keel.tracking.runs import get_or_create_experiment

    authorize(ident, "write", experiment=body.name)
    return {"id": get_or_create_experiment(_store(), body.name), "name": body.name}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# -- runs -------------------------------------------------------------------------------------

class ArtifactRow(BaseModel):
    path: str = Field(min_length=1, max_length=1024)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    media_type: str | None = Field(default=None, max_length=128)


class RunIn(BaseModel):
    id: str = Field(pattern=r"^[0-9a-f]{32}$", description="Chosen by the client: creating the same id again returns the run")
    name: str = Field(min_length=1, max_length=255)
    experiment: str | None = Field(default=None, min_length=1, max_length=255, description="Default: the parent's, else the server's default")
    parent_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    host: str = Field(default="", max_length=255)
    env: dict[str, Any] = Field(default_factory=dict)
    env_artifacts: list[ArtifactRow] = Field(default_factory=list, max_length=10_000)


@router.post("/v1/runs", summary="Create a run with a client-chosen id (idempotent)")
def create_run(body: RunIn, ident: Identity = Depends(identity)) -> dict[str, Any]:
    import sqlalchemy as sa

    from keel.config import settings
    from keel.store.blobs import check_artifact_path
    from keel.store.metadata import now_ms
    from keel.store.schema import runs
    from keel.tracking.runs import create_run as create
    from keel.tracking.runs import get_or_create_experiment

    store = _store()
    experiment = body.experiment
    parent_exp: int | None = None
    if body.parent_id is not None:
        with store.read() as conn:
            parent_exp = conn.execute(sa.select(runs.c.experiment_id).where(runs.c.id == body.parent_id)).scalar()
        if parent_exp is None:
            raise NotFoundError(f"Parent run {body.parent_id!r} does not exist.", hint="Create the parent run first.")
    if experiment is None and parent_exp is not None:
        _rid, experiment = _run_experiment(body.parent_id or "")
    experiment = experiment or str(settings().experiment)
    authorize(ident, "write", experiment=experiment)
    with store.read() as conn:
        existing = conn.execute(sa.select(runs.c.experiment_id, runs.c.name).where(runs.c.id == body.id)).first()
    if existing is not None:  # a retried creation: the run is there already
        return {"id": body.id, "experiment_id": int(existing.experiment_id), "name": existing.name, "created": False}
    exp_id = get_or_create_experiment(store, experiment)
    _check_blobs([a.digest for a in body.env_artifacts])
    created_ms = now_ms()
    rows = [{"owner_kind": "run", "owner_id": body.id, "path": check_artifact_path(a.path), "digest": a.digest, "size": a.size,
             "media_type": a.media_type, "created_ms": created_ms} for a in body.env_artifacts]
    env = body.env
    if body.parent_id is not None and not env and not rows:  # a child run shares its parent's record, as locally
        from keel.tracking.runs import _inherit_environment

        env, rows = _inherit_environment(store, body.parent_id, body.id)
    created = create(store, run_id=body.id, experiment_id=exp_id, name=body.name, parent_id=body.parent_id,
                     env=env, env_artifacts=rows, user=ident.user, host=body.host)
    return {"id": body.id, "experiment_id": exp_id, "name": body.name, "created": created}


@router.get("/v1/runs/{run}", summary="Everything recorded about a run (id, id prefix or name)")
def get_run(run: str, ident: Identity = Depends(identity)) -> Response:
    from keel.tracking.query import get_run as get

    rid = _authorized_run(ident, run, "read")
    info = get(rid, store=_store()).to_dict()
    info["metrics"] = {k: (None if v != v else v) for k, v in info["metrics"].items()}
    return _json(info)


class RunPatch(BaseModel):
    status: Literal["running", "finished", "failed", "killed"]
    error: str | None = Field(default=None, max_length=1_000_000)


@router.patch("/v1/runs/{run}", summary="End a run (finished, failed, killed) or reopen it (running)")
def update_run(run: str, body: RunPatch, ident: Identity = Depends(identity)) -> dict[str, Any]:
    from keel.tracking.runs import reopen, write_end

    rid = _authorized_run(ident, run, "write")
    if body.status == "running":
        row = reopen(_store(), rid)
        return {"id": rid, "experiment_id": int(row.experiment_id), "name": row.name, "parent_id": row.parent_id, "status": "running"}
    write_end(_store(), rid, body.status, body.error)
    return {"id": rid, "status": body.status}


class ParamsIn(BaseModel):
    params: dict[Key, str | int | float | bool] = Field(max_length=10_000)


@router.post("/v1/runs/{run}/params", summary="Log params (the same value again is a no-op; a different one is 422)")
def log_params(run: str, body: ParamsIn, ident: Identity = Depends(identity)) -> dict[str, int]:
    from keel.tracking.runs import clean_params, write_params

    rid = _authorized_run(ident, run, "write")
    values = clean_params(body.params)
    if values:
        write_params(_store(), rid, values)
    return {"logged": len(values)}


class TagsIn(BaseModel):
    tags: dict[Key, str | int | float | bool] = Field(max_length=10_000)


@router.post("/v1/runs/{run}/tags", summary="Set tags (last writer wins)")
def set_tags(run: str, body: TagsIn, ident: Identity = Depends(identity)) -> dict[str, int]:
    from keel.tracking.runs import clean_tags, write_tags

    rid = _authorized_run(ident, run, "write")
    values = clean_tags(body.tags)
    if values:
        write_tags(_store(), rid, values)
    return {"set": len(values)}


class MetricArrays(BaseModel):
    model_config = ConfigDict(strict=True)  # a boolean is not a number
    key: str = Field(min_length=1, max_length=250, pattern=KEY)
    n: int = Field(ge=0, le=10_000_000)
    steps: str = Field(description="base64 of n little-endian int64")
    ts: str = Field(description="base64 of n little-endian int64 (epoch milliseconds)")
    values: str = Field(description="base64 of n little-endian float64 (NaN allowed)")


class BatchIn(BaseModel):
    batch_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$", description="Chosen by the client: a batch sent again is stored once")
    metrics: list[MetricArrays] = Field(max_length=100_000)


@router.post("/v1/runs/{run}/batch", summary="Log a batch of metric values (idempotent by batch_id)")
def log_batch(run: str, body: BatchIn, ident: Identity = Depends(identity)) -> dict[str, Any]:
    import base64
    import binascii

    import numpy as np

    from keel.tracking._writer import write_batch
    from keel.tracking.runs import check_name

    rid = _authorized_run(ident, run, "write")
    arrays = []
    for m in body.metrics:
        check_name("metric", m.key)
        try:
            steps, ts, vals = (np.frombuffer(base64.b64decode(x, validate=True), dtype=d) for x, d in ((m.steps, "<i8"), (m.ts, "<i8"), (m.values, "<f8")))
        except (binascii.Error, ValueError):
            raise ValidationError(f"Metric '{m.key}': steps, ts and values must be base64 of little-endian 8-byte numbers.") from None
        if not (len(steps) == len(ts) == len(vals) == m.n):
            raise ValidationError(
                f"Metric '{m.key}' says n={m.n} but carries {len(steps)} steps, {len(ts)} timestamps and {len(vals)} values.",
                hint="Send n values in each of the three arrays.",
            )
        arrays.append((m.key, steps, ts, vals))
    stored = write_batch(_store(), rid, body.batch_id, arrays)
    return {"batch_id": body.batch_id, "stored": stored, "values": sum(len(a[1]) for a in arrays)}


class Heartbeat(BaseModel):
    run_ids: list[str] = Field(max_length=10_000)


@router.post("/v1/runs/heartbeat", summary="Keep running runs alive (a run without heartbeats shows as crashed)")
def heartbeat(body: Heartbeat, ident: Identity = Depends(identity)) -> dict[str, int]:
    import sqlalchemy as sa

    from keel.store.metadata import now_ms
    from keel.store.schema import runs

    authorize(ident, "write")
    ids = [r for r in body.run_ids if _RUN_ID.match(r)]
    if ids:
        with _store().write() as conn:
            conn.execute(sa.update(runs).where(runs.c.id.in_(ids), runs.c.status == "running").values(heartbeat_ms=now_ms()))
    return {"runs": len(ids)}


@router.get("/v1/runs/{run}/metrics/{key:path}", summary="A metric's history (base64 little-endian arrays)")
def metric_history(run: str, key: str, ident: Identity = Depends(identity), max_points: int | None = Query(None, ge=2)) -> Response:
    import base64

    from keel.tracking.query import get_metric_history

    rid = _authorized_run(ident, run, "read")
    frame = get_metric_history(rid, key, max_points=max_points, store=_store())
    ts = frame["timestamp"].dt.as_unit("ms").astype("int64").to_numpy()
    enc = lambda a, d: base64.b64encode(a.astype(d).tobytes()).decode("ascii")  # noqa: E731
    return _json({"n": len(frame), "steps": enc(frame["step"].to_numpy(), "<i8"), "ts": enc(ts, "<i8"), "values": enc(frame["value"].to_numpy(), "<f8")})


class SearchIn(BaseModel):
    experiment: str | int | list[str | int] | None = None
    filter: str | None = Field(default=None, max_length=100_000)
    order_by: list[str] | None = None
    max_results: int = Field(default=1000, ge=1, le=100_000)
    columns: list[str] | None = None
    page_token: str | None = None
    format: Literal["json", "arrow"] = Field(default="json", description="arrow: an Arrow IPC stream (the keel client's)")


@router.post("/v1/runs/search", summary="Search runs with a filter (keel.search_runs)",
             responses={200: {"content": {"application/json": {}, "application/vnd.apache.arrow.stream": {}}}})
def search(body: SearchIn, ident: Identity = Depends(identity)) -> Response:
    from keel.tracking.search import search_runs

    experiments = body.experiment if isinstance(body.experiment, list) else [body.experiment] if body.experiment is not None else []
    for e in experiments:
        authorize(ident, "read", experiment=str(e))
    if not experiments:
        authorize(ident, "read")
    frame = search_runs(body.experiment, filter=body.filter, order_by=body.order_by, max_results=body.max_results,
                        columns=body.columns, page_token=body.page_token)
    token = frame.attrs.get("next_page_token")
    headers = {"X-Keel-Next-Page-Token": token} if token else {}
    if body.format == "arrow":
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type="application/vnd.apache.arrow.stream", headers=headers)
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return _json({"runs": records, "next_page_token": token})


class DeleteIn(BaseModel):
    runs: list[str] = Field(min_length=1, max_length=10_000)


@router.post("/v1/runs/delete", summary="Delete runs and their child runs")
def delete(body: DeleteIn, ident: Identity = Depends(identity)) -> dict[str, list[str]]:
    from keel.tracking.query import delete_runs

    ids = [_authorized_run(ident, r, "write") for r in body.runs]
    return {"deleted": delete_runs(ids, store=_store())}


class DatasetIn(BaseModel):
    model_config = ConfigDict(strict=True)  # a boolean is not a number
    name: str = Field(min_length=1, max_length=255)
    context: str = Field(min_length=1, max_length=64)
    fingerprint: str = Field(min_length=1, max_length=64)
    num_rows: int | None = Field(default=None, ge=0)
    schema_: dict[str, str] = Field(default_factory=dict, alias="schema", description="column -> type")
    source: str | None = Field(default=None, max_length=100_000)
    extra: dict[str, Any] | None = None


@router.post("/v1/runs/{run}/datasets", summary="Record a dataset input of a run (fingerprint, schema, rows, source)")
def log_dataset(run: str, body: DatasetIn, ident: Identity = Depends(identity)) -> dict[str, str]:
    from keel.store.metadata import now_ms
    from keel.tracking.datasets import write_dataset

    rid = _authorized_run(ident, run, "write")
    write_dataset(_store(), {"run_id": rid, "name": body.name, "context": body.context, "fingerprint": body.fingerprint,
                             "num_rows": body.num_rows, "schema": json.dumps(body.schema_), "source": body.source,
                             "extra": json.dumps(body.extra, default=str) if body.extra else None,
                             "created_ms": now_ms()})
    return {"fingerprint": body.fingerprint}


# -- artifacts ----------------------------------------------------------------------------

class ArtifactsIn(BaseModel):
    files: list[ArtifactRow] = Field(min_length=1, max_length=100_000)


def _check_blobs(digests: list[str]) -> None:
    blobs = _blobs()
    missing = [d for d in dict.fromkeys(digests) if not blobs.exists(d)]
    if missing:
        raise NotFoundError(f"The server holds no blob {missing[0]} ({len(missing)} missing).", hint="Upload it first: PUT /v1/blobs/{sha256}.")


@router.post("/v1/runs/{run}/artifacts", summary="Record uploaded blobs as artifacts of a run (replacing the same paths)")
def record_artifacts(run: str, body: ArtifactsIn, ident: Identity = Depends(identity)) -> dict[str, int]:
    from keel.store.blobs import check_artifact_path
    from keel.tracking.artifacts import record

    rid = _authorized_run(ident, run, "write")
    _check_blobs([f.digest for f in body.files])
    record(_store(), "run", rid, [(check_artifact_path(f.path), f.digest, f.size, f.media_type) for f in body.files])
    return {"recorded": len(body.files)}


@router.get("/v1/runs/{run}/artifacts", summary="List a run's artifacts")
def list_run_artifacts(run: str, ident: Identity = Depends(identity)) -> list[dict[str, Any]]:
    from keel.tracking.artifacts import list_artifacts

    rid = _authorized_run(ident, run, "read")
    return list_artifacts(rid, store=_store())


@router.get("/v1/runs/{run}/artifacts/{path:path}", summary="Download an artifact (streamed; Range resumes)",
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "the rest, from Range"}})
def download_artifact(run: str, path: str, ident: Identity = Depends(identity), range: str | None = Header(None)) -> Response:
    import sqlalchemy as sa

    from keel.store.blobs import check_artifact_path
    from keel.store.schema import artifacts

    rid = _authorized_run(ident, run, "read")
    path = check_artifact_path(path)
    with _store().read() as conn:
        row = conn.execute(
            sa.select(artifacts.c.digest, artifacts.c.size).where(artifacts.c.owner_kind == "run", artifacts.c.owner_id == rid, artifacts.c.path == path)
        ).first()
    if row is None:
        raise NotFoundError(f"Run {rid} has no artifact {path!r}.", hint=f"List them: GET /v1/runs/{rid}/artifacts.")
    return blob_response(str(row.digest), int(row.size), range)


def blob_response(digest: str, size: int, range_header: str | None) -> Response:
    """Stream blob ``digest`` from the artifact store; ``Range: bytes=N-`` sends the rest from N (206)."""
    start = 0
    if range_header:
        m = re.match(r"^bytes=(\d+)-$", range_header.strip())
        if m is None or int(m.group(1)) > size:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        start = int(m.group(1))
    reader = _blobs().open(digest, start)

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := reader.read(_CHUNK):
                yield chunk
        finally:
            reader.close()

    headers = {"X-Keel-Sha256": digest, "Content-Length": str(size - start), "Accept-Ranges": "bytes"}
    if start:
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    return StreamingResponse(chunks(), status_code=206 if start else 200, media_type="application/octet-stream", headers=headers)


# -- blobs: content-addressed uploads, whole or in parts ---------------------------------------

@router.get("/v1/blobs/{digest}", summary="Whether the server holds a blob, and which parts of an upload in parts it has")
def blob_status(digest: str = SHA256, ident: Identity = Depends(identity), parts: int = Query(1, ge=1, le=MAX_PARTS)) -> dict[str, Any]:
    authorize(ident, "write")
    blobs = _blobs()
    _check_sha(digest)
    if blobs.exists(digest):
        return {"exists": True, "parts_received": []}
    have = [n for n in range(parts) if parts > 1 and blobs.backend.exists(blobs.stage_key(digest, n))]
    return {"exists": False, "parts_received": have}


async def _receive(request: Request, expected_size: int | None) -> tuple[FilePath, str, int]:
    """Write the request body to a temporary file as it arrives: (path, sha256, size)."""
    from keel.config import settings

    folder = settings().state_dir / "uploads"
    await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".recv-")
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise ValidationError(f"The upload is larger than its X-Keel-Size of {expected_size} bytes.")
    except BaseException:
        os.unlink(name)
        raise
    return FilePath(name), h.hexdigest(), size


@router.put("/v1/blobs/{digest}", summary="Upload a blob, streamed; stored only if it hashes to its name")
async def put_blob(request: Request, digest: str = SHA256, ident: Identity = Depends(identity),
                   x_keel_size: int | None = Header(None, ge=0)) -> dict[str, Any]:
    authorize(ident, "write")
    _check_sha(digest)
    blobs = _blobs()
    if await run_in_threadpool(blobs.exists, digest):
        async for _chunk in request.stream():  # drain: the client may already be sending
            pass
        return {"digest": digest, "stored": False}
    path, found, size = await _receive(request, x_keel_size)
    try:
        if found != digest:
            raise IntegrityError(f"The upload hashes to sha256 {found}, not {digest}: it was damaged on the way. Nothing was stored.",
                                 hint="Send it again.", expected=digest, found=found)
        await run_in_threadpool(blobs.put_verified, path, digest)
    finally:
        path.unlink(missing_ok=True)
    return {"digest": digest, "size": size, "stored": True}


@router.put("/v1/blobs/{digest}/parts/{part}", summary="Upload one part of a large blob (checked against X-Keel-Part-Sha256)")
async def put_part(request: Request, digest: str = SHA256, part: int = Path(ge=0, lt=MAX_PARTS), ident: Identity = Depends(identity),
                   x_keel_part_sha256: str = Header(pattern=r"^[0-9a-f]{64}$"), x_keel_size: int | None = Header(None, ge=0)) -> dict[str, Any]:
    authorize(ident, "write")
    _check_sha(digest)
    _check_sha(x_keel_part_sha256)
    if not 0 <= part < MAX_PARTS:
        raise ValidationError(f"Part number {part} is out of range 0..{MAX_PARTS - 1}.")
    blobs = _blobs()
    path, found, size = await _receive(request, x_keel_size)
    try:
        if found != x_keel_part_sha256:
            raise IntegrityError(f"Part {part} of {digest[:12]} hashes to {found}, not {x_keel_part_sha256}: damaged on the way, not kept.",
                                 hint="Send the part again.", expected=x_keel_part_sha256, found=found)
        await run_in_threadpool(blobs.backend.put_file, blobs.stage_key(digest, part), path)
    finally:
        path.unlink(missing_ok=True)
    return {"digest": digest, "part": part, "size": size}


class CompleteIn(BaseModel):
    parts: int = Field(ge=1, le=MAX_PARTS)
    size: int = Field(ge=0)


@router.post("/v1/blobs/{digest}/complete", summary="Join the parts of a blob, check its sha256 and store it")
def complete_blob(body: CompleteIn, digest: str = SHA256, ident: Identity = Depends(identity)) -> dict[str, Any]:
    from keel.config import settings

    authorize(ident, "write")
    _check_sha(digest)
    blobs = _blobs()
    if blobs.exists(digest):
        return {"digest": digest, "stored": False}
    keys = [blobs.stage_key(digest, n) for n in range(body.parts)]
    missing = [n for n, k in enumerate(keys) if not blobs.backend.exists(k)]
    if missing:
        raise NotFoundError(f"Upload {digest[:12]} lacks part(s) {', '.join(map(str, missing[:10]))} of {body.parts}.",
                            hint="Upload them (PUT /v1/blobs/{sha256}/parts/{n}) and complete again.")
    folder = settings().state_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=folder, prefix=".join-")
    try:
        with os.fdopen(fd, "wb") as out:
            for k in keys:
                piece = FilePath(name + ".part")
                blobs.backend.get_file(k, piece)
                with open(piece, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                piece.unlink()
        size = os.path.getsize(name)
        if h.hexdigest() != digest or size != body.size:
            for k in keys:
                blobs.backend.delete(k)
            raise IntegrityError(f"The parts of {digest[:12]} join to sha256 {h.hexdigest()} ({size} bytes), not {digest} ({body.size} bytes). "
                                 "They were discarded.", hint="Upload the file again.", expected=digest, found=h.hexdigest())
        blobs.put_verified(FilePath(name), digest)
    finally:
        FilePath(name).unlink(missing_ok=True)
    for k in keys:
        blobs.backend.delete(k)
    return {"digest": digest, "size": size, "stored": True}
