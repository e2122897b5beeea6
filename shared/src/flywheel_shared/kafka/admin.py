"""Explicit topic creation at start-up (auto-creation stays off on the broker)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from ..settings import KafkaSettings
from ..topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)
_TOPIC_ALREADY_EXISTS = 36


def topic_configs(settings: KafkaSettings, spec: TopicSpec) -> dict[str, str]:
    """A topic's broker configs: its spec's, with ``settings.topic_retention_ms`` over them."""
    ms = settings.topic_retention_ms.get(spec.name)
    return spec.configs if ms is None else {**spec.configs, "retention.ms": str(ms)}


async def ensure_topics(settings: KafkaSettings, names: Iterable[str] | None = None) -> list[str]:
    """Create the logical topics ``names`` (default: all) if missing; return those created.

    A topic that exists already keeps its configs (change them with Kafka's own tools)."""
    specs = [TOPICS[n] for n in (names if names is not None else TOPICS)]
    admin = AIOKafkaAdminClient(**settings.client_kwargs(), client_id="flywheel-admin")
    await admin.start()
    try:
        new = [
            NewTopic(
                name=s.full_name(settings.topic_prefix),
                num_partitions=s.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=topic_configs(settings, s),
            )
            for s in specs
        ]
        response = await admin.create_topics(new)
        created = []
        for topic, code, *_ in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise for_code(code)(f"cannot create topic {topic}")
        if created:
            log.info("created topics", extra={"topics": created})
        return created
    finally:
        await admin.close()
