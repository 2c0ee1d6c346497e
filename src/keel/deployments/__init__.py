"""Deployments: declared shadow, canary and A/B deployments, their routing and comparison, stream consumers, and the
model servers ``keel deploy start`` asks for and ``keel worker`` supervises."""

from __future__ import annotations

from keel.deployments import gates as gates  # registers the registry's "live" gate kind
from keel.deployments.processes import Supervisor
from keel.deployments.services import (
           Replica,
           Service,
           get_service,
           list_services,
           start_service,
           stop_service,
)
from keel.deployments.stream import StreamConsumer, StreamOptions, StreamStats

__all__ = ["Replica", "Service", "StreamConsumer", "StreamOptions", "StreamStats", "Supervisor", "get_service", "list_services",
           "start_service", "stop_service"]
