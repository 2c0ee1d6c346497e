"""Shared fixtures: a fresh project per test, and real PostgreSQL / Redis.

Service fixtures skip when the service is down, unless KEEL_REQUIRE_SERVICES=1
(as in CI), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = (
    "tests.store.moto_s3",  # s3_endpoint (moto's server) and s3_bucket, for every folder
    "tests.server.auth_fixtures",  # auth_people (a user and token per role), auth_app, auth_client
)

PG_ADMIN = os.environ.get("KEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEEL_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _require_services() -> bool:
    return os.environ.get("KEEL_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def _unavailable(what: str, exc: BaseException) -> None:
    msg = f"{what} is not reachable: {exc}"
    if _require_services():
        pytest.fail(msg + " (KEEL_REQUIRE_SERVICES=1)")
    pytest.skip(msg)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh keel project in a temporary folder, as the working directory."""
    from keel import config
    from keel.store import metadata

    for key in list(os.environ):
        if key.startswith("KEEL_") and key != "KEEL_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    config.init_project(tmp_path)
    config.reset()
    yield tmp_path
    _end_active_runs()
    metadata.reset_stores()
    config.reset()


def _end_active_runs() -> None:
    try:
        from keel.tracking import runs
    except ImportError:
        return
    runs._reset_for_tests()


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    import sqlalchemy as sa

    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    yield url
    from keel.store import metadata

    metadata.reset_stores()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_project(project: Path, pg_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose metadata store is a fresh PostgreSQL database."""
    from keel import config

    monkeypatch.setenv("KEEL_METADATA_URI", pg_uri)
    config.reset()
    return project


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL with a unique key prefix (as ?prefix=...); the keys are deleted afterwards."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"
    yield f"{REDIS_URL}?prefix={prefix}"
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
