"""keel's own protocol: ``POST /v1/models/{name}/predict``.

Request: ``{"records": [{...}, ...]}`` or ``{"columns": {"age": [...], ...}}``, with an
optional ``request_id`` (one id for the request; rows get ``<id>:<i>``) or
``request_ids`` (one per row). Response: ``predictions``, ``scores`` for
classifiers, ``model``, ``version``, ``request_id`` and, when a feature was
missing or stale, ``missing_features`` / ``stale_features`` per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.serving.validation import BadRequest, columns_of


def decode(body: Any) -> tuple[Mapping[str, Any], int, str | None, list[str] | None]:
    """(columns, rows, request id, row ids) of a /v1 request body."""
    if not isinstance(body, dict):
        raise BadRequest(f"The request body is a JSON {type(body).__name__}, not an object.",
                              hint='Send {"records": [{"age": 31}]} or {"columns": {"age": [31]}}.')
    has_records, has_columns = "records" in body, "columns" in body
    if has_records == has_columns:
        raise BadRequest("The request body needs exactly one of 'records' or 'columns'." + (f" It has: {', '.join(map(str, body))}." if body else ""),
                              hint='Send {"records": [{"age": 31}]} or {"columns": {"age": [31]}}.')
    unknown = set(body) - {"records", "columns", "request_id", "request_ids"}
    if unknown:
        raise BadRequest(f"Unknown field(s) in the request body: {', '.join(sorted(map(str, unknown)))}.",
                              hint="Allowed: records | columns, request_id, request_ids.")
    payload = body["records"] if has_records else body["columns"]
    if has_records and not isinstance(payload, list):
        raise BadRequest("'records' must be a list of objects.", hint='Send {"records": [{"age": 31}]}.')
    if has_columns and (not isinstance(payload, dict) or not all(isinstance(v, list) for v in payload.values())):
        raise BadRequest("'columns' must be an object of lists.", hint='Send {"columns": {"age": [31]}}.')
    columns, n = columns_of(payload)
    rid = body.get("request_id")
    if "request_id" in body and (not isinstance(rid, str) or isinstance(rid, bool)):
        raise BadRequest("'request_id' must be a string.")
    ids = body.get("request_ids")
    if "request_ids" in body and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise BadRequest("'request_ids' must be a list of strings, one per row.")
    return columns, n, None if rid is None else str(rid), ids
