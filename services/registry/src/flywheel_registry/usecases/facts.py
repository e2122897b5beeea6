"""Facts about versions from the monitor's events, kept for the model cards."""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from sqlalchemy.exc import IntegrityError

from flywheel_shared.events import DriftDetected, Event, RetrainRequested, RolloutVerdict

from ..db import FactRow, utcnow
from ..metrics import FACTS
from ..repository import Repository
from ..transactions import Database

log = logging.getLogger(__name__)
FactEvent: TypeAlias = DriftDetected | RolloutVerdict | RetrainRequested
KINDS: dict[type[Event], str] = {
    DriftDetected: "drift",
    RolloutVerdict: "verdict",
    RetrainRequested: "retrain",
}
# The event's own fields, not the envelope's.
_ENVELOPE = {"event_id", "occurred_at", "correlation_id", "schema_version", "type", "model"}


def fact_row(event: FactEvent) -> FactRow:
    """The row recording ``event``."""
    body: dict[str, Any] = event.model_dump(mode="json", exclude=_ENVELOPE)
    version = body.pop("version", None)
    return FactRow(
        event_id=str(event.event_id),
        kind=KINDS[type(event)],
        model=event.model,
        version=version,
        at=event.occurred_at,
        body=body,
        recorded_at=utcnow(),
    )


def record_fact(db: Database, event: FactEvent) -> str:
    """Keep ``event`` for the model card of its version, once per event_id; returns the
    outcome (``recorded``, ``duplicate``, ``unknown_model``)."""
    event_id = str(event.event_id)
    try:
        with db.write() as tx:
            repo = Repository(tx.session)
            if repo.fact(event_id) is not None:
                outcome = "duplicate"
            elif repo.model(event.model) is None:
                outcome = "unknown_model"
            else:
                repo.add(fact_row(event))
                repo.flush()
                outcome = "recorded"
    except IntegrityError:
        # A concurrent delivery of the same event won the insert.
        with db.read() as session:
            if Repository(session).fact(event_id) is None:
                raise
        outcome = "duplicate"
    kind = KINDS[type(event)]
    FACTS.labels(kind, outcome).inc()
    log.info(
        "version fact handled",
        extra={"kind": kind, "model": event.model, "outcome": outcome, "event_id": event_id},
    )
    return outcome
