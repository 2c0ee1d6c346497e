"""keel score --engine ray on a Ray cluster the test starts with `ray start --head` (stopped by its process group)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.serving.conftest import make_data, train_model

# Ray clusters of different tests on one machine resolve each other's addresses: one worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"), pytest.mark.xdist_group("ray")]


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("ray is not installed")
    gcs, client, nm, om, agent, agent_grpc, metrics, runtime_env = _ports(8)
    temp = Path("/tmp") / f"keelray-{os.getpid()}-{gcs}"  # short: Ray's socket paths have a length limit
    cmd = [str(ray_bin), "start", "--head", "--block", f"--port={gcs}", f"--ray-client-server-port={client}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
           "--min-worker-port=0", "--max-worker-port=0", "--include-dashboard=false", "--num-cpus=2", "--disable-usage-stats",
           "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
    # a throw-away cluster on loopback: no auth token (a driver process caches the first token
    # it reads, so a token of this test's own breaks after any earlier ray.init in the worker)
    auth = {"RAY_AUTH_MODE": "disabled"}
    env = {**os.environ, **auth, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(tmp_path_factory.mktemp("ray") / "ray.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{gcs}"
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", gcs)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"ray start exited: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.5)
    time.sleep(3)  # the raylet registers after the GCS listens
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)

    try:
        yield address
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import ray

        ray.shutdown()
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, nothing else
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_score_on_a_ray_cluster_keeps_row_ids_and_logs(local: Path, ray_cluster: str) -> None:
    import json

    import keel
    from keel.serving import score

    train_model()
    df = make_data(3000, seed=5)[["a", "b", "plan"]]
    df.to_parquet(local / "in.parquet", index=False, row_group_size=500)
    # `keel score` as a user runs it, in a process of its own (a driver that has not met another Ray)
    env = {**os.environ, "KEEL_RAY_ADDRESS": ray_cluster, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [str(Path(sys.executable).with_name("keel")), "score", "models:/churn@live", "--input", str(local / "in.parquet"),
           "--output", str(local / "scores"), "--engine", "ray", "--concurrency", "2", "--chunk-rows", "500", "--json"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=local)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["engine"] == "ray" and result["rows_in"] == result["rows_scored"] == 3000 and result["chunks"] == 6
    out = pq.read_table(local / "scores").to_pandas().sort_values("row_id")
    assert out["row_id"].tolist() == list(range(3000))
    want = keel.load_model("models:/churn@live").predict_proba(df)[:, 1]
    assert np.allclose(out["score"].to_numpy(), want)
    logged = keel.predictions("churn")
    assert len(logged) == 3000 and set(logged["batch_id"]) == {result["batch_id"]}
    # the same numbers as the local engine
    local_result = score("models:/churn@live", local / "in.parquet", local / "local.parquet", log=False)
    assert np.allclose(pq.read_table(local / "local.parquet").to_pandas()["score"], want) and local_result.rows_scored == 3000
