"""MLflow REST compatibility: the protocol in-process, the mlflow flavor, and the real mlflow client.

The slow tests build a venv with the official ``mlflow==3.17.*`` from the
package index once (cached in /tmp/keel-test-venvs, keyed by the pins) and run
an unchanged MLflow script (tests/server/mlflow_workflow.py) in a subprocess
against a real ``keel server`` on a free port, and against ``mlflow server``
(SQLite) for the differential comparison.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

MLFLOW_PIN = "mlflow==3.17.*"
VENVS = Path(os.environ.get("KEEL_TEST_VENVS", "/tmp/keel-test-venvs"))
HERE = Path(__file__).parent
WORKFLOW = HERE / "mlflow_workflow.py"
KEEL = [sys.executable, "-c", "from keel.cli.main import main; main()"]  # the keel command of this interpreter


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :6]
    X.columns = [c.replace(" ", "_") for c in X.columns]
    return X, y


# -- in-process: the protocol over ASGI -----------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, project: Path) -> Iterator[httpx.AsyncClient]:
    """The app over ASGI, on the project's SQLite store and on a fresh PostgreSQL database."""
    from keel.server.app import create_app

    if request.param == "postgres":
        request.getfixturevalue("pg_project")
    yield httpx.AsyncClient(transport=httpx.ASGITransport(create_app()), base_url="http://keel")


API = "/api/2.0/mlflow"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_errors_come_back_in_mlflow_shape(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{API}/runs/get", params={"run_id": "0" * 32})
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert "0" * 32 in r.json()["message"]
    r = await client.post(f"{API}/experiments/create", json={"name": "e"})
    assert r.status_code == 200
    r = await client.post(f"{API}/experiments/create", json={"name": "e"})
    assert (r.status_code, r.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
    r = await client.post(f"{API}/runs/log-batch", content=b"{not json")
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    r = await client.post(f"{API}/runs/log-batch", json={"metrics": []})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "run_id" in r.json()["message"]
    r = await client.get(f"{API}/experiments/get", params={"experiment_id": "abc"})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    r = await client.get(f"{API}/registered-models/get", params={"name": "nope"})
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


@pytest.mark.anyio
async def test_log_batch_search_and_history_are_keel_runs(client: httpx.AsyncClient) -> None:
    import keel

    exp = (await client.post(f"{API}/experiments/create", json={"name": "bench"})).json()["experiment_id"]
    ids = []
    for i in range(3):
        run = (await client.post(f"{API}/runs/create", json={"experiment_id": exp, "run_name": f"r{i}", "start_time": 1000 + i})).json()["run"]
        rid = run["info"]["run_id"]
        ids.append(rid)
        r = await client.post(f"{API}/runs/log-batch", json={
            "run_id": rid,
            "params": [{"key": "lr", "value": str(0.1 * (i + 1))}, {"key": "model", "value": "lgbm" if i else "xgb"}],
            "metrics": [{"key": "auc", "value": 0.5 + i / 10, "timestamp": 5, "step": s} for s in range(4)]
            + [{"key": "bad", "value": "NaN", "timestamp": 5, "step": 0}],
            "tags": [{"key": "team", "value": "risk"}],
        })
        assert r.status_code == 200, r.text
        await client.post(f"{API}/runs/update", json={"run_id": rid, "status": "FINISHED", "end_time": 2000})
    r = await client.post(f"{API}/runs/search", json={
        "experiment_ids": [exp], "filter": "metrics.auc > 0.55 and params.model = 'lgbm' and attributes.status = 'FINISHED'",
        "order_by": ["metrics.auc DESC"]})
    found = r.json()["runs"]
    assert [f["info"]["run_name"] for f in found] == ["r2", "r1"]
    assert found[0]["data"]["metrics"][0]["value"] in (0.7, "NaN")
    hist = (await client.get(f"{API}/metrics/get-history", params={"run_id": ids[0], "metric_key": "auc"})).json()["metrics"]
    assert [(m["step"], m["value"]) for m in hist] == [(s, 0.5) for s in range(4)]
    nan = (await client.get(f"{API}/metrics/get-history", params={"run_id": ids[0], "metric_key": "bad"})).json()["metrics"]
    assert nan[0]["value"] == "NaN"
    # a key no run has: MLflow answers with no runs, not an error
    r = await client.post(f"{API}/runs/search", json={"experiment_ids": [exp], "filter": "metrics.nope > 1"})
    assert r.json() == {"runs": []}
    # the same runs through keel's own API
    frame = keel.search_runs("bench", filter="metrics.auc > 0.55")
    assert sorted(frame["run_name"]) == ["r1", "r2"]
    assert keel.get_run(ids[1]).params == {"lr": "0.2", "model": "lgbm"}
    # params stay immutable, as in MLflow
    r = await client.post(f"{API}/runs/log-parameter", json={"run_id": ids[0], "key": "lr", "value": "9"})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


@pytest.mark.anyio
async def test_large_history_is_gzipped_for_a_client_that_accepts_it(client: httpx.AsyncClient) -> None:
    exp = (await client.post(f"{API}/experiments/create", json={"name": "big"})).json()["experiment_id"]
    rid = (await client.post(f"{API}/runs/create", json={"experiment_id": exp})).json()["run"]["info"]["run_id"]
    values: list[Any] = [1.0 / (s + 1) for s in range(3000)]
    values[7], values[8] = "NaN", "Infinity"  # proto3 JSON's spellings, kept on the way out
    for start in range(0, 3000, 1000):
        r = await client.post(f"{API}/runs/log-batch", json={"run_id": rid, "metrics": [
            {"key": "loss", "value": values[s], "timestamp": 10 + s, "step": s} for s in range(start, start + 1000)]})
        assert r.status_code == 200, r.text
    info = (await client.post(f"{API}/runs/update", json={"run_id": rid, "status": "FINISHED", "end_time": 99})).json()["run_info"]
    assert (info["run_id"], info["status"], info["end_time"]) == (rid, "FINISHED", 99)
    query = {"run_id": rid, "metric_key": "loss"}
    gz = await client.get(f"{API}/metrics/get-history", params=query, headers={"Accept-Encoding": "gzip"})
    plain = await client.get(f"{API}/metrics/get-history", params=query, headers={"Accept-Encoding": "identity"})
    assert gz.headers.get("content-encoding") == "gzip" and "content-encoding" not in plain.headers
    assert len(gz.content) >= 64 * 1024  # httpx decoded it
    assert gz.json() == plain.json()
    assert [(m["step"], m["value"], m["timestamp"]) for m in plain.json()["metrics"]] == [(s, values[s], 10 + s) for s in range(3000)]
    # the MLflow client pages: each page is the right slice, the last one without a next_page_token
    first = (await client.get(f"{API}/metrics/get-history", params={**query, "max_results": 2000})).json()
    last = (await client.get(f"{API}/metrics/get-history", params={**query, "max_results": 2000, "page_token": first["next_page_token"]})).json()
    assert first["next_page_token"] == "2000" and "next_page_token" not in last
    assert first["metrics"] + last["metrics"] == plain.json()["metrics"]
    # a small answer is not compressed
    small = await client.get(f"{API}/runs/get", params={"run_id": rid}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json()["run"]["info"]["status"] == "FINISHED"


@pytest.mark.anyio
async def test_artifacts_upload_list_download(client: httpx.AsyncClient) -> None:
    run = (await client.post(f"{API}/runs/create", json={"experiment_id": "0"})).json()["run"]
    base = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    r = await client.put(f"/api/2.0/mlflow-artifacts/artifacts/{base}/plots/a.txt", content=b"hello")
    assert r.status_code == 200
    await client.put(f"/api/2.0/mlflow-artifacts/artifacts/{base}/top.json", content=b"{}")
    listing = (await client.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": base})).json()["files"]
    assert sorted((f["path"], f["is_dir"]) for f in listing) == [("plots", True), ("top.json", False)]
    inner = (await client.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": f"{base}/plots"})).json()["files"]
    assert inner == [{"path": "a.txt", "is_dir": False, "file_size": 5}]
    assert (await client.get(f"/api/2.0/mlflow-artifacts/artifacts/{base}/plots/a.txt")).content == b"hello"
    r = await client.get(f"/api/2.0/mlflow-artifacts/artifacts/{base}/missing.txt")
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = await client.put(f"/api/2.0/mlflow-artifacts/artifacts/{base}/../../escape", content=b"x")
    assert r.status_code in (400, 404)
    import keel

    assert [a["path"] for a in keel.get_run(run["info"]["run_id"]).artifacts] == ["plots/a.txt", "top.json"]


# -- the mlflow flavor, without mlflow --------------------------------------------------------

def _mlflow_dir(folder: Path, model: Any, fmt: str) -> Path:
    import yaml

    folder.mkdir(parents=True)
    if fmt == "skops":
        import skops.io

        skops.io.dump(model, folder / "model.skops")
        trusted = skops.io.get_untrusted_types(file=folder / "model.skops")
        conf = {"pickled_model": "model.skops", "serialization_format": "skops", "skops_trusted_types": trusted}
    else:
        (folder / "model.pkl").write_bytes(pickle.dumps(model))
        conf = {"pickled_model": "model.pkl", "serialization_format": "pickle"}
    cols = json.dumps([{"type": "double", "name": c, "required": True} for c in model.feature_names_in_])
    (folder / "MLmodel").write_text(yaml.safe_dump({
        "flavors": {"python_function": {"loader_module": "mlflow.sklearn", "model_path": conf["pickled_model"]}, "sklearn": conf},
        "signature": {"inputs": cols, "outputs": None},
    }))
    return folder


@pytest.mark.parametrize("fmt", ["skops", "pickle"])
def test_mlflow_flavor_loads_an_sklearn_model_without_mlflow(project: Path, fmt: str) -> None:
    import keel
    from keel.models import flavors
    from keel.models._mlflow import MlflowModel

    X, y = _frame()
    est = LogisticRegression(max_iter=2000).fit(X, y)
    model = MlflowModel.from_directory(_mlflow_dir(project / "mlmodel", est, fmt))
    assert flavors.detect(model) == "mlflow"
    assert model.signature_inputs() == [(c, "double") for c in X.columns]
    assert (model.predict(X.head(30)) == est.predict(X.head(30))).all()
    # packaged and registered like any keel model, loaded back through its sha256-checked package
    with keel.start_run(experiment="mlflow-flavor"):
        keel.log_model(model, input_example=X.head(5))
        run_id = keel.active_run().id  # type: ignore[union-attr]
    mv = keel.register_model(f"runs:/{run_id}/model", "imported")
    loaded = keel.load_model(f"models:/imported/{mv.version}")
    assert loaded.flavor == "mlflow"
    assert (loaded.predict(X.head(30)) == est.predict(X.head(30))).all()
    assert loaded.predict_proba(X.head(3)).shape == (3, 2)


def test_mlflow_flavor_packages_other_flavors_and_needs_mlflow_only_to_predict(tmp_path: Path) -> None:
    import yaml

    from keel.errors import DependencyError
    from keel.models._mlflow import MlflowModel
    from keel.models.package import write_package

    (tmp_path / "python_model.pkl").write_bytes(b"opaque")
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {"loader_module": "mlflow.pyfunc.model"}}}))
    model = MlflowModel.from_directory(tmp_path)
    assert not model.loads_without_mlflow
    meta = write_package(model, tmp_path / "pkg", flavor="mlflow")
    assert meta["flavor"] == "mlflow" and not (tmp_path / "pkg" / "MLmodel").exists()
    if importlib.util.find_spec("mlflow") is None:
        with pytest.raises(DependencyError, match="mlflow"):
            model.predict(pd.DataFrame({"x": [1.0]}))


def test_mlflow_flavor_refuses_a_directory_without_mlmodel(tmp_path: Path) -> None:
    from keel.errors import ValidationError
    from keel.models._mlflow import MlflowModel

    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(ValidationError, match="MLmodel"):
        MlflowModel.from_directory(tmp_path)


def test_keel_packages_carry_an_mlmodel_file(tmp_path: Path) -> None:
    import yaml

    from keel.models.package import write_package

    X, y = _frame()
    write_package(LogisticRegression(max_iter=2000).fit(X, y), tmp_path / "pkg", example=X.head(3))
    doc = yaml.safe_load((tmp_path / "pkg" / "MLmodel").read_text())
    assert doc["flavors"]["python_function"] == {"model_path": "model.pkl", "python_version": sys.version.split()[0],
                                                 "predict_fn": "predict", "loader_module": "mlflow.sklearn"}
    assert doc["flavors"]["sklearn"]["serialization_format"] == "pickle"
    first = (tmp_path / "pkg" / "MLmodel").read_bytes()
    write_package(LogisticRegression(max_iter=2000).fit(X, y), tmp_path / "pkg2", example=X.head(3))
    assert (tmp_path / "pkg2" / "MLmodel").read_bytes() == first  # same model, same bytes (cache by content)


# -- the real mlflow client ---------------------------------------------------------------------

def _pins() -> list[str]:
    import sklearn

    return [MLFLOW_PIN, f"scikit-learn=={sklearn.__version__}"]


@pytest.fixture(scope="session")
def mlflow_python() -> Path:
    """A venv with the official mlflow client and server, built once and reused while its pins hold."""
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / "mlflow-3.17"
    marker = venv / ".complete"
    want = "\n".join(_pins())
    with open(VENVS / ".mlflow-3.17.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers and parallel sessions build it once
        if not (marker.exists() and marker.read_text() == want):
            if not (venv / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *_pins()],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                pytest.fail(f"could not install {' '.join(_pins())}: {proc.stderr[-2000:]}")
            marker.write_text(want)
    return venv / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server at {url} did not come up: {log.read_text()[-3000:]}")


def _start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}


@pytest.fixture
def keel_server(project: Path) -> Iterator[str]:
    """``keel server`` on a free port, serving the test's project (its SQLite file and artifacts)."""
    port = _free_port()
    env = {**_clean_env(), "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")] if p)}
    log = project / "keel-server.log"
    proc = _start([*KEEL, "server", "--port", str(port)], project, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def mlflow_server(mlflow_python: Path, tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` 3.17 (SQLite, 1 worker) on a free port, from the mlflow venv."""
    port = _free_port()
    root = tmp_path / "mlflow-server"
    root.mkdir()
    log = root / "server.log"
    cmd = [str(mlflow_python.parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")]
    proc = _start(cmd, root, _clean_env(), log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log, timeout=180)
        yield url
    finally:
        _stop(proc)


def run_client(python: Path, script: Path, *args: str, cwd: Path) -> None:
    env = {**_clean_env(), "PYTHONWARNINGS": "ignore", "MLFLOW_ENABLE_ASYNC_LOGGING": "false"}
    proc = subprocess.run([str(python), str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _workflow(python: Path, url: str, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "result.json"
    run_client(python, WORKFLOW, url, str(out), cwd=folder)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a fresh venv, two servers and several client processes on a busy machine
def test_mlflow_client_workflow_against_keel(mlflow_python: Path, keel_server: str, project: Path) -> None:
    import keel
    from keel.registry import promote

    got = _workflow(mlflow_python, keel_server, project / "client")
    X, y = _frame()
    est = LogisticRegression(max_iter=2000).fit(X, y)
    assert got["predictions"] == est.predict(X.head(20)).tolist()
    assert got["search"] == ["train"] and got["search_none"] == 0
    assert got["history"] == [[i, 1.0 / (i + 1)] for i in range(5)]
    assert got["version"] == {"version": "1", "aliases": ["champion"], "status": "READY", "source_is_logged_model": True, "run_matches": True}
    assert got["errors"] == {"get_missing_run": "RESOURCE_DOES_NOT_EXIST", "get_missing_model": "RESOURCE_DOES_NOT_EXIST",
                             "create_existing_model": "RESOURCE_ALREADY_EXISTS", "change_param": "INVALID_PARAMETER_VALUE",
                             "missing_alias": "INVALID_PARAMETER_VALUE"}
    assert got["autolog"]["params"]["C"] == "0.5" and "training_roc_auc" in got["autolog"]["metric_keys"]
    assert got["autolog"]["datasets"] == 1

    # what MLflow logged is a first-class keel run ...
    proc = subprocess.run([*KEEL, "runs", "ls", "-e", "bc", "--json"], cwd=project,
                          capture_output=True, text=True, check=True, env={**os.environ})
    listed = json.loads(proc.stdout)
    rows = listed if isinstance(listed, list) else listed.get("runs", listed)
    assert sorted(r["run_name"] for r in rows) == ["auto", "train"]
    run = keel.get_run(got["ids"]["run"])
    assert run.params == {"C": "1.0", "max_iter": "2000"} and run.status == "finished" and run.experiment == "bc"
    assert any(d["context"] == "training" for d in keel.get_run(got["ids"]["auto_run"]).datasets)
    # ... and model version, loaded through the mlflow flavor (no mlflow in this venv) ...
    model = keel.load_model("models:/bc@champion")
    assert model.flavor == "mlflow"
    assert model.predict(X.head(20)).tolist() == got["predictions"]
    # ... that keel's gates evaluate and promote
    data = X.assign(target=y)
    transition = promote("bc", 1, to="staging", data=data, target="target")
    assert transition.status == "applied", transition.explain()
    assert transition.gates is not None and transition.gates.results  # evaluated, not waved through
    assert keel.load_model("models:/bc@staging").source.version == 1


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a fresh venv, two servers and several client processes on a busy machine
def test_mlflow_loads_a_keel_registered_model(mlflow_python: Path, keel_server: str, project: Path) -> None:
    import keel
    from keel.registry import set_alias

    X, y = _frame()
    est = LogisticRegression(max_iter=2000).fit(X, y)
    with keel.start_run(experiment="native") as run:
        keel.log_model(est, input_example=X.head(5))
    mv = keel.register_model(f"runs:/{run.id}/model", "native")
    set_alias("native", "champion", mv.version)
    X.head(20).to_parquet(project / "X.parquet")
    script = project / "load_keel.py"
    script.write_text(
        "import json, sys, mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "X = pd.read_parquet(sys.argv[2])\n"
        "by_alias = mlflow.pyfunc.load_model('models:/native@champion').predict(X)\n"
        "local = mlflow.pyfunc.load_model(mlflow.artifacts.download_artifacts('models:/native/1')).predict(X)\n"
        "json.dump({'alias': [int(v) for v in by_alias], 'local': [int(v) for v in local]}, open(sys.argv[3], 'w'))\n"
    )
    run_client(mlflow_python, script, keel_server, str(project / "X.parquet"), str(project / "out.json"), cwd=project)
    out = json.loads((project / "out.json").read_text())
    assert out["alias"] == out["local"] == est.predict(X.head(20)).tolist()


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    result = dict(result)
    result.pop("ids")  # ids and timestamps differ by construction; the script drops timestamps itself
    return result


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a fresh venv, two servers and several client processes on a busy machine
def test_same_script_same_results_on_mlflow_server_and_keel(mlflow_python: Path, mlflow_server: str, keel_server: str, project: Path) -> None:
    theirs = _workflow(mlflow_python, mlflow_server, project / "on-mlflow")
    ours = _workflow(mlflow_python, keel_server, project / "on-keel")
    assert _comparable(ours) == _comparable(theirs)


_ROUTES = [
    ("GET", "experiments/get-by-name"), ("GET", "experiments/get"), ("POST", "experiments/create"), ("POST", "experiments/search"),
    ("POST", "experiments/set-experiment-tag"), ("POST", "runs/create"), ("GET", "runs/get"), ("POST", "runs/update"),
    ("POST", "runs/delete"), ("POST", "runs/log-batch"), ("POST", "runs/log-metric"), ("POST", "runs/log-parameter"),
    ("POST", "runs/set-tag"), ("POST", "runs/delete-tag"), ("POST", "runs/search"), ("POST", "runs/log-inputs"),
    ("POST", "runs/outputs"), ("GET", "metrics/get-history"), ("POST", "logged-models"), ("POST", "logged-models/search"),
    ("GET", "logged-models/m-x"), ("PATCH", "logged-models/m-x"), ("PATCH", "logged-models/m-x/tags"),
    ("POST", "registered-models/create"), ("GET", "registered-models/get"), ("GET", "registered-models/search"),
    ("POST", "registered-models/alias"), ("GET", "registered-models/alias"), ("DELETE", "registered-models/alias"),
    ("POST", "model-versions/create"), ("GET", "model-versions/get"), ("GET", "model-versions/get-download-uri"),
    ("GET", "model-versions/search"), ("GET", "artifacts/list"),
]


@pytest.mark.anyio
async def test_bad_input_is_a_4xx_in_mlflow_shape_never_a_5xx(client: httpx.AsyncClient) -> None:
    run = (await client.post(f"{API}/runs/create", json={"experiment_id": "0"})).json()["run"]["info"]["run_id"]
    bodies: list[Any] = [
        {}, [], "text", {"run_id": 5}, {"run_id": run, "metrics": "x"}, {"run_id": run, "metrics": [{"key": "m", "value": "abc"}]},
        {"run_id": run, "params": [{"key": "p" * 300, "value": "v"}]}, {"run_id": run, "tags": [{"value": "no key"}]},
        {"experiment_id": "x" * 40, "name": "n" * 300}, {"run_id": run, "status": "DONE"}, {"name": "bad name!", "version": "x"},
        {"run_id": run, "models": [{"model_id": "m" * 100}]}, {"experiment_ids": ["nope"], "max_results": -1},
        {"run_id": run, "filter": "metrics.a >", "page_token": "garbage"}, {"source": "s3://elsewhere", "name": "bc"},
    ]
    for method, path in _ROUTES:
        for b in bodies:
            if method == "GET":
                params = b if isinstance(b, dict) else {"q": str(b)}
                r = await client.get(f"{API}/{path}", params={k: str(v) for k, v in params.items()})
            else:
                r = await client.request(method, f"{API}/{path}", content=json.dumps(b))
            assert r.status_code < 500, (method, path, b, r.status_code, r.text)
            if r.status_code >= 400:
                assert set(r.json()) == {"error_code", "message"}, (method, path, r.text)
