"""The buffered metric writer: logging appends to memory, a thread writes in batches.

``log_metric`` costs a few microseconds: it appends a row to a list. A
background thread flushes every ``flush_interval`` seconds (default 1 s) in one
transaction per batch, keeps each run's latest-value summary, and beats the
heartbeat of the runs this process has open. A crash can lose at most what was
buffered since the last flush. Flushes happen as well when a run ends, at
interpreter exit, and after a fork the child starts with an empty writer.

Nothing is dropped while the store is down: a failed flush puts its values
back at the head of the buffer, counts the failure (``failures``, ``error``)
and the thread retries on its next tick. The buffer is bounded: past
``max_rows`` values a logging call waits for room (back-pressure) and, if the
store has not come back within ``block_timeout`` seconds, raises a
:class:`~keel.errors.StoreError` instead of growing without end. Ending a run
flushes synchronously and raises the flush's error, with the number of values
still waiting; the run stays open so that ending it again, once the store is
back, writes everything.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from keel.errors import StoreError
from keel.store.metadata import MetadataStore, now_ms
from keel.store.schema import metric_batches, metric_history, runs

Row = tuple[str, str, int, int, float | None]  # run_id, key, step, ts, value

_UPSERT = sa.text(
    "INSERT INTO metrics (run_id, key, value, step, ts) VALUES (:run_id, :key, :value, :step, :ts) "
    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, step = excluded.step, ts = excluded.ts "
    "WHERE excluded.step > metrics.step OR (excluded.step = metrics.step AND excluded.ts >= metrics.ts)"
)

HISTORY_COLUMNS = ("run_id", "key", "n", "min_step", "max_step", "steps", "ts", "vals")
MAX_BUFFER = 200_000  # values held in memory at most (about 20 MB); logging waits past this
BLOCK_TIMEOUT = 60.0  # seconds a logging call waits for room while the store is down, then raises
_log = logging.getLogger("keel.tracking")


class MetricWriter:
    def __init__(
        self, store: MetadataStore, flush_interval: float, heartbeat_interval: float,
        *, max_rows: int = MAX_BUFFER, block_timeout: float = BLOCK_TIMEOUT,
    ) -> None:
        self.store = store
        self.uri = store.uri if store is not None else ""
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_rows = max_rows
        self.block_timeout = block_timeout
        # deque appends and poplefts are atomic: logging threads never take a lock
        self._rows: deque[Row] = deque()
        self._flush_lock = threading.Lock()
        self._room = threading.Condition()
        self._wake = threading.Event()
        self._stop = False
        self._runs: set[str] = set()  # runs this process keeps alive (heartbeat)
        self._last_beat = 0.0
        self.error: BaseException | None = None  # the last failed flush; None once one succeeds
        self.failures = 0  # flushes that failed (each kept its values for the next one)
        self.written = 0  # values written
        self._streak = 0  # failed flushes since the last one that worked
        self._inflight = 0  # values taken out of the buffer by a flush that has not finished
        self._held: tuple[int, Any] | None = None  # (values, prepared batch) of a failed flush, sent first next time
        self._held_n = 0
        self._thread = threading.Thread(target=self._loop, name="keel-metric-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Values buffered and not written yet (a flush under way included)."""
        held = self._held
        return len(self._rows) + self._inflight + (held[0] if held is not None else 0)

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @max_rows.setter
    def max_rows(self, value: int) -> None:
        self._max_rows = value
        self._early = max(1, value // 2)  # past this, flush early: the buffer stays away from full

    def append(self, row: Row) -> None:
        rows = self._rows
        if len(rows) + self._inflight + self._held_n >= self._early:
            self._make_room(1)
        rows.append(row)

    def extend(self, rows: list[Row]) -> None:
        if self.pending + len(rows) >= self._early:
            self._make_room(len(rows))
        self._rows.extend(rows)

    def _make_room(self, n: int) -> None:
        if not self._wake.is_set():
            self._wake.set()
        if self.pending + n > self._max_rows:
            self._wait_for_room(n)

    def _wait_for_room(self, n: int) -> None:
        """Back-pressure: wait until the flush thread makes room for ``n`` values, or raise."""
        deadline = time.monotonic() + self.block_timeout
        self._wake.set()
        with self._room:
            while self.pending + n > max(self.max_rows, n):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._full_error()
                self._wake.set()
                self._room.wait(min(left, 0.1))

    def _full_error(self) -> StoreError:
        why = f": {_describe(self.error)}" if self.error is not None else " (the store is not keeping up)"
        return StoreError(
            f"The metric buffer is full ({self.pending} values not yet written) and the metadata store "
            f"has not taken any for {self.block_timeout:g} s{why}",
            hint="Bring the metadata store back: the buffered values are kept and written when it recovers; "
            "the value of this call was not logged, log it again.",
            pending=self.pending, failures=self.failures,
        )

    def watch(self, run_id: str) -> None:
        self._runs.add(run_id)

    def unwatch(self, run_id: str) -> None:
        self._runs.discard(run_id)

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
                if time.monotonic() - self._last_beat >= self.heartbeat_interval:
                    self.beat()
            except BaseException as exc:  # keep the thread alive: the values stay buffered, end_run reports
                if self._streak == 1 or self._streak % 100 == 0:
                    _log.warning("keel: writing metrics failed %d time(s) in a row, %d values kept for the next attempt: %s",
                                 self._streak, self.pending, _describe(exc))

    def beat(self) -> None:
        ids = list(self._runs)
        self._last_beat = time.monotonic()
        if not ids:
            return
        with self.store.write() as conn:
            conn.execute(
                sa.update(runs)
                .where(runs.c.id.in_(ids), runs.c.status == "running")
                .values(heartbeat_ms=now_ms())
            )

    def flush(self) -> int:
        """Write everything buffered so far; returns how many values were written.

        On failure the values are kept, as the batch they were prepared into,
        and sent again first by the next flush (a remote batch keeps its batch
        id, so a batch the server stored before the failure is not stored
        twice); a :class:`StoreError` says how many wait. Nothing is dropped.
        """
        with self._flush_lock:
            buf = self._rows
            held, self._held, self._held_n = self._held, None, 0
            rows = [buf.popleft() for _ in range(len(buf))]
            if not rows and held is None:
                return 0
            self._inflight = len(rows) + (held[0] if held is not None else 0)
            written = 0
            prepared = False
            try:
                if held is not None:
                    self._send(held[1])
                    written, held = held[0], None
                if rows:
                    held = (len(rows), self._prepare(rows))
                    prepared = True
                    self._send(held[1])
                    written, held = written + len(rows), None
            except BaseException as exc:
                if rows and not prepared:  # an older batch failed first: these wait, in order, in the buffer
                    buf.extendleft(reversed(rows))
                self._held = held
                self._held_n = held[0] if held is not None else 0
                self._inflight = 0
                self.written += written
                self.failures += 1
                self._streak += 1
                self.error = exc
                raise self._flush_error(exc) from exc
            self._inflight = 0
            self._streak = 0
            self.written += written
            self.error = None
        with self._room:
            self._room.notify_all()
        return written

    def _prepare(self, rows: list[Row]) -> Any:
        """Rows in the form :meth:`_send` writes (kept as they are when the write fails)."""
        return encode_chunks(rows)

    def _send(self, prepared: Any) -> None:
        chunks, latest = prepared
        for attempt in range(5):
            try:
                with self.store.write() as conn:
                    self.store.insert_many(conn, metric_history, chunks, HISTORY_COLUMNS)
                    conn.execute(_UPSERT, latest)
                return
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _flush_error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            message = exc.message
        else:
            message = f"The metadata store {_describe_uri(self.uri)} failed: {_describe(exc)}"
        return StoreError(
            f"{message} ({self.pending} metric values are buffered, not yet written; {self.failures} failed flushes).",
            hint="They are kept: bring the store back and end the run again (keel.end_run()) or call run.flush().",
            pending=self.pending, failures=self.failures,
        )

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def encode_chunks(rows: list[Row], *, summaries: bool = True) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """Group rows by (run, key): one metric_history row each, and each key's latest value.

    ``summaries=False`` skips the latest values (a remote client's batches: the
    server computes them). A flush of one key of one run, the common case of a
    training loop, is not grouped at all.
    """
    import numpy as np

    run0, key0 = rows[0][0], rows[0][1]
    if all(r[1] == key0 and r[0] == run0 for r in rows):
        groups: dict[tuple[str, str], list[Row]] = {(run0, key0): rows}
    else:
        groups = {}
        for row in rows:
            groups.setdefault((row[0], row[1]), []).append(row)
    chunks: list[tuple[Any, ...]] = []
    latest: list[dict[str, Any]] = []
    for (run_id, key), items in groups.items():
        steps = np.fromiter(map(itemgetter(2), items), dtype="<i8", count=len(items))
        ts = np.fromiter(map(itemgetter(3), items), dtype="<i8", count=len(items))
        vals = np.array(list(map(itemgetter(4), items)), dtype="<f8")  # None (NaN) becomes NaN
        chunks.append((run_id, key, len(items), int(steps.min()), int(steps.max()), steps.tobytes(), ts.tobytes(), vals.tobytes()))
        if summaries:
            best = int(np.lexsort((ts, steps))[-1])  # largest step, then newest
            v = float(vals[best])
            latest.append({"run_id": run_id, "key": key, "step": int(steps[best]), "ts": int(ts[best]), "value": None if math.isnan(v) else v})
    return chunks, latest


def write_batch(store: MetadataStore, run_id: str, batch_id: str, metrics: list[tuple[str, Any, Any, Any]]) -> bool:
    """Store one client batch of ``run_id``: (key, steps int64, ts int64, values float64) arrays per key.

    The batch id is recorded in the same transaction, so a batch sent again (a
    lost answer, a replica that died mid-call) is stored once; returns False for
    such a repeat. NaN stays NaN in the history and is NULL in the summary.
    """
    import numpy as np

    chunks: list[tuple[Any, ...]] = []
    latest: list[dict[str, Any]] = []
    total = 0
    for key, steps, ts, vals in metrics:
        if len(steps) == 0:
            continue
        total += len(steps)
        chunks.append((run_id, key, len(steps), int(steps.min()), int(steps.max()), steps.tobytes(), ts.tobytes(), vals.tobytes()))
        best = int(np.lexsort((ts, steps))[-1])
        v = float(vals[best])
        latest.append({"run_id": run_id, "key": key, "step": int(steps[best]), "ts": int(ts[best]), "value": None if math.isnan(v) else v})

    def write(conn: sa.Connection) -> bool:
        from keel.store.metadata import insert_ignore

        if not insert_ignore(conn, metric_batches, {"run_id": run_id, "batch_id": batch_id, "n": total, "created_ms": now_ms()}, ["run_id", "batch_id"]):
            return False
        store.insert_many(conn, metric_history, chunks, HISTORY_COLUMNS)
        if latest:
            conn.execute(_UPSERT, latest)
        return True

    return store.transact(write)


def clean_value(key: str, value: Any) -> float | None:
    """A metric value as stored: float, NaN as None (SQLite cannot hold NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            import numpy as np

            if isinstance(value, np.generic) and not isinstance(value, np.bool_):
                value = value.item()
            else:
                raise TypeError
        except (ImportError, TypeError):
            from keel.errors import ValidationError

            raise ValidationError(
                f"Metric '{key}' got {value!r} ({type(value).__name__}), which is not a number.",
                hint="Log numbers as metrics; log text with keel.set_tag or keel.log_param.",
            ) from None
    f = float(value)
    return None if math.isnan(f) else f


_writers: dict[str, MetricWriter] = {}
_writers_lock = threading.Lock()


def get_writer(store: MetadataStore, flush_interval: float, heartbeat_timeout: float) -> MetricWriter:
    return shared_writer(store.uri, lambda beat: MetricWriter(store, flush_interval, beat), heartbeat_timeout)


def shared_writer(key: str, make: Any, heartbeat_timeout: float) -> MetricWriter:
    """The one writer of this process for ``key`` (a store URI, or a server's), made by ``make(beat_interval)``."""
    with _writers_lock:
        w = _writers.get(key)
        if w is None:
            w = _writers[key] = make(max(0.2, min(10.0, heartbeat_timeout / 3)))
        return w


def _describe(exc: BaseException) -> str:
    from keel.config import redact

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact(text)


def _describe_uri(uri: str) -> str:
    from keel.config import redact

    return redact(uri)


def flush_all() -> None:
    for w in list(_writers.values()):
        w.flush()


def close_all() -> None:
    with _writers_lock:
        writers = list(_writers.values())
        _writers.clear()
    for w in writers:
        w.close()


def close_all_at_exit() -> None:
    """Flush every writer at interpreter exit; values that cannot be written are reported, not swallowed."""
    with _writers_lock:
        writers = list(_writers.values())
        _writers.clear()
    for w in writers:
        try:
            w.close()
        except Exception as exc:
            sys.stderr.write(
                f"keel: {w.pending} metric values could not be written to {_describe_uri(w.uri)} "
                f"and are lost with this process: {_describe(exc)}\n"
            )


def _after_fork_in_child() -> None:
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all_at_exit)
