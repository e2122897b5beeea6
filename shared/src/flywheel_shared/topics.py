"""The one place topic names are made: ``{prefix}.{name}.v{N}``.

Each logical topic declares its version, partition count and broker configs here; services
create the topics they use explicitly at start-up (``kafka.admin.ensure_topics``) and never
rely on auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import EVENT_CLASSES, Event

_DAY_MS = 24 * 3600 * 1000
# Data events carry batches of records; allow large messages on those topics.
_BIG = {"max.message.bytes": str(16 * 1024 * 1024)}


@dataclass(frozen=True)
class TopicSpec:
    """A logical topic: its name, schema version, partitions and broker configs."""

    name: str
    version: int = 1
    partitions: int = 3
    configs: dict[str, str] = field(default_factory=dict)

    def full_name(self, prefix: str) -> str:
        """The broker-side name, ``{prefix}.{name}.v{version}``."""
        return f"{prefix}.{self.name}.v{self.version}"


TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        TopicSpec("data.raw", partitions=6, configs={**_BIG, "retention.ms": str(7 * _DAY_MS)}),
        TopicSpec(
            "data.validated", partitions=6, configs={**_BIG, "retention.ms": str(7 * _DAY_MS)}
        ),
        TopicSpec(
            "data.rejected", partitions=3, configs={**_BIG, "retention.ms": str(30 * _DAY_MS)}
        ),
        TopicSpec("data.batch.committed", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("data.batch.quarantined", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("data.audit", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("data.labels", partitions=6, configs=_BIG),
        TopicSpec("training.started", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("training.completed", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("training.failed", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("model.version.registered", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("model.alias.changed", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("predictions", partitions=6, configs={**_BIG, "retention.ms": str(7 * _DAY_MS)}),
        TopicSpec("drift.detected", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("retrain.requested", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("rollout.verdict", partitions=3, configs={"retention.ms": "-1"}),
        TopicSpec("deadletter", partitions=3, configs={**_BIG, "retention.ms": str(30 * _DAY_MS)}),
    )
}

assert {c.topic for c in EVENT_CLASSES} == set(TOPICS), "every event class needs a topic"


class TopicNamer:
    """Turns logical topic names (``data.raw``) into broker names (``flywheel.data.raw.v1``)."""

    def __init__(self, prefix: str = "flywheel") -> None:
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        """Full name of the logical topic ``name``."""
        return TOPICS[name].full_name(self.prefix)

    def for_event(self, event: Event | type[Event]) -> str:
        """Full name of the topic an event class is published on."""
        return self(event.topic)

    def logical(self, full_name: str) -> str:
        """Inverse of ``__call__``: ``flywheel.data.raw.v1`` → ``data.raw``."""
        for spec in TOPICS.values():
            if spec.full_name(self.prefix) == full_name:
                return spec.name
        raise KeyError(full_name)
