"""Routes of the platform API: models (``/v1/models``): register a run's model, resolve a model URI, download packages.

``keel.register_model`` and ``keel.load_model`` use these when
``KEEL_TRACKING_URI`` is set: registration happens on the server as the
authenticated user; loading resolves the URI here (aliases included) and then
streams each file of the package, which the client checks against its sha256.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from keel.errors import NotFoundError
from keel.server.auth import Identity, authorize, identity
from keel.server.routes.tracking import ERRORS, _json, _run_experiment, _store, blob_response

router = APIRouter(tags=["models"], responses=ERRORS)
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$", description="A registered model's name")]


class RegisterIn(BaseModel):
    source: str = Field(min_length=1, max_length=2048, description="runs:/<run_id>/<path> of a logged model")
    description: str | None = Field(default=None, max_length=100_000)
    tags: dict[str, str] | None = None
    owner: str | None = Field(default=None, max_length=255)


def _version_json(mv: Any) -> Response:
    return _json(mv.to_dict())


@router.post("/v1/models/{name}/versions", summary="Register the next version of a model from a run's logged model")
def register(name: ModelName, body: RegisterIn, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import _source, check_model_name, register_model

    check_model_name(name)
    run_ref, _path = _source(body.source)
    _rid, experiment = _run_experiment(run_ref)
    authorize(ident, "read", experiment=experiment)
    authorize(ident, "write", model=name)
    return _version_json(register_model(body.source, name, description=body.description, tags=body.tags, owner=body.owner))


class ResolveIn(BaseModel):
    uri: str = Field(min_length=1, max_length=2048, description="models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest or runs:/<run_id>/<path>")


def _sizes(owner_kind: str, owner_id: str, path: str) -> dict[str, int]:
    import sqlalchemy as sa

    from keel.store.metadata import like_escape
    from keel.store.schema import artifacts

    with _store().read() as conn:
        rows = conn.execute(
            sa.select(artifacts.c.path, artifacts.c.size).where(
                artifacts.c.owner_kind == owner_kind, artifacts.c.owner_id == owner_id,
                artifacts.c.path.like(like_escape(path) + "/%", escape="\\"),
            )
        ).all()
    return {p[len(path) + 1 :]: int(n) for p, n in rows}


def _manifest(uri: str) -> dict[str, Any]:
    from dataclasses import asdict

    from keel.models.loader import locate

    src, files, _stamp = locate(uri, _store())
    sizes = _sizes(src.owner_kind, src.owner_id, src.path)
    if src.model is not None:
        base = f"/v1/models/{quote(src.model)}/versions/{src.version}/package/"
    else:
        base = f"/v1/runs/{src.run_id}/artifacts/{quote(src.path)}/"
    return {
        "source": asdict(src),
        "files": {f: {"digest": d, "size": sizes.get(f), "url": base + quote(f)} for f, d in sorted(files.items())},
    }


@router.post("/v1/models/resolve", summary="Resolve a model URI to its package: source and files (sha256, size, download URL)")
def resolve(body: ResolveIn, ident: Identity = Depends(identity)) -> Response:
    from keel.models.loader import parse_uri

    kind, parts = parse_uri(body.uri)
    if kind == "models":
        authorize(ident, "read", model=parts["name"])
    else:
        _rid, experiment = _run_experiment(parts["run"])
        authorize(ident, "read", experiment=experiment)
    return _json(_manifest(body.uri))


@router.get("/v1/models/{name}/versions/{version}/package", summary="The files of a version's package (sha256, size, download URL)")
def package(name: ModelName, version: str, ident: Identity = Depends(identity)) -> Response:
    authorize(ident, "read", model=name)
    ref = f"models:/{name}/{version}" if version.isdigit() or version == "latest" else f"models:/{name}@{version}"
    return _json(_manifest(ref))


@router.get("/v1/models/{name}/versions/{version}/package/{file:path}", summary="Download one file of a version's package (streamed)",
            responses={200: {"content": {"application/octet-stream": {}}}})
def package_file(name: ModelName, version: str, file: str, ident: Identity = Depends(identity), range: str | None = Header(None)) -> Response:
    authorize(ident, "read", model=name)
    ref = f"models:/{name}/{version}" if version.isdigit() or version == "latest" else f"models:/{name}@{version}"
    found = _manifest(ref)["files"].get(file)
    if found is None:
        raise NotFoundError(f"Version {version} of model {name!r} has no file {file!r} in its package.",
                            hint=f"List them: GET /v1/models/{name}/versions/{version}/package.")
    return blob_response(found["digest"], int(found["size"] or 0), range)


@router.get("/v1/models", summary="Registered models")
def list_models(ident: Identity = Depends(identity), include_deleted: bool = False) -> Response:
    from keel.registry.versions import list_models as listing

    authorize(ident, "read")
    return _json([m.to_dict() for m in listing(include_deleted=include_deleted)])


@router.get("/v1/models/{name}", summary="One registered model")
def get_model(name: ModelName, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import get_model as get

    authorize(ident, "read", model=name)
    return _json(get(name).to_dict())


@router.get("/v1/models/{name}/versions", summary="The versions of a model, oldest first")
def list_versions(name: ModelName, ident: Identity = Depends(identity), include_deleted: bool = False) -> Response:
    from keel.registry.versions import list_versions as listing

    authorize(ident, "read", model=name)
    return _json([v.to_dict() for v in listing(name, include_deleted=include_deleted)])


@router.get("/v1/models/{name}/evaluations", summary="Stored evaluation results of a model (newest first)")
def evaluations(name: ModelName, ident: Identity = Depends(identity), version: int | None = None) -> Response:
    from keel.registry.versions import evaluations as listing

    authorize(ident, "read", model=name)
    return _json(listing(name, version))


@router.get("/v1/models/{name}/versions/{version}", summary="One version (a number, 'latest' or an alias)")
def get_version(name: ModelName, version: str, ident: Identity = Depends(identity)) -> Response:
    from keel.registry.versions import get_version as get

    authorize(ident, "read", model=name)
    return _version_json(get(name, int(version) if version.isdigit() else version))
