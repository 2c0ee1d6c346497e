"""The prediction log's writer: local append-only segments, compacted into the lake off the request path.

:meth:`PredictionLog.record` turns one predict call (any number of rows) into one
JSON line and appends it with a single unbuffered ``os.write`` to the writer's
current segment for that model version. It returns only after the kernel has
the bytes, so a process killed right after answering loses nothing it answered
(fsync is not required: the page cache outlives the process).

A background thread rotates the segments every ``flush_interval`` seconds (or
at ``max_segment_bytes``) and compacts each closed segment into typed Parquet
parts (:mod:`keel.store.predictions`), with deterministic part names so that a
compaction retried after a crash replaces its parts instead of duplicating them;
only then is the segment deleted. Memory stays bounded by one segment.

When the lake is unreachable the segments simply stay on disk (the spill) and
compaction is retried with back-off; the error, the bytes pending and the age of
the oldest pending record are in :meth:`stats`. When the local disk refuses the
write, lines are kept in memory up to ``max_spill_bytes`` and written later;
beyond that they are counted as dropped (reported, never silent).

Layout under ``<state_dir>/predictions/`` (one folder per writer process)::

    <host>-<pid>-<token>/.lock                 flock held while the writer lives
    <host>-<pid>-<token>/schemas/<key>.json    model, version and column types of a segment key
    <host>-<pid>-<token>/<key>.<seq>.jsonl     segments

A writer adopts the folders of writers that died (their lock is free) and
compacts their segments.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("keel.predictions")
SCALARS = ("model", "version", "route", "batch_id")


@dataclass
class _Segment:
    key: str
    seq: int
    path: Path
    fd: int
    opened: float
    bytes: int = 0
    rows: int = 0


@dataclass
class _Stats:
    records: int = 0
    rows_written: int = 0
    parts_written: int = 0
    dropped: int = 0
    spilled_rows: int = 0
    torn: int = 0
    quarantined: int = 0
    lake_errors: int = 0
    last_error: str | None = None
    last_compaction: float | None = None
    pending_since: dict[str, float] = field(default_factory=dict)


def _writer_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def key_of(model: str, version: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model)[:40]
    return f"{safe}-v{int(version)}-{hashlib.sha1(f'{model}@{version}'.encode()).hexdigest()[:8]}"


class PredictionLog:
    """One process's prediction-log writer (see the module docstring).

    ``folder`` defaults to ``<state_dir>/predictions``; the lake is the project's.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        flush_interval: float | None = None,
        max_segment_bytes: int = 32 << 20,
        max_spill_bytes: int = 64 << 20,
        start_thread: bool = True,
    ) -> None:
        from keel.config import settings
        from keel.store.lake import get_lake

        s = settings()
        self.root = Path(folder) if folder is not None else default_folder()
        self.lake = get_lake()
        self.flush_interval = float(flush_interval if flush_interval is not None else max(s.flush_interval, 1.0))
        self.max_segment_bytes = max_segment_bytes
        self.max_spill_bytes = max_spill_bytes
        self.writer = _writer_name()
        self.folder = self.root / self.writer
        (self.folder / "schemas").mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._open: dict[str, _Segment] = {}
        self._closed: deque[tuple[Path, Path]] = deque()  # (segment, folder of its writer)
        self._schemas: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._spill: deque[tuple[str, bytes, int]] = deque()
        self._spill_bytes = 0
        self.stats_ = _Stats()
        self._stop = threading.Event()
        self._backoff = 0.0
        self._closed_for_good = False
        self.adopt()  # what a writer that died left behind is compacted by this one
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._loop, name="keel-prediction-log", daemon=True)
            self._thread.start()

    # ---- the request path -------------------------------------------------
    def register(self, model: str, version: int, types: dict[str, str | None]) -> str:
        """Declare the typed columns (Arrow type names, None: inferred) logged for a model version."""
        key = key_of(model, version)
        spec = {"model": model, "version": int(version), "types": types}
        with self._lock:
            if self._schemas.get(key) != spec:
                self._schemas[key] = spec
                path = self.folder / "schemas" / f"{key}.json"
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(spec))
                os.replace(tmp, path)
        return key

    def record(self, key: str, columns: dict[str, Any], rows: int, *, route: str = "default", batch_id: str | None = None) -> None:
        """Append one predict call's rows: ``columns`` maps each per-row column to its values.

        ``ts`` values are epoch microseconds. Returns once the line is in the kernel.
        """
        import orjson

        spec = self._schemas[key]
        line = orjson.dumps(
            {**columns, "model": spec["model"], "version": spec["version"], "route": route, "batch_id": batch_id},
            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
        )
        with self._lock:
            self.stats_.records += rows
            try:
                self._write(key, line, rows)
            except OSError as exc:
                self._spill_line(key, line, rows, exc)

    def _write(self, key: str, line: bytes, rows: int) -> None:
        seg = self._open.get(key)
        if seg is None:
            seg = self._new_segment(key)
        view = memoryview(line)
        while view:  # a regular file takes the whole buffer; a short write only on a full disk
            n = os.write(seg.fd, view)
            if n == 0:
                raise OSError(errno.ENOSPC, "no space left on device")
            view = view[n:]
        seg.bytes += len(line)
        seg.rows += rows
        self.stats_.pending_since.setdefault(str(seg.path), time.time())
        if seg.bytes >= self.max_segment_bytes:
            self._rotate(key)

    def _new_segment(self, key: str) -> _Segment:
        self._seq += 1
        path = self.folder / f"{key}.{self._seq:08d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        seg = _Segment(key, self._seq, path, fd, time.time())
        self._open[key] = seg
        return seg

    def _rotate(self, key: str) -> None:
        seg = self._open.pop(key)
        os.close(seg.fd)
        if seg.bytes:
            self._closed.append((seg.path, self.folder))
        else:
            seg.path.unlink(missing_ok=True)

    def _spill_line(self, key: str, line: bytes, rows: int, exc: OSError) -> None:
        if self._spill_bytes + len(line) > self.max_spill_bytes:
            self.stats_.dropped += rows
            log.error("prediction log: %d record(s) dropped: the local segment cannot be written (%s) and the memory spill is full", rows, exc)
            return
        if not self._spill:
            log.warning("prediction log: the local segment cannot be written (%s); keeping records in memory", exc)
        self._spill.append((key, line, rows))
        self._spill_bytes += len(line)
        self.stats_.spilled_rows += rows
        # the broken segment is closed; a new one is tried for the next record
        if key in self._open:
            with contextlib.suppress(OSError):
                self._rotate(key)

    # ---- compaction ---------------------------------------------------------
    def _loop(self) -> None:
        next_adopt = 0.0
        while not self._stop.wait(self.flush_interval + self._backoff):
            try:
                if time.monotonic() >= next_adopt:
                    self.adopt()
                    next_adopt = time.monotonic() + 30.0
                self.flush()
                self._backoff = 0.0
            except Exception as exc:  # the lake is down: segments stay on disk, retried with back-off
                self._backoff = min(60.0, max(1.0, self._backoff * 2))
                if self.stats_.lake_errors == 1:
                    log.warning("prediction log: compaction failed (%s); segments are kept and retried", exc)

    def flush(self) -> int:
        """Rotate every open segment and compact everything closed into the lake; returns rows written."""
        with self._lock:
            self._retry_spill()
            for key in list(self._open):
                self._rotate(key)
        written = 0
        with self._compact_lock:
            while self._closed:
                path, owner = self._closed[0]
                try:
                    written += self._compact(path, owner)
                except Exception as exc:
                    self.stats_.lake_errors += 1
                    self.stats_.last_error = f"{type(exc).__name__}: {exc}"
                    raise
                self._closed.popleft()
            self.stats_.last_error = None
            self.stats_.last_compaction = time.time()
        return written

    def flush_safely(self) -> bool:
        """``flush`` that logs instead of raising (a shutdown with the lake down keeps the segments)."""
        try:
            self.flush()
            return True
        except Exception as exc:
            log.error("prediction log: compaction failed (%s); %s keeps the records for the next start", exc, self.folder)
            return False

    def _retry_spill(self) -> None:
        while self._spill:
            key, line, rows = self._spill[0]
            try:
                self._write(key, line, rows)
            except OSError:
                with contextlib.suppress(OSError, KeyError):
                    self._rotate(key)
                return
            self._spill.popleft()
            self._spill_bytes -= len(line)

    def adopt(self) -> int:
        """Queue the segments of writers that died (their lock is free); returns how many."""
        found = 0
        if not self.root.is_dir():
            return 0
        for other in sorted(self.root.iterdir()):
            if other == self.folder or not other.is_dir():
                continue
            lock = other / ".lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # alive
            segments = sorted(other.glob("*.jsonl"))
            with self._compact_lock:
                queued = {p for p, _ in self._closed}
                for seg in segments:
                    if seg not in queued:
                        self._closed.append((seg, other))
                        self.stats_.pending_since.setdefault(str(seg), seg.stat().st_mtime)
                        found += 1
                if not segments:
                    shutil.rmtree(other, ignore_errors=True)
            os.close(fd)
        return found

    def _compact(self, path: Path, owner: Path) -> int:
        from keel.store import predictions

        if not path.exists():
            self.stats_.pending_since.pop(str(path), None)
            return 0
        key, seq = path.name.rsplit(".", 2)[0], path.name.rsplit(".", 2)[1]
        spec_file = owner / "schemas" / f"{key}.json"
        spec = json.loads(spec_file.read_text())
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the process died in the middle of a line it never answered
            self.stats_.torn += 1
            data = data[:end]
        table = self._parse(data, spec, path) if data else None
        if table is not None and table.num_rows:
            table = predictions.normalize(table)
            parts = predictions.write(table, writer=f"{owner.name}-{key[-8:]}-{seq}", lake=self.lake)
            self.stats_.rows_written += table.num_rows
            self.stats_.parts_written += len(parts)
        path.unlink(missing_ok=True)
        self.stats_.pending_since.pop(str(path), None)
        if owner != self.folder and not any(owner.glob("*.jsonl")):
            shutil.rmtree(owner, ignore_errors=True)
        return 0 if table is None else table.num_rows

    def _parse(self, data: bytes, spec: dict[str, Any], path: Path) -> pa.Table | None:
        import pyarrow as pa
        import pyarrow.json as pj

        schema = _line_schema(spec)
        opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        try:
            lines = pj.read_json(io.BytesIO(data), parse_options=opts, read_options=pj.ReadOptions(block_size=max(1 << 20, len(data) + 1)))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            lines = self._parse_lines(data, opts, path)
            if lines is None:
                return None
        return _flatten(lines, spec)

    def _parse_lines(self, data: bytes, opts: Any, path: Path) -> pa.Table | None:
        """Line by line: a corrupt line is moved to quarantine/ (counted), the others kept."""
        import orjson
        import pyarrow as pa
        import pyarrow.json as pj

        good, bad = [], []
        for line in data.splitlines():
            try:
                orjson.loads(line)
                good.append(line)
            except orjson.JSONDecodeError:
                bad.append(line)
        if bad:
            self._quarantine(path, b"\n".join(bad) + b"\n", len(bad))
        if not good:
            return None
        try:
            return pj.read_json(io.BytesIO(b"\n".join(good) + b"\n"), parse_options=opts)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            self._quarantine(path, b"\n".join(good) + b"\n", len(good))
            return None

    def _quarantine(self, path: Path, data: bytes, lines: int) -> None:
        q = self.root / "quarantine"
        q.mkdir(exist_ok=True)
        (q / f"{path.parent.name}-{path.name}").write_bytes(data)
        self.stats_.quarantined += lines
        log.error("prediction log: %d line(s) of %s could not be read; kept in %s", lines, path.name, q)

    # ---- reporting and shutdown ---------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and gauges for /metrics: records, rows written, dropped, pending bytes, lag."""
        pending = 0
        for p in self.root.glob("*/*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                pending += p.stat().st_size
        since = list(self.stats_.pending_since.values())
        s = self.stats_
        return {
            "records": s.records, "rows_written": s.rows_written, "parts_written": s.parts_written, "dropped": s.dropped,
            "spilled_rows": s.spilled_rows, "spill_bytes": self._spill_bytes, "torn_lines": s.torn, "quarantined_lines": s.quarantined,
            "lake_errors": s.lake_errors, "last_error": s.last_error, "pending_bytes": pending,
            "lag_seconds": (time.time() - min(since)) if since else 0.0, "writer": self.writer,
        }

    def close(self) -> None:
        """Stop the thread and compact everything (the log's part of a graceful shutdown)."""
        if self._closed_for_good:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.flush()
        except Exception as exc:  # the segments stay on disk; the next writer adopts them
            log.error("prediction log: could not compact at shutdown (%s); %s keeps the records for the next start", exc, self.folder)
            return
        finally:
            self._closed_for_good = True
        if self._spill:
            log.error("prediction log: %d record(s) in memory could not be written at shutdown", sum(r for _, _, r in self._spill))
            self.stats_.dropped += sum(r for _, _, r in self._spill)
            return
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        shutil.rmtree(self.folder, ignore_errors=True)


def _line_schema(spec: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field("request_id", pa.list_(pa.string())),
        pa.field("ts", pa.list_(pa.int64())),
        pa.field("latency_ms", pa.list_(pa.float64())),
        pa.field("status", pa.list_(pa.string())),
        pa.field("missing_features", pa.list_(pa.list_(pa.string()))),
        pa.field("model", pa.string()),
        pa.field("version", pa.int64()),
        pa.field("route", pa.string()),
        pa.field("batch_id", pa.string()),
    ]
    for name, type_name in spec["types"].items():
        t = _type(type_name)
        if t is not None:  # datetimes travel as epoch microseconds
            fields.append(pa.field(name, pa.list_(pa.int64() if pa.types.is_timestamp(t) else t)))
    return pa.schema(fields)


def _type(name: str | None) -> pa.DataType | None:
    import pyarrow as pa

    if name is None:
        return None
    return {"int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
            "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC")}.get(name)


def _flatten(lines: pa.Table, spec: dict[str, Any]) -> pa.Table:
    """One row per prediction: list columns flattened, per-call scalars repeated."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parents = pc.list_parent_indices(lines["request_id"])
    out: dict[str, Any] = {}
    order = ["request_id", "ts", *SCALARS, "latency_ms", "status", "missing_features", *spec["types"]]
    for name in order:
        if name not in lines.column_names:
            continue
        col = lines[name]
        if name in SCALARS:
            out[name] = col.take(parents)
            continue
        flat = pc.list_flatten(col)
        if name == "ts":
            flat = flat.cast(pa.timestamp("us", tz="UTC"))
        else:
            t = _type(spec["types"].get(name))
            if t is not None and pa.types.is_timestamp(t):
                flat = flat.cast(pa.int64()).cast(t)
        out[name] = flat
    return pa.table(out)


_log: PredictionLog | None = None
_log_lock = threading.Lock()


def default_folder() -> Path:
    """Where this project's writers keep their segments."""
    from keel.config import settings

    return settings().state_dir / "predictions"


def get_prediction_log() -> PredictionLog:
    """The process's prediction-log writer for the current project (created on first use, closed at exit)."""
    global _log
    current = _log
    if current is None or current._closed_for_good or current.root != default_folder():
        with _log_lock:
            if _log is not None and not _log._closed_for_good and _log.root != default_folder():
                _log.close()  # another project (tests switch projects in one process)
            if _log is None or _log._closed_for_good or _log.root != default_folder():
                _log = PredictionLog()
            current = _log
    return current


def active_log() -> PredictionLog | None:
    """The process's writer if one was created (readers flush it before reading)."""
    return _log


def close_prediction_log() -> None:
    global _log
    with _log_lock:
        if _log is not None:
            _log.close()
        _log = None


atexit.register(close_prediction_log)
