"""The lifecycle every service shares: connect to Kafka in the background (retrying until it
answers), run consumers, report readiness, and on shutdown drain consumers and flush.

A service subclasses :class:`KafkaRuntime`, names its topics, builds its consumers, and
passes ``runtime.lifespan`` to FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaConnectionError

from .kafka.admin import ensure_topics
from .kafka.consumer import EventConsumer
from .kafka.problems import KafkaUnavailable, connection_problem
from .kafka.producer import EventProducer
from .settings import KafkaSettings
from .tasks import Supervised

log = logging.getLogger(__name__)
_IDLE_S = 5.0


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
        self.kafka_problem: str | None = None
        """Why the last connection attempt failed (e.g. authentication), until one succeeds."""
        # Retried until Kafka answers: 0.5 s doubling to 10 s between attempts.
        self._connect = Supervised("kafka-connect", self._connect_once, every_s=_IDLE_S)
        self._background: list[Supervised] = []

    def make_consumers(self) -> list[EventConsumer]:
        """The consumers to run once Kafka answers (override)."""
        return []

    async def on_start(self) -> None:
        """Called at start-up, before connecting to Kafka (override; must not block long)."""

    async def on_connected(self) -> None:
        """Called after the producer started and before consumers start (override)."""

    async def on_shutdown(self) -> None:
        """Called after consumers stopped, before the producer flushes (override)."""

    def spawn(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        *,
        every_s: float | None = None,
        **options: Any,
    ) -> Supervised:
        """Run ``body`` as a :class:`Supervised` task for the life of the service.

        Idempotent by name (``on_connected`` runs again when connecting is retried).
        """
        for task in self._background:
            if task.name == name:
                return task
        return self.keep(Supervised(name, body, every_s=every_s, **options))

    def keep(self, task: Supervised) -> Supervised:
        """Start a supervised task built elsewhere and stop it at shutdown."""
        if task not in self._background:
            self._background.append(task)
        task.start()
        return task

    async def _connect_once(self) -> None:
        """One attempt at the Kafka link; a no-op once connected (the task then only idles)."""
        if self.connected.is_set():
            return
        try:
            await ensure_topics(self.kafka, self.topics)
            if not self.producer.started:
                await self.producer.start()
            await self.on_connected()
            for consumer in self.make_consumers():
                await consumer.start()
                self.consumers.append(consumer)
        except Exception as exc:  # Kafka away (or a hook failed): start again from nothing
            for consumer in self.consumers:
                await consumer.stop()
            self.consumers.clear()
            if not isinstance(exc, KafkaConnectionError):
                raise
            # "Unable to bootstrap" hides the cause (refused, wrong password, TLS): ask.
            self.kafka_problem = await connection_problem(self.kafka) or str(exc)
            raise KafkaUnavailable(self.kafka_problem) from exc
        self.kafka_problem = None
        self.connected.set()
        log.info("connected to kafka", extra={"bootstrap": self.kafka.bootstrap})

    @asynccontextmanager
    async def lifespan(self, _: object) -> AsyncIterator[None]:
        """Start connecting at start-up; drain consumers and flush the producer at shutdown."""
        await self.on_start()
        self._connect.start()
        try:
            yield
        finally:
            await asyncio.gather(self._connect.stop(), *(t.stop() for t in self._background))
            for consumer in self.consumers:
                await consumer.stop()
            await self.on_shutdown()
            await self.producer.stop()
            log.info(f"{self.service} stopped")

    async def kafka_ready(self) -> str | None:
        """Readiness check of the Kafka link."""
        if not self.connected.is_set():
            problem = self.kafka_problem
            return f"connecting to kafka: {problem}" if problem else "connecting to kafka"
        for consumer in self.consumers:
            problem = consumer.alive()
            if problem:
                return problem
        return await self.producer.ping()
