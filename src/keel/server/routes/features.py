"""Routes of the platform API: the feature store (``keel features ...``, ``keel.get_online_features``, ``keel.push``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from keel.server.auth import Identity, authorize, identity
from keel.server.routes.common import Name
from keel.server.schemas import (
    FeatureObjectDetail,
    FeatureObjectOut,
    OnlineIn,
    OnlineOut,
    PushIn,
    PushOut,
)

router = APIRouter(prefix="/v1/features", tags=["features"])
IDENT = Depends(identity)
Kind = Literal["feature_view", "feature_service", "on_demand_feature_view", "entity", "source"]


@router.get("/definitions", response_model=list[FeatureObjectOut],
            summary="Applied entities, sources, feature views and services with owners, freshness and users (keel features ls)")
def list_definitions(ident: Identity = IDENT) -> list[dict[str, Any]]:
    from keel.features.registry import listing

    authorize(ident, "read")
    return listing()


@router.get("/definitions/{name}", response_model=FeatureObjectDetail, summary="One applied definition with its versions (keel features show)")
def get_definition(name: Name, kind: Kind | None = None, version: int | None = Query(None, ge=1, le=2**62),
                   ident: Identity = IDENT) -> dict[str, Any]:
    from keel.features.registry import describe_object

    authorize(ident, "read")
    return describe_object(name, kind, version)


@router.post("/online", response_model=OnlineOut, summary="Online feature values for entity keys, with status and age (keel.get_online_features)")
def online(body: OnlineIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.features.online import get_online_features

    authorize(ident, "read")
    found = get_online_features(body.features, body.entity_rows, definitions_version=body.definitions_version)
    out: dict[str, Any] = {"features": found.features, "rows": found.rows, "values": found.values}
    if body.with_status:
        out.update(status=found.status, age_seconds=found.age_seconds)
    return out


@router.post("/views/{view}/push", response_model=PushOut,
             summary="Push rows of the view's source shape to the online store and the offline log (keel.push)")
def push(view: Name, body: PushIn, ident: Identity = IDENT) -> dict[str, Any]:
    from keel.features.ingestion import push as push_rows

    authorize(ident, "write")
    return push_rows(view, body.rows, to=body.to).__dict__
