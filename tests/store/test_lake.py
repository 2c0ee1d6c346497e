"""The lake: Parquet datasets appended atomically and read with DuckDB, locally and on S3."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from keel.errors import ConfigError, NotFoundError, StoreError, ValidationError
from keel.store.lake import Lake, get_lake


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "local":
        return Lake(tmp_path / "lake")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return Lake(f"s3://{bucket}/lake", endpoint_url=endpoint, cache=tmp_path / "cache")


def test_append_adds_parts_and_read_unions_them(lake: Lake) -> None:
    assert not lake.exists("features/push/usage")
    lake.append("features/push/usage", pa.table({"id": [1, 2], "x": [0.5, 1.5]}))
    lake.append("features/push/usage", pa.table({"id": [3], "x": [2.5], "extra": ["new"]}))
    assert lake.exists("features/push/usage")
    assert len(lake.files("features/push/usage")) == 2
    table = lake.read("features/push/usage").sort_by("id")
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("extra").to_pylist() == [None, None, "new"]


def test_scan_sql_is_a_duckdb_table_expression(lake: Lake) -> None:
    lake.append("labels", pa.table({"id": [1, 2], "y": [True, False]}))
    lake.append("labels", pa.table({"id": [3], "y": [True]}))
    assert duckdb.sql(f"SELECT count(*), sum(id) FROM {lake.scan_sql('labels')}").fetchall() == [(3, 6)]


def test_datasets_are_separate_from_their_neighbours_and_children(lake: Lake) -> None:
    lake.append("usage", pa.table({"id": [1]}))
    lake.append("usage2", pa.table({"id": [2]}))
    lake.append("usage/daily", pa.table({"id": [3]}))
    assert lake.read("usage").column("id").to_pylist() == [1]
    assert lake.read("usage2").column("id").to_pylist() == [2]
    assert lake.read("usage/daily").column("id").to_pylist() == [3]
    assert not lake.exists("usa")


def test_delete_removes_the_dataset_and_its_children(lake: Lake) -> None:
    lake.append("logs", pa.table({"id": [1]}))
    lake.append("logs/old", pa.table({"id": [2]}))
    lake.append("logs2", pa.table({"id": [3]}))
    lake.delete("logs")
    assert not lake.exists("logs") and not lake.exists("logs/old")
    assert lake.files("logs") == []
    assert lake.read("logs2").column("id").to_pylist() == [3]
    lake.delete("never-written")


def test_a_failed_append_leaves_no_part(lake: Lake) -> None:
    with pytest.raises(Exception):  # noqa: B017  (pyarrow rejects the object column)
        lake.append("ds", pa.table({"x": [1]}).append_column("bad", pa.array([object()], type=pa.string())))  # type: ignore[list-item]
    assert not lake.exists("ds")
    assert lake.files("ds") == []
    assert not list(lake.path("ds").glob(".*tmp"))


def test_bad_names_and_missing_datasets_are_errors(lake: Lake) -> None:
    for call in (lake.path, lake.exists, lake.files, lake.scan_sql):
        with pytest.raises(ValidationError, match="not valid"):
            call("../escape")
    with pytest.raises(ValidationError, match="not valid"):
        lake.append("a//b", pa.table({"x": [1]}))
    with pytest.raises(NotFoundError, match="'nothing' does not exist"):
        lake.read("nothing")


def test_bad_lake_uris_say_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'gs://bucket/lake'.*s3://bucket/prefix"):
        Lake("gs://bucket/lake")
    with pytest.raises(StoreError, match="names no bucket"):
        Lake("s3:///lake", endpoint_url="http://127.0.0.1:1", cache=tmp_path)
    assert Lake(f"file://{tmp_path}").root == tmp_path


# -- S3 only -----------------------------------------------------------------------------
@pytest.fixture
def s3_lake(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> Lake:
    return Lake(f"s3://{s3_bucket}/lake", endpoint_url=s3_endpoint, cache=tmp_path / "cache")


def _keys(lake: Lake) -> list[str]:
    assert lake.remote is not None
    listed = lake.remote.client.list_objects_v2(Bucket=lake.remote.bucket)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def test_s3_parts_are_objects_under_the_prefix(s3_lake: Lake) -> None:
    where = s3_lake.append("features/push/usage", pa.table({"id": [1]}))
    (key,) = _keys(s3_lake)
    assert key.startswith("lake/features/push/usage/part-") and key.endswith(".parquet")
    assert where == f"{s3_lake.uri}/features/push/usage/{key.rsplit('/', 1)[1]}"
    # the writer keeps its part in the cache: reading it back downloads nothing
    assert [p.name for p in s3_lake.path("features/push/usage").glob("*.parquet")] == [key.rsplit("/", 1)[1]]


def test_another_machine_sees_new_parts_and_forgets_deleted_ones(s3_lake: Lake, s3_endpoint: str, tmp_path: Path) -> None:
    other = Lake(s3_lake.uri, endpoint_url=s3_endpoint, cache=tmp_path / "other-cache")
    s3_lake.append("labels", pa.table({"id": [1]}))
    assert other.read("labels").column("id").to_pylist() == [1]
    s3_lake.append("labels", pa.table({"id": [2]}))
    assert sorted(other.read("labels").column("id").to_pylist()) == [1, 2]
    s3_lake.delete("labels")
    assert not other.exists("labels")
    assert other.files("labels") == []  # the cached parts are gone too
    assert not list(other.path("labels").glob("*.parquet"))


def test_a_lost_or_damaged_cache_is_fetched_again(s3_lake: Lake) -> None:
    s3_lake.append("labels", pa.table({"id": [1, 2, 3]}))
    (part,) = s3_lake.files("labels")
    part.write_bytes(b"truncated")
    assert s3_lake.read("labels").num_rows == 3
    shutil.rmtree(s3_lake.root)
    assert s3_lake.read("labels").num_rows == 3


def test_a_missing_bucket_is_a_store_error(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    lake = Lake("s3://no-such-bucket-keel/lake", endpoint_url=s3_endpoint, cache=tmp_path)
    for call in (lambda: lake.exists("x"), lambda: lake.append("x", pa.table({"a": [1]})), lambda: lake.read("x")):
        with pytest.raises(StoreError, match=r"bucket 'no-such-bucket-keel' at http://127\.0\.0\.1:\d+ does not exist.*Create the bucket"):
            call()
    assert not list(tmp_path.rglob("*.parquet*"))


def test_an_unreachable_endpoint_is_a_store_error(s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    lake = Lake(f"s3://{s3_bucket}/lake", endpoint_url=f"http://127.0.0.1:{port}", cache=tmp_path)
    with pytest.raises(StoreError, match=r"The lake s3://.* failed.*KEEL_S3_ENDPOINT_URL"):
        lake.exists("x")


# -- the project's lake ---------------------------------------------------------------
def test_get_lake_uses_the_project_setting(project: Path) -> None:
    assert get_lake().root == project / ".keel" / "lake"
    get_lake().append("labels", pa.table({"a": [1]}))
    assert (project / ".keel" / "lake" / "labels").is_dir()
    get_lake().delete("labels")
    assert not get_lake().exists("labels")


def test_get_lake_on_s3_uses_the_endpoint_setting_and_caches_in_the_project(
    project: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_LAKE_URI", f"s3://{s3_bucket}/team/lake/")
    monkeypatch.setenv("KEEL_S3_ENDPOINT_URL", s3_endpoint)
    lake = get_lake()
    assert lake is get_lake()
    assert lake.uri == f"s3://{s3_bucket}/team/lake"
    assert lake.root == project / ".keel" / "cache" / "lake" / s3_bucket / "team" / "lake"
    lake.append("labels", pa.table({"a": [1]}))
    assert _keys(lake)[0].startswith("team/lake/labels/part-")
    assert Lake(f"s3://{s3_bucket}/team/lake").read("labels").num_rows == 1  # endpoint from the settings
    assert not (project / ".keel" / "lake").exists()
