"""Event producer: acks=all, idempotent, batched and compressed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from ..events import Event, encode_event
from ..metrics import KAFKA_PRODUCE_ERRORS, KAFKA_PRODUCED
from ..settings import KafkaSettings
from ..topics import TopicNamer

log = logging.getLogger(__name__)


class EventProducer:
    """Publishes events to their topics; ``publish`` returns once Kafka has acknowledged."""

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        self.settings = settings
        self.topics = TopicNamer(settings.topic_prefix)
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self.started = False

    async def start(self) -> None:
        """Connect; raises ``KafkaConnectionError`` when no broker answers (call again later)."""
        settings = self.settings
        producer = AIOKafkaProducer(
            **settings.client_kwargs(),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            compression_type=None if settings.compression == "none" else settings.compression,
            max_request_size=settings.max_request_bytes,
            max_batch_size=1024 * 1024,
            request_timeout_ms=30_000,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self.started = True

    async def stop(self) -> None:
        """Flush what is buffered and disconnect."""
        if self._producer is not None:
            self.started = False
            producer, self._producer = self._producer, None
            await producer.stop()

    async def ping(self) -> str | None:
        """Readiness: None when a broker answers a metadata request, else the reason."""
        if self._producer is None:
            return "producer not connected"
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 5)
        except Exception as exc:
            return f"kafka unreachable: {type(exc).__name__}"
        return None

    async def publish(self, event: Event) -> None:
        """Send one event and wait for the broker's acknowledgement."""
        await self.publish_all([event])

    async def publish_all(self, events: Sequence[Event]) -> None:
        """Send events (pipelined) and wait until every one is acknowledged."""
        futures = []
        for event in events:
            topic = self.topics.for_event(event)
            futures.append(
                (
                    topic,
                    await self.send_bytes(
                        topic,
                        encode_event(event),
                        key=event.key().encode(),
                        headers=[
                            ("type", event.type.encode()),  # type: ignore[attr-defined]
                            ("correlation_id", str(event.correlation_id).encode()),
                        ],
                        wait=False,
                    ),
                )
            )
        for topic, fut in futures:
            try:
                await fut
            except Exception:
                KAFKA_PRODUCE_ERRORS.labels(topic).inc()
                raise
            KAFKA_PRODUCED.labels(topic).inc()

    async def send_bytes(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        wait: bool = True,
    ) -> asyncio.Future[object]:
        """Low-level send to a full topic name; with ``wait`` the ack is awaited here."""
        if self._producer is None:
            raise KafkaConnectionError("producer is not connected to Kafka")
        fut: asyncio.Future[object] = await self._producer.send(
            topic, value, key=key, headers=headers
        )
        if wait:
            await fut
        return fut
