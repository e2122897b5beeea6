from __future__ import annotations

import pytest
from ingest_support import FakeProducer, good

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.handlers import IngestService, UnknownDataset
from flywheel_shared.events import (
    Label,
    LabelsReceived,
    RawRecords,
    RecordsRejected,
    RecordsValidated,
)
from flywheel_shared.kafka.consumer import Delivery
from flywheel_shared.spec import DatasetContract


def service(contract: DatasetContract, chunk: int = 2) -> tuple[IngestService, FakeProducer]:
    producer = FakeProducer()
    return IngestService(StaticContracts([contract]), producer, chunk_records=chunk), producer  # type: ignore[arg-type]


async def test_submit_chunks_valid_and_reports_rejections(contract: DatasetContract) -> None:
    svc, producer = service(contract)
    result = await svc.submit("tx", [good(0), good(1), good(2, amount=-1), good(3)], path="http")
    assert result.accepted == 3
    assert [r.index for r in result.rejections] == [2]
    validated = producer.of(RecordsValidated)
    assert [len(e.records) for e in validated] == [2, 1]  # type: ignore[attr-defined]
    [rejected] = producer.of(RecordsRejected)
    assert rejected.rejections[0].errors[0].field == "amount"  # type: ignore[attr-defined]
    assert len({e.correlation_id for e in producer.events}) == 1


async def test_idempotency_key_gives_stable_event_ids(contract: DatasetContract) -> None:
    svc, producer = service(contract)
    await svc.submit("tx", [good(0), good(1), good(2)], path="http", idempotency_key="k1")
    first = [e.event_id for e in producer.events]
    producer.events.clear()
    await svc.submit("tx", [good(0), good(1), good(2)], path="http", idempotency_key="k1")
    assert [e.event_id for e in producer.events] == first


async def test_unknown_dataset(contract: DatasetContract) -> None:
    svc, _ = service(contract)
    with pytest.raises(UnknownDataset):
        await svc.submit("nope", [good()], path="http")


async def test_raw_event_is_validated_like_http(contract: DatasetContract) -> None:
    svc, producer = service(contract)
    raw = RawRecords(dataset="tx", records=[good(0), good(1, kind="x")])
    await svc.on_raw(raw, Delivery("t", 0, 0, None))
    [valid] = producer.of(RecordsValidated)
    [rejected] = producer.of(RecordsRejected)
    assert valid.correlation_id == raw.correlation_id
    assert rejected.rejections[0].index == 1  # type: ignore[attr-defined]
    # Re-processing the same raw event (after a crash) yields the same event ids.
    ids = [e.event_id for e in producer.events]
    producer.events.clear()
    await svc.on_raw(raw, Delivery("t", 0, 0, None))
    assert [e.event_id for e in producer.events] == ids


async def test_raw_event_for_unknown_dataset_is_rejected_not_dead(
    contract: DatasetContract,
) -> None:
    svc, producer = service(contract)
    await svc.on_raw(RawRecords(dataset="nope", records=[good()]), Delivery("t", 0, 0, None))
    [rejected] = producer.of(RecordsRejected)
    assert "unknown dataset" in rejected.rejections[0].errors[0].reason  # type: ignore[attr-defined]


async def test_labels_are_checked_against_the_label_type(contract: DatasetContract) -> None:
    svc, producer = service(contract)
    assert await svc.submit_labels("tx", [Label(record_id="r1", label=True)]) == 1
    assert len(producer.of(LabelsReceived)) == 1
    with pytest.raises(ValueError, match="boolean"):
        await svc.submit_labels("tx", [Label(record_id="r1", label="yes")])
    with pytest.raises(ValueError, match="record_id or prediction_id"):
        await svc.submit_labels("tx", [Label(label=True)])
