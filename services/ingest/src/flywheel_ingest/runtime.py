"""Ingest's moving parts for the life of the process: the Kafka producer, the data plane, the
dataset writer, their consumers, and the readiness checks of what they stand on."""

from __future__ import annotations

import asyncio

from flywheel_shared.events import remember_encoded
from flywheel_shared.http import ReadinessCheck
from flywheel_shared.kafka.consumer import ConsumerConfig, EventConsumer
from flywheel_shared.privacy import LetterRedactor, has_personal, require_key
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore

from .contracts import ContractSource
from .handlers import IngestService
from .quarantine import Baselines
from .settings import IngestSettings
from .writer import DatasetWriter

TOPICS_USED = [
    "data.raw",
    "data.validated",
    "data.rejected",
    "data.batch.committed",
    "data.batch.quarantined",
    "data.audit",
    "data.labels",
    "deadletter",
]


class Runtime(KafkaRuntime):
    """Ingest's moving parts: the data plane, the dataset writer and their consumers."""

    service = "ingest"
    topics = TOPICS_USED

    def __init__(self, settings: IngestSettings, contracts: ContractSource) -> None:
        super().__init__(settings.kafka)
        self.settings = settings
        self.contracts = contracts
        self.store = ObjectStore(settings.storage.uri)
        self.plane = IngestService(
            contracts,
            self.producer,
            chunk_records=settings.chunk_records,
            keep_rejected_records=settings.keep_rejected_records,
        )
        self.writer = DatasetWriter(
            self.store,
            contracts,
            self.producer,
            max_rows=settings.segment_rows,
            max_age_s=settings.segment_seconds,
            vouched=self.plane.vouched,
            baselines=Baselines(contracts, self.store),
        )
        # Contracts from spec files are known now: production refuses personal fields without
        # a key (the registry's arrive later and are hashed with the process key if need be).
        require_key(settings.environment, map(contracts.get, contracts.names()))
        self.redact = letter_redactor(contracts)
        if settings.run_writer:
            # The writer reads back what this process publishes: the data.validated events it
            # encoded are handed back as they are when the bytes match (no second decode).
            remember_encoded(128)

    async def on_start(self) -> None:
        """Keep contracts fresh for the life of the service (when their source changes)."""
        every_s = self.contracts.refresh_every_s
        if every_s is not None:
            self.spawn("contracts-refresh", self.contracts.refresh, every_s=every_s)

    async def on_connected(self) -> None:
        """Announce segments a crash left unannounced before consuming anything new."""
        await self.contracts.refresh()
        if self.settings.run_writer:
            await self.writer.start()

    def make_consumers(self) -> list[EventConsumer]:
        """The data.raw validator and the data.validated writer (each can be switched off)."""
        s, out = self.settings, []
        if s.run_raw_consumer:
            out.append(
                EventConsumer(
                    s.kafka,
                    ConsumerConfig(group_id="flywheel-ingest-raw", topics=["data.raw"]),
                    self.plane.on_raw,
                    self.producer,
                    redact=self.redact,
                )
            )
        if s.run_writer:
            out.append(
                EventConsumer(
                    s.kafka,
                    ConsumerConfig(group_id="flywheel-ingest-writer", topics=["data.validated"]),
                    self.writer.handle,
                    self.producer,
                    processed=self.writer,
                    commit_barrier=self.writer.barrier,
                    on_revoked=self.writer.on_revoked,
                    on_tick=self.writer.tick,
                    drain=self.writer.flush,
                    redact=self.redact,
                )
            )
        return out

    def readiness(self) -> dict[str, ReadinessCheck]:
        """What ``/readyz`` checks: Kafka, the dataset store, the contracts."""
        return {
            "kafka": self.kafka_ready,
            "storage": self.storage_ready,
            "contracts": self.contracts_ready,
        }

    async def contracts_ready(self) -> str | None:
        """Readiness: contracts can be served (cached ones count while the registry is away)."""
        return self.contracts.unavailable()

    async def storage_ready(self) -> str | None:
        """Readiness check of the dataset store."""
        await asyncio.to_thread(self.store.list, "datasets")
        return None


def letter_redactor(contracts: ContractSource) -> LetterRedactor:
    """Dead letters of ``data.raw`` and ``data.validated`` events without personal values
    (their contract is the event's ``dataset``)."""

    def contract_of(obj: dict[str, object]) -> DatasetContract | None:
        dataset = obj.get("dataset")
        return contracts.get(dataset) if isinstance(dataset, str) else None

    def any_personal() -> bool:
        return any(has_personal(contracts.get(n)) for n in contracts.names())

    return LetterRedactor(contract_of, any_personal)
