"""The OIP v2 gRPC service: health, metadata and ModelInfer with typed and raw contents, errors as gRPC status codes."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from keel.serving.grpc_oip import RPCS, SERVICE, messages, start_grpc
from tests.serving.conftest import train_model


@pytest.fixture
def stub(local: Path) -> Iterator[dict[str, Any]]:
    from keel.serving import create_app

    train_model()
    app = create_app(["models:/churn@live"], reload=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_grpc(app.state.server, port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    m = messages()
    calls = {rpc: channel.unary_unary(f"/{SERVICE}/{rpc}", request_serializer=m[req].SerializeToString, response_deserializer=m[resp].FromString)
             for rpc, (req, resp) in RPCS.items()}
    yield {"m": m, **calls}
    channel.close()
    server.stop(grace=1).wait()


def _want() -> np.ndarray:
    import keel

    frame = pd.DataFrame({"a": [1.0, -2.0], "b": [2.0, -1.0], "plan": ["pro", "basic"]})
    return keel.load_model("models:/churn@live").predict_proba(frame)[:, 1]


def test_health_and_metadata(stub: dict[str, Any]) -> None:
    m = stub["m"]
    assert stub["ServerLive"](m["ServerLiveRequest"]()).live
    assert stub["ServerReady"](m["ServerReadyRequest"]()).ready
    assert stub["ModelReady"](m["ModelReadyRequest"](name="churn")).ready
    assert not stub["ModelReady"](m["ModelReadyRequest"](name="nope")).ready
    meta = stub["ModelMetadata"](m["ModelMetadataRequest"](name="churn"))
    assert meta.name == "churn" and list(meta.versions) == ["1"] and [i.name for i in meta.inputs] == ["a", "b", "plan"]
    assert stub["ServerMetadata"](m["ServerMetadataRequest"]()).name == "keel"


def test_model_infer_with_typed_and_raw_contents(stub: dict[str, Any]) -> None:
    m = stub["m"]
    T, C = m["InferInputTensor"], m["InferTensorContents"]
    req = m["ModelInferRequest"](model_name="churn", id="g-1", inputs=[
        T(name="a", datatype="FP64", shape=[2], contents=C(fp64_contents=[1.0, -2.0])),
        T(name="b", datatype="FP32", shape=[2], contents=C(fp32_contents=[2.0, -1.0])),
        T(name="plan", datatype="BYTES", shape=[2], contents=C(bytes_contents=[b"pro", b"basic"])),
    ])
    resp = stub["ModelInfer"](req)
    outs = {o.name: o for o in resp.outputs}
    assert resp.id == "g-1" and resp.model_version == "1"
    assert list(outs["prediction"].contents.int64_contents) == [1, 0]
    assert np.allclose(list(outs["score"].contents.fp64_contents), _want())
    raw = m["ModelInferRequest"](model_name="churn", inputs=[
        T(name="a", datatype="FP64", shape=[2]), T(name="b", datatype="FP64", shape=[2]), T(name="plan", datatype="BYTES", shape=[2])],
        raw_input_contents=[np.array([1.0, -2.0]).tobytes(), np.array([2.0, -1.0]).tobytes(),
                            b"".join(struct.pack("<I", len(s)) + s for s in (b"pro", b"basic"))])
    resp = stub["ModelInfer"](raw)
    names = [o.name for o in resp.outputs]
    score = np.frombuffer(resp.raw_output_contents[names.index("score")], dtype="<f8")
    assert np.allclose(score, _want()) and list(np.frombuffer(resp.raw_output_contents[0], dtype="<i8")) == [1, 0]
    import keel

    assert "g-1:0" in set(keel.predictions("churn")["request_id"])


def test_bad_requests_are_status_codes_not_internal(stub: dict[str, Any]) -> None:
    m = stub["m"]
    T, C = m["InferInputTensor"], m["InferTensorContents"]
    cases = [
        (m["ModelInferRequest"](model_name="nope"), grpc.StatusCode.NOT_FOUND),
        (m["ModelInferRequest"](model_name="churn"), grpc.StatusCode.INVALID_ARGUMENT),
        (m["ModelInferRequest"](model_name="churn", inputs=[T(name="a", datatype="FP64", shape=[3], contents=C(fp64_contents=[1.0]))]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (m["ModelInferRequest"](model_name="churn", inputs=[T(name="a", datatype="FP64", shape=[1], contents=C(fp64_contents=[1.0]))]),
         grpc.StatusCode.INVALID_ARGUMENT),  # b and plan missing: the signature check
        (m["ModelInferRequest"](model_name="churn", model_version="7"), grpc.StatusCode.NOT_FOUND),
    ]
    for req, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub["ModelInfer"](req)
        assert info.value.code() == code, (req, info.value.details())
    assert stub["ServerLive"](m["ServerLiveRequest"]()).live
