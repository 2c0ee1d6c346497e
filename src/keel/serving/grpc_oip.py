"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``), for Triton and KServe gRPC clients.

The messages are those of the protocol's ``grpc_predict_v2.proto`` (package
``inference``; same message names, field numbers and types), declared here as
a descriptor built at import time, so no protoc step or generated module is
needed. ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
ModelInfer are served; ModelInfer decodes typed ``contents`` or
``raw_input_contents`` into the same codec as the REST ``/infer`` route and calls
the same :class:`~keel.serving.Predictor`. Bad input is ``INVALID_ARGUMENT``
(``NOT_FOUND`` for an unknown model or version), never ``INTERNAL``.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError, missing_extra

if TYPE_CHECKING:
    from keel.serving.app import Server

log = logging.getLogger("keel.serving")
SERVICE = "inference.GRPCInferenceService"
_T = {"bool": 8, "int32": 5, "int64": 3, "uint32": 13, "uint64": 4, "float": 2, "double": 1, "bytes": 12, "string": 9}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
            "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}

# message -> [(field, number, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple[str, int, str, bool, str | None]]] = {
    "ServerLiveRequest": [], "ServerLiveResponse": [("live", 1, "bool", False, None)],
    "ServerReadyRequest": [], "ServerReadyResponse": [("ready", 1, "bool", False, None)],
    "ModelReadyRequest": [("name", 1, "string", False, None), ("version", 2, "string", False, None)],
    "ModelReadyResponse": [("ready", 1, "bool", False, None)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, "string", False, None), ("version", 2, "string", False, None), ("extensions", 3, "string", True, None)],
    "ModelMetadataRequest": [("name", 1, "string", False, None), ("version", 2, "string", False, None)],
    "TensorMetadata": [("name", 1, "string", False, None), ("datatype", 2, "string", False, None), ("shape", 3, "int64", True, None)],
    "ModelMetadataResponse": [("name", 1, "string", False, None), ("versions", 2, "string", True, None), ("platform", 3, "string", False, None),
                              ("inputs", 4, "message", True, "ModelMetadataResponse.TensorMetadata"),
                              ("outputs", 5, "message", True, "ModelMetadataResponse.TensorMetadata")],
    "InferParameter": [("bool_param", 1, "bool", False, None), ("int64_param", 2, "int64", False, None), ("string_param", 3, "string", False, None),
                       ("double_param", 4, "double", False, None), ("uint64_param", 5, "uint64", False, None)],
    "InferTensorContents": [("bool_contents", 1, "bool", True, None), ("int_contents", 2, "int32", True, None),
                            ("int64_contents", 3, "int64", True, None), ("uint_contents", 4, "uint32", True, None),
                            ("uint64_contents", 5, "uint64", True, None), ("fp32_contents", 6, "float", True, None),
                            ("fp64_contents", 7, "double", True, None), ("bytes_contents", 8, "bytes", True, None)],
    "InferInputTensor": [("name", 1, "string", False, None), ("datatype", 2, "string", False, None), ("shape", 3, "int64", True, None),
                         ("parameters", 4, "map", True, "InferParameter"), ("contents", 5, "message", False, "InferTensorContents")],
    "InferRequestedOutputTensor": [("name", 1, "string", False, None), ("parameters", 2, "map", True, "InferParameter")],
    "ModelInferRequest": [("model_name", 1, "string", False, None), ("model_version", 2, "string", False, None), ("id", 3, "string", False, None),
                          ("parameters", 4, "map", True, "InferParameter"), ("inputs", 5, "message", True, "ModelInferRequest.InferInputTensor"),
                          ("outputs", 6, "message", True, "ModelInferRequest.InferRequestedOutputTensor"),
                          ("raw_input_contents", 7, "bytes", True, None)],
    "InferOutputTensor": [("name", 1, "string", False, None), ("datatype", 2, "string", False, None), ("shape", 3, "int64", True, None),
                          ("parameters", 4, "map", True, "InferParameter"), ("contents", 5, "message", False, "InferTensorContents")],
    "ModelInferResponse": [("model_name", 1, "string", False, None), ("model_version", 2, "string", False, None), ("id", 3, "string", False, None),
                           ("parameters", 4, "map", True, "InferParameter"), ("outputs", 5, "message", True, "ModelInferResponse.InferOutputTensor"),
                           ("raw_output_contents", 6, "bytes", True, None)],
}
_NESTED = {"TensorMetadata": "ModelMetadataResponse", "InferInputTensor": "ModelInferRequest",
           "InferRequestedOutputTensor": "ModelInferRequest", "InferOutputTensor": "ModelInferResponse"}
RPCS = {"ServerLive": ("ServerLiveRequest", "ServerLiveResponse"), "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
        "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"), "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
        "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"), "ModelInfer": ("ModelInferRequest", "ModelInferResponse")}


def _field(msg: Any, name: str, number: int, kind: str, repeated: bool, type_name: str | None, owner: str) -> None:
    from google.protobuf import descriptor_pb2 as d

    f = msg.field.add(name=name, number=number, label=d.FieldDescriptorProto.LABEL_REPEATED if repeated else d.FieldDescriptorProto.LABEL_OPTIONAL)
    if kind == "map":  # map<string, InferParameter>: a nested entry message, as protoc writes it
        entry = msg.nested_type.add(name="".join(p.capitalize() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=d.FieldDescriptorProto.TYPE_STRING, label=d.FieldDescriptorProto.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=d.FieldDescriptorProto.TYPE_MESSAGE, label=d.FieldDescriptorProto.LABEL_OPTIONAL,
                        type_name=f".inference.{type_name}")
        f.type = d.FieldDescriptorProto.TYPE_MESSAGE
        f.type_name = f".inference.{owner}.{entry.name}"
    elif kind == "message":
        f.type = d.FieldDescriptorProto.TYPE_MESSAGE
        f.type_name = f".inference.{type_name}"
    else:
        f.type = _T[kind]


@functools.lru_cache(maxsize=1)
def messages() -> dict[str, Any]:
    """{message name: class} of the protocol, built once from the declaration above."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:  # pragma: no cover
        raise missing_extra("protobuf", "grpc") from None
    fd = descriptor_pb2.FileDescriptorProto(name="keel_grpc_predict_v2.proto", package="inference", syntax="proto3")
    made: dict[str, Any] = {}
    for name in _MESSAGES:
        if name not in _NESTED:
            made[name] = fd.message_type.add(name=name)
    for name, parent in _NESTED.items():
        made[name] = made[parent].nested_type.add(name=name)
    for name, fields in _MESSAGES.items():
        owner = f"{_NESTED[name]}.{name}" if name in _NESTED else name
        for field in fields:
            _field(made[name], *field, owner=owner)
    made["InferParameter"].oneof_decl.add(name="parameter_choice")
    for f in made["InferParameter"].field:
        f.oneof_index = 0
    service = fd.service.add(name="GRPCInferenceService")
    for rpc, (req, resp) in RPCS.items():
        service.method.add(name=rpc, input_type=f".inference.{_qualified(req)}", output_type=f".inference.{_qualified(resp)}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{_qualified(name)}")) for name in _MESSAGES}


def _qualified(name: str) -> str:
    return f"{_NESTED[name]}.{name}" if name in _NESTED else name


def _param(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def decode_request(req: Any) -> tuple[dict[str, Any], bytes]:
    """The REST codec's JSON header and binary tail for a ModelInferRequest."""
    raw = list(req.raw_input_contents)
    inputs = []
    for i, t in enumerate(req.inputs):
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if raw:
            entry["parameters"] = {"binary_data_size": len(raw[i]) if i < len(raw) else -1}
        else:
            field = CONTENTS.get(t.datatype)
            values = list(getattr(t.contents, field)) if field else []
            entry["data"] = [v.decode("utf-8", errors="replace") for v in values] if t.datatype == "BYTES" else values
        inputs.append(entry)
    header: dict[str, Any] = {"inputs": inputs, "outputs": [{"name": o.name} for o in req.outputs],
                              "parameters": {k: _param(v) for k, v in req.parameters.items()}}
    if req.id:
        header["id"] = req.id
    return header, b"".join(raw)


class _Service:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.m = messages()

    def _abort(self, context: Any, exc: BaseException) -> Any:
        import grpc

        if isinstance(exc, KeelError):
            code = {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE}.get(exc.http_status, grpc.StatusCode.INVALID_ARGUMENT)
            if exc.http_status >= 500 and exc.http_status != 503:
                code = grpc.StatusCode.INTERNAL
            context.abort(code, str(exc))
        log.exception("unexpected error in a gRPC call")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def ServerLive(self, req: Any, context: Any) -> Any:
        return self.m["ServerLiveResponse"](live=True)

    def ServerReady(self, req: Any, context: Any) -> Any:
        return self.m["ServerReadyResponse"](ready=self.server.ready)

    def ModelReady(self, req: Any, context: Any) -> Any:
        try:
            self.server.predictor(req.name, req.version or None)
        except KeelError as exc:
            if exc.http_status == 404:
                return self.m["ModelReadyResponse"](ready=False)
            return self._abort(context, exc)
        return self.m["ModelReadyResponse"](ready=True)

    def ServerMetadata(self, req: Any, context: Any) -> Any:
        from keel import __version__

        return self.m["ServerMetadataResponse"](name="keel", version=__version__, extensions=["binary_tensor_data"])

    def ModelMetadata(self, req: Any, context: Any) -> Any:
        from keel.serving.protocols import oip

        try:
            p = self.server.predictor(req.name, req.version or None)
        except Exception as exc:
            return self._abort(context, exc)
        T = self.m["TensorMetadata"]
        inputs = [T(name=i["name"], datatype=i["datatype"], shape=i["shape"]) for i in oip.tensor_metadata(p.request_columns)["inputs"]]
        import numpy as np

        outputs = [T(name="prediction", datatype="FP64" if not p.classes else oip.datatype_of(np.asarray(p.classes)), shape=[-1])]
        if p._state.proba:
            outputs.append(T(name="score", datatype="FP64", shape=[-1]))
        return self.m["ModelMetadataResponse"](name=p.name, versions=[str(p.version)], platform=f"keel-{p.model.flavor}", inputs=inputs, outputs=outputs)

    def ModelInfer(self, req: Any, context: Any) -> Any:
        import time

        from keel.serving.protocols import oip

        start = time.perf_counter()
        name = req.model_name
        try:
            p = self.server.predictor(name, req.model_version or None)
            header, tail = decode_request(req)
            columns, n, rid, _opts = oip.decode_infer(header, tail, p.request_columns)
            result = p.predict_columns(columns, n, request_id=rid, start=start)
        except Exception as exc:
            self.server.observe(name, "-", "grpc", getattr(exc, "http_status", 500), start)
            return self._abort(context, exc)
        self.server.observe(name, result.version, "grpc", 200, start, len(result))
        resp = self.m["ModelInferResponse"](model_name=result.model, model_version=str(result.version), id=result.request_id)
        raw_out = bool(req.raw_input_contents)
        wanted = {o.name for o in req.outputs}
        for out_name, datatype, arr in oip.output_tensors(result):
            if wanted and out_name not in wanted:
                continue
            t = resp.outputs.add(name=out_name, datatype=datatype, shape=[len(arr)])
            if raw_out:
                import numpy as np

                if datatype == "BYTES":
                    import struct

                    resp.raw_output_contents.append(b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in arr.tolist())))
                else:
                    resp.raw_output_contents.append(np.ascontiguousarray(arr, dtype=oip.DTYPES[datatype]).tobytes())
            elif datatype == "BYTES":
                t.contents.bytes_contents.extend(str(v).encode() for v in arr.tolist())
            else:
                getattr(t.contents, CONTENTS[datatype]).extend(arr.tolist())
        return resp


def start_grpc(server: Server, port: int, host: str = "127.0.0.1", workers: int = 4) -> Any:
    """Start the gRPC service on ``host:port`` (a grpc.Server; call ``.stop(grace)`` to drain)."""
    try:
        from concurrent.futures import ThreadPoolExecutor

        import grpc
    except ImportError:  # pragma: no cover
        raise missing_extra("grpcio", "grpc") from None
    m = messages()
    svc = _Service(server)
    handlers = {rpc: grpc.unary_unary_rpc_method_handler(getattr(svc, rpc), request_deserializer=m[req].FromString,
                                                         response_serializer=m[resp].SerializeToString)
                for rpc, (req, resp) in RPCS.items()}
    g = grpc.server(ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 1)])
    g.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    bound = g.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise KeelError(f"Cannot listen for gRPC on {host}:{port}.", hint="Pick a free --grpc-port.")
    g.start()
    return g
