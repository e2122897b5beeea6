"""The service's moving parts: database, artifact store, outbox relay, consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from flywheel_shared.kafka.consumer import ConsumerConfig, EventConsumer
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.storage import ObjectStore

from . import migrate
from .artifacts import ArtifactStore
from .db import make_engine
from .handlers import FactsHandler, VerdictHandler
from .relay import OutboxRelay
from .settings import RegistrySettings
from .store import RegistryStore

log = logging.getLogger(__name__)
TOPICS_USED = [
    "model.version.registered",
    "model.alias.changed",
    "rollout.verdict",
    "drift.detected",
    "retrain.requested",
    "deadletter",
]
FACT_TOPICS = ["drift.detected", "rollout.verdict", "retrain.requested"]


class Runtime(KafkaRuntime):
    """The service's moving parts: database, artifact store, outbox relay, consumers."""

    service = "registry"
    topics = TOPICS_USED

    def __init__(self, settings: RegistrySettings) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        self.store = RegistryStore(self.engine)
        self.artifacts = ArtifactStore(ObjectStore(settings.storage.uri))
        self.relay = OutboxRelay(
            self.store,
            self.producer,
            enabled=settings.relay_enabled,
            poll_s=settings.relay_poll_s,
            batch=settings.relay_batch,
            crash_after_publish=settings.fault_crash_after_publish,
        )
        self.store.notify = self.relay.notify
        self._relay_started = False

    async def on_start(self) -> None:
        """Bring the database schema to the newest migration before serving anything."""
        revision = await asyncio.to_thread(migrate.upgrade, self.engine)
        log.info(
            "registry starting",
            extra={
                "database": self.engine.url.render_as_string(hide_password=True),
                "revision": revision,
                "auth": self.settings.token_value() is not None,
                "read_auth": self.settings.read_auth,
                "relay_enabled": self.settings.relay_enabled,
            },
        )

    async def on_connected(self) -> None:
        """The producer is up: start the outbox relay (once, even if connecting is retried)."""
        if not self._relay_started:
            self.relay.start()
            self._relay_started = True

    def make_consumers(self) -> list[EventConsumer]:
        """The rollout.verdict consumer and the model cards' facts consumer (each unless
        switched off; the facts use their own group, ``<consumer_group>-facts``)."""
        consumers = []
        if self.settings.consume_verdicts:
            consumers.append(
                EventConsumer(
                    self.settings.kafka,
                    ConsumerConfig(
                        group_id=self.settings.consumer_group, topics=["rollout.verdict"]
                    ),
                    VerdictHandler(self.store),
                    self.producer,
                )
            )
        if self.settings.consume_facts:
            consumers.append(
                EventConsumer(
                    self.settings.kafka,
                    ConsumerConfig(
                        group_id=f"{self.settings.consumer_group}-facts", topics=FACT_TOPICS
                    ),
                    FactsHandler(self.store),
                    self.producer,
                )
            )
        return consumers

    async def on_shutdown(self) -> None:
        """Let the relay finish its round (the producer flushes after this)."""
        await self.relay.stop()

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """The Kafka lifecycle, then release the database connections."""
        try:
            async with super().lifespan(app):
                yield
        finally:
            await asyncio.to_thread(self.engine.dispose)

    async def kafka_ready(self) -> str | None:
        """Readiness of the Kafka link: producer, verdict consumer and outbox relay."""
        problem = await super().kafka_ready()
        return problem or self.relay.alive()

    async def database_ready(self) -> str | None:
        """Readiness of the database."""
        await asyncio.to_thread(self.store.ping)
        return None

    async def storage_ready(self) -> str | None:
        """Readiness of the artifact store."""
        await asyncio.to_thread(self.artifacts.store.list, "artifacts")
        return None
