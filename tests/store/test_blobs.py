"""One conformance suite for the artifact store, over every byte store backend."""

from pathlib import Path

import pytest

from keel.errors import IntegrityError, NotFoundError, ValidationError
from keel.store.blobs import (
    ArtifactStore,
    LocalByteStore,
    MemoryByteStore,
    S3ByteStore,
    check_artifact_path,
)


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(LocalByteStore(tmp_path / "blobs"))
    if request.param == "memory":
        return ArtifactStore(MemoryByteStore())
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return ArtifactStore(S3ByteStore(f"s3://{bucket}/artifacts", endpoint_url=endpoint))


def test_identical_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same bytes")
    b.write_text("same bytes")
    d1, size = store.put_file(a)
    d2, _ = store.put_file(b)
    d3, _ = store.put_bytes(b"same bytes")
    assert d1 == d2 == d3 and size == 10
    assert [d for d, _ in store.digests()] == [d1]
    assert store.get_bytes(d1) == b"same bytes"


def test_every_read_verifies_the_hash(store: ArtifactStore, tmp_path: Path) -> None:
    digest, _ = store.put_bytes(b"model weights")
    # tamper with the stored blob behind the store's back
    key = f"sha256/{digest[:2]}/{digest[2:]}"
    evil = tmp_path / "evil"
    evil.write_bytes(b"evil weights")
    store.backend.delete(key)
    store.backend.put_file(key, evil)
    with pytest.raises(IntegrityError) as info:
        store.get_file(digest, tmp_path / "out", what="model/model.pkl")
    assert digest in str(info.value) and "found" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_blob_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        store.get_file("0" * 64, tmp_path / "x")


def test_delete(store: ArtifactStore) -> None:
    digest, _ = store.put_bytes(b"x")
    assert store.exists(digest)
    store.delete(digest)
    assert not store.exists(digest)


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/etc/passwd", "C:\\windows", "nul\x00byte", "", "..", "./"])
def test_names_that_escape_the_store_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        check_artifact_path(name)


def test_names_are_normalised() -> None:
    assert check_artifact_path("./plots//roc.png") == "plots/roc.png"
    assert check_artifact_path("a\\b.txt") == "a/b.txt"


def test_a_missing_bucket_is_a_store_error_that_names_it(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    from keel.errors import StoreError

    store = ArtifactStore(S3ByteStore(f"s3://{s3_bucket}-gone/keel", endpoint_url=s3_endpoint))
    f = tmp_path / "a.txt"
    f.write_text("x")
    with pytest.raises(StoreError, match=rf"artifact store's S3 bucket '{s3_bucket}-gone'.*does not exist") as info:
        store.put_file(f)
    assert "KEEL_ARTIFACTS_URI" in str(info.value.hint)
