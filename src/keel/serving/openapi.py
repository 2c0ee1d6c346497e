"""The server's OpenAPI 3.1 document (``GET /openapi.json``): every endpoint, body and error response."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.serving.app import Server

_JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request (invalid JSON, empty body, malformed payload)", 404: "Unknown model or version",
            413: "Body over the size limit", 415: "Unsupported content type", 422: "Input does not match the signature (per-column detail)",
            503: "Queue full (micro-batching): retry after Retry-After seconds"}
    return {str(c): _error(text[c]) for c in codes}


_TYPE = {"integer": {"type": "integer"}, "double": {"type": "number"}, "boolean": {"type": "boolean"}, "string": {"type": "string"},
         "category": {"type": "string"}, "datetime": {"type": "string", "format": "date-time"}, "any": {}}


def _value(spec: Any) -> dict[str, Any]:
    t: dict[str, Any] = dict(_TYPE.get(spec.type, {}))
    return {"anyOf": [t, {"type": "null"}]} if spec.nullable and t else t


def _row_schema(server: Server, name: str) -> dict[str, Any]:
    p = server.predictors[name]
    props = {c.name: _value(c) for c in p.request_columns}
    return {"type": "object", "properties": props, "required": [c.name for c in p.request_columns], "additionalProperties": False}


_ONE_ROW = ("JSON Schema cannot say that every column (or tensor) has the same number of values, so the document shows "
            "one row; any number of rows is accepted when they agree.")
_REQUEST_ID = {"type": "string", "maxLength": 200, "pattern": "^[ -~]*$", "description": "Printable ASCII (it is echoed in a header)."}
_OIP = {"double": ("FP64", {"type": "number"}), "integer": ("INT64", {"type": "integer"}), "boolean": ("BOOL", {"type": "boolean"}),
        "string": ("BYTES", {"type": "string"}), "category": ("BYTES", {"type": "string"})}


def _v1_request(server: Server, name: str, ref: dict[str, Any]) -> dict[str, Any]:
    p = server.predictors[name]
    columns = {"type": "object", "required": [c.name for c in p.request_columns], "additionalProperties": False,
               "properties": {c.name: {"type": "array", "items": _value(c), "minItems": 1, "maxItems": 1} for c in p.request_columns}}
    one = {"type": "array", "items": ref, "minItems": 1, "maxItems": 1}
    ids = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1, "description": "One request id per row."}
    return {"oneOf": [
        {"type": "object", "required": ["records"], "additionalProperties": False,
         "properties": {"records": {"type": "array", "items": ref, "minItems": 1}, "request_id": _REQUEST_ID}},
        {"type": "object", "required": ["records", "request_ids"], "additionalProperties": False,
         "properties": {"records": one, "request_ids": ids, "request_id": _REQUEST_ID}, "description": _ONE_ROW},
        {"type": "object", "required": ["columns"], "additionalProperties": False,
         "properties": {"columns": columns, "request_id": _REQUEST_ID}, "description": _ONE_ROW},
    ]}


def _infer_request(server: Server, name: str) -> dict[str, Any] | None:
    """One tensor per request column, in order (the server takes any order, or one 2-D tensor), or None if a column has no OIP type."""
    p = server.predictors[name]
    tensors = []
    for c in p.request_columns:
        if c.type not in _OIP:
            return None
        datatype, item = _OIP[c.type]
        tensors.append({"type": "object", "required": ["name", "shape", "datatype", "data"], "additionalProperties": False, "properties": {
            "name": {"const": c.name}, "datatype": {"const": datatype},
            "shape": {"type": "array", "prefixItems": [{"const": 1}], "items": False, "minItems": 1},
            "data": {"type": "array", "items": item, "minItems": 1, "maxItems": 1}, "parameters": {"type": "object"}}})
    outputs = [o["name"] for o in _outputs(p)]
    return {"type": "object", "required": ["inputs"], "additionalProperties": False, "description": _ONE_ROW, "properties": {
        "id": _REQUEST_ID,
        "inputs": {"type": "array", "prefixItems": tensors, "items": False, "minItems": len(tensors)},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"enum": outputs}, "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}}}


def _outputs(p: Any) -> list[dict[str, Any]]:
    out = [{"name": "prediction"}]
    if p._state.proba:
        out.append({"name": "score"})
        if p.classes and len(p.classes) > 2:
            out += [{"name": f"proba_{c}"} for c in p.classes]
    return out


_CSV_VALUE = {"double": r"-?[0-9]{1,6}(\.[0-9]{1,6})?", "integer": r"-?[0-9]{1,9}", "boolean": "(true|false)", "string": "[a-z]{1,12}",
              "category": "[a-z]{1,12}"}


def _mlflow_request(server: Server, name: str, ref: dict[str, Any]) -> dict[str, Any]:
    """The four JSON formats of MLflow's scoring protocol, each with the model's columns."""
    cols = server.predictors[name].request_columns
    records = {"type": "array", "items": ref, "minItems": 1}
    tuples = {"type": "array", "minItems": 1, "items": {"type": "array", "prefixItems": [_value(c) for c in cols], "items": False,
                                                         "minItems": len(cols)}}
    columns = {"type": "object", "required": [c.name for c in cols], "additionalProperties": False,
               "properties": {c.name: {"anyOf": [_value(c), {"type": "array", "items": _value(c), "minItems": 1, "maxItems": 1}]} for c in cols}}
    split = {"type": "object", "required": ["data"], "additionalProperties": False,
             "properties": {"columns": {"const": [c.name for c in cols]}, "data": tuples, "index": {"type": "array"}}}
    params = {"type": "object"}
    forms = {"dataframe_split": split, "dataframe_records": records, "instances": {"anyOf": [records, tuples, columns]},
             "inputs": {"anyOf": [records, tuples, columns]}}
    return {"oneOf": [{"type": "object", "required": [k], "additionalProperties": False, "properties": {k: v, "params": params}}
                      for k, v in forms.items()], "description": _ONE_ROW}


def _csv_schema(server: Server, name: str) -> dict[str, Any]:
    """A header line of the request columns and rows of their values (a pattern: the values the document promises to accept)."""
    p = server.predictors[name]
    cols = p.request_columns
    if not cols or any(c.type not in _CSV_VALUE for c in cols):
        return {"type": "string", "minLength": 1}
    row = ",".join(_CSV_VALUE[c.type] for c in cols)
    return {"type": "string", "pattern": "^" + ",".join(c.name for c in cols) + "\n(" + row + "\n){1,5}$",
            "description": "CSV: a header line, then one line per row."}


def document(server: Server) -> dict[str, Any]:
    """The OpenAPI document of ``server``'s routes, with each served model's row schema."""
    from keel import __version__

    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "properties": {"error": {}, "message": {"type": "string"}, "detail": {}, "error_code": {"type": "string"}}},
        "V1Response": {"type": "object", "required": ["request_id", "model", "version", "predictions"], "properties": {
            "request_id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "integer"},
            "predictions": {"type": "array"}, "scores": {"type": "array", "items": {"type": "number"}},
            "probabilities": {"type": "object"}, "row_ids": {"type": "array", "items": {"type": "string"}},
            "missing_features": {"type": "array"}, "stale_features": {"type": "array"}}},
        "Tensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"}, "data": {}, "parameters": {"type": "object"}}},
        "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            "outputs": {"type": "array"}, "parameters": {"type": "object"}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}, "parameters": {"type": "object"}}},
    }
    rid: dict[str, Any] = {"name": "x-request-id", "in": "header", "required": False, "schema": _REQUEST_ID,
           "description": "Your own request id (the prediction log's join key for labels); one is made up if absent."}
    for name in server.predictors:
        row = f"Row_{name}".replace("-", "_").replace(".", "_")
        schemas[row] = _row_schema(server, name)
        ref = {"$ref": f"#/components/schemas/{row}"}
        paths[f"/v1/models/{name}/predict"] = {"post": {
            "summary": f"Predict with {name} (keel protocol)", "parameters": [rid],
            "requestBody": {"required": True, "content": {_JSON: {"schema": _v1_request(server, name, ref)}}},
            "responses": {"200": {"description": "Predictions", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/V1Response"}}}},
                          **_errors(400, 404, 413, 415, 422, 503)}}}
        infer = _infer_request(server, name) or {"$ref": "#/components/schemas/InferRequest"}
        for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{{version}}"):
            # the version served now (another gives 404): a client that follows the document gets an answer
            vparam = ([{"name": "version", "in": "path", "required": True,
                        "schema": {"type": "string", "enum": [str(server.predictors[name].version)]}}]
                      if "{version}" in prefix else [])
            paths[prefix] = {"get": {"summary": f"OIP v2 metadata of {name}", "parameters": vparam,
                                     "responses": {"200": {"description": "Model metadata", "content": {_JSON: {"schema": {"type": "object"}}}},
                                                   **_errors(404)}}}
            paths[prefix + "/ready"] = {"get": {"summary": f"Is {name} ready", "parameters": vparam,
                                                "responses": {"200": {"description": "Ready"}, **_errors(404)}}}
            paths[prefix + "/infer"] = {"post": {
                "summary": f"OIP v2 inference with {name} (JSON, or the binary tensor extension)", "parameters": [*vparam, rid],
                "description": "The binary tensor extension (a JSON header of Inference-Header-Content-Length bytes, then raw tensors) "
                               "is accepted too; this document describes the JSON form.",
                "requestBody": {"required": True, "content": {_JSON: {"schema": infer}}},
                "responses": {"200": {"description": "Outputs", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                                                                           "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                              **_errors(400, 404, 413, 415, 422, 503)}}}
    first = next(iter(server.predictors))
    first_row = f"Row_{first}".replace("-", "_").replace(".", "_")
    paths["/invocations"] = {"post": {
        "summary": f"MLflow scoring protocol ({first})",
        "requestBody": {"required": True, "content": {_JSON: {"schema": _mlflow_request(server, first, {"$ref": f"#/components/schemas/{first_row}"})},
            "text/csv": {"schema": _csv_schema(server, first)}}},
        "responses": {"200": {"description": "Predictions", "content": {_JSON: {"schema": {"type": "object", "required": ["predictions"],
                                                                                          "properties": {"predictions": {"type": "array"}}}}}},
                      **_errors(400, 404, 413, 415, 503)}}}
    text = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    paths["/ping"] = {"get": {"summary": "MLflow liveness", "responses": text}}
    paths["/health"] = {"get": {"summary": "MLflow health", "responses": text}}
    paths["/version"] = {"get": {"summary": "Server version", "responses": text}}
    obj = {"200": {"description": "OK", "content": {_JSON: {"schema": {"type": "object"}}}}}
    paths["/v2"] = {"get": {"summary": "OIP v2 server metadata", "responses": obj}}
    paths["/v2/health/live"] = {"get": {"summary": "OIP v2 liveness", "responses": obj}}
    paths["/v2/health/ready"] = {"get": {"summary": "OIP v2 readiness", "responses": {**obj, "503": {"description": "Not ready"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": text}}
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": obj}}
    return {"openapi": "3.1.0", "info": {"title": "keel model server", "version": __version__,
                                          "description": f"Serving {', '.join(f'{n} v{p.version}' for n, p in server.predictors.items())}."},
            "paths": paths, "components": {"schemas": schemas}}
