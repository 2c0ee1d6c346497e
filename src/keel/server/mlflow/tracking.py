"""MLflow tracking routes: experiments, runs, metrics, search (``/api/2.0/mlflow/...``)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from keel.errors import ValidationError
from keel.server.auth import Identity, authorize, identity
from keel.server.mlflow import runs as R
from keel.server.mlflow._protocol import (
    MlflowRoute,
    body,
    integer,
    items,
    json_response,
    key_values,
    strings,
    text,
)

router = APIRouter(prefix="/api/2.0/mlflow", route_class=MlflowRoute, tags=["mlflow"])
EMPTY = b"{}"


def _ok() -> Response:
    return Response(EMPTY, media_type="application/json")


def _run_id(data: dict[str, Any]) -> str:
    rid = text(data, "run_id") or text(data, "run_uuid")
    if rid is None:
        raise ValidationError("Missing value for required parameter 'run_id'.", hint="Pass the run's id.")
    return rid


async def _run_write(request: Request, ident: Identity) -> tuple[dict[str, Any], str]:
    """The body of a write to a run, and the run's id, once the caller may write to it."""
    data = await body(request)
    rid = _run_id(data)
    _authorize_run(ident, rid, "write")
    return data, rid


def _one(data: dict[str, Any]) -> dict[str, str]:
    return {text(data, "key", required=True) or "": text(data, "value", default="") or ""}


def _authorize_run(ident: Identity, rid: str, action: str) -> int:
    exp = R.run_experiment(rid)
    authorize(ident, action, experiment=R.experiment_name(exp))  # type: ignore[arg-type]
    return exp


# -- experiments ----------------------------------------------------------------------------

@router.get("/experiments/get-by-name", summary="MLflow: get an experiment by name")
async def get_experiment_by_name(request: Request, ident: Identity = Depends(identity)) -> Response:
    name = text(await body(request), "experiment_name", required=True)
    assert name is not None
    authorize(ident, "read", experiment=name)
    return json_response({"experiment": R.get_experiment_by_name(name)})


@router.get("/experiments/get", summary="MLflow: get an experiment")
async def get_experiment(request: Request, ident: Identity = Depends(identity)) -> Response:
    exp_id = R.resolve_experiment(text(await body(request), "experiment_id", required=True))
    authorize(ident, "read", experiment=R.experiment_name(exp_id))
    return json_response({"experiment": R.get_experiment(exp_id)})


@router.post("/experiments/create", summary="MLflow: create an experiment")
async def create_experiment(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    name = text(data, "name", required=True)
    assert name is not None
    authorize(ident, "write", experiment=name)
    return json_response({"experiment_id": str(R.create_experiment(name, key_values(data, "tags")))})


_NAME_FILTER = re.compile(r"^\s*(?:attributes?\.)?name\s*(=|!=|LIKE|ILIKE)\s*(['\"])(.*)\2\s*$", re.IGNORECASE)


@router.get("/experiments/search", summary="MLflow: search experiments", operation_id="mlflow_experiments_search_get")
@router.post("/experiments/search", summary="MLflow: search experiments", operation_id="mlflow_experiments_search_post")
async def search_experiments(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    authorize(ident, "read")
    flt = text(data, "filter")
    name_op = None
    if flt:
        m = _NAME_FILTER.match(flt)
        if m is None:
            raise ValidationError(f"Unsupported experiment filter {flt!r}.", hint="Filter on the name: name = 'x' or name LIKE 'x%'.")
        name_op = (m.group(1).lower(), m.group(3))
    max_results = integer(data, "max_results", default=1000) or 1000
    offset = integer(data, "page_token", default=0) or 0
    found, nxt = R.search_experiments(name_op, min(max_results, 50_000), offset)
    out: dict[str, Any] = {"experiments": found}
    if nxt is not None:
        out["next_page_token"] = str(nxt)
    return json_response(out)


@router.post("/experiments/set-experiment-tag", summary="MLflow: set an experiment tag")
async def set_experiment_tag(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    exp_id = R.resolve_experiment(text(data, "experiment_id", required=True))
    authorize(ident, "write", experiment=R.experiment_name(exp_id))
    R.set_experiment_tag(exp_id, text(data, "key", required=True) or "", text(data, "value", default="") or "")
    return _ok()


# -- runs -----------------------------------------------------------------------------------

@router.post("/runs/create", summary="MLflow: create a run")
async def create_run(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    exp_id = R.resolve_experiment(text(data, "experiment_id"))
    authorize(ident, "write", experiment=R.experiment_name(exp_id))
    return json_response({"run": R.create_run_json(exp_id, text(data, "run_name"), integer(data, "start_time"), key_values(data, "tags"))})


@router.get("/runs/get", summary="MLflow: get a run")
async def get_run(request: Request, ident: Identity = Depends(identity)) -> Response:
    rid = _run_id(await body(request))
    _authorize_run(ident, rid, "read")
    return json_response({"run": R.get_run(rid)})


@router.post("/runs/update", summary="MLflow: update a run's status, end time or name")
async def update_run(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    return json_response({"run_info": R.update_run(rid, text(data, "status"), integer(data, "end_time"), text(data, "run_name"))})


@router.post("/runs/delete", summary="MLflow: delete a run")
async def delete_run(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.tracking.query import delete_runs

    rid = _run_id(await body(request))
    _authorize_run(ident, rid, "write")
    delete_runs([rid])
    R._run_cache.drop(rid)
    return _ok()


@router.post("/runs/log-batch", summary="MLflow: log metrics, params and tags of a run at once")
async def log_batch(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_batch(rid, items(data, "metrics"), key_values(data, "params"), key_values(data, "tags"))
    return _ok()


@router.post("/runs/log-metric", summary="MLflow: log one metric value")
async def log_metric(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_batch(rid, [data], {}, {})
    return _ok()


@router.post("/runs/log-parameter", summary="MLflow: log one param")
async def log_param(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_batch(rid, [], _one(data), {})
    return _ok()


@router.post("/runs/set-tag", summary="MLflow: set a run tag")
async def set_tag(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_batch(rid, [], {}, _one(data))
    return _ok()


@router.post("/runs/delete-tag", summary="MLflow: delete a run tag")
async def delete_tag(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.delete_tag(rid, text(data, "key", required=True) or "")
    return _ok()


@router.post("/runs/log-inputs", summary="MLflow: log a run's dataset and model inputs")
async def log_inputs(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_inputs(rid, items(data, "datasets"), [str(m.get("model_id")) for m in items(data, "models") if m.get("model_id")])
    return _ok()


@router.post("/runs/outputs", summary="MLflow: log the models a run produced")
async def log_outputs(request: Request, ident: Identity = Depends(identity)) -> Response:
    data, rid = await _run_write(request, ident)
    R.log_outputs(rid, [(str(m["model_id"]), integer(m, "step", default=0) or 0) for m in items(data, "models") if m.get("model_id")])
    return _ok()


@router.get("/metrics/get-history", summary="MLflow: every value of a run's metric")
async def get_metric_history(request: Request, ident: Identity = Depends(identity)) -> Response:
    data = await body(request)
    rid = _run_id(data)
    key = text(data, "metric_key", required=True) or ""
    _authorize_run(ident, rid, "read")
    max_results = integer(data, "max_results")
    offset = integer(data, "page_token", default=0) or 0
    out: dict[str, Any]
    if max_results:  # the MLflow client pages (25,000 a call): only the page's values become JSON objects
        page, total = R.history(rid, key, slice(offset, offset + max_results))
        out = {"metrics": page}
        if offset + max_results < total:
            out["next_page_token"] = str(offset + max_results)
    else:
        out = {"metrics": R.history(rid, key)[0]}
    return json_response(out, request=request)


# -- search -----------------------------------------------------------------------------------

_STATUS_CMP = re.compile(r"((?:attributes?\.)?status\s*(?:=|==|!=|<>)\s*)(['\"])([A-Za-z]+)\2", re.IGNORECASE)
_STATUS_IN = re.compile(r"((?:attributes?\.)?status\s+(?:not\s+)?in\s*\()([^)]*)\)", re.IGNORECASE)
_RUN_NAME_TAG = re.compile(r"tags\.(?:`mlflow\.runName`|\"mlflow\.runName\"|mlflow\.runName)", re.IGNORECASE)


def translate_filter(flt: str) -> str:
    """An MLflow run filter in keel's filter language (the same grammar; statuses in lower case)."""
    out = _STATUS_CMP.sub(lambda m: f"{m.group(1)}'{m.group(3).lower()}'", flt)
    out = _STATUS_IN.sub(lambda m: m.group(1) + m.group(2).lower() + ")", out)
    return _RUN_NAME_TAG.sub("attributes.run_name", out)


def translate_order(item: str) -> str:
    return _RUN_NAME_TAG.sub("attributes.run_name", item)


@router.post("/runs/search", summary="MLflow: search runs")
async def search_runs(request: Request, ident: Identity = Depends(identity)) -> Response:
    from keel.tracking.search import search_runs as keel_search

    data = await body(request)
    exp_ids = [R.resolve_experiment(e) for e in strings(data, "experiment_ids")] or [R.resolve_experiment("0")]
    for e in exp_ids:
        authorize(ident, "read", experiment=R.experiment_name(e))
    max_results = integer(data, "max_results", default=1000) or 1000
    if max_results > 50_000:
        raise ValidationError(f"max_results {max_results} is more than 50000.", hint="Page with page_token.")
    flt = text(data, "filter")
    view = text(data, "run_view_type") or "ACTIVE_ONLY"
    if view == "DELETED_ONLY":  # keel deletes runs; none is kept deleted
        return json_response({"runs": []})
    try:
        frame = keel_search(
            experiment=exp_ids, filter=translate_filter(flt) if flt else None,
            order_by=[translate_order(o) for o in strings(data, "order_by")] or None,
            max_results=max_results, columns=[], page_token=text(data, "page_token"),
        )
    except ValidationError as exc:
        if str(exc).startswith("Unknown "):  # MLflow answers a key no run has with no runs
            return json_response({"runs": []})
        raise
    ids = [str(i) for i in frame["run_id"].tolist()] if len(frame) else []
    with R.store().reads() as conn:
        found = R.runs_json(conn, ids)
    out: dict[str, Any] = {"runs": found}
    if frame.attrs.get("next_page_token"):
        out["next_page_token"] = frame.attrs["next_page_token"]
    return json_response(out, request=request)
