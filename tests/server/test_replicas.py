"""`keel server` on PostgreSQL + S3 (moto) + Redis: two replicas on one set of stores agree.

What one replica writes (an alias, a promotion, pushed features, a queued run), the
other reads at once: the server keeps no state of its own.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.features.conftest import EXAMPLE, make_churn_data
from tests.server._api import Server, train
from tests.server._flows import write_pipelines

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def production(pg_project: Path, s3_endpoint: str, s3_bucket: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from keel import config
    from keel.features import loader, online
    from keel.features.registry import apply
    from keel.store import kv

    for key, value in {"KEEL_ARTIFACTS_URI": f"s3://{s3_bucket}/artifacts", "KEEL_LAKE_URI": f"s3://{s3_bucket}/lake",
                       "KEEL_S3_ENDPOINT_URL": s3_endpoint, "KEEL_ONLINE_URI": redis_url}.items():
        monkeypatch.setenv(key, value)
    config.reset()
    online.reset_context()
    shutil.copy(EXAMPLE, pg_project / "features.py")
    make_churn_data(pg_project)
    apply()
    train()
    train(seed=1)
    write_pipelines(pg_project)
    yield pg_project
    sys.modules.pop("pipelines", None)
    loader.clear_cache()
    online.reset_context()
    kv.reset_kv_stores()


def test_two_replicas_on_postgres_s3_and_redis_agree(production: Path) -> None:
    from keel.config import settings

    s = settings()
    assert s.metadata_uri.startswith("postgresql") and s.artifacts_uri.startswith("s3://") and s.online_uri.startswith("redis://")
    a, b = Server(production), Server(production, "--workers", "2")
    try:
        with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
            assert ca.get("/health").json()["status"] == cb.get("/health").json()["status"] == "ok"
            # the registry: written through A, read through B
            assert ca.put("/v1/registry/models/churn/aliases/champion", json={"version": 2}).status_code == 200
            assert cb.get("/v1/registry/models/churn/versions/champion").json()["version"] == 2
            r = ca.post("/v1/registry/models/churn/versions/1/promote", json={"to": "production"})
            assert r.status_code == 200 and r.json()["status"] == "applied", r.text
            prod = next(e for e in cb.get("/v1/registry/models/churn/status").json()["environments"] if e["environment"] == "production")
            assert prod["version"] == 1
            assert [e["action"] for e in cb.get("/v1/registry/models/churn/audit").json()] == ["register", "register", "alias", "promote"]
            # features: pushed through B into Redis (and the lake on S3), read through A
            row = {"customer_id": 7, "sessions": 4, "minutes": 10.0, "support_tickets": 0, "payment_failures": 1,
                   "event_timestamp": datetime.now(UTC).isoformat()}
            r = cb.post("/v1/features/views/usage/push", json={"rows": [row]})
            assert r.status_code == 200 and r.json()["keys_written"] == 1, r.text
            assert r.json()["offline_path"].startswith("s3://")
            got = ca.post("/v1/features/online", json={"features": ["usage:minutes_per_session"], "entity_rows": [{"customer_id": 7}]}).json()
            assert got["values"]["minutes_per_session"] == [2.5] and got["status"]["minutes_per_session"] == ["present"]
            # a run queued through A is seen through B, by its client id
            assert ca.post("/v1/pipeline-runs", json={"pipeline": "training", "id": "r-1"}).status_code == 202
            assert cb.get("/v1/pipeline-runs/r-1").json()["status"] == "queued"
            assert cb.post("/v1/pipeline-runs", json={"pipeline": "training", "id": "r-1"}).json()["requested_time"] == \
                ca.get("/v1/pipeline-runs/r-1").json()["requested_time"]
            # the prediction log on S3 answers queries on both
            q = {"sql": "SELECT count(*) AS n FROM predictions"}
            assert ca.post("/v1/predictions/query", json=q).json()["rows"] == cb.post("/v1/predictions/query", json=q).json()["rows"]
        for srv in (a, b):
            assert "failed:" not in srv.log_path.read_text()
    finally:
        a.stop()
        b.stop()
