"""The Open Inference Protocol v2 (KServe, Triton, MLServer): metadata, and ``/infer`` over JSON and binary tensors.

An infer request carries ``inputs``: tensors with ``name``, ``shape``, ``datatype``
and ``data`` (flat row-major or nested). A model takes one tensor per input column
(shape ``[rows]`` or ``[rows, 1]``), or, when all its inputs are numeric, one
2-D tensor ``[rows, N]`` in the signature's column order (its metadata lists both).

The binary tensor extension: a body whose first ``Inference-Header-Content-Length``
bytes are the JSON header, followed by each input marked
``"parameters": {"binary_data_size": k}`` as raw little-endian bytes in order
(``BYTES`` elements as a 4-byte length then the bytes). Outputs are returned in
binary when the request asks (``"parameters": {"binary_data_output": true}``, or
per output ``{"binary_data": true}``).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from keel.serving.validation import BadRequest

if TYPE_CHECKING:
    import numpy as np

    from keel.models.signature import ColSpec
    from keel.serving.predictor import Prediction

HEADER = "inference-header-content-length"
DTYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1", "INT16": "<i2",
    "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
SIGNATURE_DTYPE = {"integer": "INT64", "double": "FP64", "boolean": "BOOL", "string": "BYTES", "category": "BYTES",
                   "datetime": "BYTES", "any": "BYTES"}
TENSOR_INPUT = "input"


def datatype_of(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    return "BYTES"


def tensor_metadata(specs: list[ColSpec]) -> dict[str, Any]:
    """The ``inputs`` of model metadata, plus the 2-D form for all-numeric inputs."""
    inputs = [{"name": s.name, "datatype": SIGNATURE_DTYPE.get(s.type, "BYTES"), "shape": [-1]} for s in specs]
    out: dict[str, Any] = {"inputs": inputs}
    if specs and all(s.type in ("double", "integer") for s in specs) and len(specs) > 1:
        out["parameters"] = {"tensor_input": {"name": TENSOR_INPUT, "datatype": "FP64", "shape": [-1, len(specs)],
                                              "columns": [s.name for s in specs]}}
    return out


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a number.") from None
    if n < 0 or n > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes.")
    return body[:n], body[n:]


def _bytes_elements(raw: bytes, count: int, name: str) -> list[str]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise BadRequest(f"Input '{name}': a BYTES element's length prefix is cut off.")
        (k,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + k > len(raw):
            raise BadRequest(f"Input '{name}': a BYTES element of {k} bytes runs past the data.")
        out.append(raw[i : i + k].decode("utf-8", errors="replace"))
        i += k
    if len(out) != count:
        raise BadRequest(f"Input '{name}' holds {len(out)} BYTES elements; its shape says {count}.")
    return out


def _decode_tensor(tensor: Any, tail: bytes, offset: int) -> tuple[Any, list[int], int]:
    """(values as a NumPy array or list, shape, new offset into the binary tail)."""
    import numpy as np

    if not isinstance(tensor, dict):
        raise BadRequest("Each entry of 'inputs' must be an object with name, shape, datatype and data.")
    if not isinstance(tensor, dict):
        raise BadRequest(f"Each input must be an object (a tensor), not a {type(tensor).__name__}.")
    name = tensor.get("name")
    extra = set(tensor) - {"name", "shape", "datatype", "data", "parameters"}
    if extra or not isinstance(tensor.get("parameters", {}), dict):
        raise BadRequest(f"Input {name!r} has unknown key(s) {', '.join(sorted(map(str, extra)))} or 'parameters' that are not an object.",
                         hint="A tensor has name, shape, datatype, data and optionally parameters.")
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"Input {name!r} needs a string 'name' and a 'shape' of non-negative integers.", hint='{"name": "age", "shape": [2], "datatype": "FP64", "data": [31, 45]}')
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DTYPES):
        raise BadRequest(f"Input '{name}' has datatype {datatype!r}.", hint=f"Use one of {', '.join([*DTYPES, 'BYTES'])}.")
    count = int(np.prod(shape)) if shape else 1
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise BadRequest(f"Input '{name}': binary_data_size {size!r} runs past the {len(tail)} bytes of binary data.")
        raw = tail[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            return np.asarray(_bytes_elements(raw, count, name), dtype=object).reshape(shape), shape, offset
        dt = np.dtype(DTYPES[datatype])
        if size != count * dt.itemsize:
            raise BadRequest(f"Input '{name}': {size} bytes of binary data for shape {shape} of {datatype} ({count * dt.itemsize} expected).")
        return np.frombuffer(raw, dtype=dt).reshape(shape), shape, offset
    if "data" not in tensor:
        raise BadRequest(f"Input '{name}' has no 'data' (and no binary_data_size).")
    data = tensor["data"]
    if not isinstance(data, list):
        raise BadRequest(f"Input '{name}': 'data' must be a list of values, not a {type(data).__name__}.")
    flat = _flatten(data)
    if len(flat) != count:
        raise BadRequest(f"Input '{name}' holds {len(flat)} values; its shape {shape} says {count}.")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"Input '{name}' of datatype BYTES holds values that are not strings.")
        return np.asarray(flat, dtype=object).reshape(shape), shape, offset
    try:
        arr = np.asarray(flat, dtype=DTYPES[datatype] if datatype != "BOOL" else bool)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Input '{name}' holds values that are not {datatype}: {exc}.") from None
    if datatype == "BOOL" and not all(isinstance(v, bool) for v in flat):
        raise BadRequest(f"Input '{name}' of datatype BOOL holds non-boolean values.")
    if datatype != "BOOL" and any(isinstance(v, bool | str) or v is None for v in flat):
        raise BadRequest(f"Input '{name}' of datatype {datatype} holds values that are not numbers.")
    return arr.reshape(shape), shape, offset


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for d in data:
        out.extend(_flatten(d))
    return out


def _output_request(o: Any) -> bool:
    if not isinstance(o, dict) or not isinstance(o.get("name"), str) or set(o) - {"name", "parameters"}:
        return False
    params = o.get("parameters", {})
    return isinstance(params, dict) and isinstance(params.get("binary_data", False), bool)


def decode_infer(header: Any, tail: bytes, specs: list[ColSpec]) -> tuple[dict[str, Any], int, str | None, dict[str, Any]]:
    """(columns, rows, request id, output options) of an infer request."""
    if not isinstance(header, dict):
        raise BadRequest("The infer request must be a JSON object with 'inputs'.", hint='{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": [31]}]}')
    extra = set(header) - {"id", "inputs", "outputs", "parameters"}
    if extra:
        raise BadRequest(f"Unknown key(s) in the infer request: {', '.join(sorted(map(str, extra)))}.", hint="Allowed: id, inputs, outputs, parameters.")
    if "id" in header and not isinstance(header["id"], str):
        raise BadRequest("The infer request's 'id' must be a string.")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("The infer request has no 'inputs' (a non-empty list of tensors).")
    offset = 0
    tensors = []
    for t in inputs:
        values, shape, offset = _decode_tensor(t, tail, offset)
        tensors.append((t["name"], values, shape))
    names = [s.name for s in specs]
    columns: dict[str, Any] = {}
    rows: set[int] = set()
    if len(tensors) == 1 and len(tensors[0][2]) == 2 and tensors[0][2][1] == len(names) and tensors[0][0] not in names and len(names) > 1:
        _, values, shape = tensors[0]
        for j, n in enumerate(names):
            columns[n] = values[:, j]
        rows.add(shape[0])
    else:
        for name, values, shape in tensors:
            if len(shape) == 2 and shape[1] == 1:
                values = values.reshape(shape[0])
            elif len(shape) != 1:
                raise BadRequest(
                    f"Input '{name}' has shape {shape}; a column is [rows] or [rows, 1]"
                    + (f", and the whole input one tensor [rows, {len(names)}]." if len(names) > 1 else "."),
                    hint="GET /v2/models/{name} lists the inputs the model takes.",
                )
            columns[name] = values
            rows.add(int(values.shape[0]))
    if len(rows) > 1:
        raise BadRequest(f"The inputs have different numbers of rows {sorted(rows)}.")
    params = header.get("parameters", {})
    if not isinstance(params, dict) or not isinstance(params.get("binary_data_output", False), bool):
        raise BadRequest("'parameters' must be an object whose 'binary_data_output' is true or false.")
    binary_all = bool(params.get("binary_data_output"))
    wanted = header.get("outputs", [])
    if not isinstance(wanted, list) or not all(_output_request(o) for o in wanted):
        raise BadRequest("'outputs' must be a list of objects with a 'name' (and optionally 'parameters': {\"binary_data\": true}).",
                         hint='e.g. "outputs": [{"name": "score"}]')
    binary = {o.get("name") for o in wanted if isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data")}
    names_wanted = [o.get("name") for o in wanted if isinstance(o, dict)]
    rid = header.get("id")
    return columns, rows.pop(), None if rid is None else str(rid), {"binary_all": binary_all, "binary": binary, "names": names_wanted}


def output_tensors(result: Prediction) -> list[tuple[str, str, Any]]:
    """(name, datatype, NumPy array) of each output."""
    import numpy as np

    pred = np.asarray(result.predictions)
    outs = [("prediction", datatype_of(pred), pred)]
    if result.scores is not None:
        outs.append(("score", "FP64", np.asarray(result.scores, dtype="float64")))
    for c, values in (result.probabilities or {}).items():
        outs.append((f"proba_{c}", "FP64", np.asarray(values, dtype="float64")))
    return outs


def encode_infer(result: Prediction, options: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (binary outputs when asked)."""
    import numpy as np
    import orjson

    outputs, binary_parts = [], []
    wanted = [n for n in options.get("names") or [] if n]
    for name, datatype, arr in output_tensors(result):
        if wanted and name not in wanted:
            continue
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(arr)]}
        if options.get("binary_all") or name in options.get("binary", set()):
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in arr.tolist()))
            else:
                raw = np.ascontiguousarray(arr, dtype=DTYPES[datatype] if datatype != "BOOL" else bool).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            entry["data"] = arr.tolist() if datatype != "BYTES" else [str(v) for v in arr.tolist()]
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": result.model, "model_version": str(result.version), "id": result.request_id, "outputs": outputs}
    if any(result.missing_features) or any(result.stale_features):
        body["parameters"] = {"missing_features": result.missing_features, "stale_features": result.stale_features}
    head = orjson.dumps(body)
    if not binary_parts:
        return head, {"content-type": "application/json"}
    return head + b"".join(binary_parts), {"content-type": "application/octet-stream", HEADER: str(len(head))}
