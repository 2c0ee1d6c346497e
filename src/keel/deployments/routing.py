"""Routing a request through a deployment: who answers, who shadows, and when a canary is rolled back.

    router = Router("churn-live")
    answer = router.predict([{"customer_id": 42}], sticky_key="42")
    answer.route, answer.prediction.predictions

- **Weights.** Each answering route gets its share of requests. With ``sticky_by``
  the share is taken from a hash of the key (an input column's value, or a
  header's), so the same customer always meets the same route while the
  deployment is unchanged; without it, from a random draw.
- **Shadow.** The champion answers; the shadow route is called on the same input
  with the same request id on a background thread after the answer is ready, so
  its latency and failures never reach the caller. The request only puts its
  input on a bounded queue; the worker sleeps ``shadow_wait_ms`` after the first
  queued request, then scores all that gathered (up to ``shadow_batch_rows`` rows) in one call, so
  the shadow costs the process one model call and one log frame per batch, not
  per request (its logged latency is the batch call's). A batch that fails is
  retried request by request, so one bad request fails only itself. Both
  predictions are logged with their route and request id; a full shadow queue
  drops shadow calls (counted), never the caller's.
- **Objectives.** Each answering route's requests, failures and latency are
  counted in a sliding window; a canary that breaches ``max_error_rate`` or
  ``max_p99_ms`` after ``min_requests`` is taken out (``specs.end_challenger``,
  an ``auto_rollback`` event) and the champion answers everything.
- **Following changes.** The deployment's revision is re-read at most every
  ``refresh_s`` seconds; a new revision rebuilds the routes (predictors of
  unchanged routes are kept), without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.deployments.specs import Deployment, DeploymentSpec, Route, end_challenger, get_deployment

log = logging.getLogger("keel.deployments")


@dataclass
class Answer:
    route: str
    model: str
    version: int
    prediction: Any  # keel.serving.predictor.Prediction

    def to_dict(self) -> dict[str, Any]:
        out = self.prediction.to_dict()
        out["route"] = self.route
        return out


@dataclass
class _ShadowCall:
    """A request's input, queued for the shadow."""

    predictor: Any
    columns: Mapping[str, Any]
    n: int
    request_id: str
    row_ids: list[str] | None
    batch_id: str | None

    def ids(self) -> list[str]:
        """Each row's request id, as the predictor gives them (the request id, or ``<id>:<i>`` for rows of one request)."""
        if self.row_ids is not None:
            return self.row_ids
        return [self.request_id] if self.n == 1 else [f"{self.request_id}:{i}" for i in range(self.n)]


class _Window:
    """The last ``size`` outcomes of a route: (ok, latency_ms)."""

    def __init__(self, size: int = 2_000) -> None:
        self.items: deque[tuple[bool, float]] = deque(maxlen=size)
        self.lock = threading.Lock()

    def add(self, ok: bool, latency_ms: float) -> None:
        with self.lock:
            self.items.append((ok, latency_ms))

    def summary(self) -> tuple[int, float, float]:
        """(requests, error rate, p99 latency ms)."""
        with self.lock:
            items = list(self.items)
        if not items:
            return 0, 0.0, 0.0
        errors = sum(1 for ok, _ in items if not ok)
        lat = sorted(ms for ok, ms in items if ok) or [0.0]
        return len(items), errors / len(items), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def bucket(key: str, deployment: str) -> float:
    """A stable number in [0, 100) for ``key`` (the same on every replica and every restart)."""
    digest = hashlib.blake2b(f"{deployment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


class Router:
    """Serves one deployment (see the module docstring)."""

    def __init__(self, name: str, *, log_predictions: bool = True, refresh_s: float = 1.0, shadow_queue: int = 10_000,
                 shadow_batch_rows: int = 512, shadow_wait_ms: float = 20.0,
                 missing_features: str = "default", defaults: dict[str, Any] | None = None) -> None:
        self.name = name
        self.log_predictions = log_predictions
        self.refresh_s = refresh_s
        self.missing_features = missing_features
        self.defaults = dict(defaults or {})
        self._lock = threading.Lock()
        self._predictors: dict[tuple[str, str, str], Any] = {}
        self._windows: dict[str, _Window] = {}
        self.shadow_dropped = 0
        self.shadow_failed = 0
        self.shadow_batch_rows = max(1, int(shadow_batch_rows))
        self.shadow_wait = max(0.0, float(shadow_wait_ms)) / 1000
        self._shadow_q: queue.Queue[_ShadowCall | None] = queue.Queue(maxsize=shadow_queue)
        self._shadow_thread: threading.Thread | None = None
        self._checked = 0.0
        self.deployment: Deployment = get_deployment(name)
        self._build(self.deployment.spec)

    # ---- routes ---------------------------------------------------------------
    def _predictor(self, route: Route) -> Any:
        from keel.serving.predictor import Predictor

        key = (route.name, route.model, route.ref)
        p = self._predictors.get(key)
        if p is None:
            p = Predictor(route.uri, log=self.log_predictions, route=route.name, missing_features=self.missing_features,
                          defaults=self.defaults)
            self._predictors[key] = p
        return p

    def _build(self, spec: DeploymentSpec) -> None:
        predictors = {r.name: self._predictor(r) for r in spec.routes}
        keep = {(r.name, r.model, r.ref) for r in spec.routes}
        self._predictors = {k: v for k, v in self._predictors.items() if k in keep}
        answering = spec.answering
        total = sum(r.weight for r in answering) or 1.0
        edges, acc = [], 0.0
        for r in answering:
            acc += r.weight / total * 100
            edges.append((acc, r))
        with self._lock:
            self.spec = spec
            self.routes = predictors
            self._edges = edges
            self._shadow = next((r for r in spec.routes if r.shadow), None)
            for r in spec.routes:
                self._windows.setdefault(r.name, _Window())
        if self._shadow is not None and self._shadow_thread is None:
            self._shadow_thread = threading.Thread(target=self._shadow_loop, name="keel-shadow", daemon=True)
            self._shadow_thread.start()

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the deployment; True when it changed (and the routes were rebuilt)."""
        now = time.monotonic()
        if not force and now - self._checked < self.refresh_s:
            return False
        self._checked = now
        current = get_deployment(self.name)
        if current.revision == self.deployment.revision:
            for p in self.routes.values():  # an alias that moved is followed by the predictor itself
                p.reload()
            return False
        self._build(current.spec)
        self.deployment = current
        log.info("deployment %s: revision %d (%s)", self.name, current.revision, current.spec.describe())
        return True

    def pick(self, sticky_key: Any = None) -> Route:
        """The answering route for a request (by the sticky key's hash, or at random)."""
        with self._lock:
            edges = self._edges
        point = bucket(str(sticky_key), self.name) if sticky_key is not None else random.random() * 100
        for edge, route in edges:
            if point < edge:
                return route
        return edges[-1][1]

    def sticky_key(self, data: Any, headers: Any = None) -> Any:
        """The value the deployment sticks by, from the request's first row or its headers (None: not sticky)."""
        by = self.spec.sticky_by
        if not by:
            return None
        if by.startswith("header:"):
            return None if headers is None else headers.get(by[len("header:"):])
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return data[0].get(by)
        if isinstance(data, dict):
            col = data.get(by)
            return col[0] if isinstance(col, list) and col else col
        return None

    # ---- predicting -------------------------------------------------------------
    def predict(self, data: Any, *, request_id: str | None = None, headers: Any = None, sticky_key: Any = None,
                batch_id: str | None = None) -> Answer:
        """Answer with the picked route; the shadow (if any) scores the same input off this call."""
        from keel.serving.validation import columns_of

        key = sticky_key if sticky_key is not None else self.sticky_key(data, headers)
        columns, n = columns_of(data)
        return self.predict_columns(columns, n, request_id=request_id, sticky_key=key, batch_id=batch_id)

    def predict_columns(self, columns: Mapping[str, Any], n: int, *, request_id: str | None = None, row_ids: list[str] | None = None,
                        sticky_key: Any = None, start: float | None = None, batch_id: str | None = None) -> Answer:
        """``predict`` on columns already split out of a payload (the model server calls this); ``batch_id`` tags both routes' log rows."""
        self.refresh()
        rid = request_id or uuid.uuid4().hex
        if sticky_key is None and self.spec.sticky_by and not self.spec.sticky_by.startswith("header:"):
            col = columns.get(self.spec.sticky_by)
            sticky_key = None if col is None or len(col) == 0 else col[0]
        route = self.pick(sticky_key)
        predictor = self.routes[route.name]
        t0 = time.perf_counter()
        try:
            result = predictor.predict_columns(columns, n, request_id=rid, row_ids=row_ids, batch_id=batch_id, start=start)
        except Exception as exc:
            from keel.errors import KeelError

            if not isinstance(exc, KeelError) or exc.http_status >= 500:  # bad input is the caller's, not the route's
                self._observe(route, False, (time.perf_counter() - t0) * 1000)
            raise
        self._observe(route, True, (time.perf_counter() - t0) * 1000)
        if self._shadow is not None:
            try:
                self._shadow_q.put_nowait(_ShadowCall(self.routes[self._shadow.name], columns, n, rid, row_ids, batch_id))
            except queue.Full:
                self.shadow_dropped += 1
        return Answer(route.name, result.model, result.version, result)

    def _shadow_loop(self) -> None:
        stop = False
        while not stop:
            item = self._shadow_q.get()
            if item is None:
                self._shadow_q.task_done()
                return
            if self.shadow_wait and self._shadow_q.qsize() * item.n < self.shadow_batch_rows:
                # let the next requests gather while this thread sleeps: one wake-up and one model call per batch (a worker
                # waiting on the queue would be woken, and take the GIL, once per request)
                time.sleep(self.shadow_wait)
            calls, rows = [item], item.n
            while rows < self.shadow_batch_rows:
                try:
                    nxt = self._shadow_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    self._shadow_q.task_done()
                    break
                calls.append(nxt)
                rows += nxt.n
            groups: dict[tuple[int, str | None, tuple[str, ...]], list[_ShadowCall]] = {}
            for c in calls:
                groups.setdefault((id(c.predictor), c.batch_id, tuple(c.columns)), []).append(c)
            for group in groups.values():
                self._score_shadow(group)
            for _ in calls:
                self._shadow_q.task_done()

    def _score_shadow(self, calls: list[_ShadowCall]) -> None:
        """One call for requests with the same columns; on a failure, each request alone (one bad request fails only itself)."""
        from keel.serving.batching import _concat

        first = calls[0]
        window = self._windows[self._shadow.name] if self._shadow is not None else None
        start = time.perf_counter()
        try:
            if len(calls) == 1:
                first.predictor.predict_columns(first.columns, first.n, request_id=first.request_id, row_ids=first.row_ids, batch_id=first.batch_id)
            else:
                columns = {k: _concat([c.columns[k] for c in calls]) for k in first.columns}
                ids = [i for c in calls for i in c.ids()]
                first.predictor.predict_columns(columns, len(ids), request_id=first.request_id, row_ids=ids, batch_id=first.batch_id)
        except Exception:
            if len(calls) > 1:
                for c in calls:
                    self._score_shadow([c])
                return
            self.shadow_failed += 1
            if window is not None:
                window.add(False, (time.perf_counter() - start) * 1000)
            return
        if window is not None:
            ms = (time.perf_counter() - start) * 1000
            for _ in calls:
                window.add(True, ms)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queued shadow calls are done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._shadow_q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _observe(self, route: Route, ok: bool, latency_ms: float) -> None:
        w = self._windows.setdefault(route.name, _Window())
        w.add(ok, latency_ms)
        obj = self.spec.objectives
        if route.name != "canary" or (obj.max_error_rate is None and obj.max_p99_ms is None):
            return
        n, err, p99 = w.summary()
        if n < obj.min_requests:
            return
        breach = None
        if obj.max_error_rate is not None and err > obj.max_error_rate:
            breach = {"objective": "max_error_rate", "limit": obj.max_error_rate, "value": round(err, 4), "requests": n}
        elif obj.max_p99_ms is not None and p99 > obj.max_p99_ms:
            breach = {"objective": "max_p99_ms", "limit": obj.max_p99_ms, "value": round(p99, 2), "requests": n}
        if breach is None:
            return
        with self._lock:
            if all(r.name != "canary" for _, r in self._edges):
                return  # already rolled back by another request
            self._edges = [(100.0, self.spec.champion)]
        reason = f"canary breached {breach['objective']}: {breach['value']} > {breach['limit']} over {n} requests"
        log.warning("deployment %s: %s; rolling back to the champion", self.name, reason)
        try:
            self.deployment = end_challenger(self.name, detail=breach, reason=reason)
            self._build(self.deployment.spec)
        except Exception as exc:  # another replica rolled it back first: follow the stored spec
            log.info("deployment %s: %s", self.name, exc)
            self.refresh(force=True)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deployment": self.name, "revision": self.deployment.revision, "mode": self.spec.mode,
                               "shadow_dropped": self.shadow_dropped, "shadow_failed": self.shadow_failed, "routes": {}}
        for name, w in self._windows.items():
            n, err, p99 = w.summary()
            out["routes"][name] = {"requests": n, "error_rate": err, "p99_ms": p99}
        return out

    def close(self) -> None:
        if self._shadow_thread is not None:
            self.drain()
            self._shadow_q.put(None)
            self._shadow_thread.join(5)
            self._shadow_thread = None
