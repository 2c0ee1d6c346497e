"""A real two-node Ray cluster on 127.0.0.1: the quickstart's pipeline (tuning step included) runs on it.

The nodes get keel on their path (as if installed there) but not the project:
the project's code reaches the workers only through Ray's runtime environment.
The cluster is started by this test and stopped by pid (never `ray stop`,
which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
# Ray clusters of different tests on one machine resolve each other's addresses: one worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("ray")]

RAY = str(Path(sys.executable).with_name("ray"))
KEEL_SRC = str(Path(__import__("keel").__file__).resolve().parent.parent)

PROBE = '''
import os
import time

import keel


@keel.step(cache=False)
def where(i: int) -> dict:
    import ray

    time.sleep(2.0)
    return {"i": i, "file": __file__, "cwd": os.getcwd(), "node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


@keel.pipeline(experiment="probe")
def probe(n: int = 4):
    return [where(i) for i in range(n)]
'''


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _port_range(size: int) -> int:
    """The first port of ``size`` consecutive free ports."""
    for base in range(31000, 60000, 97):
        ok = True
        for p in range(base, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def _node_args(temp: str, worker_base: int) -> list[str]:
    nm, om, agent_listen, agent_grpc, metrics, rtenv = _free_ports(6)
    return [
        "--num-cpus=1", "--object-store-memory=80000000", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1",
        f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rtenv}",
        f"--min-worker-port={worker_base}", f"--max-worker-port={worker_base + 24}", "--disable-usage-stats", "--block",
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "RAY_")) and k != "PYTHONPATH"}
    # a throw-away cluster on this machine: no auth token to hand around
    env.update(PYTHONPATH=KEEL_SRC, PYTHONDONTWRITEBYTECODE="1", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", **extra)
    return env


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(1 for n in ray.nodes() if n['Alive']))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def _stop(procs: list[subprocess.Popen[bytes]], temp: str) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    # what Ray started outside those sessions still names this cluster's temp dir on its command line
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if temp.encode() in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A head node and a second node joining it, each with one CPU; yields the address."""
    temp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths live under it
    (gcs, client, dashboard) = _free_ports(3)
    address = f"127.0.0.1:{gcs}"
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(Path(temp) / f"node{i}.log", "wb") for i in range(2)]  # noqa: SIM115
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}", "--include-dashboard=false", f"--dashboard-port={dashboard}",
             *_node_args(temp, _port_range(25))],
            env=_env(), stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
        ))
        deadline = time.time() + 180
        while _alive_nodes(address) < 1:
            assert procs[0].poll() is None and time.time() < deadline, (Path(temp) / "node0.log").read_text()[-3000:]
            time.sleep(2)
        procs.append(subprocess.Popen(
            [RAY, "start", f"--address={address}", *_node_args(temp, _port_range(25) + 200)],
            env=_env(), stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True,
        ))
        while _alive_nodes(address) < 2:
            assert procs[1].poll() is None and time.time() < deadline, (Path(temp) / "node1.log").read_text()[-3000:]
            time.sleep(2)
        yield address
    finally:
        _stop(procs, temp)
        for f in logs:
            f.close()
        shutil.rmtree(temp, ignore_errors=True)


def _keel(project: Path, address: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = _env(KEEL_RAY_ADDRESS=address, KEEL_HOME=str(project))
    code = "import sys; from keel.cli.main import main; sys.argv = ['keel', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_quickstart_pipeline_and_its_tuning_step_run_on_a_two_node_ray_cluster(project: Path, ray_cluster: str) -> None:
    from keel.quickstart import data as qdata
    from keel.quickstart.run import ensure_project

    ensure_project(project)
    qdata.write(qdata.generate(n_customers=400, days=60), project / "data")
    (project / "probe.py").write_text(textwrap.dedent(PROBE))

    out = _keel(project, ray_cluster, "pipelines", "run", "probe:probe", "--engine", "ray", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_id = json.loads(out.stdout)["run_id"]
    show = _keel(project, ray_cluster, "pipelines", "show", run_id, "--json")
    steps = json.loads(show.stdout)["steps"]
    assert len(steps) == 4 and {s["status"] for s in steps} == {"finished"}
    import keel

    outputs = [keel.get_run(run_id)]  # the pipeline run exists in the shared metadata store
    from keel.pipelines.executors import BlobRef, load_blob

    values = [load_blob(BlobRef(s["digest"], s["serializer"])) for s in steps]
    assert outputs and sorted(v["i"] for v in values) == [0, 1, 2, 3]
    for v in values:  # imported from Ray's copy of the project, not from the project folder
        assert not Path(v["file"]).resolve().is_relative_to(project.resolve()), v["file"]
    assert len({v["node"] for v in values}) == 2  # both nodes ran steps

    out = _keel(project, ray_cluster, "pipelines", "run", "pipelines:training", "--engine", "ray", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["status"] == "finished"
    by_name = {s["name"]: s for s in result["steps"]}
    assert by_name["train"]["status"] == "finished" and by_name["train"]["serializer"] == "model"
    train_run = keel.get_run(by_name["train"]["run_id"])
    assert train_run.metrics["trials"] == 12 and train_run.metrics["best_value"] > 0.5
    best = train_run.tags["keel.tune.best_run"]
    model = keel.load_model(f"runs:/{best}/model")  # a trial's model, packaged on a Ray worker
    assert model.flavor == "sklearn" and model.input_example is not None
