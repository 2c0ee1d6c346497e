"""MLflow's scoring protocol (``mlflow models serve``): ``POST /invocations``.

JSON bodies hold exactly one of ``dataframe_split`` (``{"columns": [...], "data": [[...]]}``),
``dataframe_records`` (``[{...}]``), ``instances`` or ``inputs`` (rows, or an object
of columns; plain lists of values follow the signature's column order), plus an
optional ``params``; ``text/csv`` bodies are a CSV with a header. The response is
``{"predictions": [...]}`` and errors are ``{"error_code": "BAD_REQUEST", "message": ...}``
with status 400, as MLflow answers, so MLflow clients work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.serving.validation import BadRequest, columns_of

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")


class UnsupportedMediaType(BadRequest):
    http_status = 415


def content_type_of(header: str | None) -> str:
    kind = (header or "").split(";", 1)[0].strip().lower()
    if kind not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"This predictor only supports the following content types: {', '.join(CONTENT_TYPES)}; got {header!r}.",
            hint="Send Content-Type: application/json (dataframe_split, dataframe_records, instances, inputs) or text/csv.",
        )
    return kind


def decode_csv(body: bytes, text_columns: Sequence[str] = ()) -> tuple[Mapping[str, Any], int]:
    """The CSV's columns; ``text_columns`` (the signature's strings) are read as text, never as numbers, booleans or nulls."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not body.strip():
        raise BadRequest("The CSV body is empty.", hint="Send a header line and one line per row.")
    try:
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}, strings_can_be_null=False)
        table = pacsv.read_csv(io.BytesIO(body), convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise BadRequest(f"The CSV body cannot be read: {exc}.", hint="Send a header line and one line per row.") from None
    return columns_of(table)


def _rows_of_lists(values: list[Any], names: list[str]) -> tuple[Mapping[str, Any], int]:
    if names and all(isinstance(v, list) for v in values):
        width = {len(v) for v in values}
        if width != {len(names)}:
            raise BadRequest(f"Rows of {sorted(width)} values for a model of {len(names)} input columns ({', '.join(names)}).",
                                  hint="Send one value per input column, in the signature's order, or send objects.")
        return {name: [row[j] for row in values] for j, name in enumerate(names)}, len(values)
    if names and len(names) == 1 and not any(isinstance(v, list | dict) for v in values):
        return {names[0]: values}, len(values)
    return columns_of(values)


def decode_json(body: Any, names: list[str]) -> tuple[Mapping[str, Any], int]:
    """(columns, rows) of an /invocations JSON body; ``names`` orders plain lists of values."""
    if not isinstance(body, dict):
        raise BadRequest(f"The request body is a JSON {type(body).__name__}; it must be an object with one of {', '.join(FORMATS)}.")
    given = [k for k in FORMATS if k in body]
    unknown = set(body) - {*FORMATS, "params"}
    if len(given) != 1 or unknown:
        raise BadRequest(
            f"The request body must hold exactly one of {', '.join(FORMATS)} (and optionally params); got {', '.join(map(str, body)) or 'nothing'}.",
            hint='e.g. {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}',
        )
    if not isinstance(body.get("params", {}), dict):
        raise BadRequest("'params' must be an object.", hint='e.g. {"inputs": [...], "params": {"threshold": 0.5}}')
    kind = given[0]
    value = body[kind]
    if kind == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadRequest("dataframe_split must be an object with 'columns' and 'data'.", hint='{"columns": ["a"], "data": [[1]]}')
        extra = set(value) - {"columns", "data", "index"}
        if extra:
            raise BadRequest(f"Unknown key(s) in dataframe_split: {', '.join(sorted(map(str, extra)))}.", hint="Allowed: columns, data, index.")
        data = value["data"]
        cols = value.get("columns", names)
        if not isinstance(data, list) or not isinstance(cols, list) or not isinstance(value.get("index", []), list):
            raise BadRequest("dataframe_split 'data' must be a list of rows, and 'columns' and 'index' lists.")
        return _rows_of_lists(data, [str(c) for c in cols] or names)
    if kind == "dataframe_records":
        if not isinstance(value, list):
            raise BadRequest("dataframe_records must be a list of objects.")
        return columns_of(value)
    if isinstance(value, dict):
        return columns_of(value)
    if isinstance(value, list):
        return _rows_of_lists(value, names)
    raise BadRequest(f"'{kind}' must be a list of rows or an object of columns.")


def error_body(exc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"error_code": "BAD_REQUEST" if exc.http_status < 500 else "INTERNAL_ERROR", "message": str(exc)}
    if getattr(exc, "detail", None):
        out["detail"] = exc.to_dict().get("detail")
    return out
