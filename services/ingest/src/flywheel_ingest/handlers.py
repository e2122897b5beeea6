"""The ingest data plane: one object used by every transport (HTTP and the data.raw consumer)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
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


# What identifies a data.validated event this process built: its id, time, correlation id,
# dataset and record count.
_Stamp = tuple[UUID, datetime, UUID, str, int]


def _stamp(event: RecordsValidated) -> _Stamp:
    return (
        event.event_id,
        event.occurred_at,
        event.correlation_id,
        event.dataset,
        len(event.records),
    )


class Vouched:
    """The ``data.validated`` events this process published, each with the contract its
    records were validated against (bounded: the most recent ``capacity``).

    The in-process dataset writer asks :meth:`vouches` before re-validating an event's
    records: an event it reads back with the same id, timestamp, correlation id, dataset and
    record count was built here, from records this very contract accepted, so checking them
    again would only repeat the work. Anything else (another producer, a restart, a contract
    that changed since) is checked as before."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._events: OrderedDict[UUID, tuple[_Stamp, DatasetContract]] = OrderedDict()

    def add(self, event: RecordsValidated, contract: DatasetContract) -> None:
        """Remember that ``event``'s records passed ``contract``."""
        self._events[event.event_id] = (_stamp(event), contract)
        self._events.move_to_end(event.event_id)
        if len(self._events) > self.capacity:
            self._events.popitem(last=False)

    def vouches(self, event: RecordsValidated, contract: DatasetContract) -> bool:
        """True if this process built ``event`` from records ``contract`` accepted."""
        known = self._events.get(event.event_id)
        return known is not None and known[1] is contract and known[0] == _stamp(event)


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
        self.vouched = Vouched()

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
        validator = self.validator(dataset)
        outcome = validator.validate(records, keep_rejected=self.keep_rejected)
        cid = correlation_id or uuid4()
        events: list[Event] = []
        for n, start in enumerate(range(0, len(outcome.valid), self.chunk_records)):
            chunk = outcome.valid[start : start + self.chunk_records]
            eid = (
                derived_id("data.validated", dataset, idempotency_key, n)
                if idempotency_key
                else uuid4()
            )
            validated = RecordsValidated.trusted(
                event_id=eid,
                occurred_at=utcnow(),
                correlation_id=cid,
                dataset=dataset,
                records=chunk,
                source=source,
            )
            # Before publishing: the writer may read the event back before the ack arrives.
            self.vouched.add(validated, validator.contract)
            events.append(validated)
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
