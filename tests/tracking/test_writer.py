"""The metric writer while the store is down: nothing dropped, errors raised and counted, bounded buffer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import keel
from keel.errors import StoreError
from keel.tracking import _writer

PG_ADMIN = os.environ.get("KEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Outage:
    """Takes a PostgreSQL database down for real (no new connections, open ones killed) and back."""

    def __init__(self, uri: str) -> None:
        self.name = sa.engine.make_url(uri).database
        self.admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

    def down(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": self.name})

    def up(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


@pytest.fixture
def outage(pg_project: Path, pg_uri: str) -> Iterator[Outage]:
    o = Outage(pg_uri)
    yield o
    o.up()
    o.admin.dispose()


def _steps(run_id: str) -> list[int]:
    return [int(s) for s in keel.get_metric_history(run_id, "v")["step"]]


@pytest.mark.postgres
def test_end_run_raises_the_flush_error_with_the_count_and_a_second_end_writes_everything(outage: Outage) -> None:
    run = keel.start_run()
    for i in range(100):
        keel.log_metric("v", float(i), step=i)
    run.flush()
    writer = run._writer
    outage.down()
    for i in range(100, 300):
        keel.log_metric("v", float(i), step=i)
    with pytest.raises(StoreError, match=r"200 metric values are buffered, not yet written"):
        keel.end_run()
    assert writer.pending == 200 and writer.failures >= 1 and writer.error is not None
    assert keel.active_run() is run  # still open: it can be ended once the store is back
    outage.up()
    keel.end_run()
    assert writer.pending == 0 and writer.error is None
    assert _steps(run.id) == list(range(300))
    assert keel.get_run(run.id).status == "finished"


@pytest.mark.postgres
def test_a_failed_batch_is_sent_again_first_and_later_values_wait_behind_it(outage: Outage) -> None:
    run = keel.start_run()
    writer = run._writer
    outage.down()
    for i in range(50):
        keel.log_metric("v", float(i), step=i)
    with pytest.raises(StoreError):
        writer.flush()  # this batch is kept as it was prepared
    for i in range(50, 80):
        keel.log_metric("v", float(i), step=i)
    with pytest.raises(StoreError, match="80 metric values are buffered"):
        writer.flush()  # the kept batch fails first; the newer values go back to the buffer
    assert writer.pending == 80
    outage.up()
    keel.end_run()
    assert writer.pending == 0 and writer.error is None
    assert _steps(run.id) == list(range(80))  # every value once, in order


@pytest.mark.postgres
def test_a_full_buffer_waits_for_the_store_then_carries_on(outage: Outage) -> None:
    run = keel.start_run()
    writer = run._writer
    writer.max_rows, writer.block_timeout = 50, 60.0
    run.log_metric("v", 0.0, step=0)
    run.flush()
    outage.down()
    for i in range(1, 51):
        run.log_metric("v", float(i), step=i)
    assert writer.pending == 50
    threading.Timer(1.0, outage.up).start()
    started = time.monotonic()
    for i in range(51, 80):  # blocks (back-pressure) until the store is back, then goes on
        run.log_metric("v", float(i), step=i)
    assert time.monotonic() - started >= 0.9
    run.end()
    assert _steps(run.id) == list(range(80))


@pytest.mark.postgres
def test_a_full_buffer_raises_when_the_store_stays_down_and_keeps_what_it_holds(outage: Outage) -> None:
    run = keel.start_run()
    writer = run._writer
    writer.max_rows, writer.block_timeout = 50, 0.5
    run.log_metric("v", 0.0, step=0)
    run.flush()
    outage.down()
    for i in range(1, 51):
        run.log_metric("v", float(i), step=i)
    with pytest.raises(StoreError, match=r"metric buffer is full \(50 values not yet written\)"):
        run.log_metric("v", 51.0, step=51)
    assert writer.pending == 50
    outage.up()
    run.end()
    assert _steps(run.id) == list(range(51))  # every value whose call returned is stored


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, keel, sqlalchemy as sa
    name, admin = sys.argv[1], sys.argv[2]
    run = keel.start_run(name="exit")
    keel.log_metric("v", 1.0)
    run.flush()
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
    for i in range(7):
        keel.log_metric("v", float(i), step=i + 1)
    """
)


@pytest.mark.postgres
@pytest.mark.slow
def test_errors_while_closing_runs_at_exit_are_reported(outage: Outage, pg_uri: str) -> None:
    env = {**os.environ, "KEEL_METADATA_URI": pg_uri}
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, outage.name, PG_ADMIN], env=env, capture_output=True, text=True, timeout=120
    )
    assert "could not be marked finished at exit" in done.stderr, done.stderr
    assert "7 metric values could not be written" in done.stderr, done.stderr


def test_writer_counts_written_values(project: Path) -> None:
    with keel.start_run() as run:
        for i in range(10):
            keel.log_metric("v", float(i))
    w = _writer.get_writer(run.store, 1.0, 30.0)
    assert w.written >= 10 and w.failures == 0 and w.pending == 0
