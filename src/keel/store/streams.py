"""Event streams: a small consumer/producer protocol over Redis Streams and NATS JetStream.

The stream consumer (``keel stream``) and streaming feature ingestion (``keel
features ingest``) read events through :class:`StreamSource` and write through
:class:`StreamSink`; each backend is a handful of async methods::

    source = open_source("redis://127.0.0.1:6379/0/events", group="scorers")
    events = await source.read(max_events=500, max_wait_ms=50)
    ...
    await sink.publish([(event.id, {"prediction": "1", ...}) for event in events])
    await source.ack(events)

Delivery is at least once in (an event is acknowledged only after its output is
written) and exactly one output per event id: a sink writes an event id's output
once, however often the event is redelivered (Redis: an ``SET NX`` marker and the
``XADD`` in one Lua script; NATS: the ``Nats-Msg-Id`` header and JetStream's
duplicate window).

URIs::

    redis://HOST:PORT/DB/STREAM              an entry's field ``data`` holds the JSON event,
                                             ``id`` its event id (else the entry id)
    nats://HOST:PORT/SUBJECT                 a message's body is ``{"id": ..., "data": {...}}``
                                             (``id`` optional: else the stream sequence)

Consumer groups: every consumer started with the same ``group`` shares the stream
(Redis consumer group; NATS durable pull consumer). A restarted consumer resumes
from its last acknowledged event: its own pending entries first, then entries a
dead consumer left pending longer than ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson

from keel.errors import StoreError, ValidationError, missing_extra, redact_uris

DEDUP_TTL_S = 7 * 24 * 3600  # how long a Redis sink remembers an event id it wrote


@dataclass(frozen=True)
class Event:
    """One event read from a stream."""

    id: str  # the event id: the entry's `id` field / the message's "id", else the broker's id
    entry: str  # the broker's id (Redis entry id, NATS stream sequence)
    data: Any  # the decoded `data` object; None when not decoded yet (see `decode`) or unusable (`error`)
    error: str | None = None  # why the event cannot be used (bad JSON, no data), for the dead-letter stream
    raw: bytes = b""  # the undecoded `data`, kept for the dead-letter stream
    handle: Any = field(default=None, compare=False, repr=False)  # backend's message object (NATS)


@dataclass(frozen=True)
class StreamAddress:
    scheme: str  # redis | nats
    host: str
    port: int
    db: int
    name: str  # Redis stream key / NATS subject
    options: dict[str, str]

    def uri(self) -> str:
        if self.scheme == "redis":
            return f"redis://{self.host}:{self.port}/{self.db}/{self.name}"
        return f"nats://{self.host}:{self.port}/{self.name}"


class StreamSource(Protocol):
    address: StreamAddress

    async def read(self, max_events: int, max_wait_ms: float) -> list[Event]: ...
    async def ack(self, events: Sequence[Event]) -> None: ...
    async def lag(self) -> int | None: ...
    async def close(self) -> None: ...


class StreamSink(Protocol):
    address: StreamAddress

    async def publish(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int: ...
    async def close(self) -> None: ...


_NAME = re.compile(r"^[A-Za-z0-9_.:\-{}*>]+$")


def parse_stream_uri(uri: str, *, what: str = "--source") -> StreamAddress:
    """Parse ``redis://HOST:PORT/DB/STREAM`` or ``nats://HOST:PORT/SUBJECT``; a clear error otherwise."""
    parts = urlsplit(uri)
    example = "redis://127.0.0.1:6379/0/events or nats://127.0.0.1:4222/events"
    if parts.scheme not in {"redis", "nats"}:
        raise ValidationError(f"{what} {redact_uris(uri)!r} is not a stream URI.", hint=f"Use {example}.")
    segments = [s for s in parts.path.split("/") if s]
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ValidationError(f"{what} {redact_uris(uri)!r} has an invalid port.", hint=f"Use {example}.") from None
    if parts.scheme == "redis":
        if len(segments) != 2 or not segments[0].isdigit():
            raise ValidationError(f"{what} {redact_uris(uri)!r} must name a database and a stream.",
                                  hint="Use redis://HOST:PORT/DB/STREAM, e.g. redis://127.0.0.1:6379/0/events.")
        db, name = int(segments[0]), segments[1]
        port = port or 6379
    else:
        if len(segments) != 1:
            raise ValidationError(f"{what} {redact_uris(uri)!r} must name one subject.",
                                  hint="Use nats://HOST:PORT/SUBJECT, e.g. nats://127.0.0.1:4222/events.")
        db, name = 0, segments[0]
        port = port or 4222
    if not _NAME.match(name):
        raise ValidationError(f"{what}: {name!r} is not a valid stream or subject name.",
                              hint="Use letters, digits and . _ - :")
    return StreamAddress(parts.scheme, parts.hostname or "127.0.0.1", port, db, name, options)


def consumer_name() -> str:
    """A name unique to this process (host:pid), stable over its reconnects."""
    return f"{socket.gethostname()}:{os.getpid()}"


def decode(event: Event) -> Event:
    """``event`` with its raw ``data`` decoded, or with the reason it cannot be (bad JSON, not an object)."""
    if event.data is not None or event.error is not None:
        return event
    try:
        value = orjson.loads(event.raw)
    except orjson.JSONDecodeError as exc:
        return replace(event, error=f"'data' is not JSON: {exc}")
    if not isinstance(value, dict):
        return replace(event, error=f"'data' is a JSON {type(value).__name__}, not an object")
    return replace(event, data=value)


# ---- Redis Streams -----------------------------------------------------------

# Writes each output once per event id: the marker key and the XADD in one script, so a crash
# can never leave an output without its marker (or the reverse).
_PUBLISH_ONCE = """
local n = 0
local outputs = cjson.decode(ARGV[2])
for i = 1, #outputs do
  local fields = outputs[i]
  if redis.call('SET', KEYS[2] .. fields[2], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    n = n + 1
  end
end
return n
"""


def _redis_client(addr: StreamAddress) -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        raise missing_extra("redis", "redis") from exc
    return aioredis.Redis(host=addr.host, port=addr.port, db=addr.db, socket_connect_timeout=5,
                          health_check_interval=10)


def _store_error(addr: StreamAddress, exc: BaseException) -> StoreError:
    return StoreError(f"The stream {addr.uri()} cannot be reached: {type(exc).__name__}: {exc}",
                      hint="Check that the broker runs and the URI is right; the consumer retries on its own.")


@contextlib.contextmanager
def _redis_errors(addr: StreamAddress) -> Iterator[None]:
    """A connection or server error of redis-py as a StoreError naming the stream."""
    try:
        yield
    except OSError as exc:
        raise _store_error(addr, exc) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("redis"):
            raise _store_error(addr, exc) from exc
        raise


class RedisSource:
    """A Redis Streams consumer in a consumer group (XREADGROUP / XACK / XAUTOCLAIM)."""

    def __init__(self, addr: StreamAddress, *, group: str, consumer: str | None = None, claim_idle_ms: int = 30_000) -> None:
        self.address = addr
        self.group = group
        self.consumer = consumer or consumer_name()
        self.claim_idle_ms = claim_idle_ms
        self._client = _redis_client(addr)
        self._ready = False
        self._own_pending = True  # after a (re)start, this consumer's unacknowledged entries come first
        self._last_claim = 0.0

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        from redis.exceptions import ResponseError

        try:
            await self._client.xgroup_create(self.address.name, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def read(self, max_events: int, max_wait_ms: float) -> list[Event]:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeout

        try:
            await self._ensure_group()
            entries: list[Any] = []
            if self._own_pending:
                got = await self._client.xreadgroup(self.group, self.consumer, {self.address.name: "0"}, count=max_events)
                entries = got[0][1] if got else []
                if len(entries) < max_events:
                    self._own_pending = False
            loop = asyncio.get_running_loop()
            if not entries and loop.time() - self._last_claim > self.claim_idle_ms / 2000:
                self._last_claim = loop.time()
                claimed = await self._client.xautoclaim(self.address.name, self.group, self.consumer,
                                                        min_idle_time=self.claim_idle_ms, start_id="0-0", count=max_events)
                entries = [e for e in claimed[1] if e[1] is not None]
            if not entries:
                block = max(1, int(max_wait_ms))
                got = await self._client.xreadgroup(self.group, self.consumer, {self.address.name: ">"},
                                                    count=max_events, block=block)
                entries = got[0][1] if got else []
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (or the broker lost it): create it again
                self._ready = False
                return []
            raise _store_error(self.address, exc) from exc
        except (RedisConnectionError, RedisTimeout, OSError) as exc:
            self._ready = False
            self._own_pending = True
            raise _store_error(self.address, exc) from exc
        out = []
        for entry_id, fields in entries:
            entry = entry_id.decode()
            fid = fields.get(b"id")
            data = fields.get(b"data")
            if data is None:
                out.append(Event(fid.decode() if fid else entry, entry, None, "the event has no 'data' field"))
            else:  # decoded by the consumer, a whole batch at once (see `decode`)
                out.append(Event(fid.decode() if fid else entry, entry, None, None, data))
        return out

    async def ack(self, events: Sequence[Event]) -> None:
        if events:
            with _redis_errors(self.address):
                await self._client.xack(self.address.name, self.group, *[e.entry for e in events])

    async def lag(self) -> int | None:
        try:
            for info in await self._client.xinfo_groups(self.address.name):
                if info.get("name") in (self.group, self.group.encode()):
                    lag = info.get("lag")
                    return None if lag is None else int(lag) + int(info.get("pending") or 0)
        except Exception:
            return None
        return None

    async def close(self) -> None:
        await self._client.aclose()


class RedisSink:
    """Appends outputs to a Redis stream, one per event id (see the module docstring)."""

    def __init__(self, addr: StreamAddress, *, dedup_ttl_s: int = DEDUP_TTL_S) -> None:
        self.address = addr
        self.dedup_ttl_s = dedup_ttl_s
        self._client = _redis_client(addr)
        self._script = self._client.register_script(_PUBLISH_ONCE)
        self._marker = f"keel:stream-out:{addr.name}:"

    async def publish(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        if not entries:
            return 0
        # one argument for the whole batch: [["id", <event id>, field, value, ...], ...]
        blob = orjson.dumps([["id", event_id, *[x for kv in fields.items() for x in kv]] for event_id, fields in entries])
        with _redis_errors(self.address):
            return int(await self._script(keys=[self.address.name, self._marker], args=[self.dedup_ttl_s, blob]))

    async def append(self, fields: dict[str, str]) -> None:
        """Append one entry without deduplication (the dead-letter stream)."""
        with _redis_errors(self.address):
            await self._client.xadd(self.address.name, fields)

    async def close(self) -> None:
        await self._client.aclose()


# ---- NATS JetStream ----------------------------------------------------------

class _Nats:
    """One NATS connection with JetStream, reconnecting on its own."""

    def __init__(self, addr: StreamAddress) -> None:
        self.address = addr
        self.nc: Any = None
        self.js: Any = None

    async def connect(self) -> Any:
        if self.js is None:
            try:
                import nats
            except ImportError as exc:
                raise missing_extra("nats-py", "stream") from exc
            try:
                self.nc = await nats.connect(f"nats://{self.address.host}:{self.address.port}", connect_timeout=5,
                                             max_reconnect_attempts=-1, reconnect_time_wait=0.5)
            except Exception as exc:
                raise _store_error(self.address, exc) from exc
            self.js = self.nc.jetstream()
        return self.js

    async def stream_for(self, subject: str, *, create: bool) -> str:
        """The JetStream stream that holds ``subject`` (created when ``create`` and none does)."""
        from nats.js.errors import NotFoundError

        js = await self.connect()
        try:
            return str(await js.find_stream_name_by_subject(subject))
        except NotFoundError:
            if not create:
                raise ValidationError(f"No JetStream stream holds the subject {subject!r} on {self.address.uri()}.",
                                      hint=f"Create one, e.g. nats stream add EVENTS --subjects '{subject}'.") from None
        name = "KEEL_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)
        from nats.js.api import StreamConfig

        await js.add_stream(StreamConfig(name=name, subjects=[subject], duplicate_window=2 * 60 * 60.0))
        return name

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()
            self.nc = self.js = None


class NatsSource:
    """A JetStream durable pull consumer; every consumer of one ``group`` shares its messages."""

    def __init__(self, addr: StreamAddress, *, group: str, claim_idle_ms: int = 30_000, create: bool = True) -> None:
        self.address = addr
        self.group = group
        self.claim_idle_ms = claim_idle_ms
        self.create = create
        self._nats = _Nats(addr)
        self._sub: Any = None

    async def _subscription(self) -> Any:
        if self._sub is None:
            from nats.js.api import AckPolicy, ConsumerConfig

            stream = await self._nats.stream_for(self.address.name, create=self.create)
            js = await self._nats.connect()
            durable = re.sub(r"[^A-Za-z0-9_-]", "_", self.group)
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.claim_idle_ms / 1000, max_ack_pending=100_000)
            self._sub = await js.pull_subscribe(self.address.name, durable=durable, stream=stream, config=config)
        return self._sub

    async def read(self, max_events: int, max_wait_ms: float) -> list[Event]:
        import nats.errors

        try:
            sub = await self._subscription()
            msgs = await sub.fetch(max_events, timeout=max(max_wait_ms, 1.0) / 1000)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except ValidationError:
            raise
        except Exception as exc:
            raise _store_error(self.address, exc) from exc
        out = []
        for msg in msgs:
            seq = str(msg.metadata.sequence.stream)
            try:
                body = orjson.loads(msg.data)
            except orjson.JSONDecodeError as exc:
                out.append(Event(seq, seq, None, f"the message is not JSON: {exc}", bytes(msg.data), msg))
                continue
            if not isinstance(body, dict) or "data" not in body:
                out.append(Event(seq, seq, None, 'the message is not {"id": ..., "data": {...}}', bytes(msg.data), msg))
                continue
            eid = body.get("id")
            data = body["data"]
            if not isinstance(data, dict):
                out.append(Event(str(eid or seq), seq, None, f"'data' is a JSON {type(data).__name__}, not an object",
                                 orjson.dumps(data), msg))
                continue
            out.append(Event(str(eid) if eid is not None else seq, seq, data, None, b"", msg))
        return out

    async def ack(self, events: Sequence[Event]) -> None:
        try:
            for e in events:
                await e.handle.ack()
        except Exception as exc:
            raise _store_error(self.address, exc) from exc

    async def lag(self) -> int | None:
        try:
            info = await (await self._subscription()).consumer_info()
            return int(info.num_pending) + int(info.num_ack_pending)
        except Exception:
            return None

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
            self._sub = None
        await self._nats.close()


class NatsSink:
    """Publishes outputs to a JetStream subject with ``Nats-Msg-Id`` = the event id."""

    def __init__(self, addr: StreamAddress, *, create: bool = True) -> None:
        self.address = addr
        self.create = create
        self._nats = _Nats(addr)
        self._ready = False

    async def publish(self, entries: Sequence[tuple[str, dict[str, str]]]) -> int:
        if not entries:
            return 0
        try:
            js = await self._nats.connect()
            if not self._ready:
                await self._nats.stream_for(self.address.name, create=self.create)
                self._ready = True
            # pipelined: every message goes out before the first acknowledgement is awaited
            futures = [await js.publish_async(self.address.name, orjson.dumps({"id": eid, **fields}), headers={"Nats-Msg-Id": eid})
                       for eid, fields in entries]
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        except ValidationError:
            raise
        except Exception as exc:
            raise _store_error(self.address, exc) from exc
        return sum(1 for a in acks if not a.duplicate)

    async def append(self, fields: dict[str, str]) -> None:
        js = await self._nats.connect()
        if not self._ready:
            await self._nats.stream_for(self.address.name, create=self.create)
            self._ready = True
        try:
            await js.publish(self.address.name, orjson.dumps(fields), headers={"Nats-Msg-Id": uuid.uuid4().hex})
        except Exception as exc:
            raise _store_error(self.address, exc) from exc

    async def close(self) -> None:
        await self._nats.close()


def open_source(uri: str, *, group: str, claim_idle_ms: int = 30_000) -> RedisSource | NatsSource:
    addr = parse_stream_uri(uri, what="--source")
    if addr.scheme == "redis":
        return RedisSource(addr, group=group, claim_idle_ms=claim_idle_ms)
    return NatsSource(addr, group=group, claim_idle_ms=claim_idle_ms)


def open_sink(uri: str, *, what: str = "--sink") -> RedisSink | NatsSink:
    addr = parse_stream_uri(uri, what=what)
    return RedisSink(addr) if addr.scheme == "redis" else NatsSink(addr)


def dead_letter_uri(source: str) -> str:
    """The default dead-letter stream of ``source``: the same broker, ``<name>.dead``."""
    addr = parse_stream_uri(source)
    return StreamAddress(addr.scheme, addr.host, addr.port, addr.db, addr.name + ".dead", {}).uri()
