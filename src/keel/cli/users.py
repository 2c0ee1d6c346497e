"""``keel login``, ``keel users`` and ``keel tokens``: identities on a keel server."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
