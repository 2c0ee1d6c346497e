"""Hot reload: when a served alias moves, load the new version beside the old one and swap it in.

The watcher reacts at once to transitions made in this process (registry event
subscribers) and polls the registry's event log every ``interval`` seconds for
transitions made elsewhere (the CLI, a pipeline, another replica). The new
version is loaded in the watcher's thread while requests keep being answered by
the old one; the swap is one reference assignment, so no request fails or waits
on a load. A load that fails is logged and retried at the next event or poll;
the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.serving.predictor import Predictor

log = logging.getLogger("keel.serving")


class ReloadWatcher:
    """Keeps the predictors of alias URIs (``models:/churn@production``) on the alias's version."""

    def __init__(self, predictors: Sequence[Predictor], *, interval: float = 1.0, on_swap: Callable[[Predictor], Any] | None = None) -> None:
        from keel.models.loader import parse_uri

        self.watched = [p for p in predictors if "alias" in parse_uri(p.uri)[1]]
        self.interval = interval
        self.on_swap = on_swap
        self.swaps = 0
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._since = 0

    def start(self) -> None:
        if not self.watched or self._thread is not None:
            return
        from keel.registry import events

        try:
            latest = events.poll(0)
            self._since = int(latest[-1]["id"]) if latest else 0
        except Exception as exc:
            log.warning("hot reload: cannot read the registry's events (%s); polling from the start", exc)
        self._unsubscribe = events.subscribe(lambda _event: self._wake.set())
        self._thread = threading.Thread(target=self._loop, name="keel-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from keel.registry import events

        names = {p.name for p in self.watched}
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                fresh = events.poll(self._since)
                new = [e for e in fresh if e.get("model") in names]
                if fresh:
                    self._since = int(fresh[-1]["id"])
            except Exception as exc:
                log.warning("hot reload: cannot poll the registry's events: %s", exc)
                continue
            if new:
                self.check()

    def check(self) -> int:
        """Reload every watched predictor whose alias moved; returns how many swapped."""
        swapped = 0
        for p in self.watched:
            before = p.version
            try:
                if p.reload():
                    swapped += 1
                    self.swaps += 1
                    log.info("hot reload: %s now serves v%s (was v%s)", p.uri, p.version, before)
                    if self.on_swap is not None:
                        self.on_swap(p)
            except Exception as exc:  # the old version keeps serving
                self.failures += 1
                log.error("hot reload of %s failed (still serving v%s): %s", p.uri, before, exc)
        return swapped
