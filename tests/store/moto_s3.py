"""moto's standalone S3-compatible server, for the artifact store, the lake and tests/features.

Loaded for the whole suite by tests/conftest.py (pytest_plugins).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["s3_bucket", "s3_endpoint"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone S3-compatible server on a free local port, one per test session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the moto server, with test credentials in the environment."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    import boto3

    bucket = f"keel-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return bucket
