"""8 processes x 1,000 writes at once on each backend: 0 errors, 0 lost values (read back)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance import _writers

PROCESSES = 8


@pytest.mark.slow
def test_eight_processes_write_a_thousand_values_each(backend: str, metadata_uri: str, two_versions: str, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keel.store.metadata import reset_stores

    reset_stores()  # the writers are fresh processes; the parent holds no connection meanwhile
    wall, results = _writers.run_writers(metadata_uri, str(project), two_versions, PROCESSES)
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], f"{len(errors)} failed writes, e.g. {errors[:3]}"
    writes = sum(r["writes"] for r in results)
    assert writes == PROCESSES * _writers.STEPS * _writers.WRITES_PER_STEP
    report = _writers.check(metadata_uri, two_versions, PROCESSES)
    assert report["lost"] == [], report["lost"][:5]
    with capsys.disabled():
        print(f"\n[{backend}] {PROCESSES} processes x {writes // PROCESSES} writes: {writes / wall:,.0f} writes/s ({wall:.1f} s), 0 errors, 0 lost"
              f" (cpu count {os.cpu_count()})")
