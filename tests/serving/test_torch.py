"""The PyTorch flavor (CPU) through the package, the predictor and the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")


def test_torch_model_is_packaged_and_served(local: Path) -> None:
    import httpx

    import keel
    from keel.models._torch import TorchModel
    from keel.serving import Predictor, create_app

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20, 3)), columns=["x0", "x1", "x2"])
    with keel.start_run():
        info = keel.log_model(TorchModel(net, classes=["stay", "churn"]), input_example=X.head(5))
    assert info.flavor == "pytorch" and "model.pt" in info.meta["native"] and "torch" in info.meta["packages"]
    keel.register_model(info.uri, "net")
    with torch.inference_mode():
        logits = net(torch.tensor(X.to_numpy(), dtype=torch.float32)).numpy()
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = Predictor("models:/net/1").predict(X)
    assert np.allclose(out.scores, want[:, 1], atol=1e-5)
    assert out.predictions == np.where(want[:, 1] > want[:, 0], "churn", "stay").tolist()
    app = create_app(["models:/net/1"], reload=False)
    import anyio

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v2/models/net/infer", json={"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32",
                                                                        "data": X.head(2).to_numpy().tolist()}]})

    r = anyio.run(call)
    assert r.status_code == 200, r.text
    pred = next(o for o in r.json()["outputs"] if o["name"] == "prediction")
    assert pred["datatype"] == "BYTES" and pred["data"] == out.predictions[:2]


def test_signature_from_an_example_tensor(local: Path) -> None:
    import keel
    from keel.models._torch import TorchModel
    from keel.serving import Predictor

    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with keel.start_run():
        info = keel.log_model(TorchModel(net, classes=[0, 1], feature_names=["age", "fee", "minutes"]), input_example=torch.randn(5, 3))
    assert [(c.name, c.type) for c in info.signature.inputs] == [("age", "double"), ("fee", "double"), ("minutes", "double")]
    with keel.start_run():
        info = keel.log_model(TorchModel(net, classes=[0, 1]), input_example=torch.randn(5, 3).numpy())
    assert [c.name for c in info.signature.inputs] == ["x0", "x1", "x2"]
    keel.register_model(info.uri, "tensor-net")
    out = Predictor("models:/tensor-net/1", log=False).predict([{"x0": 1.0, "x1": 2.0, "x2": 3.0}])
    assert out.predictions[0] in (0, 1)
    with pytest.raises(keel.errors.ValidationError, match="3 features for 2 names"):
        TorchModel(net, feature_names=["a", "b"]).frame_of_tensor(torch.randn(2, 3))
