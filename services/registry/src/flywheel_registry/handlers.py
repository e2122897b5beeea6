"""Kafka transport of the registry: the ``rollout.verdict`` handler."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import DBAPIError, OperationalError

from flywheel_shared.events import Event, RolloutVerdict
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
        try:
            await asyncio.to_thread(self.store.apply_verdict, event)
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {exc}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TransientError(f"database connection lost: {exc}") from exc
            raise
