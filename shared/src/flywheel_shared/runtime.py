"""The lifecycle every service shares: connect to Kafka in the background (retrying until it
answers), run consumers, report readiness, and on shutdown drain consumers and flush.

A service subclasses :class:`KafkaRuntime`, names its topics, builds its consumers, and
passes ``runtime.lifespan`` to FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaError

from .kafka.admin import ensure_topics
from .kafka.consumer import EventConsumer
from .kafka.producer import EventProducer
from .settings import KafkaSettings

log = logging.getLogger(__name__)


class KafkaRuntime:
    """A service's Kafka producer and consumers, with start-up retries and a clean shutdown."""

    service: str = "service"
    topics: Sequence[str] = ()
    """Logical topics this service creates at start-up if missing."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.producer = EventProducer(kafka, client_id=f"flywheel-{self.service}")
        self.consumers: list[EventConsumer] = []
        self.connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[Any]] = []

    def make_consumers(self) -> list[EventConsumer]:
        """The consumers to run once Kafka answers (override)."""
        return []

    async def on_start(self) -> None:
        """Called at start-up, before connecting to Kafka (override; must not block long)."""

    async def on_connected(self) -> None:
        """Called after the producer started and before consumers start (override)."""

    async def on_shutdown(self) -> None:
        """Called after consumers stopped, before the producer flushes (override)."""

    def spawn(self, coro: Any, name: str) -> None:
        """Run a background task for the life of the service (cancelled at shutdown)."""
        self._background.append(asyncio.create_task(coro, name=name))

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await ensure_topics(self.kafka, self.topics)
                if not self.producer.started:
                    await self.producer.start()
                await self.on_connected()
                for consumer in self.make_consumers():
                    await consumer.start()
                    self.consumers.append(consumer)
                self.connected.set()
                log.info("connected to kafka", extra={"bootstrap": self.kafka.bootstrap})
                return
            except (KafkaError, OSError) as exc:
                for consumer in self.consumers:
                    await consumer.stop()
                self.consumers.clear()
                log.warning(
                    "kafka not reachable yet, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    @asynccontextmanager
    async def lifespan(self, _: object) -> AsyncIterator[None]:
        """Start connecting at start-up; drain consumers and flush the producer at shutdown."""
        await self.on_start()
        self._connect_task = asyncio.create_task(self._connect(), name="kafka-connect")
        try:
            yield
        finally:
            self._connect_task.cancel()
            for task in self._background:
                task.cancel()
            await asyncio.gather(self._connect_task, *self._background, return_exceptions=True)
            for consumer in self.consumers:
                await consumer.stop()
            await self.on_shutdown()
            await self.producer.stop()
            log.info(f"{self.service} stopped")

    async def kafka_ready(self) -> str | None:
        """Readiness check of the Kafka link."""
        if not self.connected.is_set():
            return "connecting to kafka"
        for consumer in self.consumers:
            problem = consumer.alive()
            if problem:
                return problem
        return await self.producer.ping()
