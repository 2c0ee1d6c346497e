"""Authentication benchmark: what checking credentials costs per request, keel server beside mlflow server.

    python benchmarks/bench_auth.py            # up to 2,000 requests per case (60 s at most each)
    python benchmarks/bench_auth.py --quick    # up to 200

Each server runs in its own process (1 worker, SQLite) on a free port on 127.0.0.1; this
process is the load generator: one keep-alive HTTP client, requests one after the other,
median latency per case. A server's auth overhead is its median with credentials minus its
median with auth off, on the same request:

- keel: ``GET /v1/whoami`` on ``keel server`` and on ``keel server --auth`` with a bearer
  token and with HTTP basic (argon2id hash; a verified pair is cached by hash for 60 s);
- MLflow 3.17: ``GET /api/2.0/mlflow/experiments/get?experiment_id=0`` on ``mlflow server``
  and on ``mlflow server --app-name basic-auth`` with HTTP basic (MLflow's own auth app, which
  checks the password hash on every request). MLflow runs in its own virtualenv
  (benchmarks/.venvs/mlflow-auth, created on first use).

Also printed: one argon2 verification (what the basic cache saves per request).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "mlflow-auth"
PASSWORD = "bench password 123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"Creating {VENV} with mlflow[auth] 3.17 (once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "mlflow[auth]==3.17.*"], check=True)
    return py


def start(cmd: list[str], cwd: Path, env: dict[str, str], health: str) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    log = open(cwd / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = cmd[cmd.index("--port") + 1]
    url = f"http://127.0.0.1:{base}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0]} exited: {(cwd / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + health, timeout=2).status_code < 500:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start: {(cwd / 'server.log').read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


BUDGET_S = 60.0  # per case: a slow server gets fewer requests (at least 30), not an hour


def measure(url: str, path: str, n: int, **kw: Any) -> float:
    """Median seconds per request of ``n`` sequential requests (after 20 warm-up ones), within BUDGET_S."""
    import httpx

    times: list[float] = []
    end = time.monotonic() + BUDGET_S
    with httpx.Client(base_url=url, timeout=30, **kw) as c:
        for i in range(n + 20):
            if len(times) >= 30 and time.monotonic() > end:
                break
            t0 = time.perf_counter()
            r = c.get(path)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise SystemExit(f"{url}{path}: {r.status_code} {r.text[:300]}")
            if i >= 20:
                times.append(dt)
    counts[url + path + str(sorted(kw))] = len(times)
    return statistics.median(times)


counts: dict[str, int] = {}


def keel_cases(n: int, tmp: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONPATH"] = str(HERE.parent / "src")
    env["KEEL_HOME"] = str(tmp)
    setup = (f"from keel.store import users as U; U.add_user('alice', role='admin', password={PASSWORD!r}); "
             "print(U.create_token('alice', scope='admin')[1])")
    token = subprocess.run([sys.executable, "-c", setup], env=env, cwd=tmp, check=True, capture_output=True, text=True).stdout.strip()
    keel = str(Path(sys.executable).with_name("keel"))
    out: dict[str, float] = {}
    proc, url = start([keel, "server", "--port", str(free_port())], tmp, env, "/health")
    try:
        out["keel off"] = measure(url, "/v1/whoami", n)
    finally:
        stop(proc)
    proc, url = start([keel, "server", "--auth", "--port", str(free_port())], tmp, env, "/health")
    try:
        out["keel bearer"] = measure(url, "/v1/whoami", n, headers={"Authorization": f"Bearer {token}"})
        out["keel basic"] = measure(url, "/v1/whoami", n, auth=("alice", PASSWORD))
    finally:
        stop(proc)
    return out


def mlflow_cases(n: int, tmp: Path) -> dict[str, float]:
    py = mlflow_python()
    mlflow = str(py.with_name("mlflow"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_", "PYTHONPATH"))}
    ini = tmp / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "bench-only-secret"
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    common = ["--backend-store-uri", store, "--default-artifact-root", str(tmp / "mlartifacts"), "--workers", "1", "--host", "127.0.0.1"]
    path = "/api/2.0/mlflow/experiments/get?experiment_id=0"
    out: dict[str, float] = {}
    proc, url = start([mlflow, "server", *common, "--port", str(free_port())], tmp, env, "/health")
    try:
        out["mlflow off"] = measure(url, path, n)
    finally:
        stop(proc)
    proc, url = start([mlflow, "server", *common, "--app-name", "basic-auth", "--port", str(free_port())], tmp, env, "/health")
    try:
        out["mlflow basic"] = measure(url, path, n, auth=("admin", PASSWORD))
    finally:
        stop(proc)
    return out


def argon2_verify_s() -> float:
    from argon2 import PasswordHasher

    ph = PasswordHasher()
    h = ph.hash(PASSWORD)
    t0 = time.perf_counter()
    for _ in range(5):
        ph.verify(h, PASSWORD)
    return (time.perf_counter() - t0) / 5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    n = 200 if ap.parse_args().quick else 2000
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        res = keel_cases(n, Path(a))
        res |= mlflow_cases(n, Path(b))
    verify = argon2_verify_s()
    ms = {k: v * 1000 for k, v in res.items()}
    print(f"\nup to {n} sequential requests per case ({min(counts.values())}-{max(counts.values())} within {BUDGET_S:.0f} s each), "
          f"median latency; load average {os.getloadavg()[0]:.2f}")
    for k, v in ms.items():
        print(f"  {k:14s} {v:8.3f} ms   ({1000 / v:,.0f} req/s)")
    over = {"keel bearer": ms["keel bearer"] - ms["keel off"], "keel basic": ms["keel basic"] - ms["keel off"],
            "mlflow basic": ms["mlflow basic"] - ms["mlflow off"]}
    print("auth overhead per request (with credentials minus auth off):")
    for k, v in over.items():
        print(f"  {k:14s} {v:8.3f} ms")
    print(f"  one argon2id verification (what keel's basic cache saves): {verify * 1000:.1f} ms")
    for k in ("keel bearer", "keel basic"):
        ratio = over["mlflow basic"] / over[k] if over[k] > 0 else float("inf")
        print(f"ratio mlflow basic overhead / {k} overhead: {ratio:.1f}x;"
              f" authenticated request: mlflow {ms['mlflow basic']:.2f} ms vs {k} {ms[k]:.2f} ms = {ms['mlflow basic'] / ms[k]:.1f}x")


if __name__ == "__main__":
    main()
