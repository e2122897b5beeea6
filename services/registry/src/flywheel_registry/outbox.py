"""The transactional outbox: events are written in the transaction of the change they
announce, and ``relay.py`` publishes them. A crash never leaves a change without its event,
or an event without its change."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid4

from sqlalchemy import func, select, update

from flywheel_shared.events import Event, derived_id

from .db import OutboxRow, utcnow
from .transactions import Database, Tx


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row not yet published."""

    id: int
    event_id: str
    payload: str


def emit(tx: Tx, event: Event) -> None:
    """Write ``event`` to the outbox in ``tx``; the relay is woken after the commit."""
    tx.session.add(
        OutboxRow(
            event_id=str(event.event_id),
            topic=event.topic,
            key=event.key(),
            payload=event.model_dump_json(),
            created_at=utcnow(),
        )
    )
    if tx.notify is not None and tx.notify not in tx.on_commit:
        tx.after_commit(tx.notify)


def correlation(value: str | None) -> UUID:
    """An event's correlation id from a version's (stored as text, not always a UUID)."""
    if not value:
        return uuid4()
    try:
        return UUID(value)
    except ValueError:
        return derived_id("correlation", value)


def pending_events(db: Database, limit: int) -> list[PendingEvent]:
    """Unpublished outbox rows, oldest first."""
    with db.read() as session:
        rows = session.execute(
            select(OutboxRow.id, OutboxRow.event_id, OutboxRow.payload)
            .where(OutboxRow.published_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        return [PendingEvent(r.id, r.event_id, r.payload) for r in rows]


def mark_published(db: Database, ids: list[int]) -> None:
    """Record that Kafka acknowledged these outbox rows."""
    with db.write() as tx:
        tx.session.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids), OutboxRow.published_at.is_(None))
            .values(published_at=utcnow())
        )


def pending_count(db: Database) -> int:
    """How many outbox rows wait to be published."""
    with db.read() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
        )
        return int(count or 0)
