"""The ASGI app over httpx's ASGI transport: every protocol, and bad input answered 4xx with detail."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.serving.conftest import train_model

pytestmark = pytest.mark.anyio
ROWS = [{"a": 1.0, "b": 2.0, "plan": "pro"}, {"a": -2.0, "b": -1.0, "plan": "basic"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(served_model: Any) -> Any:
    from keel.serving import create_app

    app = create_app(["models:/churn@live"], reload=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


def _expected(rows: list[dict[str, Any]]) -> list[float]:
    import pandas as pd

    import keel

    return keel.load_model("models:/churn@live").predict_proba(pd.DataFrame(rows))[:, 1].tolist()


async def test_keel_v1_records_and_columns(client: Any, served_model: Any) -> None:
    r = await client.post("/v1/models/churn/predict", json={"records": ROWS}, headers={"x-request-id": "abc"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == [1, 0] and body["model"] == "churn" and body["version"] == served_model.version
    assert body["request_id"] == "abc" and r.headers["x-request-id"] == "abc" and r.headers["keel-model-version"] == str(served_model.version)
    assert np.allclose(body["scores"], _expected(ROWS)) and body["row_ids"] == ["abc:0", "abc:1"]
    r = await client.post("/v1/models/churn/predict", json={"columns": {"a": [1.0], "b": [2.0], "plan": ["pro"]}, "request_id": "mine"})
    assert r.status_code == 200 and r.json()["request_id"] == "mine" and "row_ids" not in r.json()
    r = await client.post("/v1/models/churn/predict", json={"records": ROWS})
    assert len(r.headers["x-request-id"]) == 32


async def test_mlflow_invocations_formats(client: Any) -> None:
    want = [1, 0]
    bodies = [
        {"dataframe_split": {"columns": ["a", "b", "plan"], "data": [[1.0, 2.0, "pro"], [-2.0, -1.0, "basic"]]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": {"a": [1.0, -2.0], "b": [2.0, -1.0], "plan": ["pro", "basic"]}},
        {"instances": [[1.0, 2.0, "pro"], [-2.0, -1.0, "basic"]]},
    ]
    for body in bodies:
        r = await client.post("/invocations", json=body)
        assert r.status_code == 200 and r.json() == {"predictions": want}, (body, r.text)
    r = await client.post("/invocations", content=b"a,b,plan\n1.0,2.0,pro\n-2.0,-1.0,basic\n", headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"predictions": want}
    r = await client.post("/invocations", content=b"a=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error_code"] == "BAD_REQUEST"
    r = await client.post("/invocations", json={"dataframe_records": [{"a": "x", "b": 1.0, "plan": "pro"}]})
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST" and "a" in r.json()["message"]
    for path in ("/ping", "/health", "/version"):
        assert (await client.get(path)).status_code == 200


async def test_oip_v2_json_and_metadata(client: Any, served_model: Any) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    assert (await client.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
    meta = (await client.get("/v2/models/churn")).json()
    assert meta["name"] == "churn" and meta["versions"] == [str(served_model.version)]
    assert [i["name"] for i in meta["inputs"]] == ["a", "b", "plan"] and meta["inputs"][2]["datatype"] == "BYTES"
    assert {o["name"] for o in meta["outputs"]} == {"prediction", "score"}
    assert (await client.get(f"/v2/models/churn/versions/{served_model.version}/ready")).json()["ready"]
    assert (await client.get("/v2/models/churn/versions/99")).status_code == 404
    req = {"id": "oip-1", "inputs": [
        {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, -2.0]},
        {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[2.0], [-1.0]]},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "basic"]},
    ]}
    # tritonclient sends JSON without a Content-Type
    r = await client.post("/v2/models/churn/infer", content=orjson.dumps(req))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "oip-1" and r.json()["model_version"] == str(served_model.version)
    assert out["prediction"]["data"] == [1, 0] and out["prediction"]["datatype"] == "INT64"
    assert np.allclose(out["score"]["data"], _expected(ROWS))
    r = await client.post(f"/v2/models/churn/versions/{served_model.version}/infer", json=req)
    assert r.status_code == 200


async def test_oip_binary_tensors_in_and_out(client: Any) -> None:
    a = np.array([1.0, -2.0], dtype="<f8").tobytes()
    b = np.array([2.0, -1.0], dtype="<f4").tobytes()
    plan = b"".join(struct.pack("<I", len(s)) + s for s in (b"pro", b"basic"))
    header = orjson.dumps({"inputs": [
        {"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": len(a)}},
        {"name": "b", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(b)}},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(plan)}},
    ], "outputs": [{"name": "score", "parameters": {"binary_data": True}}, {"name": "prediction"}]})
    r = await client.post("/v2/models/churn/infer", content=header + a + b + plan,
                          headers={"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    outs = {o["name"]: o for o in head["outputs"]}
    assert outs["prediction"]["data"] == [1, 0]
    scores = np.frombuffer(r.content[n:], dtype="<f8")
    assert outs["score"]["parameters"]["binary_data_size"] == 16 and np.allclose(scores, _expected(ROWS))
    bad = orjson.dumps({"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 99}}]})
    r = await client.post("/v2/models/churn/infer", content=bad + a, headers={"inference-header-content-length": str(len(bad))})
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]


async def test_oip_2d_tensor_for_numeric_models(local: Path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import keel
    from keel.serving import create_app

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(100, 3)), columns=["x0", "x1", "x2"])
    with keel.start_run():
        info = keel.log_model(LogisticRegression().fit(X, (X.x0 > 0).astype(int)), input_example=X.head(3))
    keel.register_model(info.uri, "num")
    app = create_app(["models:/num/1"], reload=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        meta = (await c.get("/v2/models/num")).json()
        assert meta["parameters"]["tensor_input"]["shape"] == [-1, 3]
        r = await c.post("/v2/models/num/infer", json={"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64",
                                                                 "data": [[1, 0, 0], [-1, 0, 0]]}]})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [1, 0]


BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("/v1/models/churn/predict", {"content": b""}, 400, "empty"),
    ("/v1/models/churn/predict", {"content": b"{not json"}, 400, "not valid JSON"),
    ("/v1/models/churn/predict", {"content": b"[1, 2]"}, 400, "not an object"),
    ("/v1/models/churn/predict", {"json": {"rows": []}}, 400, "records"),
    ("/v1/models/churn/predict", {"json": {"records": []}}, 400, "no rows"),
    ("/v1/models/churn/predict", {"json": {"records": [1, 2]}}, 400, "not an object"),
    ("/v1/models/churn/predict", {"json": {"records": [{"a": 1.0, "b": 2.0}]}}, 422, "plan"),
    ("/v1/models/churn/predict", {"json": {"records": [{"a": 1.0, "b": None, "plan": "pro"}]}}, 422, "null"),
    ("/v1/models/churn/predict", {"json": {"records": [{"a": 1.0, "b": 2.0, "plan": "pro", "zzz": 1}]}}, 422, "zzz"),
    ("/v1/models/churn/predict", {"json": {"records": [{"a": [1], "b": 2.0, "plan": "pro"}]}}, 422, "a"),
    ("/v1/models/churn/predict", {"json": {"records": [{"a": 1.0, "b": 2.0, "plan": 7}]}}, 422, "plan"),
    ("/v1/models/churn/predict", {"json": {"columns": {"a": [1.0, 2.0], "b": [1.0], "plan": ["pro"]}}}, 400, "lengths"),
    ("/v1/models/churn/predict", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    ("/v1/models/nope/predict", {"json": {"records": ROWS}}, 404, "nope"),
    ("/v1/models/chrun/predict", {"json": {"records": ROWS}}, 404, "Did you mean 'churn'"),
    ("/v2/models/churn/infer", {"json": {"inputs": []}}, 400, "inputs"),
    ("/v2/models/churn/infer", {"json": {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0]}]}}, 400, "shape"),
    ("/v2/models/churn/infer", {"json": {"inputs": [{"name": "a", "shape": [1], "datatype": "FP99", "data": [1.0]}]}}, 400, "datatype"),
    ("/v2/models/churn/infer", {"json": {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}]}}, 400, "not"),
    ("/v2/models/churn/infer", {"content": b"{}", "headers": {"inference-header-content-length": "999"}}, 400, "outside"),
    ("/invocations", {"json": {"instances": ROWS, "inputs": ROWS}}, 400, "exactly one"),
    ("/invocations", {"content": b"", "headers": {"content-type": "text/csv"}}, 400, "empty"),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "text"), BAD, ids=[f"{i}-{b[3]}" for i, b in enumerate(BAD)])
async def test_bad_input_is_a_4xx_with_detail(client: Any, path: str, kwargs: dict[str, Any], status: int, text: str) -> None:
    r = await client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert text.lower() in r.text.lower()
    # and the server keeps serving
    assert (await client.post("/v1/models/churn/predict", json={"records": ROWS})).status_code == 200


async def test_422_lists_every_column(client: Any) -> None:
    r = await client.post("/v1/models/churn/predict", json={"records": [{"a": "x", "plan": None, "q": 1}]})
    assert r.status_code == 422
    errors = {e["column"]: e["problem"] for e in r.json()["detail"]["errors"]}
    assert errors == {"a": "wrong_type", "b": "missing", "plan": "null", "q": "unexpected"}


async def test_body_over_the_limit_is_413(served_model: Any) -> None:
    from keel.serving import create_app

    app = create_app(["models:/churn@live"], reload=False, max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/models/churn/predict", json={"records": ROWS * 50})
        assert r.status_code == 413 and "limit" in r.json()["message"]

        async def chunks() -> Any:  # no Content-Length: counted while streaming
            for _ in range(20):
                yield b" " * 100

        r = await c.post("/v1/models/churn/predict", content=chunks())
        assert r.status_code == 413


async def test_metrics_and_openapi(client: Any, served_model: Any) -> None:
    await client.post("/v1/models/churn/predict", json={"records": ROWS})
    await client.post("/v1/models/churn/predict", json={"records": [{"a": "x"}]})
    text = (await client.get("/metrics")).text
    v = served_model.version
    assert f'keel_requests_total{{endpoint="v1",model="churn",status="200",version="{v}"}} 1.0' in text
    assert f'keel_requests_total{{endpoint="v1",model="churn",status="422",version="{v}"}} 1.0' in text
    assert "keel_request_duration_seconds_bucket" in text and 'keel_predict_rows_sum{model="churn"} 2.0' in text
    assert "keel_prediction_log_dropped 0.0" in text
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/v1/models/churn/predict" in doc["paths"] and "/invocations" in doc["paths"]
    assert "422" in doc["paths"]["/v1/models/churn/predict"]["post"]["responses"]
    assert doc["components"]["schemas"]["Row_churn"]["required"] == ["a", "b", "plan"]


async def test_several_models_on_one_server(local: Path) -> None:
    from keel.serving import create_app

    train_model("churn")
    train_model("upsell", C=0.1)
    app = create_app(["models:/churn@live", "models:/upsell/1"], reload=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for name in ("churn", "upsell"):
            r = await c.post(f"/v1/models/{name}/predict", json={"records": ROWS})
            assert r.status_code == 200 and r.json()["model"] == name
        assert (await c.post("/invocations", json={"instances": ROWS})).headers["keel-model"] == "churn"


async def test_micro_batching_shares_model_calls_and_sheds_load(local: Path) -> None:
    import asyncio

    from keel.serving import create_app

    train_model()
    app = create_app(["models:/churn@live"], reload=False, batch_max_rows=64, batch_max_wait_ms=20, queue_max_rows=100)
    server = app.state.server
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        rs = await asyncio.gather(*[c.post("/v1/models/churn/predict", json={"records": [ROWS[i % 2]], "request_id": f"r{i}"}) for i in range(40)])
        assert all(r.status_code == 200 for r in rs)
        assert [r.json()["predictions"] for r in rs] == [[1] if i % 2 == 0 else [0] for i in range(40)]
        assert [r.json()["request_id"] for r in rs] == [f"r{i}" for i in range(40)]
        assert server.batchers["churn"].batches < 40
        # one bad request in a batch fails alone
        rs = await asyncio.gather(*[c.post("/v1/models/churn/predict", json={"records": [ROWS[0] if i != 3 else {"a": "x", "b": 1.0, "plan": "pro"}]})
                                    for i in range(8)])
        assert [r.status_code for r in rs] == [200, 200, 200, 422, 200, 200, 200, 200]
        # beyond the queue: 503 with Retry-After, at once
        rs = await asyncio.gather(*[c.post("/v1/models/churn/predict", json={"records": [ROWS[0]] * 60}) for _ in range(4)])
        codes = sorted(r.status_code for r in rs)
        assert 503 in codes and 200 in codes
        shed = next(r for r in rs if r.status_code == 503)
        assert shed.headers["retry-after"] == "1" and "queue" in shed.json()["message"]
        await server.batchers["churn"].stop()
    import keel

    logged = keel.predictions("churn")
    assert {f"r{i}" for i in range(40)} <= set(logged["request_id"])


async def test_feature_service_model_over_every_protocol(feature_project: Path) -> None:
    """Entity keys in, features fetched from the online store, on /v1, /invocations and /v2."""
    from keel.serving import create_app

    app = create_app(["models:/churn_fs@live"], reload=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/models/churn_fs/predict", json={"records": [{"customer_id": 3, "discount": 0.1}, {"customer_id": 999, "discount": 0.1}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["missing_features"][0] == [] and body["missing_features"][1]
        r2 = await c.post("/invocations", json={"dataframe_records": [{"customer_id": 3, "discount": 0.1}]})
        assert r2.status_code == 200 and r2.json()["predictions"] == body["predictions"][:1]
        meta = (await c.get("/v2/models/churn_fs")).json()
        assert [i["name"] for i in meta["inputs"]] == ["customer_id", "discount"] and meta["parameters"]["feature_service"] == "churn_v1"
        r3 = await c.post("/v2/models/churn_fs/infer", json={"inputs": [
            {"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "discount", "shape": [1], "datatype": "FP64", "data": [0.1]}]})
        assert r3.status_code == 200, r3.text
        score = next(o for o in r3.json()["outputs"] if o["name"] == "score")["data"][0]
        assert np.isclose(score, body["scores"][0])
        r4 = await c.post("/v1/models/churn_fs/predict", json={"records": [{"customer_id": "x", "discount": 0.1}]})
        assert r4.status_code == 422 and r4.json()["detail"]["errors"][0]["column"] == "customer_id"
