"""The buffered metric writer: logging appends to memory, a thread writes in batches.

``log_metric`` costs a few microseconds: it appends a row to a list. A
background thread flushes every ``flush_interval`` seconds (default 1 s) in one
transaction per batch, keeps each run's latest-value summary, and beats the
heartbeat of the runs this process has open. A crash can lose at most what was
buffered since the last flush. Flushes happen as well when a run ends, at
interpreter exit, and after a fork the child starts with an empty writer.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
from collections import deque
from typing import Any

import sqlalchemy as sa

from keel.store.metadata import MetadataStore, now_ms
from keel.store.schema import metric_history, runs

Row = tuple[str, str, int, int, float | None]  # run_id, key, step, ts, value

_UPSERT = sa.text(
    "INSERT INTO metrics (run_id, key, value, step, ts) VALUES (:run_id, :key, :value, :step, :ts) "
    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, step = excluded.step, ts = excluded.ts "
    "WHERE excluded.step > metrics.step OR (excluded.step = metrics.step AND excluded.ts >= metrics.ts)"
)

HISTORY_COLUMNS = ("run_id", "key", "n", "min_step", "max_step", "steps", "ts", "vals")
MAX_BUFFER = 200_000  # flush early past this many rows so memory stays bounded


class MetricWriter:
    def __init__(self, store: MetadataStore, flush_interval: float, heartbeat_interval: float) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        # deque appends and poplefts are atomic: logging threads never take a lock
        self._rows: deque[Row] = deque()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._runs: set[str] = set()  # runs this process keeps alive (heartbeat)
        self._last_beat = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="keel-metric-writer", daemon=True)
        self._thread.start()

    def append(self, row: Row) -> None:
        rows = self._rows
        rows.append(row)
        if len(rows) >= MAX_BUFFER:
            self._wake.set()

    def extend(self, rows: list[Row]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= MAX_BUFFER:
            self._wake.set()

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
            except BaseException as exc:  # keep the thread alive; report on the next flush()
                self.error = exc

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
        """Write everything buffered so far; returns how many values were written."""
        with self._flush_lock:
            buf = self._rows
            rows = [buf.popleft() for _ in range(len(buf))]
            if not rows:
                return 0
            chunks, latest = encode_chunks(rows)
            for attempt in range(5):
                try:
                    with self.store.write() as conn:
                        self.store.insert_many(conn, metric_history, chunks, HISTORY_COLUMNS)
                        conn.execute(_UPSERT, latest)
                    break
                except Exception:
                    if attempt == 4:
                        buf.extendleft(reversed(rows))  # keep the values for the next attempt
                        raise
                    time.sleep(0.2 * (attempt + 1))
            return len(rows)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def encode_chunks(rows: list[Row]) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """Group rows by (run, key): one metric_history row each, and each key's latest value."""
    import numpy as np

    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row)
    chunks: list[tuple[Any, ...]] = []
    latest: list[dict[str, Any]] = []
    for (run_id, key), items in groups.items():
        steps = np.fromiter((r[2] for r in items), dtype="<i8", count=len(items))
        ts = np.fromiter((r[3] for r in items), dtype="<i8", count=len(items))
        vals = np.fromiter((math.nan if r[4] is None else r[4] for r in items), dtype="<f8", count=len(items))
        chunks.append((run_id, key, len(items), int(steps.min()), int(steps.max()), steps.tobytes(), ts.tobytes(), vals.tobytes()))
        best = int(np.lexsort((ts, steps))[-1])  # largest step, then newest
        v = float(vals[best])
        latest.append({"run_id": run_id, "key": key, "step": int(steps[best]), "ts": int(ts[best]), "value": None if math.isnan(v) else v})
    return chunks, latest


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
    with _writers_lock:
        w = _writers.get(store.uri)
        if w is None:
            beat = max(0.2, min(10.0, heartbeat_timeout / 3))
            w = _writers[store.uri] = MetricWriter(store, flush_interval, beat)
        return w


def flush_all() -> None:
    for w in list(_writers.values()):
        w.flush()


def close_all() -> None:
    with _writers_lock:
        writers = list(_writers.values())
        _writers.clear()
    for w in writers:
        w.close()


def _after_fork_in_child() -> None:
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all)
