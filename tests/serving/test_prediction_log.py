"""The prediction log's writer: spill when the lake is down, memory spill on a full disk, torn and damaged frames, idempotent compaction."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.store import prediction_log as pl
from keel.store import predictions

TYPES = {"x": "double", "plan": "string", "prediction": "int64", "score": "double"}


def _record(log: pl.PredictionLog, key: str, ids: list[str]) -> None:
    n = len(ids)
    now = time.time_ns() // 1_000
    log.record(key, {"request_id": ids, "ts": [now] * n, "latency_ms": [1.0] * n, "status": ["ok"] * n, "missing_features": [[]] * n,
                     "x": [0.5] * n, "plan": ["pro"] * n, "prediction": [1] * n, "score": [0.9] * n}, n)


def _ids() -> set[str]:
    return set(predictions.read("m", columns=["request_id"])["request_id"].to_pylist())


def test_lake_down_keeps_segments_reports_and_loses_nothing_once_back(local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel import config

    blocked = local / "lake-blocked"
    blocked.write_text("not a folder")  # the lake cannot be written under a file
    monkeypatch.setenv("KEEL_LAKE_URI", str(blocked / "lake"))
    config.reset()
    log = pl.PredictionLog(local / "segments", start_thread=False)
    key = log.register("m", 1, TYPES)
    _record(log, key, [f"a{i}" for i in range(5)])
    with pytest.raises(OSError):
        log.flush()
    stats = log.stats()
    assert stats["lake_errors"] == 1 and stats["last_error"] and stats["pending_bytes"] > 0 and stats["dropped"] == 0
    _record(log, key, ["b0"])  # requests still answer while the lake is down
    assert log.flush_safely() is False
    # the lake is back
    blocked.unlink()
    blocked.mkdir()
    assert log.flush() == 6
    assert _ids() == {"a0", "a1", "a2", "a3", "a4", "b0"}
    assert log.stats()["pending_bytes"] == 0 and log.stats()["last_error"] is None
    log.close()


def test_full_disk_spills_to_memory_then_drops_counted(local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = pl.PredictionLog(local / "segments", start_thread=False, max_spill_bytes=2_000)
    key = log.register("m", 1, TYPES)
    real_write = os.writev

    def full(fd: int, buffers: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.os, "writev", full)
    _record(log, key, ["s0", "s1"])
    assert log.stats()["spilled_rows"] == 2 and log.stats()["dropped"] == 0
    for i in range(20):  # beyond the memory spill: counted as dropped, never silent
        _record(log, key, [f"d{i}"])
    dropped = log.stats()["dropped"]
    assert dropped > 0
    monkeypatch.setattr(pl.os, "writev", real_write)
    log.flush()
    logged = _ids()
    assert {"s0", "s1"} <= logged and len(logged) == 22 - dropped
    log.close()


def test_torn_and_damaged_frames_are_counted_not_fatal(local: Path) -> None:
    log = pl.PredictionLog(local / "segments", start_thread=False)
    key = log.register("m", 1, TYPES)
    _record(log, key, ["ok1"])
    seg = log._open[key]
    os.write(seg.fd, b"garbage that is not a frame")
    _record(log, key, ["ok2"])
    damaged = bytearray(b"".join(pl.encode_frame({"request_id": ["bad"], "x": np.array([1.0])}, 1, {})))
    damaged[20] ^= 0xFF  # a flipped bit in the header: the CRC no longer matches
    os.write(seg.fd, bytes(damaged))
    _record(log, key, ["ok3"])
    frame = b"".join(pl.encode_frame({"request_id": ["torn"], "x": np.array([1.0])}, 1, {}))
    os.write(seg.fd, frame[: len(frame) // 2])  # a write cut off by a crash: never answered
    log.flush()
    assert _ids() == {"ok1", "ok2", "ok3"}
    stats = log.stats()
    assert stats["torn_frames"] == 1 and stats["quarantined_frames"] == 2
    assert len(list((local / "segments" / "quarantine").iterdir())) == 1
    log.close()


def test_frames_keep_types_numbers_raw_and_shared_values(local: Path) -> None:
    log = pl.PredictionLog(local / "segments", start_thread=False)
    key = log.register("m", 1, {"x": "double", "k": "int64", "when": "timestamp[us, tz=UTC]", "plan": "string", "prediction": "int64"})
    now = time.time_ns() // 1_000
    log.record(key, {"request_id": ["a:0", "a:1", "a:2"], "x": np.array([0.5, np.nan, 2.0]), "k": np.array([1, 2, 3]),
                     "when": [now, None, now], "plan": ["pro", None, "basic"], "prediction": np.array([1, 0, 1])}, 3,
               route="shadow", same={"ts": now, "latency_ms": 2.5, "status": "ok", "missing_features": []})
    log.record(key, {"request_id": ["b"], "x": [1.5], "k": [None], "when": [None], "plan": ["pro"], "prediction": [0],
                     "missing_features": [["f1"]]}, 1, batch_id="batch-1", same={"ts": now, "latency_ms": 1.0, "status": "ok"})
    assert log.flush() == 4
    t = predictions.read("m")
    rows = {r["request_id"]: r for r in t.to_pylist()}
    assert t.schema.field("x").type == "double" and t.schema.field("k").type == "int64" and t.schema.field("when").type.tz == "UTC"
    assert rows["a:1"]["x"] is None and rows["a:2"]["x"] == 2.0 and rows["b"]["x"] == 1.5  # NaN is logged as null
    assert [rows[i]["k"] for i in ("a:0", "a:1", "a:2", "b")] == [1, 2, 3, None]
    assert rows["a:0"]["route"] == "shadow" and rows["b"]["route"] == "default" and rows["b"]["batch_id"] == "batch-1"
    assert rows["a:1"]["missing_features"] == [] and rows["b"]["missing_features"] == ["f1"]
    assert rows["a:0"]["latency_ms"] == 2.5 and rows["a:0"]["ts"] == rows["b"]["ts"] and rows["a:1"]["when"] is None
    assert rows["a:2"]["plan"] == "basic" and rows["a:1"]["plan"] is None
    log.close()


def test_compaction_retried_after_a_crash_does_not_duplicate(local: Path) -> None:
    root = local / "segments"
    log = pl.PredictionLog(root, start_thread=False)
    key = log.register("m", 1, TYPES)
    _record(log, key, ["r1", "r2", "r3"])
    with log._lock:
        log._rotate(key)
    seg_path, _owner = log._closed[0]
    saved = local / "saved.seg"
    shutil.copy(seg_path, saved)
    log.flush()
    # the crash: the parts were written but the segment was not deleted; a new writer adopts it
    os.close(log._lock_fd)
    shutil.copy(saved, seg_path)
    other = pl.PredictionLog(root, start_thread=False)
    other.flush()
    assert sorted(predictions.read("m")["request_id"].to_pylist()) == ["r1", "r2", "r3"]
    assert not log.folder.exists()  # the dead writer's folder is cleaned up once compacted
    other.close()
