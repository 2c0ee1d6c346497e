"""Streaming inference: events from a stream, predictions to another, through one ``Predictor``.

    consumer = StreamConsumer("models:/churn@production",
                              source="redis://127.0.0.1:6379/0/events",
                              sink="redis://127.0.0.1:6379/0/predictions")
    asyncio.run(consumer.run())

Each micro-batch (``max_events`` events, or what arrived within ``max_wait_ms``)
goes through :class:`keel.serving.Predictor`, so validation, feature fetching by
entity key and the prediction log are the same as over HTTP; the event id is the
prediction log's request id. Outputs (``id``, ``prediction``, ``model``,
``version``, and ``score`` for classifiers) are written once per event id, then
the events are acknowledged: at least once in, exactly one output per event id.

An event that cannot be scored (not JSON, wrong types, an unknown entity when
missing features are rejected) goes to the dead-letter stream with the reason,
and the batch goes on without it. A broker that goes away is retried with
back-off; the events of the failed batch stay pending and are read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from keel.errors import KeelError, StoreError, ValidationError
from keel.store.streams import Event, dead_letter_uri, decode, open_sink, open_source

log = logging.getLogger("keel.stream")


@dataclass
class StreamStats:
    """What a consumer has done since it started (also exported on ``/metrics``)."""

    events: int = 0  # events read
    outputs: int = 0  # output entries written
    duplicates: int = 0  # outputs not written again: the event id already had one (a redelivery)
    dead_lettered: int = 0  # events sent to the dead-letter stream
    batches: int = 0
    broker_errors: int = 0  # failed reads/writes, retried
    lag: int | None = None  # events in the stream not yet acknowledged by the group
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["events_per_second"] = round(self.events / self.seconds, 1) if self.seconds else None
        return out


@dataclass
class StreamOptions:
    group: str = "keel"
    max_events: int = 500
    max_wait_ms: float = 50.0
    dead_letter: str | None = None  # default: <source>.dead on the same broker
    claim_idle_ms: int = 30_000  # pending longer than this on a dead consumer: claimed
    log: bool = True
    missing_features: str = "default"
    defaults: dict[str, Any] = field(default_factory=dict)


class _Metrics:
    def __init__(self) -> None:
        import prometheus_client as pc

        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.events = pc.Counter("keel_stream_events", "Events read from the source stream", ["model"], registry=r)
        self.outputs = pc.Counter("keel_stream_outputs", "Outputs written to the sink stream", ["model"], registry=r)
        self.dead = pc.Counter("keel_stream_dead_lettered", "Events sent to the dead-letter stream", ["model"], registry=r)
        self.duplicates = pc.Counter("keel_stream_duplicate_outputs_skipped", "Redelivered events whose output existed", ["model"], registry=r)
        self.errors = pc.Counter("keel_stream_broker_errors", "Failed broker calls (retried)", ["model"], registry=r)
        self.lag = pc.Gauge("keel_stream_lag_events", "Events not yet acknowledged by the consumer group", ["model"], registry=r)
        self.batch = pc.Histogram("keel_stream_batch_seconds", "Time to score and write one micro-batch", ["model"],
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r)


class StreamConsumer:
    """Consumes ``source``, scores with ``model`` and writes to ``sink`` (see the module docstring)."""

    def __init__(self, model: str | Any, *, source: str, sink: str, options: StreamOptions | None = None,
                 metrics: bool = True) -> None:
        from keel.serving.predictor import Predictor

        self.options = options or StreamOptions()
        o = self.options
        if o.max_events < 1:
            raise ValidationError(f"max_events={o.max_events} must be at least 1.", hint="Use e.g. --max-events 500.")
        if o.max_wait_ms <= 0:
            raise ValidationError(f"max_wait_ms={o.max_wait_ms} must be positive.", hint="Use e.g. --max-wait-ms 50.")
        self.predictor = model if isinstance(model, Predictor) else Predictor(
            model, log=o.log, missing_features=o.missing_features, defaults=o.defaults)
        self.source_uri, self.sink_uri = source, sink
        self.dead_uri = o.dead_letter or dead_letter_uri(source)
        self.source = open_source(source, group=o.group, claim_idle_ms=o.claim_idle_ms)
        self.sink = open_sink(sink)
        self.dead = open_sink(self.dead_uri, what="--dead-letter")
        self.stats = StreamStats()
        self.metrics = _Metrics() if metrics else None
        self._label = self.predictor.name

    # ---- one micro-batch ------------------------------------------------------
    def _score_raw(self, events: Sequence[Event]) -> list[tuple[str, dict[str, str]]] | None:
        """Outputs for a batch of undecoded events, parsed at once by Arrow's JSON reader; None if any is unusable."""
        import io

        import pyarrow as pa
        import pyarrow.json as pj

        raw = [e.raw for e in events]
        if any(b"\n" in r for r in raw):
            return None
        try:
            table = pj.read_json(io.BytesIO(b"\n".join(raw)), read_options=pj.ReadOptions(block_size=1 << 24))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != len(events):
            return None
        try:
            return self._outputs(events, self.predictor.predict(table, row_ids=[e.id for e in events]))
        except KeelError:
            return None

    def _score(self, events: Sequence[Event]) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[Event, str]]]:
        """(outputs, rejected events with the reason) for events without an error."""
        if not events:
            return [], []
        if all(e.data is None for e in events):
            fast = self._score_raw(events)
            if fast is not None:
                return fast, []
        decoded = [decode(e) for e in events]
        rejected = [(e, e.error or "") for e in decoded if e.error is not None]
        events = [e for e in decoded if e.error is None]
        if not events:
            return [], rejected
        outputs, more = self._score_decoded(events)
        return outputs, rejected + more

    def _score_decoded(self, events: Sequence[Event]) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[Event, str]]]:
        try:
            return self._outputs(events, self.predictor.predict([e.data for e in events], row_ids=[e.id for e in events])), []
        except KeelError as exc:
            if len(events) == 1:
                return [], [(events[0], str(exc))]
        # one bad event fails the whole call: score them one by one to find it, the others go on
        outputs: list[tuple[str, dict[str, str]]] = []
        rejected: list[tuple[Event, str]] = []
        for e in events:
            try:
                outputs += self._outputs([e], self.predictor.predict([e.data], request_id=e.id))
            except KeelError as exc:
                rejected.append((e, str(exc)))
        return outputs, rejected

    def _outputs(self, events: Sequence[Event], result: Any) -> list[tuple[str, dict[str, str]]]:
        model, version = result.model, str(result.version)
        scores = result.scores
        out = []
        for i, e in enumerate(events):
            fields = {"prediction": orjson.dumps(result.predictions[i]).decode(), "model": model, "version": version}
            if scores is not None:
                fields["score"] = repr(float(scores[i]))
            out.append((e.id, fields))
        return out

    async def step(self) -> int:
        """Read, score, write and acknowledge one micro-batch; the number of events read."""
        o = self.options
        events = await self.source.read(o.max_events, o.max_wait_ms)
        if not events:
            return 0
        start = time.perf_counter()
        good = [e for e in events if e.error is None]
        outputs, rejected = self._score(good)
        rejected += [(e, e.error or "") for e in events if e.error is not None]
        for e, reason in rejected:
            await self.dead.append({"id": e.id, "data": (e.raw or orjson.dumps(e.data)).decode("utf-8", "replace"),
                                    "reason": reason, "source": self.source_uri, "model": self._label})
        written = await self.sink.publish(outputs)
        await self.source.ack(events)
        s = self.stats
        s.events += len(events)
        s.outputs += written
        s.duplicates += len(outputs) - written
        s.dead_lettered += len(rejected)
        s.batches += 1
        if self.metrics is not None:
            m, lbl = self.metrics, self._label
            m.events.labels(lbl).inc(len(events))
            m.outputs.labels(lbl).inc(written)
            m.duplicates.labels(lbl).inc(len(outputs) - written)
            m.dead.labels(lbl).inc(len(rejected))
            m.batch.labels(lbl).observe(time.perf_counter() - start)
        return len(events)

    # ---- the loop --------------------------------------------------------------
    async def run(self, *, stop: asyncio.Event | None = None, max_events: int | None = None, idle_exit_s: float | None = None,
                  progress: Callable[[StreamStats], None] | None = None) -> StreamStats:
        """Consume until ``stop`` is set, ``max_events`` were read or nothing arrived for ``idle_exit_s``."""
        started = time.perf_counter()
        idle_since = time.perf_counter()
        backoff = 0.1
        last_lag = 0.0
        try:
            while not (stop is not None and stop.is_set()):
                if max_events is not None and self.stats.events >= max_events:
                    break
                try:
                    n = await self.step()
                    backoff = 0.1
                except StoreError as exc:
                    self.stats.broker_errors += 1
                    if self.metrics is not None:
                        self.metrics.errors.labels(self._label).inc()
                    log.warning("%s; retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                now = time.perf_counter()
                if n:
                    idle_since = now
                elif idle_exit_s is not None and now - idle_since > idle_exit_s:
                    break
                if now - last_lag > 1.0:
                    last_lag = now
                    self.stats.lag = await self.source.lag()
                    if self.metrics is not None and self.stats.lag is not None:
                        self.metrics.lag.labels(self._label).set(self.stats.lag)
                    if progress is not None:
                        self.stats.seconds = now - started
                        progress(self.stats)
        finally:
            self.stats.seconds = time.perf_counter() - started
            self.stats.lag = await self.source.lag()
            await self.close()
        return self.stats

    async def close(self) -> None:
        for part in (self.source, self.sink, self.dead):
            try:
                await part.close()
            except Exception:  # closing a connection the broker already dropped
                pass
        if self.options.log:
            from keel.store.prediction_log import active_log

            plog = active_log()
            if plog is not None:
                plog.flush_safely()
