"""What the routers share: path parameter types, the project-folder check, version references."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Path

from keel.errors import ValidationError

MAX_ID = 2**62  # ids and version numbers past this fit no database column
ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
Name = Annotated[str, Path(min_length=1, max_length=255)]
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}$", description="A registered model's name")]
Alias = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_\-.]{0,63}$", description="A free alias, e.g. champion")]
VersionRef = Annotated[str, Path(pattern=r"^([0-9]{1,18}|[A-Za-z][A-Za-z0-9_\-.]{0,63})$",
                                 description="A version number, or an alias or environment holding one")]


def version_ref(version: str) -> Any:
    """A path's version: a number (``3``) or an alias/environment name (``production``)."""
    return int(version) if version.isdigit() and len(version) <= 18 else version


def project_file(path: str | None, what: str = "data") -> str | None:
    """``path`` (relative to the server's project folder, or absolute inside it); refused anywhere else.

    A client names files the server reads (evaluation data); it may not make the
    server read outside the project, e.g. ``/etc/passwd`` or ``../secrets``.
    """
    if path is None:
        return None
    from keel.config import settings

    root = settings().root.resolve()
    if "://" in path or "\x00" in path:
        raise ValidationError(f"{what} {path!r} is not a file of the server's project.", hint="Give a path relative to the project folder, e.g. data/valid.parquet.")
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise ValidationError(f"{what} {path!r} is outside the server's project folder.", hint="Give a path relative to the project folder, e.g. data/valid.parquet.")
    if not full.is_file():
        raise ValidationError(f"{what} {path!r} does not exist in the server's project folder.", hint="Upload it there first, or give the path of an existing file.")
    return str(FsPath(full))
