"""Alias moves: each ``model.alias.changed`` makes the registry cache re-read that model.

The monitor takes the aliases (a canary's weight gives its rollout step) from the registry,
never from the event, so an event only says "look again". It is applied once per ``event_id``:
the registry's outbox publishes at least once (a relay that died after Kafka acknowledged and
before the outbox knew sends the move again, same id), and faust's offsets do not see such a
copy, which sits at a later offset. The ids are remembered in memory: after a restart or a
rebalance a copy is applied again, which only costs one more registry read.
"""

from __future__ import annotations

import logging

from flywheel_shared.events import ModelAliasChanged
from flywheel_shared.kafka.consumer import MemoryProcessedIds
from flywheel_shared.metrics import KAFKA_DUPLICATES
from flywheel_shared.regcache import RegistryCache

from .metrics import ALIAS_APPLIED

log = logging.getLogger(__name__)


class AliasChanges:
    """Applies alias events to the registry cache, skipping redelivered event ids."""

    def __init__(
        self, cache: RegistryCache, *, group: str, topic: str, capacity: int = 10_000
    ) -> None:
        self.cache = cache
        self.group = group
        self.topic = topic
        self._ids = MemoryProcessedIds(capacity)

    def apply(self, event: ModelAliasChanged) -> bool:
        """Mark the model's cached copies outdated, unless this event id was applied; True
        if applied."""
        if self._ids.seen(event.event_id):
            KAFKA_DUPLICATES.labels(self.group, self.topic).inc()
            log.info(
                "alias event redelivered, skipped",
                extra={"model": event.model, "alias": event.alias, "event_id": str(event.event_id)},
            )
            return False
        self.cache.on_event(event)
        self._ids.mark(event.event_id)
        ALIAS_APPLIED.labels(event.model, event.alias).inc()
        return True
