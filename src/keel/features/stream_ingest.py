"""Streaming feature ingestion: events from a Redis stream or a NATS subject pushed into a feature view.

    keel features ingest usage --source redis://127.0.0.1:6379/0/usage-events

Each event's ``data`` is one row of the view's *source* shape (as for
:func:`keel.push`): micro-batches go through ``push`` — the view's transformation,
its row-level contract checks, the online store and the offline copy that
training sets read — so features computed from events are fresh online and
point-in-time correct offline from one definition. Timestamps may be ISO-8601
text (with an offset) or epoch seconds.

A batch that ``push`` refuses is pushed event by event, so only the bad events
go to the dead-letter stream (``<source>.dead``) with the reason. Events are
acknowledged after their push; on Redis the ids of pushed events are remembered
in the broker for a week, so a redelivered event is acknowledged without being
pushed again. The freshness — the time from an event's timestamp to its value
being online — is a histogram on ``/metrics`` (``--metrics-port``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from keel.errors import KeelError, StoreError, ValidationError
from keel.store.streams import (
    DEDUP_TTL_S,
    Event,
    RedisSource,
    dead_letter_uri,
    open_sink,
    open_source,
)

log = logging.getLogger("keel.features.ingest")


@dataclass
class IngestStats:
    events: int = 0
    rows_pushed: int = 0
    redelivered: int = 0  # events already pushed (acknowledged again, not pushed twice)
    dead_lettered: int = 0
    batches: int = 0
    broker_errors: int = 0
    freshness_p50_s: float | None = None  # event time to online, over the last batch
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Metrics:
    def __init__(self) -> None:
        import prometheus_client as pc

        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.events = pc.Counter("keel_ingest_events", "Events read", ["view"], registry=r)
        self.rows = pc.Counter("keel_ingest_rows_pushed", "Rows pushed to the view", ["view"], registry=r)
        self.dead = pc.Counter("keel_ingest_dead_lettered", "Events sent to the dead-letter stream", ["view"], registry=r)
        self.freshness = pc.Histogram("keel_ingest_freshness_seconds", "Event time to online value", ["view"], registry=r,
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))


class Ingestor:
    """Consumes ``source`` and pushes its events into feature view ``view`` (see the module docstring)."""

    def __init__(self, view: str, *, source: str, group: str = "keel-ingest", max_events: int = 500, max_wait_ms: float = 50.0,
                 dead_letter: str | None = None, claim_idle_ms: int = 30_000, to: str = "online_and_offline",
                 store: Any = None, metrics: bool = True) -> None:
        from keel.features.loader import as_definitions

        if max_events < 1:
            raise ValidationError(f"max_events={max_events} must be at least 1.", hint="e.g. --max-events 500.")
        self.definitions = as_definitions(None)
        self.view = self.definitions.view(view)  # unknown views fail here, with suggestions
        self.source_uri = source
        self.source = open_source(source, group=group, claim_idle_ms=claim_idle_ms)
        self.dead_uri = dead_letter or dead_letter_uri(source)
        self.dead = open_sink(self.dead_uri, what="--dead-letter")
        self.max_events, self.max_wait_ms, self.to, self.store = max_events, max_wait_ms, to, store
        self.stats = IngestStats()
        self.metrics = _Metrics() if metrics else None
        self._marker = f"keel:ingest:{self.view.name}:{self.source.address.name}:"
        ts = self.view.source
        self._time_columns = [c for c in (ts.timestamp_field, ts.created_timestamp_field) if c]

    # ---- one micro-batch --------------------------------------------------------
    def _table(self, events: Sequence[Event]) -> Any:
        import pyarrow as pa
        import pyarrow.json as pj

        raw = [e.raw for e in events]
        table = None
        if all(e.data is None for e in events) and not any(b"\n" in r for r in raw):
            try:
                # time columns stay text here (Arrow would infer naive timestamps): `_timestamps` parses them
                parse = pj.ParseOptions(explicit_schema=pa.schema([(c, pa.string()) for c in self._time_columns]))
                table = pj.read_json(io.BytesIO(b"\n".join(raw)), parse_options=parse)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                table = None
            if table is not None and table.num_rows != len(events):
                table = None
        if table is None:
            table = pa.Table.from_pylist([e.data if e.data is not None else orjson.loads(e.raw) for e in events])
        return self._timestamps(table)

    def _timestamps(self, table: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        for name in self._time_columns:
            if name not in table.column_names:
                continue
            col = table[name]
            t = col.type
            if pa.types.is_timestamp(t):
                col = col.cast(pa.timestamp("us", tz=t.tz or "UTC")) if t.tz is None else col
            elif pa.types.is_integer(t) or pa.types.is_floating(t):
                col = pc.cast(pc.multiply(col.cast(pa.float64()), 1e6), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
            elif pa.types.is_string(t) or pa.types.is_large_string(t):
                offset = pc.match_substring_regex(col, r"(Z|z|[+-]\d\d:?\d\d)$")
                if not pc.all(pc.fill_null(offset, True)).as_py():
                    raise ValidationError(f"Column {name!r} holds a timestamp without a UTC offset.",
                                          hint='Send e.g. "2026-12-03T10:00:00+00:00" (or ...Z), or epoch seconds.')
                try:
                    col = pc.cast(col, pa.timestamp("us", tz="UTC"))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValidationError(f"Column {name!r} holds text that is not an ISO-8601 timestamp with an offset: {exc}",
                                          hint='Send e.g. "2026-12-03T10:00:00+00:00" or epoch seconds.') from None
            table = table.set_column(table.column_names.index(name), name, col)
        return table

    def _push(self, events: Sequence[Event]) -> tuple[int, list[tuple[Event, str]], Any]:
        """(rows pushed, rejected events with reasons, the pushed event times) for decodable events."""
        from keel.features.ingestion import push

        try:
            table = self._table(events)
            push(self.view.name, table, to=self.to, definitions=self.definitions, store=self.store)
            return table.num_rows, [], self._event_times(table)
        except (KeelError, ValueError) as exc:
            if len(events) == 1:
                return 0, [(events[0], str(exc))], None
        pushed, rejected, times = 0, [], []
        for e in events:
            n, bad, t = self._push([e])
            pushed += n
            rejected += bad
            if t is not None:
                times.append(t)
        import numpy as np

        return pushed, rejected, (np.concatenate(times) if times else None)

    def _event_times(self, table: Any) -> Any:
        import numpy as np

        name = self.view.source.timestamp_field
        if name not in table.column_names:
            return None
        return table[name].cast("int64").to_numpy(zero_copy_only=False).astype(np.float64) / 1e6

    async def _already(self, events: Sequence[Event]) -> set[str]:
        if not isinstance(self.source, RedisSource) or not events:
            return set()
        client = self.source._client
        seen = await client.mget([self._marker + e.id for e in events])
        return {e.id for e, v in zip(events, seen, strict=True) if v is not None}

    async def _remember(self, events: Sequence[Event]) -> None:
        if not isinstance(self.source, RedisSource) or not events:
            return
        pipe = self.source._client.pipeline(transaction=False)
        for e in events:
            pipe.set(self._marker + e.id, b"1", ex=DEDUP_TTL_S)
        await pipe.execute()

    async def step(self) -> int:
        events = await self.source.read(self.max_events, self.max_wait_ms)
        if not events:
            return 0
        done = await self._already(events)
        fresh = [e for e in events if e.id not in done]
        rejected: list[tuple[Event, str]] = [(e, e.error) for e in fresh if e.error is not None]
        good = [e for e in fresh if e.error is None]  # Redis events stay undecoded: the batch is parsed at once
        pushed, bad, times = await asyncio.to_thread(self._push, good) if good else (0, [], None)
        rejected += bad
        refused = {e.id for e, _ in bad}
        for e, reason in rejected:
            await self.dead.append({"id": e.id, "data": (e.raw or orjson.dumps(e.data)).decode("utf-8", "replace"), "reason": reason,
                                    "source": self.source_uri, "view": self.view.name})
        await self._remember([e for e in good if e.id not in refused])
        await self.source.ack(events)
        s = self.stats
        s.events += len(events)
        s.rows_pushed += pushed
        s.redelivered += len(done)
        s.dead_lettered += len(rejected)
        s.batches += 1
        if times is not None and len(times):
            import numpy as np

            lag = time.time() - times
            s.freshness_p50_s = float(np.median(lag))
            if self.metrics is not None:
                for v in lag[:: max(1, len(lag) // 100)]:  # a sample per batch: the histogram's shape, not its count, matters
                    self.metrics.freshness.labels(self.view.name).observe(float(v))
        if self.metrics is not None:
            m, v = self.metrics, self.view.name
            m.events.labels(v).inc(len(events))
            m.rows.labels(v).inc(pushed)
            m.dead.labels(v).inc(len(rejected))
        return len(events)

    async def run(self, *, stop: asyncio.Event | None = None, max_events: int | None = None, idle_exit_s: float | None = None,
                  progress: Callable[[IngestStats], None] | None = None) -> IngestStats:
        started = idle = time.perf_counter()
        backoff = 0.1
        last = 0.0
        try:
            while not (stop is not None and stop.is_set()):
                if max_events is not None and self.stats.events >= max_events:
                    break
                try:
                    n = await self.step()
                    backoff = 0.1
                except StoreError as exc:
                    self.stats.broker_errors += 1
                    log.warning("%s; retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                now = time.perf_counter()
                if n:
                    idle = now
                elif idle_exit_s is not None and now - idle > idle_exit_s:
                    break
                if progress is not None and now - last > 1.0:
                    last = now
                    self.stats.seconds = now - started
                    progress(self.stats)
        finally:
            self.stats.seconds = time.perf_counter() - started
            for part in (self.source, self.dead):
                try:
                    await part.close()
                except Exception:
                    pass
            from keel.features import fast_push

            fast_push.flush()
        return self.stats
