"""Optuna journals in the metadata store: gapless under concurrent writers, shared by trials, dropped after the study."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.store.metadata import get_metadata_store
from keel.store.schema.pipelines import optuna_journal

pytest.importorskip("optuna")

WRITER = """
from keel.pipelines import journal
backend = journal._backend_class()("shared")
for i in range(40):
    backend.append_logs([{"w": {w}, "i": i}, {"w": {w}, "i": i, "second": True}])
"""


def _concurrent_appends(python) -> None:
    from keel.pipelines import journal

    journal.storage("shared")  # the schema exists before the writers start
    procs = [python(WRITER.replace("{w}", str(w)), wait=False) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    logs = list(journal._backend_class()("shared").read_logs(0))
    assert len(logs) == 4 * 40 * 2
    for w in range(4):  # each writer's logs in its order, each pair adjacent (one append is one transaction)
        mine = [i for i, log in enumerate(logs) if log["w"] == w]
        assert [logs[i]["i"] for i in mine] == [i // 2 for i in range(80)]
        assert all(mine[k + 1] == mine[k] + 1 for k in range(0, 80, 2))
    with get_metadata_store().read() as conn:
        seqs = list(conn.execute(sa.select(optuna_journal.c.seq).where(optuna_journal.c.journal == "shared").order_by(optuna_journal.c.seq)).scalars())
    assert seqs == list(range(320))
    assert list(journal._backend_class()("shared").read_logs(318)) == logs[318:]
    assert journal.drop("shared") == 320


def test_concurrent_writers_append_without_gaps_or_losses_on_sqlite(project: Path, python) -> None:
    _concurrent_appends(python)


@pytest.mark.postgres
def test_concurrent_writers_append_without_gaps_or_losses_on_postgres(pg_project: Path, python) -> None:
    assert get_metadata_store().dialect == "postgresql"
    _concurrent_appends(python)


def test_a_parallel_study_keeps_its_journal_in_the_metadata_store_and_drops_it(write_module, monkeypatch) -> None:
    from keel.pipelines import journal

    seen: list[str] = []
    real = journal.storage

    def spy(name: str):
        seen.append(name)
        return real(name)

    monkeypatch.setattr(journal, "storage", spy)
    from .test_tuning import TUNED

    mod = write_module("journal_tuned", TUNED.replace("{n_trials}", "4"))
    result = mod.tuned.run(engine="process", max_workers=2)
    assert result.steps["search"].status == "finished"
    assert seen and len(set(seen)) == 1  # one study, in the metadata store (workers read it there)
    from keel.config import settings

    assert not (settings().state_dir / "optuna").exists()  # no journal file on this machine's disk
    with get_metadata_store().read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(optuna_journal)).scalar() == 0
