"""The lake: Parquet datasets appended atomically and read with DuckDB."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from keel.errors import ConfigError, NotFoundError, ValidationError
from keel.store.lake import Lake, get_lake


def test_append_adds_parts_and_read_unions_them(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    assert not lake.exists("features/push/usage")
    lake.append("features/push/usage", pa.table({"id": [1, 2], "x": [0.5, 1.5]}))
    lake.append("features/push/usage", pa.table({"id": [3], "x": [2.5], "extra": ["new"]}))
    assert len(lake.files("features/push/usage")) == 2
    table = lake.read("features/push/usage").sort_by("id")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("extra").to_pylist() == [None, None, "new"]


def test_a_failed_append_leaves_no_part(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(Exception):  # noqa: B017  (pyarrow rejects the object column)
        lake.append("ds", pa.table({"x": [1]}).append_column("bad", pa.array([object()], type=pa.string())))  # type: ignore[list-item]
    assert lake.files("ds") == []
    assert not list((tmp_path / "ds").glob(".*tmp"))


def test_bad_names_and_missing_datasets_are_errors(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    with pytest.raises(ValidationError, match="not valid"):
        lake.path("../escape")
    with pytest.raises(NotFoundError, match="nothing"):
        lake.read("nothing")
    with pytest.raises(ConfigError, match="s3://"):
        Lake("s3://bucket/lake")


def test_get_lake_uses_the_project_setting(project: Path) -> None:
    assert get_lake().root == project / ".keel" / "lake"
    get_lake().append("labels", pa.table({"a": [1]}))
    assert (project / ".keel" / "lake" / "labels").is_dir()
    get_lake().delete("labels")
    assert not get_lake().exists("labels")
