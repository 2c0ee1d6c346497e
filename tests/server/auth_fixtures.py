"""Fixtures of the auth tests (a plugin of tests/conftest.py): a project with one user per role, their tokens, and an app with auth on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROLES = ("viewer", "member", "approver", "admin")
PASSWORD = "correct horse battery"


@pytest.fixture
def auth_people(project: Path) -> Iterator[dict[str, str]]:
    """{role: token} for users r_viewer .. r_admin (admin-scoped tokens, so the role decides); r_admin has a password."""
    from keel.server import auth
    from keel.store import users as U

    auth.per_user.clear()
    auth.per_client.clear()
    auth._basic_cache.clear()
    tokens = {}
    for role in ROLES:
        U.add_user(f"r_{role}", role=role, password=PASSWORD if role == "admin" else None)
        tokens[role] = U.create_token(f"r_{role}", name="test", scope="admin")[1]
    yield tokens
    auth.per_user.clear()
    auth.per_client.clear()


@pytest.fixture
def auth_app(auth_people: dict[str, str]) -> Any:
    from keel.server.app import create_app

    return create_app(auth=True)


@pytest.fixture
async def auth_client(auth_app: Any) -> AsyncIterator[Any]:
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(auth_app), base_url="http://keel.test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
