"""Transition events: in-process subscribers, and polling for other processes.

``subscribe(fn)`` calls ``fn(event)`` after each transition commits (register,
promote, rollback, alias, request, approve, reject). A failing subscriber is
logged and never undoes or blocks the transition. Another process (a serving
replica) polls :func:`poll` with the last event id it has seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
log = logging.getLogger("keel.registry")
_subscribers: list[Callable[[Event], Any]] = []
_lock = threading.Lock()


def subscribe(fn: Callable[[Event], Any]) -> Callable[[], None]:
    """Call ``fn(event)`` after every transition; returns a function that unsubscribes."""
    with _lock:
        _subscribers.append(fn)

    def unsubscribe() -> None:
        with _lock:
            if fn in _subscribers:
                _subscribers.remove(fn)

    return unsubscribe


def emit(event: Event) -> None:
    with _lock:
        targets = list(_subscribers)
    for fn in targets:
        try:
            fn(event)
        except Exception:
            log.exception("registry event subscriber %r failed on event %s", fn, event.get("id"))


def poll(since_id: int = 0, model: str | None = None) -> list[Event]:
    """Events after ``since_id`` (all processes), oldest first."""
    from keel.registry.audit import history

    return history(model, since_id=since_id)
