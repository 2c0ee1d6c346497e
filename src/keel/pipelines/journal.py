"""Optuna studies kept in the metadata store, where every worker of a cluster reaches them.

A tuning study that runs its trials on the process pool or on Ray uses Optuna's
journal storage over :class:`MetadataJournal`: each journal log is one row of
``optuna_journal`` (journal id, sequence number, JSON), in the same database
as the runs (SQLite on one machine, PostgreSQL for a cluster). Optuna's own
RDB storage would bring its own Alembic version table into keel's database;
the journal needs two methods and one table.

Appends are numbered without gaps: a writer reads the last number and inserts
the next ones in one transaction; when another writer took the same numbers
first, the primary key refuses the insert and the writer tries again.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from keel.errors import ConflictError
from keel.store.metadata import MetadataStore, get_metadata_store, now_ms
from keel.store.schema.pipelines import optuna_journal

_RETRIES = 50


def new_journal_id() -> str:
    return uuid.uuid4().hex


_journal_class: type | None = None


def _backend_class() -> type:
    """The backend class, defined on first use: its base class comes from Optuna, an extra."""
    global _journal_class
    if _journal_class is not None:
        return _journal_class
    from keel.pipelines.tuning import _optuna

    base: Any = _optuna().storages.journal.BaseJournalBackend

    class MetadataJournal(base):
        """Optuna journal logs of one study in keel's metadata store."""

        def __init__(self, journal: str, store: MetadataStore | None = None) -> None:
            self.journal = journal
            self.store = store or get_metadata_store()

        def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
            with self.store.read() as conn:
                rows = conn.execute(
                    sa.select(optuna_journal.c.log)
                    .where(optuna_journal.c.journal == self.journal, optuna_journal.c.seq >= log_number_from)
                    .order_by(optuna_journal.c.seq)
                ).scalars()
                return [json.loads(r) for r in rows]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            if not logs:
                return
            for attempt in range(_RETRIES):
                try:
                    with self.store.write() as conn:
                        last = conn.execute(sa.select(sa.func.max(optuna_journal.c.seq)).where(optuna_journal.c.journal == self.journal)).scalar()
                        start = 0 if last is None else int(last) + 1
                        t = now_ms()
                        conn.execute(sa.insert(optuna_journal), [
                            {"journal": self.journal, "seq": start + i, "log": json.dumps(log), "created_ms": t} for i, log in enumerate(logs)
                        ])
                    return
                except (sa.exc.IntegrityError, ConflictError):  # another worker appended the same numbers first
                    time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
            raise ConflictError(
                f"Could not append to tuning journal {self.journal} after {_RETRIES} tries: too many writers at once.",
                hint="Run fewer trials at once (parallel=) or use PostgreSQL for the metadata store.",
            )

    _journal_class = MetadataJournal
    return MetadataJournal


def storage(journal: str) -> Any:
    """Optuna's JournalStorage over the metadata store's journal ``journal`` (reachable from every worker)."""
    from keel.pipelines.tuning import _optuna

    return _optuna().storages.JournalStorage(_backend_class()(journal))


def drop(journal: str) -> int:
    """Delete a finished study's journal; returns the rows removed."""
    with get_metadata_store().write() as conn:
        res = conn.execute(sa.delete(optuna_journal).where(optuna_journal.c.journal == journal))
        return int(res.rowcount or 0)
