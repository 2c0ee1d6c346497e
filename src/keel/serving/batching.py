"""Micro-batching (``--batch-max-rows``, ``--batch-max-wait-ms``): concurrent requests share one model call.

Requests wait in a bounded queue, counted in rows, not requests. The batcher
takes requests until ``max_rows`` rows are gathered or the oldest has waited
``max_wait_ms``, predicts them in one call (one validation pass, one model call,
one log line with every row's own request id) and hands each request its rows.
When the queue already holds ``queue_max_rows`` rows a new request is refused at
once with 503 and ``Retry-After`` instead of waiting without limit. A batch that
fails validation is retried request by request, so one bad request cannot fail
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError
from keel.serving.predictor import new_request_id

if TYPE_CHECKING:
    from keel.serving.metrics import Metrics
    from keel.serving.predictor import Prediction, Predictor


class Overloaded(KeelError):
    """The queue is full: retry after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 1, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, retry_after=retry_after)
        self.retry_after = retry_after


@dataclass
class _Item:
    columns: Mapping[str, Any]
    n: int
    request_id: str
    row_ids: list[str]
    start: float
    future: asyncio.Future[Prediction] = field(repr=False)


def _concat(parts: list[Any]) -> Any:
    import numpy as np

    if all(isinstance(p, list) for p in parts):
        out: list[Any] = []
        for p in parts:
            out.extend(p)
        return out
    arrays = [np.asarray(p) for p in parts]
    try:
        return np.concatenate(arrays)
    except ValueError:
        return [v for a in arrays for v in a.tolist()]


def _slice(result: Prediction, lo: int, hi: int, item: _Item) -> Prediction:
    from keel.serving.predictor import Prediction

    return Prediction(
        item.request_id, result.model, result.version, result.predictions[lo:hi], item.row_ids,
        None if result.scores is None else result.scores[lo:hi],
        None if result.probabilities is None else {k: v[lo:hi] for k, v in result.probabilities.items()},
        result.missing_features[lo:hi], result.stale_features[lo:hi], result.latency_ms,
    )


class MicroBatcher:
    """One model's batching queue (see the module docstring)."""

    def __init__(self, predictor: Predictor, *, max_rows: int, max_wait_ms: float, queue_max_rows: int, metrics: Metrics | None = None) -> None:
        self.predictor = predictor
        self.max_rows = max(1, int(max_rows))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.queue_max_rows = max(self.max_rows, int(queue_max_rows))
        self.metrics = metrics
        self._items: list[_Item] = []
        self._rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Answer everything queued, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        while self._items:
            await self._batch()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def submit(self, columns: Mapping[str, Any], n: int, *, request_id: str | None, row_ids: list[str] | None, start: float) -> Prediction:
        if self._task is None:
            self.start()
        if self._rows + n > self.queue_max_rows:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.predictor.name).inc()
            raise Overloaded(f"The queue of model {self.predictor.name} holds {self._rows} rows (limit {self.queue_max_rows}); "
                             f"a request of {n} rows would overflow it.", hint="Retry after the Retry-After seconds, or add workers.")
        rid = request_id or new_request_id()
        ids = row_ids or ([rid] if n == 1 else [f"{rid}:{i}" for i in range(n)])
        fut: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(columns, n, rid, ids, start, fut))
        self._rows += n
        assert self._wake is not None
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                deadline = self._items[0].start + self.max_wait
                while self._rows < self.max_rows and self.max_wait > 0:
                    delay = deadline - _now()
                    if delay <= 0:
                        break
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                await self._batch()

    async def _batch(self) -> None:
        take: list[_Item] = []
        rows = 0
        while self._items and (not take or rows + self._items[0].n <= self.max_rows):
            item = self._items.pop(0)
            take.append(item)
            rows += item.n
        self._rows -= rows
        if not take:
            return
        self.batches += 1
        same = all(list(i.columns) == list(take[0].columns) for i in take)
        if len(take) > 1 and same:
            columns = {k: _concat([i.columns[k] for i in take]) for k in take[0].columns}
            ids = [r for i in take for r in i.row_ids]
            try:
                result = self.predictor.predict_columns(columns, rows, request_id=take[0].request_id, row_ids=ids, start=take[0].start)
            except KeelError:
                result = None  # one request's bad input: answer each on its own
            if result is not None:
                lo = 0
                for i in take:
                    if not i.future.done():
                        i.future.set_result(_slice(result, lo, lo + i.n, i))
                    lo += i.n
                return
        for i in take:
            try:
                i.future.set_result(self.predictor.predict_columns(i.columns, i.n, request_id=i.request_id, row_ids=i.row_ids, start=i.start))
            except Exception as exc:
                if not i.future.done():
                    i.future.set_exception(exc)


def _now() -> float:
    import time

    return time.perf_counter()
