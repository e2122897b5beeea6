"""Kafka transport of the registry: the ``rollout.verdict`` handler and the facts handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, OperationalError

from flywheel_shared.events import DriftDetected, Event, RetrainRequested, RolloutVerdict
from flywheel_shared.kafka.consumer import Delivery, TransientError

from .store import RegistryStore

log = logging.getLogger(__name__)


class VerdictHandler:
    """Applies each ``rollout.verdict`` to the aliases (idempotent by ``event_id``)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        """Consumer handler: a database outage is transient (retried, never dead-lettered)."""
        if not isinstance(event, RolloutVerdict):
            log.warning(
                "ignoring an event that is not a verdict",
                extra={"type": getattr(event, "type", "?")},
            )
            return
        with _database_outage_is_transient():
            await asyncio.to_thread(self.store.apply_verdict, event)


class FactsHandler:
    """Keeps ``drift.detected``, ``rollout.verdict`` and ``retrain.requested`` for the model
    cards (idempotent by ``event_id``); a consumer group of its own, beside the verdicts'."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        """Consumer handler: a database outage is transient (retried, never dead-lettered)."""
        if not isinstance(event, DriftDetected | RolloutVerdict | RetrainRequested):
            log.warning(
                "ignoring an event that is no version fact",
                extra={"type": getattr(event, "type", "?")},
            )
            return
        with _database_outage_is_transient():
            await asyncio.to_thread(self.store.record_fact, event)


@contextmanager
def _database_outage_is_transient() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise TransientError(f"database unavailable: {exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TransientError(f"database connection lost: {exc}") from exc
        raise
