"""Every worker process follows ``model.alias.changed`` on its own.

A consumer group would share the topic's partitions among the workers and replicas, but
every one of them must see every alias move. So each process reads all partitions without
a group, from the end of the topic at the time it connects (older moves are already in the
registry, which the manager reads right after the follower is positioned), and commits
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from flywheel_shared.events import ModelAliasChanged, parse_event
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.tasks import Supervised
from flywheel_shared.topics import TopicNamer

log = logging.getLogger(__name__)


class AliasFollower:
    """Calls ``on_event`` for each alias event, and ``on_positioned`` once it reads live."""

    def __init__(
        self,
        kafka: KafkaSettings,
        on_event: Callable[[ModelAliasChanged], None],
        on_positioned: Callable[[], None],
    ) -> None:
        self.kafka = kafka
        self.topic = TopicNamer(kafka.topic_prefix)("model.alias.changed")
        self.on_event = on_event
        self.on_positioned = on_positioned
        self._consumer: AIOKafkaConsumer | None = None
        # A read that fails is asked again after a second (the client reconnects on its own).
        self._task = Supervised("alias-follower", self._follow, min_backoff_s=1, max_backoff_s=1)
        self.events = 0

    async def start(self) -> None:
        """Connect, take every partition at its end, then read in the background."""
        consumer = AIOKafkaConsumer(
            self.topic,
            **self.kafka.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            for tp in consumer.assignment():
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self.on_positioned()
        self._task.start()

    async def stop(self) -> None:
        """Stop reading."""
        await self._task.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def alive(self) -> str | None:
        """None while following, else why not."""
        if self._consumer is None:
            return "not connected to kafka yet"
        problem = self._task.alive()
        return f"alias follower {problem}" if problem else None

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    try:
                        event = parse_event(rec.value or b"")
                    except ValueError:
                        log.warning("undecodable alias event", extra={"offset": rec.offset})
                        continue
                    if isinstance(event, ModelAliasChanged):
                        self.events += 1
                        self.on_event(event)
