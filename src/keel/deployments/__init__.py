"""Deployments: declared shadow, canary and A/B deployments, their routing and comparison, and stream consumers."""

from __future__ import annotations

from keel.deployments import gates as gates  # registers the registry's "live" gate kind
from keel.deployments.stream import StreamConsumer, StreamOptions, StreamStats

__all__ = ["StreamConsumer", "StreamOptions", "StreamStats"]
