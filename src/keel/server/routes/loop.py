"""Routes of the platform API: lineage, diagnosis and ownership (``keel lineage``, ``keel models diagnose``, ``keel owners``).

Read-only, each a thin call of the :mod:`keel.loop` function of the matching command;
lineage and diagnosis of a model need the read role on that model.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from keel.server.auth import Identity, authorize, identity
from keel.server.routes.common import ModelName, VersionRef
from keel.server.routes.loop_schemas import DiagnoseOut, GapsOut, LineageNodeOut, OwnershipOut

router = APIRouter(tags=["loop"])
IDENT = Depends(identity)
RequestId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$", description="The request id a response carried")]
ObjectName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$", description="A feature view or source")]


@router.get("/v1/lineage/predictions/{request_id}", response_model=LineageNodeOut,
            summary="A logged prediction back to its route, deployment, model version, run, data, features and code (keel lineage prediction)")
def prediction_lineage(request_id: RequestId, model: str | None = Query(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$",
                                                                          description="Only look in this model's log (faster)"),
                       ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.lineage import prediction_lineage as trace

    authorize(ident, "read", model=model)
    return trace(request_id, model=model).to_dict()


@router.get("/v1/lineage/models/{name}/{version}", response_model=LineageNodeOut,
            summary="A model version's run, training data, features, sources, code and packages; its deployments and monitors (keel lineage model)")
def model_lineage(name: ModelName, version: VersionRef, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.lineage import model_lineage as trace

    authorize(ident, "read", model=name)
    return trace(name, version).to_dict()


@router.get("/v1/lineage/features/{name}", response_model=LineageNodeOut,
            summary="Who uses a feature view or source: services, model versions, deployments, monitors (keel lineage feature)")
def feature_lineage(name: ObjectName, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.lineage import feature_usage

    authorize(ident, "read")
    return feature_usage(name).to_dict()


@router.get("/v1/models/{name}/versions/{version}/diagnose", response_model=DiagnoseOut,
            summary="What is wrong with this model version: changes, alerts, drift, performance, log health, lineage (keel models diagnose)")
def diagnose(name: ModelName, version: VersionRef, days: int = Query(30, ge=1, le=3650), top: int = Query(5, ge=1, le=100),
             ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.diagnose import diagnose as run

    authorize(ident, "read", model=name)
    return run(f"{name}/{version}" if version.isdigit() else f"{name}@{version}", days=days, top=top)


@router.get("/v1/owners", response_model=OwnershipOut, summary="What each owner owns, and what nobody owns (keel owners)")
def ownership(kind: list[str] | None = Query(None, description="Only these kinds (model, feature_view, contract, monitor, deployment, ...)"),
              ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.ownership import ownership as listing

    authorize(ident, "read")
    return listing(kind)


@router.get("/v1/owners/gaps", response_model=GapsOut,
            summary="The responsibility gaps: what is in production with no monitor, owner or contract on its inputs; deployments nobody owns")
def gaps(ident: Identity = IDENT) -> dict[str, Any]:
    from keel.loop.ownership import in_production, responsibility_gaps

    authorize(ident, "read")
    return {"production": in_production(), "gaps": [g.to_dict() for g in responsibility_gaps()]}
