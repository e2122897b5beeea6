"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

Rows are read oldest first, published with the shared ``EventProducer`` (which returns only
after the broker acknowledged every one) and then marked published. A crash between the
acknowledgement and the mark republishes the same events with the same ``event_id`` on the
next start; consumers drop such duplicates. A failed publish is retried with backoff for as
long as it takes: nothing in the outbox is ever dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Protocol

from flywheel_shared.events import Event, parse_event
from flywheel_shared.tasks import Supervised

from .metrics import OUTBOX_PENDING, RELAY_FAILURES, RELAY_PUBLISHED
from .outbox import PendingEvent

log = logging.getLogger(__name__)


class OutboxPort(Protocol):
    """What the relay needs from the store."""

    def pending_events(self, limit: int) -> list[PendingEvent]:
        """Unpublished rows, oldest first."""
        ...

    def mark_published(self, ids: list[int]) -> None:
        """Mark rows published."""
        ...

    def pending_count(self) -> int:
        """Number of unpublished rows."""
        ...


class PublisherPort(Protocol):
    """What the relay needs from the producer."""

    async def publish_all(self, events: list[Event]) -> None:
        """Publish and wait for every acknowledgement."""
        ...


class OutboxRelay:
    """Background task moving the outbox to Kafka; ``enabled=False`` only counts the backlog."""

    def __init__(
        self,
        store: OutboxPort,
        producer: PublisherPort,
        *,
        enabled: bool = True,
        poll_s: float = 1.0,
        batch: int = 100,
        max_backoff_s: float = 30.0,
        crash_after_publish: bool = False,
    ) -> None:
        self.store = store
        self.crash_after_publish = crash_after_publish
        self.producer = producer
        self.enabled = enabled
        self.batch = batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task = Supervised(
            "outbox-relay", self._round, every_s=poll_s, max_backoff_s=max_backoff_s
        )

    def start(self) -> None:
        """Start the loop in a background task (on the running event loop)."""
        self._loop = asyncio.get_running_loop()
        self._task.start()

    async def stop(self) -> None:
        """Finish the round in hand and stop."""
        await self._task.stop(finish_iteration=True)

    def notify(self) -> None:
        """Wake the relay now (safe from any thread): a transaction wrote events."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._task.wake)
        except RuntimeError:  # loop closing during shutdown; the next start publishes
            pass

    def alive(self) -> str | None:
        """Readiness: None while the loop runs."""
        problem = self._task.alive()
        return f"outbox relay {problem}" if problem else None

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        rows = await asyncio.to_thread(self.store.pending_events, self.batch)
        if not rows:
            return 0
        events = [parse_event(r.payload) for r in rows]
        await self.producer.publish_all(events)
        if self.crash_after_publish:
            # Fault injection for the tests: die in the window where Kafka has acknowledged
            # the events and the outbox does not know it yet.
            log.critical("fault: crashing after publish, before marking the outbox")
            os._exit(137)
        await asyncio.to_thread(self.store.mark_published, [r.id for r in rows])
        RELAY_PUBLISHED.inc(len(rows))
        log.info(
            "outbox published",
            extra={"events": len(rows), "first_id": rows[0].id, "last_id": rows[-1].id},
        )
        return len(rows)

    async def _round(self) -> None:
        """One batch (Supervised retries a failed one with backoff, in the same order)."""
        try:
            published = await self.publish_pending() if self.enabled else 0
            OUTBOX_PENDING.set(await asyncio.to_thread(self.store.pending_count))
        except Exception:
            RELAY_FAILURES.inc()
            raise
        if published >= self.batch:
            self._task.wake()  # more waiting: no pause
