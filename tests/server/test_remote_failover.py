"""Reliability through keel servers: a replica SIGKILLed under load, and many clients on PostgreSQL at once.

Real `keel server` processes on free ports over one PostgreSQL store; the
clients are real processes. Nothing may be lost and nothing written twice:
runs carry client ids and metric batches client batch ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.server.test_remote import SRC, free_port, start_server, stop_server

# One client: RUNS runs, each with params, a tag and VALUES metric values, logged as fast as it can.
CLIENT = r"""
import json, sys, keel
from keel.store.remote import client
out, runs, values, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
done = []
for r in range(runs):
    with keel.start_run(f"{tag}-{r}", experiment="load") as run:
        keel.log_params({"client": tag, "r": r})
        for i in range(values):
            keel.log_metric("v", float(i))
        keel.set_tag("client", tag)
    done.append(run.id)
    with open(out, "w") as f:
        json.dump({"runs": done}, f)
c = client()
with open(out, "w") as f:
    json.dump({"runs": done, "failovers": c.failovers, "retried": c.retried}, f)
"""


def _client(tmp: Path, uris: str, tag: str, runs: int, values: int) -> tuple[subprocess.Popen[bytes], Path]:
    folder = tmp / f"client-{tag}"
    folder.mkdir()
    out = folder / "out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update({"PYTHONPATH": str(SRC), "KEEL_TRACKING_URI": uris, "KEEL_FLUSH_INTERVAL": "0.05", "KEEL_CAPTURE_ENVIRONMENT": "false"})
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(out), str(runs), str(values), tag], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, out


def _counts(pg_uri: str) -> tuple[int, dict[str, int], int]:
    """(runs in 'load', metric values per run, param rows) as stored in PostgreSQL."""
    engine = sa.create_engine(pg_uri)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT count(*) FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE e.name = 'load'")).scalar_one()
            values = dict(conn.execute(sa.text("SELECT run_id, sum(n) FROM metric_history GROUP BY run_id")).all())
            params = conn.execute(sa.text("SELECT count(*) FROM params")).scalar_one()
    finally:
        engine.dispose()
    return int(runs), {k: int(v) for k, v in values.items()}, int(params)


@pytest.mark.slow
def test_a_replica_killed_under_load_loses_nothing_and_doubles_nothing(tmp_path: Path, pg_uri: str) -> None:
    env = {"KEEL_METADATA_URI": pg_uri}
    home = tmp_path / "server"  # both replicas share the artifact folder and the PostgreSQL store
    a_port, b_port = free_port(), free_port()
    a = start_server(home, a_port, env)
    b = start_server(home, b_port, env)
    try:
        runs, values = 12, 3000
        proc, out = _client(tmp_path, f"http://127.0.0.1:{a_port},http://127.0.0.1:{b_port}", "k", runs, values)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # kill replica a once the client is well under way
            if out.exists() and len(json.loads(out.read_text() or '{"runs": []}')["runs"]) >= 3:
                break
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        a.wait()
        output = proc.communicate(timeout=600)[0].decode()
        assert proc.returncode == 0, output[-3000:]
        result = json.loads(out.read_text())
        assert len(result["runs"]) == runs
        assert result["failovers"] >= 1  # it did move to replica b
        stored_runs, stored_values, stored_params = _counts(pg_uri)
        assert stored_runs == runs  # no run created twice
        assert {r: stored_values.get(r) for r in result["runs"]} == dict.fromkeys(result["runs"], values)  # every value, once
        assert stored_params == 2 * runs
    finally:
        stop_server(a)
        stop_server(b)


@pytest.mark.slow
def test_concurrent_clients_on_postgresql_through_one_server(tmp_path: Path, pg_uri: str) -> None:
    port = free_port()
    server = start_server(tmp_path / "server", port, {"KEEL_METADATA_URI": pg_uri})
    try:
        clients, runs, values = 6, 2, 2000
        procs = [_client(tmp_path, f"http://127.0.0.1:{port}", f"c{i}", runs, values) for i in range(clients)]
        ids: list[str] = []
        for proc, out in procs:
            output = proc.communicate(timeout=600)[0].decode()
            assert proc.returncode == 0, output[-3000:]
            ids += json.loads(out.read_text())["runs"]
        stored_runs, stored_values, _params = _counts(pg_uri)
        assert stored_runs == clients * runs == len(set(ids))
        assert {r: stored_values.get(r) for r in ids} == dict.fromkeys(ids, values)  # 0 lost, 0 doubled
    finally:
        stop_server(server)
