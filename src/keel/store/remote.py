"""The HTTP transport to a keel server (``KEEL_TRACKING_URI``): the client side of the platform API.

When ``KEEL_TRACKING_URI=http://host:port`` is set, tracking, models and the
registry's client functions talk to the server through :func:`client` instead
of opening the metadata store and the artifact store; the client then needs no
database or bucket settings, only ``KEEL_TRACKING_TOKEN`` (sent as
``Authorization: Bearer <token>``, never logged or put in an error).

Reliability: every call keel makes through this transport is idempotent (runs
carry a client-generated id, metric batches a client batch id, artifacts are
named by their sha256), so a call that fails on a connection error or a
502/503/504 is retried with exponential backoff, and with several server URIs
(``KEEL_TRACKING_URI=http://a:5000,http://b:5001``) the next one is tried first:
a replica that dies under load is failed over.

Artifacts stream both ways: uploads send the file in chunks from disk (a large
one in parts, each hashed and skipped on resume when the server already holds
it), downloads are written to disk as they arrive, resumed with ``Range`` after
a broken transfer, and verified against their sha256 before they are used.

This module lives in ``store/`` (below every stage) and never imports
``keel.server``.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from keel.errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    KeelError,
    StoreError,
    ValidationError,
    missing_extra,
)

CHUNK = 1 << 20
PART_SIZE = 32 << 20  # files larger than this upload in parts of this size
RETRY_STATUSES = frozenset({502, 503, 504})
NOT_AVAILABLE = "not available against a server (KEEL_TRACKING_URI is set)"


def not_available(what: str) -> ConfigError:
    """The error for an operation that has no route on the server: never a silent local fallback."""
    return ConfigError(
        f"{what} is {NOT_AVAILABLE}.",
        hint="Run it where the stores are (unset KEEL_TRACKING_URI and set KEEL_METADATA_URI / KEEL_ARTIFACTS_URI), or on the server's host.",
    )


def parse_uris(value: str) -> list[str]:
    """``http://a:5000,http://b:5001`` -> the base URLs, checked."""
    uris = [u.strip().rstrip("/") for u in str(value).split(",") if u.strip()]
    if not uris:
        raise ConfigError("KEEL_TRACKING_URI is empty.", hint="Set it to http://host:port (several, comma-separated, fail over).")
    for u in uris:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(
                f"KEEL_TRACKING_URI entry {u!r} is not an http(s) URL.",
                hint="Use http://host:port, e.g. KEEL_TRACKING_URI=http://127.0.0.1:5000 (several: comma-separated).",
            )
    return uris


def _error_from(response: Any, base: str) -> KeelError:
    """The KeelError a server answer stands for (its class by name, else by status)."""
    from keel import errors

    status = int(response.status_code)
    try:
        body = response.json()
    except Exception:
        body = {}
    name = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if message is None and isinstance(body, dict) and "detail" in body:  # FastAPI's request validation
        detail = body["detail"]
        if isinstance(detail, list):
            parts = [f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg')}" for d in detail if isinstance(d, dict)]
            message = "The server rejected the request: " + "; ".join(parts)
        else:
            message = str(detail)
    if message is None:
        message = f"The keel server {base} answered {status}: {response.text[:200]}"
    cls = getattr(errors, str(name), None) if name else None
    if not (isinstance(cls, type) and issubclass(cls, KeelError)):
        cls = {401: AuthenticationError, 404: errors.NotFoundError, 409: errors.ConflictError, 403: errors.ForbiddenError,
               422: ValidationError, 503: StoreError}.get(status, KeelError)
    extra: dict[str, Any] = body["detail"] if isinstance(body, dict) and isinstance(body.get("detail"), dict) else {}
    hint = "Set KEEL_TRACKING_TOKEN to a valid token (keel login, or keel tokens create on the server)." if status == 401 else None
    err = cls.__new__(cls)
    KeelError.__init__(err, message, hint=hint, **extra)
    for attr in ("report", "step", "result"):  # errors with extra attributes (GatesFailed.report...)
        if not hasattr(err, attr) and attr in err.detail:
            setattr(err, attr, err.detail[attr])
    return err


class RemoteClient:
    """A keel server (or several replicas, failed over in turn) over httpx."""

    def __init__(self, uris: list[str], token: str | None = None, *, timeout: float = 60.0,
                 retries: int = 6, backoff: float = 0.2, max_backoff: float = 5.0) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the install
            raise missing_extra("httpx", "remote") from None
        self.uris = list(uris)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._current = 0
        headers = {"User-Agent": "keel-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=5.0), follow_redirects=False)
        self._httpx = httpx
        self.failovers = 0  # how often a call moved to another replica
        self.retried = 0  # attempts that failed and were tried again

    @property
    def base(self) -> str:
        return self.uris[self._current]

    def close(self) -> None:
        self._http.close()

    # -- the one request path -----------------------------------------------------------
    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
        content: Callable[[], Iterator[bytes]] | bytes | None = None, headers: dict[str, str] | None = None,
        idempotent: bool = True, stream: bool = False,
    ) -> Any:
        """Send one call; retried with backoff and failed over when ``idempotent``.

        ``content`` is bytes or a function returning a fresh iterator of chunks
        (a retry needs the body again). With ``stream`` the response is returned
        unread (the caller closes it). A 4xx/5xx answer raises the KeelError it
        stands for.
        """
        httpx = self._httpx
        attempts = self.retries + 1 if idempotent else 1
        last: BaseException | None = None
        for attempt in range(attempts):
            base = self.uris[self._current]
            try:
                body = content() if callable(content) else content
                req = self._http.build_request(method, base + path, json=json, params=params, content=body, headers=headers)
                response = self._http.send(req, stream=stream)
            except httpx.TransportError as exc:  # refused, reset, timed out: another replica, or later
                last = exc
                self._next(attempt)
                continue
            if response.status_code in RETRY_STATUSES and idempotent and attempt < attempts - 1:
                last = _error_from(_read(response), base)
                self._next(attempt)
                continue
            if response.status_code >= 400:
                raise _error_from(_read(response), base)
            return response
        where = ", ".join(self.uris)
        if isinstance(last, KeelError):
            raise last
        raise StoreError(
            f"The keel server ({where}) cannot be reached: {type(last).__name__}: {last}" if last else f"The keel server ({where}) cannot be reached.",
            hint="Check that `keel server` runs there and KEEL_TRACKING_URI is right; the call was retried "
            f"{attempts} times with backoff.",
        )

    def _next(self, attempt: int) -> None:
        self.retried += 1
        if len(self.uris) > 1:
            self._current = (self._current + 1) % len(self.uris)
            self.failovers += 1
            if (attempt + 1) % len(self.uris):  # try every replica once before waiting
                return
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt // max(1, len(self.uris))))
        time.sleep(delay * random.uniform(0.5, 1.0))

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        import orjson

        return orjson.loads(response.content) if response.content else None

    def post_json(self, path: str, body: Any) -> Any:
        """POST a JSON body serialized with orjson (NumPy arrays and datetimes allowed)."""
        import orjson

        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        return self.json("POST", path, content=data, headers={"Content-Type": "application/json"})

    # -- artifacts: uploads --------------------------------------------------------------
    def upload_file(self, path: Path, digest: str | None = None, *, part_size: int | None = None) -> tuple[str, int]:
        """Store a file on the server by content; returns (sha256, size). Nothing is sent twice.

        A file the server holds already is not sent. A file larger than
        ``part_size`` goes in parts, each with its own sha256; an interrupted
        upload resumes with the parts the server has not got yet.
        """
        from keel.store.blobs import sha256_file

        path = Path(path)
        digest = digest or sha256_file(path)
        size = path.stat().st_size
        part_size = part_size or PART_SIZE
        parts = max(1, -(-size // part_size))
        status = self.json("GET", f"/v1/blobs/{digest}", params={"parts": parts, "part_size": part_size})
        if status["exists"]:
            return digest, size
        if parts == 1:
            self.request("PUT", f"/v1/blobs/{digest}", content=lambda: _read_range(path, 0, size),
                         headers={"Content-Type": "application/octet-stream", "X-Keel-Size": str(size)})
            return digest, size
        have = set(status.get("parts_received") or [])
        for n in range(parts):
            if n in have:
                continue
            start = n * part_size
            length = min(part_size, size - start)
            part_digest = _sha256_range(path, start, length)
            self.request(
                "PUT", f"/v1/blobs/{digest}/parts/{n}",
                content=lambda start=start, length=length: _read_range(path, start, length),  # type: ignore[misc]
                headers={"Content-Type": "application/octet-stream", "X-Keel-Part-Sha256": part_digest, "X-Keel-Size": str(length)},
            )
        self.post_json(f"/v1/blobs/{digest}/complete", {"parts": parts, "part_size": part_size, "size": size})
        return digest, size

    # -- artifacts: downloads ------------------------------------------------------------
    def download(self, path: str, dest: Path, digest: str, *, what: str = "") -> Path:
        """Stream ``path`` into ``dest``; resumed with Range after a break; sha256-checked before it is kept."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{threading.get_ident()}")
        h = hashlib.sha256()
        got = 0
        breaks = 0
        try:
            with open(tmp, "wb") as out:
                while True:
                    headers = {"Range": f"bytes={got}-"} if got else None
                    response = self.request("GET", path, headers=headers, stream=True)
                    try:
                        if got and response.status_code != 206:  # the server ignored Range: start over
                            out.seek(0)
                            out.truncate()
                            h, got = hashlib.sha256(), 0
                        for chunk in response.iter_bytes(CHUNK):
                            out.write(chunk)
                            h.update(chunk)
                            got += len(chunk)
                        break
                    except self._httpx.TransportError:
                        breaks += 1
                        if breaks > self.retries:
                            raise StoreError(f"Downloading {what or path} from {self.base} broke {breaks} times.", hint="Retry later.") from None
                        self._next(breaks - 1)
                    finally:
                        response.close()
            found = h.hexdigest()
            if found != digest:
                raise IntegrityError(
                    f"Artifact {what + ' ' if what else ''}arrived corrupted: expected sha256 {digest}, found {found}.",
                    hint="Retry; if it persists, the server's copy is damaged: log the artifact again.",
                    expected=digest, found=found,
                )
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return dest

    def download_bytes(self, path: str, digest: str, *, what: str = "") -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return self.download(path, Path(tmp) / "blob", digest, what=what).read_bytes()


def _read(response: Any) -> Any:
    try:
        response.read()
    finally:
        response.close()
    return response


def _read_range(path: Path, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def _sha256_range(path: Path, start: int, length: int) -> str:
    h = hashlib.sha256()
    for chunk in _read_range(path, start, length):
        h.update(chunk)
    return h.hexdigest()


class RemoteBlobs:
    """The upload half of :class:`~keel.store.blobs.ArtifactStore` over the server (environment capture, log_artifact)."""

    def __init__(self, remote: RemoteClient) -> None:
        self.remote = remote

    def put_file(self, path: Path) -> tuple[str, int]:
        return self.remote.upload_file(Path(path))

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "blob"
            p.write_bytes(data)
            return self.remote.upload_file(p, hashlib.sha256(data).hexdigest())


_clients: dict[tuple[str, str], RemoteClient] = {}
_clients_lock = threading.Lock()


def client() -> RemoteClient | None:
    """The shared client of ``KEEL_TRACKING_URI`` (with ``KEEL_TRACKING_TOKEN``), or None when it is unset."""
    from keel.config import settings

    s = settings()
    uri = s.tracking_uri
    if not uri:
        return None
    key = (str(uri), str(s.tracking_token or ""))
    c = _clients.get(key)
    if c is None:
        with _clients_lock:
            c = _clients.get(key)
            if c is None:
                c = _clients[key] = RemoteClient(parse_uris(key[0]), key[1] or None)
    return c


def forbid_local(what: str) -> None:
    """Raise when a server is configured: ``what`` (the metadata store...) must not be opened on the client."""
    from keel.config import settings

    if settings().tracking_uri:
        raise not_available(what)


def reset_clients() -> None:
    """Close every shared client (tests, after fork)."""
    with _clients_lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


def _after_fork_in_child() -> None:
    global _clients_lock
    _clients.clear()  # an httpx pool must not be shared across a fork
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
