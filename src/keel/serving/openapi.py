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


def _row_schema(server: Server, name: str) -> dict[str, Any]:
    p = server.predictors[name]
    props: dict[str, Any] = {}
    for c in p.request_columns:
        t: dict[str, Any] = dict(_TYPE.get(c.type, {}))
        if c.nullable and t:
            t = {"anyOf": [t, {"type": "null"}]}
        props[c.name] = t
    return {"type": "object", "properties": props, "required": [c.name for c in p.request_columns], "additionalProperties": False}


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
    rid: dict[str, Any] = {"name": "x-request-id", "in": "header", "required": False, "schema": {"type": "string"},
           "description": "Your own request id (the prediction log's join key for labels); one is made up if absent."}
    for name in server.predictors:
        row = f"Row_{name}".replace("-", "_").replace(".", "_")
        schemas[row] = _row_schema(server, name)
        ref = {"$ref": f"#/components/schemas/{row}"}
        paths[f"/v1/models/{name}/predict"] = {"post": {
            "summary": f"Predict with {name} (keel protocol)", "parameters": [rid],
            "requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
                {"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": ref, "minItems": 1},
                 "request_id": {"type": "string"}, "request_ids": {"type": "array", "items": {"type": "string"}}}, "additionalProperties": False},
                {"type": "object", "required": ["columns"], "properties": {"columns": {"type": "object"}, "request_id": {"type": "string"},
                 "request_ids": {"type": "array", "items": {"type": "string"}}}, "additionalProperties": False}]}}}},
            "responses": {"200": {"description": "Predictions", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/V1Response"}}}},
                          **_errors(400, 404, 413, 415, 422, 503)}}}
        for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{{version}}"):
            vparam = [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}] if "{version}" in prefix else []
            paths[prefix] = {"get": {"summary": f"OIP v2 metadata of {name}", "parameters": vparam,
                                     "responses": {"200": {"description": "Model metadata", "content": {_JSON: {"schema": {"type": "object"}}}},
                                                   **_errors(404)}}}
            paths[prefix + "/ready"] = {"get": {"summary": f"Is {name} ready", "parameters": vparam,
                                                "responses": {"200": {"description": "Ready"}, **_errors(404)}}}
            paths[prefix + "/infer"] = {"post": {
                "summary": f"OIP v2 inference with {name} (JSON, or the binary tensor extension)", "parameters": [*vparam, rid],
                "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                                                             "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": {"description": "Outputs", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                                                                           "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                              **_errors(400, 404, 413, 415, 422, 503)}}}
    first = next(iter(server.predictors))
    paths["/invocations"] = {"post": {
        "summary": f"MLflow scoring protocol ({first})",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "properties": {
            "dataframe_split": {"type": "object"}, "dataframe_records": {"type": "array"}, "instances": {}, "inputs": {}, "params": {"type": "object"}}}},
            "text/csv": {"schema": {"type": "string"}}}},
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
