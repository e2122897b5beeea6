"""The ingest data plane: one object used by every transport (HTTP and the data.raw consumer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from prometheus_client import Counter

from flywheel_shared.events import (
    Event,
    FieldError,
    Label,
    LabelsReceived,
    RawRecords,
    RecordsRejected,
    RecordsValidated,
    Rejection,
    derived_id,
    utcnow,
)
from flywheel_shared.kafka.consumer import Delivery
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.spec import DatasetContract
from flywheel_shared.validation import ContractValidator, label_errors, reason_code

from .contracts import ContractSource

ACCEPTED = Counter(
    "flywheel_ingest_records_accepted_total",
    "Records that passed the contract",
    ["dataset", "path"],
)
REJECTED = Counter(
    "flywheel_ingest_records_rejected_total",
    "Records refused, by first reason",
    ["dataset", "path", "reason"],
)
LABELS = Counter("flywheel_ingest_labels_total", "Labels accepted", ["dataset"])


class UnknownDataset(LookupError):
    """No contract declares this dataset."""


@dataclass(frozen=True)
class SubmitResult:
    """What happened to a submission."""

    accepted: int
    rejections: list[Rejection]


class IngestService:
    """Validates records against their contract and publishes the outcome, awaiting acks."""

    def __init__(
        self,
        contracts: ContractSource,
        producer: EventProducer,
        *,
        chunk_records: int = 500,
        keep_rejected_records: bool = True,
    ) -> None:
        self.contracts = contracts
        self.producer = producer
        self.chunk_records = chunk_records
        self.keep_rejected = keep_rejected_records
        self._validators: dict[str, tuple[DatasetContract, ContractValidator]] = {}

    def validator(self, dataset: str) -> ContractValidator:
        """The compiled validator of a dataset (recompiled when its contract changes)."""
        contract = self.contracts.get(dataset)
        if contract is None:
            raise UnknownDataset(dataset)
        cached = self._validators.get(dataset)
        if cached is None or cached[0] is not contract:
            cached = (contract, ContractValidator(contract))
            self._validators[dataset] = cached
        return cached[1]

    async def submit(
        self,
        dataset: str,
        records: Sequence[Any],
        *,
        path: str,
        source: str | None = None,
        correlation_id: UUID | None = None,
        idempotency_key: str | None = None,
    ) -> SubmitResult:
        """Validate ``records`` and publish them; returns after Kafka acknowledged everything.

        With an ``idempotency_key`` (or when re-processing a Kafka event) the published event
        ids are derived from it, so a retried submission is stored only once.
        """
        outcome = self.validator(dataset).validate(records, keep_rejected=self.keep_rejected)
        cid = correlation_id or uuid4()
        events: list[Event] = []
        for n, start in enumerate(range(0, len(outcome.valid), self.chunk_records)):
            chunk = outcome.valid[start : start + self.chunk_records]
            eid = (
                derived_id("data.validated", dataset, idempotency_key, n)
                if idempotency_key
                else uuid4()
            )
            events.append(
                RecordsValidated.model_construct(
                    event_id=eid,
                    occurred_at=utcnow(),
                    correlation_id=cid,
                    schema_version=1,
                    type="data.validated",
                    dataset=dataset,
                    records=chunk,
                    source=source,
                )
            )
        if outcome.rejections:
            eid = (
                derived_id("data.rejected", dataset, idempotency_key)
                if idempotency_key
                else uuid4()
            )
            events.append(
                RecordsRejected(
                    event_id=eid,
                    correlation_id=cid,
                    dataset=dataset,
                    rejections=outcome.rejections,
                    source=source,
                )
            )
        await self.producer.publish_all(events)
        if outcome.valid:
            ACCEPTED.labels(dataset, path).inc(len(outcome.valid))
        for r in outcome.rejections:
            REJECTED.labels(dataset, path, reason_code(r.errors[0])).inc()
        return SubmitResult(len(outcome.valid), outcome.rejections)

    async def on_raw(self, event: Event, delivery: Delivery) -> None:
        """Kafka path: validate a ``data.raw`` event exactly as the HTTP path does."""
        if not isinstance(event, RawRecords):
            return
        try:
            await self.submit(
                event.dataset,
                event.records,
                path="kafka",
                source=event.source,
                correlation_id=event.correlation_id,
                idempotency_key=str(event.event_id),
            )
        except UnknownDataset:
            # Not a poison message, a business rejection: every record goes to data.rejected.
            await self.producer.publish(
                RecordsRejected(
                    event_id=derived_id("data.rejected", event.dataset, event.event_id),
                    correlation_id=event.correlation_id,
                    dataset=event.dataset,
                    rejections=[
                        Rejection(
                            index=i,
                            errors=[
                                FieldError(field="", reason=f"unknown dataset '{event.dataset}'")
                            ],
                            record=r if self.keep_rejected else None,
                        )
                        for i, r in enumerate(event.records)
                    ],
                    source=event.source,
                )
            )
            REJECTED.labels(event.dataset, "kafka", "unknown_dataset").inc(len(event.records))

    async def submit_labels(self, dataset: str, labels: Sequence[Label]) -> int:
        """Publish late ground truth for a dataset's records or predictions."""
        errors = label_errors(self.validator(dataset).contract, labels)
        if errors:
            raise ValueError(errors[0])
        await self.producer.publish(LabelsReceived(dataset=dataset, labels=list(labels)))
        LABELS.labels(dataset).inc(len(labels))
        return len(labels)
