"""Content-addressed artifacts over a byte store (local folder, S3-compatible, memory).

A :class:`ByteStore` is the small protocol a backend implements: put, get,
exists, delete and list of opaque keys. :class:`ArtifactStore` sits above it
and names every blob by the sha256 of its content, so identical content is
stored once and every read is verified against its name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from keel.errors import IntegrityError, NotFoundError, StoreError, ValidationError, missing_extra

CHUNK = 1 << 20


class ByteStore(Protocol):
    """Where blobs live. Keys are relative POSIX paths chosen by the caller."""

    def put_file(self, key: str, path: Path) -> None: ...
    def get_file(self, key: str, dest: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list_keys(self) -> Iterator[tuple[str, float]]:
        """Every (key, modification time as epoch seconds)."""
        ...


class LocalByteStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        if dest.exists():
            os.utime(dest)  # fresh again: `keel gc` keeps blobs younger than its grace period
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)  # atomic: a reader never sees half a blob
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.exists():
            raise NotFoundError(f"Blob {key} is missing from {self.root}.")
        shutil.copyfile(src, dest)

    def open(self, key: str, offset: int = 0) -> IO[bytes]:
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"Blob {key} is missing from {self.root}.") from None
        if offset:
            f.seek(offset)
        return f

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def list_keys(self) -> Iterator[tuple[str, float]]:
        if not self.root.exists():
            return
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                yield p.relative_to(self.root).as_posix(), p.stat().st_mtime


class MemoryByteStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def put_file(self, key: str, path: Path) -> None:
        import time

        with self._lock:
            if key not in self.data:
                self.data[key] = Path(path).read_bytes()
                self.mtimes[key] = time.time()

    def get_file(self, key: str, dest: Path) -> None:
        if key not in self.data:
            raise NotFoundError(f"Blob {key} is missing from the memory store.")
        Path(dest).write_bytes(self.data[key])

    def open(self, key: str, offset: int = 0) -> IO[bytes]:
        import io

        if key not in self.data:
            raise NotFoundError(f"Blob {key} is missing from the memory store.")
        return io.BytesIO(self.data[key][offset:])

    def exists(self, key: str) -> bool:
        return key in self.data

    def delete(self, key: str) -> None:
        with self._lock:
            self.data.pop(key, None)
            self.mtimes.pop(key, None)

    def list_keys(self) -> Iterator[tuple[str, float]]:
        yield from list(self.mtimes.items())


def split_s3_uri(uri: str, *, what: str = "Artifact URI") -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); no bucket is a StoreError."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StoreError(f"{what} {uri!r} names no bucket.", hint="Use s3://bucket/prefix.")
    return bucket, prefix.strip("/")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client for AWS, or for the S3-compatible server at ``endpoint_url``
    (``KEEL_S3_ENDPOINT_URL``: MinIO, moto, ...)."""
    try:
        import boto3
    except ImportError:
        raise missing_extra("boto3", "s3") from None
    return boto3.client("s3", endpoint_url=endpoint_url or None)


@contextmanager
def s3_errors(bucket: str, uri: str, endpoint_url: str | None, setting: str, what: str) -> Iterator[None]:
    """botocore failures as StoreErrors naming ``what`` ("The lake"), the bucket, the endpoint and the fix.

    ``setting`` is the setting that holds ``uri`` (``KEEL_LAKE_URI``...).
    """
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as exc:  # Boto3Error: upload_file wraps ClientError in S3UploadFailedError
        at = f" at {endpoint_url}" if endpoint_url else ""
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code == "NoSuchBucket" or (isinstance(exc, Boto3Error) and "NoSuchBucket" in str(exc)):
            raise StoreError(
                f"{what}'s S3 bucket {bucket!r}{at} does not exist ({setting}={uri}).",
                hint=f"Create the bucket, or set {setting} (and KEEL_S3_ENDPOINT_URL) to an existing one.",
            ) from None
        if isinstance(exc, NoCredentialsError):
            raise StoreError(
                f"No AWS credentials to reach {what.lower()} {uri}{at}.",
                hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE.",
            ) from None
        raise StoreError(f"{what} {uri}{at} failed: {exc}", hint=f"Check {setting}, KEEL_S3_ENDPOINT_URL and the AWS credentials.") from None


class S3ByteStore:
    """An S3-compatible bucket (AWS, MinIO, moto): ``s3://bucket/prefix``."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = split_s3_uri(uri)
        self.endpoint_url = endpoint_url
        self.client = s3_client(endpoint_url)

    def _errors(self) -> Any:
        uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return s3_errors(self.bucket, uri, self.endpoint_url, "KEEL_ARTIFACTS_URI", "The artifact store")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> None:
        if self.exists(key):
            return
        with self._errors():
            self.client.upload_file(str(path), self.bucket, self._key(key))

    def get_file(self, key: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                self.client.download_file(self.bucket, self._key(key), str(dest))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    raise NotFoundError(f"Blob {key} is missing from s3://{self.bucket}/{self.prefix}.") from None
                raise

    def open(self, key: str, offset: int = 0) -> IO[bytes]:
        """A streaming reader of the object (from ``offset``), for the server's downloads."""
        from botocore.exceptions import ClientError

        extra = {"Range": f"bytes={offset}-"} if offset else {}
        with self._errors():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    raise NotFoundError(f"Blob {key} is missing from s3://{self.bucket}/{self.prefix}.") from None
                raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise

    def delete(self, key: str) -> None:
        with self._errors():
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_keys(self) -> Iterator[tuple[str, float]]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        with self._errors():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(prefix) :], obj["LastModified"].timestamp()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _blob_key(digest: str) -> str:
    return f"sha256/{digest[:2]}/{digest[2:]}"


def check_artifact_path(name: str) -> str:
    """Normalise an artifact name; reject ones that would escape the store."""
    if not isinstance(name, str) or not name:
        raise ValidationError(f"Artifact name {name!r} is empty.", hint="Give a relative path such as 'model/model.pkl'.")
    if "\x00" in name:
        raise ValidationError(f"Artifact name {name!r} contains a NUL byte.", hint="Remove it.")
    posix = name.replace("\\", "/")
    p = PurePosixPath(posix)
    if p.is_absolute() or posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise ValidationError(f"Artifact name {name!r} is an absolute path.", hint="Give a path relative to the run, e.g. 'plots/roc.png'.")
    if any(part == ".." for part in p.parts):
        raise ValidationError(f"Artifact name {name!r} contains '..' and would escape the store.", hint="Use a path inside the run.")
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts:
        raise ValidationError(f"Artifact name {name!r} names no file.")
    return "/".join(parts)


class ArtifactStore:
    """Blobs named by their sha256: stored once, verified on every read."""

    def __init__(self, backend: ByteStore) -> None:
        self.backend = backend

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file; returns (sha256, size)."""
        path = Path(path)
        digest = sha256_file(path)
        self.backend.put_file(_blob_key(digest), path)
        return digest, path.stat().st_size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        key = _blob_key(digest)
        if not self.backend.exists(key):
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                tmp.write(data)
            try:
                self.backend.put_file(key, Path(tmp.name))
            finally:
                os.unlink(tmp.name)
        return digest, len(data)

    def get_file(self, digest: str, dest: Path, *, what: str = "") -> Path:
        """Copy the blob to ``dest`` after checking its hash; a mismatch raises IntegrityError."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}")
        self.backend.get_file(_blob_key(digest), tmp)
        found = sha256_file(tmp)
        if found != digest:
            tmp.unlink()
            label = f"{what} " if what else ""
            raise IntegrityError(
                f"Artifact {label}is corrupted: expected sha256 {digest}, found {found}.",
                hint="Restore the blob from a backup or log the artifact again; keel refuses to load it.",
                expected=digest,
                found=found,
            )
        os.replace(tmp, dest)
        return dest

    def get_bytes(self, digest: str, *, what: str = "") -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return self.get_file(digest, Path(tmp) / "blob", what=what).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.backend.exists(_blob_key(digest))

    def open(self, digest: str, offset: int = 0) -> IO[bytes]:
        """A reader of the blob's bytes from ``offset`` (unverified: the reader checks the sha256)."""
        opener = getattr(self.backend, "open", None)
        if opener is None:  # pragma: no cover - every shipped backend streams
            raise StoreError(f"The artifact backend {type(self.backend).__name__} cannot stream.")
        return opener(_blob_key(digest), offset)

    def size(self, digest: str) -> int | None:
        """The stored size in bytes, when the backend knows it cheaply (a local file)."""
        if isinstance(self.backend, LocalByteStore):
            p = self.backend._path(_blob_key(digest))
            return p.stat().st_size if p.exists() else None
        return None

    def put_verified(self, path: Path, digest: str) -> None:
        """Store ``path`` as blob ``digest`` (the caller has checked that it hashes to it)."""
        self.backend.put_file(_blob_key(digest), Path(path))

    def stage_key(self, digest: str, part: int) -> str:
        """Where part ``part`` of an upload in parts waits (outside sha256/, so gc never sees it)."""
        return f"uploads/{digest}/{part:06d}"

    def delete(self, digest: str) -> None:
        self.backend.delete(_blob_key(digest))

    def digests(self) -> Iterator[tuple[str, float]]:
        """Every stored (sha256, modification time)."""
        for key, mtime in self.backend.list_keys():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "sha256":
                yield parts[1] + parts[2], mtime


def open_byte_store(uri: str, endpoint_url: str | None = None) -> ByteStore:
    if uri.startswith("s3://"):
        return S3ByteStore(uri, endpoint_url)
    if uri.startswith("memory://"):
        return MemoryByteStore()
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        raise StoreError(f"Unsupported artifact URI {uri!r}.", hint="Use a folder path, file:///path or s3://bucket/prefix.")
    return LocalByteStore(Path(uri))


_stores: dict[tuple[str, str], ArtifactStore] = {}


def get_artifact_store(uri: str | None = None) -> ArtifactStore:
    """The shared artifact store for ``uri`` (default: the project's KEEL_ARTIFACTS_URI)."""
    from keel.config import settings

    s = settings()
    if uri is None:
        from keel.store.remote import forbid_local

        forbid_local("Opening the artifact store")
    uri = str(s.artifacts_uri) if uri is None else uri
    endpoint = str(s.s3_endpoint_url or "")
    key = (uri, endpoint)
    if key not in _stores:
        _stores[key] = ArtifactStore(open_byte_store(uri, endpoint))
    return _stores[key]
