"""The prediction log's writer: local append-only segments, compacted into the lake off the request path.

:meth:`PredictionLog.record` turns one predict call (any number of rows) into one
binary frame and appends it with a single unbuffered write (``os.writev``) to the writer's
current segment for that model version. It returns only after the kernel has
the bytes, so a process killed right after answering loses nothing it answered
(fsync is not required: the page cache outlives the process).

A frame (:func:`encode_frame`) is a fixed 16-byte head (magic, lengths, CRC32), a
small JSON header (per-row lists such as request ids, the values every row of the
call shares, the layout of the raw part) and the NumPy arrays of numbers as their
raw bytes: a 1,000-row request of 30 features costs one memory copy, not a JSON
encoding of 30,000 floats, and compaction reads the numbers back with
``numpy.frombuffer``, without parsing them.

A background thread rotates the segments every ``flush_interval`` seconds (or
at ``max_segment_bytes``) and compacts each closed segment into typed Parquet
parts (:mod:`keel.store.predictions`), with deterministic part names so that a
compaction retried after a crash replaces its parts instead of duplicating them;
only then is the segment deleted. Memory stays bounded by one segment.

When the lake is unreachable the segments simply stay on disk (the spill) and
compaction is retried with back-off; the error, the bytes pending and the age of
the oldest pending record are in :meth:`stats`. When the local disk refuses the
write, frames are kept in memory up to ``max_spill_bytes`` and written later;
beyond that they are counted as dropped (reported, never silent).

Layout under ``<state_dir>/predictions/`` (one folder per writer process)::

    <host>-<pid>-<token>/.lock                 flock held while the writer lives
    <host>-<pid>-<token>/schemas/<key>.json    model, version and column types of a segment key
    <host>-<pid>-<token>/<key>.<seq>.seg       segments (frames, appended)

A writer adopts the folders of writers that died (their lock is free) and
compacts their segments.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("keel.predictions")
SUFFIX = ".seg"


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


_writer_label = ""


def set_writer_label(label: str) -> None:
    """Prefix the writer folders (and so the lake part names) this process creates with ``label`` (e.g. a Ray Serve replica)."""
    global _writer_label
    _writer_label = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)[:60]


def _writer_name() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{_writer_label + '-' if _writer_label else ''}{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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

    def record(
        self,
        key: str,
        columns: dict[str, Any],
        rows: int,
        *,
        route: str = "default",
        batch_id: str | None = None,
        same: dict[str, Any] | None = None,
    ) -> None:
        """Append one predict call's rows: ``columns`` maps each per-row column to its values.

        NumPy arrays of numbers travel as raw bytes, other values as JSON; ``same``
        holds the values every row of the call shares (``ts``, ``latency_ms``, ...).
        ``ts`` values are epoch microseconds. Numbered rows give ``request_id`` as numbers
        and ``same["request_id_prefix"]``: the ids are ``<prefix>:<number>``.
        Returns once the frame is in the kernel.
        """
        frame = encode_frame(columns, rows, {"route": route, "batch_id": batch_id, **(same or {})})
        with self._lock:
            self.stats_.records += rows
            try:
                self._write(key, frame, rows)
            except OSError as exc:
                self._spill_frame(key, b"".join(frame), rows, exc)

    def _write(self, key: str, frame: list[Any], rows: int) -> None:
        seg = self._open.get(key)
        if seg is None:
            seg = self._new_segment(key)
        header, body = _LENGTHS.unpack_from(frame[0], 4)
        size = _HEAD.size + header + body
        n = os.writev(seg.fd, frame)  # one gathering write; a regular file takes it whole
        if n < size:  # a short write happens only on a full disk
            parts = [memoryview(p).cast("B") for p in frame]
            while True:
                while n and parts:  # drop what was written
                    if n >= len(parts[0]):
                        n -= len(parts.pop(0))
                    else:
                        parts[0], n = parts[0][n:], 0
                if not parts:
                    break
                n = os.writev(seg.fd, parts)
                if n == 0:
                    raise OSError(errno.ENOSPC, "no space left on device")
        seg.bytes += size
        seg.rows += rows
        self.stats_.pending_since.setdefault(str(seg.path), time.time())
        if seg.bytes >= self.max_segment_bytes:
            self._rotate(key)

    def _new_segment(self, key: str) -> _Segment:
        self._seq += 1
        path = self.folder / f"{key}.{self._seq:08d}{SUFFIX}"
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

    def _spill_frame(self, key: str, frame: bytes, rows: int, exc: OSError) -> None:
        if self._spill_bytes + len(frame) > self.max_spill_bytes:
            self.stats_.dropped += rows
            log.error("prediction log: %d record(s) dropped: the local segment cannot be written (%s) and the memory spill is full", rows, exc)
            return
        if not self._spill:
            log.warning("prediction log: the local segment cannot be written (%s); keeping records in memory", exc)
        self._spill.append((key, frame, rows))
        self._spill_bytes += len(frame)
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
            key, frame, rows = self._spill[0]
            try:
                self._write(key, [frame], rows)
            except OSError:
                with contextlib.suppress(OSError, KeyError):
                    self._rotate(key)
                return
            self._spill.popleft()
            self._spill_bytes -= len(frame)

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
            segments = sorted(other.glob(f"*{SUFFIX}"))
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
        frames, torn, bad = decode_frames(path.read_bytes())
        self.stats_.torn += torn
        if bad:
            self._quarantine(path, b"".join(bad), len(bad))
        table = assemble(frames, spec) if frames else None
        if table is not None and table.num_rows:
            table = predictions.normalize(table)
            parts = predictions.write(table, writer=f"{owner.name}-{key[-8:]}-{seq}", lake=self.lake)
            self.stats_.rows_written += table.num_rows
            self.stats_.parts_written += len(parts)
        path.unlink(missing_ok=True)
        self.stats_.pending_since.pop(str(path), None)
        if owner != self.folder and not any(owner.glob(f"*{SUFFIX}")):
            shutil.rmtree(owner, ignore_errors=True)
        return 0 if table is None else table.num_rows

    def _quarantine(self, path: Path, data: bytes, frames: int) -> None:
        q = self.root / "quarantine"
        q.mkdir(exist_ok=True)
        (q / f"{path.parent.name}-{path.name}").write_bytes(data)
        self.stats_.quarantined += frames
        log.error("prediction log: %d damaged frame(s) of %s could not be read; kept in %s", frames, path.name, q)

    # ---- reporting and shutdown ---------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and gauges for /metrics: records, rows written, dropped, pending bytes, lag."""
        pending = 0
        for p in self.root.glob(f"*/*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                pending += p.stat().st_size
        since = list(self.stats_.pending_since.values())
        s = self.stats_
        return {
            "records": s.records, "rows_written": s.rows_written, "parts_written": s.parts_written, "dropped": s.dropped,
            "spilled_rows": s.spilled_rows, "spill_bytes": self._spill_bytes, "torn_frames": s.torn, "quarantined_frames": s.quarantined,
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


MAGIC = b"KPL1"
_HEAD = struct.Struct("<4sIII")  # magic, header bytes, body bytes, crc32 of the two lengths and the header
_LENGTHS = struct.Struct("<II")
_CRC = struct.Struct("<I")


def encode_frame(columns: dict[Any, Any], rows: int, same: dict[str, Any]) -> list[Any]:
    """One predict call as one frame: a JSON header (per-row lists, shared values, the raw layout) and raw NumPy bytes.

    A 1-D NumPy array of numbers (or datetimes, as epoch microseconds) is copied as
    its bytes, in the header's ``b`` order, and so is a 2-D (columns, rows) block
    given under a tuple of column names; anything else is JSON. Returns the
    frame's buffers, for one gathering write (``os.writev``) without joining them.
    The CRC covers the head's lengths and the header, so a reader tells a torn or
    damaged frame from a good one without reading every number twice.
    """
    import numpy as np
    import orjson

    raw: list[list[Any]] = []
    bufs: list[Any] = []
    per_row: dict[str, Any] = {}
    for name, v in columns.items():
        if type(name) is tuple:
            if v.shape != (len(name), rows) or v.dtype.kind not in "fiub":
                raise ValueError(f"a block of shape {v.shape} for {len(name)} columns and {rows} rows")
            raw.append([list(name), v.dtype.str])
            bufs.append(np.ascontiguousarray(v))
            continue
        if isinstance(v, np.ndarray):
            if v.dtype.kind == "M":
                v = v.astype("datetime64[us]").view("int64")
            if v.ndim == 1 and v.dtype.kind in "fiub" and len(v) == rows:
                raw.append([name, v.dtype.str])
                bufs.append(np.ascontiguousarray(v))
                continue
            v = v.tolist()
        if len(v) != rows:
            raise ValueError(f"column {name!r} has {len(v)} values for {rows} rows")
        per_row[name] = v
    header = orjson.dumps({"n": rows, "s": same, "r": per_row, "b": raw}, option=orjson.OPT_SERIALIZE_NUMPY)
    body = sum(b.nbytes for b in bufs)
    lengths = _LENGTHS.pack(len(header), body)
    return [MAGIC + lengths + _CRC.pack(zlib.crc32(header, zlib.crc32(lengths))), header, *bufs]


def decode_frames(data: bytes) -> tuple[list[tuple[dict[str, Any], memoryview]], int, list[bytes]]:
    """(good frames as (header, body), 1 if the tail was torn by a crash else 0, the damaged byte runs).

    After damage the reader resynchronizes on the next frame that checks out, so
    one bad write costs only itself.
    """
    import orjson

    view = memoryview(data)
    frames: list[tuple[dict[str, Any], memoryview]] = []
    bad: list[bytes] = []
    pos, size, torn = 0, len(data), 0
    while pos < size:
        ok = False
        end = size
        if pos + _HEAD.size <= size:
            magic, hl, bl, crc = _HEAD.unpack_from(data, pos)
            end = pos + _HEAD.size + hl + bl
            if magic == MAGIC and end <= size:
                head, body = view[pos + _HEAD.size:pos + _HEAD.size + hl], view[pos + _HEAD.size + hl:end]
                if zlib.crc32(head, zlib.crc32(view[pos + 4:pos + 12])) == crc:
                    try:
                        frames.append((orjson.loads(head), body))
                        ok = True
                    except orjson.JSONDecodeError:
                        pass
        if ok:
            pos = end
            continue
        nxt = data.find(MAGIC, pos + 1)
        if nxt < 0 and end > size:
            torn = 1  # the process died in the middle of a write it never answered
            break
        bad.append(bytes(data[pos:nxt if nxt >= 0 else size]))
        if nxt < 0:
            break
        pos = nxt
    return frames, torn, bad


def _typed(values: list[Any], target: pa.DataType | None) -> pa.Array:
    import pyarrow as pa

    store = pa.int64() if target is not None and pa.types.is_timestamp(target) else target
    try:
        return pa.array(values, type=store, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(values, from_pandas=True)


def _cast(arr: pa.Array, target: pa.DataType | None) -> pa.Array:
    import pyarrow as pa

    if target is None or arr.type == target:
        return arr
    try:
        if pa.types.is_timestamp(target) and pa.types.is_integer(arr.type):
            return arr.cast(pa.int64()).cast(target)
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr


def assemble(frames: list[tuple[dict[str, Any], memoryview]], spec: dict[str, Any]) -> pa.Table:
    """One row per prediction from a segment's frames: typed columns, shared values repeated.

    Consecutive frames of the same shape (the same raw layout, per-row and shared
    columns: one model's requests) are assembled together, each column in a few
    vectorized steps, whatever the number of frames.
    """
    import pyarrow as pa

    types = {**{k: _type(v) for k, v in spec["types"].items()}, **_reserved_types()}
    tables = []
    start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or not _same_shape(frames[i][0], frames[start][0]):
            tables.append(_run(frames[start:i], types))
            start = i
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column logged with different types: kept as text rather than lost
        tables = [t.cast(pa.schema([pa.field(f.name, pa.string()) if types.get(f.name) is None else f for f in t.schema])) for t in tables]
        table = pa.concat_tables(tables, promote_options="permissive")
    order = ["request_id", "ts", "route", "batch_id", "latency_ms", "status", "missing_features", *spec["types"]]
    order = [c for c in order if c in table.column_names] + [c for c in table.column_names if c not in order]
    table = table.select(order)
    table = table.append_column("model", pa.repeat(pa.scalar(spec["model"]), table.num_rows))
    return table.append_column("version", pa.repeat(pa.scalar(int(spec["version"]), pa.int64()), table.num_rows))


def _same_shape(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["b"] == b["b"] and a["r"].keys() == b["r"].keys() and a["s"].keys() == b["s"].keys())


def _run(frames: list[tuple[dict[str, Any], memoryview]], types: dict[str, pa.DataType | None]) -> pa.Table:
    """The rows of consecutive frames of one shape: raw numbers gathered with one index per column."""
    import itertools

    import numpy as np
    import pyarrow as pa

    heads = [h for h, _ in frames]
    first = heads[0]
    ns = np.fromiter((h["n"] for h in heads), dtype=np.int64, count=len(heads))
    total = int(ns.sum())
    before = np.cumsum(ns) - ns  # rows of the run before each frame
    out: dict[str, pa.Array] = {}
    if first["b"]:
        lengths = np.fromiter((len(b) for _, b in frames), dtype=np.int64, count=len(frames))
        offsets = np.cumsum(lengths) - lengths
        big = total >= 64 * len(frames)  # large requests: one copy per column from the bodies themselves
        data = None if big else np.frombuffer(b"".join(b for _, b in frames), dtype=np.uint8)
        equal = bool((ns == ns[0]).all())
        grid = data.reshape(len(frames), -1) if equal and data is not None else None  # one frame's body per row
        width = 0  # bytes per row of the raw columns before this one
        for names, dtype in first["b"]:
            dt = np.dtype(dtype)
            for name in names if type(names) is list else (names,):
                starts = offsets + width * ns  # where the column begins in each frame's body
                w = dt.itemsize
                if data is None:
                    col = np.concatenate([np.frombuffer(body, dtype=dt, count=int(n), offset=int(o))
                                          for (_, body), n, o in zip(frames, ns, width * ns, strict=True)])
                elif grid is not None:  # frames of equal rows: the column is one strided slice of the grid
                    n0 = int(ns[0])
                    col = np.ascontiguousarray(grid[:, width * n0:(width + w) * n0]).view(dt).reshape(-1)
                elif not (starts % w).any():  # aligned: gather whole values
                    values = data[: len(data) - len(data) % w].view(dt)
                    col = values[np.repeat(starts // w - before, ns) + np.arange(total)]
                else:
                    col = data[np.repeat(starts - before * w, ns * w) + np.arange(total * w)].view(dt)
                out[name] = _cast(pa.array(col, from_pandas=True), types.get(name))
                width += w
    for name in first["r"]:
        values = list(itertools.chain.from_iterable(h["r"][name] for h in heads))
        out[name] = _cast(_typed(values, types.get(name)), types.get(name))
    if first["s"]:
        parents = None if total == len(heads) else pa.array(np.repeat(np.arange(len(heads)), ns))
        for name in first["s"]:
            arr = _cast(_typed([h["s"][name] for h in heads], types.get(name)), types.get(name))
            out[name] = arr if parents is None else arr.take(parents)
    prefix = out.pop("request_id_prefix", None)
    if prefix is not None and "request_id" in out:  # numbered rows: <prefix>:<number>
        import pyarrow.compute as pc

        out["request_id"] = pc.binary_join_element_wise(prefix.cast(pa.string()), out["request_id"].cast(pa.string()), ":")
    return pa.table(out)


def _reserved_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {"request_id": pa.string(), "ts": pa.timestamp("us", tz="UTC"), "route": pa.string(), "batch_id": pa.string(),
            "latency_ms": pa.float64(), "status": pa.string(), "missing_features": pa.list_(pa.string())}


def _type(name: str | None) -> pa.DataType | None:
    import pyarrow as pa

    if name is None:
        return None
    return {"int64": pa.int64(), "double": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
            "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC")}.get(name)

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
