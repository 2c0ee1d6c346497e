"""The ONNX flavor through the package, the predictor, the server and the batch scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

W = np.array([[1.5], [-2.0], [0.5]], dtype=np.float32)
B = np.array([0.25], dtype=np.float32)


def _graph() -> bytes:
    """A logistic model: p = sigmoid(X @ W + B); probabilities [1 - p, p]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["X", "W"], ["z0"]), helper.make_node("Add", ["z0", "B"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p"]), helper.make_node("Sub", ["one", "p"], ["q"]),
             helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "logistic", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
                               numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_onnx_model_is_packaged_served_and_scored(local: Path) -> None:
    import keel
    from keel.models._onnx import OnnxModel
    from keel.serving import Predictor, score

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(50, 3)), columns=["x0", "x1", "x2"])
    with keel.start_run():
        info = keel.log_model(OnnxModel(_graph(), classes=[0, 1]), input_example=X.head(5))
    assert info.flavor == "onnx" and "model.onnx" in info.meta["native"] and "onnxruntime" in info.meta["packages"]
    keel.register_model(info.uri, "nn")
    want = 1 / (1 + np.exp(-(X.to_numpy() @ W[:, 0] + B[0])))
    p = Predictor("models:/nn/1")
    out = p.predict(X.head(4))
    assert np.allclose(out.scores, want[:4], atol=1e-6) and out.predictions == (want[:4] > 0.5).astype(int).tolist()
    X.to_parquet(local / "x.parquet", index=False)
    result = score("models:/nn/1", local / "x.parquet", local / "s.parquet", log=False)
    assert result.rows_scored == 50 and np.allclose(pd.read_parquet(local / "s.parquet")["score"], want, atol=1e-6)
    with pytest.raises(keel.KeelError, match="x2"):
        p.predict([{"x0": 1.0, "x1": 2.0}])


def test_signature_from_the_graphs_input_tensors(local: Path) -> None:
    import keel
    from keel.models._onnx import OnnxModel
    from keel.serving import Predictor

    with keel.start_run():
        info = keel.log_model(OnnxModel(_graph(), classes=[0, 1]))  # no example: the graph declares X as float [rows, 3]
    assert [(c.name, c.type) for c in info.signature.inputs] == [("X_0", "double"), ("X_1", "double"), ("X_2", "double")]
    keel.register_model(info.uri, "graph")
    out = Predictor("models:/graph/1", log=False).predict([{"X_0": 1.0, "X_1": 0.0, "X_2": 0.0}])
    assert np.isclose(out.scores[0], 1 / (1 + np.exp(-(1.5 + 0.25))), atol=1e-6)
    with keel.start_run():
        info = keel.log_model(OnnxModel(_graph(), classes=[0, 1]), input_example=np.zeros((2, 3), dtype=np.float32))
    assert [c.name for c in info.signature.inputs] == ["X_0", "X_1", "X_2"]
