"""The Python API and the CLI through a real `keel server` (KEEL_TRACKING_URI): nothing opens a local store."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from keel.errors import ConfigError, IntegrityError, NotFoundError, ValidationError

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int, env: dict[str, str] | None = None, workers: int = 1) -> subprocess.Popen[bytes]:
    """`keel server` in its own process over the stores of ``home`` (or ``env``'s), ready when this returns."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    full = {**base, "KEEL_HOME": str(home), "PYTHONPATH": str(SRC), **(env or {})}
    log = open(home / f"server-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-c", "from keel.cli.main import main; main()", "server", "--port", str(port), "--workers", str(workers)],
        cwd=home, env=full, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keel server exited {proc.returncode}: {(home / f'server-{port}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("keel server did not become ready in 120 s")


def stop_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("server")
    port = free_port()
    proc = start_server(home, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture
def remote(project: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A client folder with KEEL_TRACKING_URI set (and no store settings)."""
    from keel import config
    from keel.store import remote as transport

    monkeypatch.setenv("KEEL_TRACKING_URI", server)
    config.reset()
    yield project
    from keel.tracking import runs

    runs._reset_for_tests()
    transport.reset_clients()


def _no_local_store(folder: Path) -> None:
    assert not (folder / ".keel" / "keel.db").exists()
    assert not (folder / ".keel" / "artifacts").exists()


def test_a_run_its_model_and_its_metrics_go_through_the_server(remote: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    exp = f"e-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.random(200), "b": rng.random(200)})
    y = (X["a"] > 0.5).astype(int)
    with keel.start_run("train", experiment=exp) as run:
        keel.log_params({"C": 0.5, "solver": "lbfgs"})
        keel.log_param("C", 0.5)  # the same value again is fine
        with pytest.raises(ValidationError, match="already"):
            keel.log_param("C", 2)
        keel.set_tags({"team": "risk"})
        fingerprint = keel.log_dataset(X, name="train")
        for i in range(20_000):
            keel.log_metric("loss", 1.0 / (i + 1))
        keel.log_metrics({"auc": 0.91, "nan": float("nan")})
        info = keel.log_model(LogisticRegression().fit(X, y), input_example=X.head(5))
        keel.log_text("hello", "notes/hello.txt")
        with keel.start_run("child", nested=True) as child:
            keel.log_metric("fold_auc", 0.9)
    got = keel.get_run(run.id)
    kid = keel.get_run(child.id)
    assert kid.parent_id == run.id and kid.experiment == exp and kid.env.get("inherited_from") == run.id
    assert got.children == [child.id] and kid.metrics == {"fold_auc": 0.9}
    assert got.status == "finished" and got.params == {"C": "0.5", "solver": "lbfgs"} and got.tags["team"] == "risk"
    assert got.metrics["loss"] == pytest.approx(1 / 20_000) and got.metrics["auc"] == 0.91 and np.isnan(got.metrics["nan"])
    assert got.env.get("lock_sha256")  # the reproducibility record was captured and uploaded
    assert [(d["name"], d["num_rows"], d["fingerprint"]) for d in got.datasets] == [("train", 200, fingerprint)]
    history = keel.get_metric_history(run.id, "loss")
    assert len(history) == 20_000
    np.testing.assert_array_equal(history["value"].to_numpy(), 1.0 / (np.arange(20_000) + 1))
    assert list(history["step"]) == list(range(20_000))

    frame = keel.search_runs(exp, filter="metrics.auc > 0.9 and params.solver = 'lbfgs'")
    assert list(frame["run_id"]) == [run.id] and frame["metrics.auc"].iloc[0] == 0.91
    assert frame.attrs["next_page_token"] is None

    mv = keel.register_model(info, "remote_churn")
    assert mv.lineage["training_fingerprint"] == fingerprint and mv.created_by == got.user
    again = keel.register_model(f"runs:/{run.id}/model", "remote_churn")
    assert again.version == mv.version  # registering the same model twice is the same version
    loaded = keel.load_model(f"models:/remote_churn/{mv.version}")
    np.testing.assert_array_equal(loaded.predict(X.head(10)), LogisticRegression().fit(X, y).predict(X.head(10)))
    assert keel.load_model(f"runs:/{run.id}/model").source.run_id == run.id
    from keel.registry import list_models, list_versions

    assert "remote_churn" in [m.name for m in list_models()]
    assert [v.version for v in list_versions("remote_churn")] == [mv.version]

    from keel.tracking.artifacts import download_artifact

    out = download_artifact(run.id, "notes/hello.txt", remote / "dl")
    assert out.joinpath("hello.txt").read_text() == "hello"
    _no_local_store(remote)


def test_autolog_through_the_server(remote: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X = pd.DataFrame({"a": [0.0, 1, 2, 3, 4, 5], "b": [1.0, 0, 1, 0, 1, 0]})
    keel.autolog()
    try:
        with keel.start_run("auto", experiment=f"e-{uuid.uuid4().hex[:8]}") as run:
            DecisionTreeClassifier(max_depth=2).fit(X, [0, 0, 0, 1, 1, 1])
    finally:
        keel.autolog(disable=True)
    got = keel.get_run(run.id)
    assert got.params["max_depth"] == "2" and got.metrics["training_accuracy"] == 1.0
    assert any(a["path"] == "model/model.pkl" for a in got.artifacts)
    assert keel.load_model(f"runs:/{run.id}/model").predict(X).tolist() == [0, 0, 0, 1, 1, 1]
    _no_local_store(remote)


def test_a_retried_run_creation_or_metric_batch_is_stored_once(remote: Path) -> None:
    import base64

    from keel.store.remote import client

    c = client()
    assert c is not None
    rid = uuid.uuid4().hex
    body = {"id": rid, "name": "twice", "experiment": f"e-{uuid.uuid4().hex[:8]}"}
    first, second = c.post_json("/v1/runs", body), c.post_json("/v1/runs", body)
    assert first["created"] is True and second["created"] is False and first["experiment_id"] == second["experiment_id"]
    steps = np.arange(1000, dtype="<i8")
    enc = lambda a: base64.b64encode(a.tobytes()).decode()  # noqa: E731
    batch = {"batch_id": uuid.uuid4().hex, "metrics": [{"key": "m", "n": 1000, "steps": enc(steps), "ts": enc(steps), "values": enc(steps.astype("<f8"))}]}
    assert c.post_json(f"/v1/runs/{rid}/batch", batch)["stored"] is True
    assert c.post_json(f"/v1/runs/{rid}/batch", batch)["stored"] is False
    assert len(keel.get_metric_history(rid, "m")) == 1000
    assert len(keel.search_runs(body["experiment"])) == 1


def test_bad_input_is_a_4xx_naming_the_value(remote: Path) -> None:
    import base64

    from keel.store.remote import client

    c = client()
    assert c is not None
    with keel.start_run("bad", experiment=f"e-{uuid.uuid4().hex[:8]}") as run:
        enc = base64.b64encode(np.arange(3, dtype="<i8").tobytes()).decode()
        with pytest.raises(ValidationError, match="n=5"):
            c.post_json(f"/v1/runs/{run.id}/batch", {"batch_id": "b" * 16, "metrics": [{"key": "m", "n": 5, "steps": enc, "ts": enc, "values": enc}]})
        with pytest.raises(ValidationError, match=r"metrics\.0\.key: String should match pattern"):
            c.post_json(f"/v1/runs/{run.id}/batch", {"batch_id": "c" * 16, "metrics": [{"key": " x", "n": 3, "steps": enc, "ts": enc, "values": enc}]})
        with pytest.raises(ValidationError, match="base64"):
            c.post_json(f"/v1/runs/{run.id}/batch", {"batch_id": "d" * 16, "metrics": [{"key": "m", "n": 3, "steps": "!!", "ts": enc, "values": enc}]})
    with pytest.raises(NotFoundError, match="No run"):
        keel.get_run("0" * 32)
    with pytest.raises(NotFoundError, match="remote_nope"):
        keel.load_model("models:/remote_nope/1")
    with pytest.raises(ValidationError, match="not understood"):
        keel.load_model("models:/")
    with pytest.raises(ValidationError):
        keel.search_runs(filter="metrics.auc >>> 1")


def test_a_large_artifact_goes_in_parts_resumes_and_is_checked(remote: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.store import remote as transport
    from keel.tracking.artifacts import download_artifact, list_artifacts

    monkeypatch.setattr(transport, "PART_SIZE", 64 * 1024)
    c = transport.client()
    assert c is not None
    data = np.random.default_rng(1).bytes(300 * 1024 + 17)  # 5 parts, the last one short
    path = remote / "big.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    # an interrupted upload: part 1 got there, then the client stopped
    part1 = data[64 * 1024: 128 * 1024]
    c.request("PUT", f"/v1/blobs/{digest}/parts/1", content=part1, headers={"X-Keel-Part-Sha256": hashlib.sha256(part1).hexdigest()})
    status = c.json("GET", f"/v1/blobs/{digest}", params={"parts": 5})
    assert status == {"exists": False, "parts_received": [1]}
    with pytest.raises(IntegrityError, match="damaged"):  # a part that does not hash to its header is refused
        c.request("PUT", f"/v1/blobs/{digest}/parts/2", content=b"x" * 10, headers={"X-Keel-Part-Sha256": "0" * 64})
    with pytest.raises(NotFoundError, match="lacks part"):
        c.post_json(f"/v1/blobs/{digest}/complete", {"parts": 5, "size": len(data)})
    with keel.start_run("big", experiment=f"e-{uuid.uuid4().hex[:8]}") as run:
        keel.log_artifact(path, "data/big.bin")
    assert c.json("GET", f"/v1/blobs/{digest}", params={"parts": 5})["exists"] is True
    assert [a["digest"] for a in list_artifacts(run.id)if a["path"] == "data/big.bin"] == [digest]
    out = download_artifact(run.id, "data/big.bin", remote / "back" / "big.bin")
    assert out.read_bytes() == data
    # a resumed download (Range) gets the rest, and a wrong expected hash is refused on arrival
    response = c.request("GET", f"/v1/runs/{run.id}/artifacts/data/big.bin", headers={"Range": "bytes=1000-"})
    assert response.status_code == 206 and response.content == data[1000:]
    with pytest.raises(IntegrityError, match="arrived corrupted"):
        c.download(f"/v1/runs/{run.id}/artifacts/data/big.bin", remote / "bad.bin", "f" * 64)
    assert not (remote / "bad.bin").exists()
    with pytest.raises(IntegrityError, match="hashes to"):  # a whole upload that does not match its name is not stored
        c.request("PUT", f"/v1/blobs/{'a' * 64}", content=b"not that")
    _no_local_store(remote)


def test_the_cli_goes_through_the_server_and_refuses_local_only_commands(remote: Path) -> None:
    import json

    from typer.testing import CliRunner

    from keel.cli.main import app

    exp = f"e-{uuid.uuid4().hex[:8]}"
    with keel.start_run("cli", experiment=exp) as run:
        keel.log_metric("auc", 0.8)
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "ls", "-e", exp, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.output)] == [run.id]
    shown = runner.invoke(app, ["runs", "show", run.id, "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["metrics"] == {"auc": 0.8}
    assert runner.invoke(app, ["experiments", "ls", "--json"]).exit_code == 0
    assert runner.invoke(app, ["models", "ls", "--json"]).exit_code == 0
    for args in (["features", "ls"], ["gc"], ["pipelines", "ls"], ["runs", "reproduce", run.id, str(remote / "r")], ["models", "history", "x"], ["models", "requests"]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        text = " ".join(result.output.split())
        assert "not available against a server (KEEL_TRACKING_URI is set)" in text, (args, text)
        assert len(result.output.strip().splitlines()) <= 3, result.output  # one message (wrapped at most)
    assert not (remote / "r").exists()
    _no_local_store(remote)


def test_library_calls_without_a_route_never_open_a_local_store(remote: Path) -> None:
    from keel.store.blobs import get_artifact_store
    from keel.store.metadata import get_metadata_store

    with pytest.raises(ConfigError, match="not available against a server"):
        get_metadata_store()
    with pytest.raises(ConfigError, match="not available against a server"):
        get_artifact_store()
    _no_local_store(remote)


def test_set_tracking_uri(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEEL_TRACKING_URI", raising=False)
    keel.set_tracking_uri("http://127.0.0.1:1, http://127.0.0.1:2/", token="t0k")
    assert os.environ["KEEL_TRACKING_URI"] == "http://127.0.0.1:1,http://127.0.0.1:2"
    assert os.environ["KEEL_TRACKING_TOKEN"] == "t0k"
    keel.set_tracking_uri(None)
    assert "KEEL_TRACKING_URI" not in os.environ and "KEEL_TRACKING_TOKEN" not in os.environ
    with pytest.raises(ConfigError, match="not an http"):
        keel.set_tracking_uri("127.0.0.1:5000")


def test_the_token_is_never_printed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from keel import config
    from keel.cli.main import app

    monkeypatch.setenv("KEEL_TRACKING_TOKEN", "tok-5ecret-value")
    config.reset()
    for args in (["config"], ["config", "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "tok-5ecret-value" not in result.output and "tracking_token" in result.output
