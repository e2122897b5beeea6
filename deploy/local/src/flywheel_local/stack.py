"""The local stack of the demo: the devkit's launcher (:class:`flywheel_devkit.stack.LocalStack`,
the one place that knows the whole-stack wiring) and the demo's broker."""

from __future__ import annotations

from pathlib import Path

from flywheel_devkit.stack import SERVICES, LocalStack
from flywheel_devkit.testing.kafka import BrokerHandle, acquire_broker

__all__ = ["SERVICES", "LocalStack", "broker"]


def broker(state_dir: Path) -> BrokerHandle:
    """The broker of the local stack: ``$FLYWHEEL_KAFKA_BOOTSTRAP`` if set, else a container
    where a Docker engine answers, else a local Apache Kafka broker (data under ``state_dir``)."""
    return acquire_broker(data_dir=state_dir / "kafka")
