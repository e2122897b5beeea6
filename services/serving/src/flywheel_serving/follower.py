"""Every worker process follows ``model.alias.changed`` on its own.

A consumer group would share the topic's partitions among the workers and replicas, but
every one of them must see every alias move. So each process reads all partitions without
a group, from the end of the topic at the time it connects (older moves are already in the
registry, which the manager reads right after the follower is positioned), and commits
nothing.

A record that is not an alias event is dead-lettered with the reason, like every consumer
does. Every worker of every replica reads it, so the letter's id is derived from the record's
place: the copies are one letter to a reader that dedupes on ``event_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from flywheel_shared.events import ModelAliasChanged, derived_id
from flywheel_shared.kafka.consumer import Poison, dead_letter, decode
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.tasks import Supervised
from flywheel_shared.topics import TopicNamer

log = logging.getLogger(__name__)

#: The ``consumer_group`` of serving's dead letters (the follower reads without a group).
DEADLETTER_GROUP = "flywheel-serving"


class AliasFollower:
    """Calls ``on_event`` for each alias event, and ``on_positioned`` once it reads live."""

    def __init__(
        self,
        kafka: KafkaSettings,
        on_event: Callable[[ModelAliasChanged], None],
        on_positioned: Callable[[], None],
        producer: EventProducer,
    ) -> None:
        self.kafka = kafka
        self.names = TopicNamer(kafka.topic_prefix)
        self.topic = self.names("model.alias.changed")
        self.producer = producer
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
            unread = {tp: records[0].offset for tp, records in batch.items()}
            for tp, records in batch.items():
                for rec in records:
                    try:
                        event = decode(rec.value or b"", self.topic, self.names)
                    except Poison as exc:
                        try:
                            await self._dead_letter(rec, str(exc))
                        except BaseException:
                            # Read again when the follower restarts, not lost with the letter.
                            for part, offset in unread.items():
                                self._consumer.seek(part, offset)
                            raise
                    else:
                        assert isinstance(event, ModelAliasChanged)
                        self.events += 1
                        self.on_event(event)
                    unread[tp] = rec.offset + 1

    async def _dead_letter(self, rec: ConsumerRecord[bytes, bytes], reason: str) -> None:
        letter = dead_letter(
            group=DEADLETTER_GROUP,
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key,
            value=rec.value or b"",
            error=reason,
            attempts=1,
            event_id=derived_id(
                "deadletter", DEADLETTER_GROUP, rec.topic, rec.partition, rec.offset
            ),
        )
        await self.producer.publish(letter)
        log.warning(
            "record dead-lettered",
            extra={"topic": rec.topic, "offset": rec.offset, "error": reason[:300]},
        )
