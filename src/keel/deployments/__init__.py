"""Deployments: how models meet traffic — stream consumers now; shadow, canary and A/B routing next."""

from __future__ import annotations

from keel.deployments.stream import StreamConsumer, StreamOptions, StreamStats

__all__ = ["StreamConsumer", "StreamOptions", "StreamStats"]
