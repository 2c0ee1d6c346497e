"""The served-values log: what the online path actually returned, kept for skew checks.

With ``log_served_features`` on (``KEEL_LOG_SERVED_FEATURES=true``; serving turns it
on), every :func:`keel.get_online_features` call for a feature service appends what
it returned to a buffer: per entity row and feature, the request time, the join
keys, the value (JSON), its event time and status. A background thread writes the
buffer to the lake (``features/served/<service>``, one Parquet part per flush) at
most every ``flush_interval`` seconds, so a lookup never waits for storage.

``keel features skew SERVICE --served`` recomputes, point in time as of each
request, what the offline path gives for a sample of logged requests, and compares
it with what was served.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.features.loader import Selection
    from keel.features.online import OnlineFeatures

SERVED_AT = "served_at"
COLUMNS = ("feature", "value", "event_us", "status")


def dataset(service: str) -> str:
    """The lake dataset holding the values served for ``service``."""
    return f"features/served/{service}"


class _Log:
    """Buffered, batched writes of served values; the caller only appends to a deque."""

    def __init__(self) -> None:
        self._queue: deque[tuple[str, dict[str, list[Any]]]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def add(self, service: str, rows: dict[str, list[Any]]) -> None:
        self._queue.append((service, rows))
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="keel-served-log", daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        from keel.config import settings

        while True:
            time.sleep(settings().flush_interval)
            try:
                self.flush()
            except BaseException as exc:  # kept for flush() callers; the thread carries on
                self._error = exc

    def flush(self) -> None:
        """Write everything buffered so far (one lake part per service)."""
        import pyarrow as pa

        from keel.store.lake import get_lake

        with self._lock:
            batches: dict[str, list[dict[str, list[Any]]]] = {}
            while self._queue:
                service, rows = self._queue.popleft()
                batches.setdefault(service, []).append(rows)
            for service, parts in batches.items():
                columns: dict[str, list[Any]] = {}
                for rows in parts:  # a service's rows all have the same columns
                    for name, values in rows.items():
                        columns.setdefault(name, []).extend(values)
                table = pa.table({
                    name: pa.array(values, pa.timestamp("us", tz="UTC")) if name == SERVED_AT else pa.array(values)
                    for name, values in columns.items()
                })
                get_lake().append(dataset(service), table)

    def raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error


_log = _Log()


def record(selection: Selection, online: OnlineFeatures) -> None:
    """Queue what a lookup of a feature service returned (called by get_online_features)."""
    import orjson

    service = selection.service
    if service is None:
        return
    now_us = time.time_ns() // 1_000
    n = len(next(iter(online.rows.values()))) if online.rows else 0
    keys = list(selection.join_keys)
    rows: dict[str, list[Any]] = {SERVED_AT: [], **{k: [] for k in keys}, **{c: [] for c in COLUMNS}}
    view_of = {f.name: v.name for v in selection.views for f in v.features}
    for feature in online.features:
        view = view_of.get(feature)
        if view is None:  # on-demand features are computed by the same function on both paths
            continue
        values, status, events = online.values[feature], online.status[feature], online.event_us.get(view, [None] * n)
        for i in range(n):
            rows[SERVED_AT].append(now_us)
            for k in keys:
                rows[k].append(python_value(online.rows[k][i]))
            rows["feature"].append(feature)
            rows["value"].append(orjson.dumps(values[i], option=orjson.OPT_SERIALIZE_NUMPY).decode())
            rows["event_us"].append(events[i])
            rows["status"].append(status[i])
    if rows[SERVED_AT]:
        _log.add(service.name, rows)


def flush() -> None:
    """Write the buffered served values now (skew checks and tests call this first)."""
    _log.flush()
    _log.raise_error()


def python_value(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds; anything else unchanged."""
    return value.item() if hasattr(value, "item") else value


def _flush_at_exit() -> None:
    try:
        _log.flush()
    except Exception as exc:  # at exit there is no caller left to raise to
        import sys

        print(f"keel: served feature values could not be written: {exc}", file=sys.stderr)


atexit.register(_flush_at_exit)
