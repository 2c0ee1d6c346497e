"""Garbage collection: delete blobs that no run, model version or cache entry references.

Every reference lives in the ``artifacts`` table, whatever its owner, so a blob
is garbage exactly when no row there names its digest. Blobs younger than a
grace period are kept, so a blob uploaded a moment before its row is written
(a run logging right now) is never taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from keel.store.blobs import ArtifactStore
from keel.store.metadata import MetadataStore
from keel.store.schema import artifacts


@dataclass
class GcReport:
    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    too_young: int = 0
    dry_run: bool = False


def collect(metadata: MetadataStore, blobs: ArtifactStore, *, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcReport:
    """Delete unreferenced blobs older than ``grace_seconds``."""
    with metadata.read() as conn:
        referenced = set(conn.execute(sa.select(artifacts.c.digest).distinct()).scalars())
    report = GcReport(dry_run=dry_run)
    cutoff = time.time() - grace_seconds
    for digest, mtime in list(blobs.digests()):
        if digest in referenced:
            report.kept += 1
        elif mtime > cutoff:
            report.too_young += 1
        else:
            report.deleted.append(digest)
    if not dry_run:
        for digest in report.deleted:
            blobs.delete(digest)
    return report
