from __future__ import annotations

import io
from typing import Any
from uuid import uuid4

import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition
from ingest_support import FakeProducer, good

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.writer import DatasetWriter
from flywheel_shared.events import BatchCommitted, RecordsValidated
from flywheel_shared.kafka.consumer import Delivery
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore
from flywheel_shared.validation import ContractValidator

TP = TopicPartition("flywheel.data.validated.v1", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    tmp_path: Any, contract: DatasetContract, **kw: Any
) -> tuple[DatasetWriter, FakeProducer, Clock]:
    producer, clock = FakeProducer(), Clock()
    writer = DatasetWriter(
        ObjectStore(str(tmp_path)),
        StaticContracts([contract]),
        producer,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )
    return writer, producer, clock


def event(contract: DatasetContract, start: int, n: int) -> RecordsValidated:
    rows = ContractValidator(contract).validate([good(i) for i in range(start, start + n)]).valid
    return RecordsValidated(dataset="tx", records=rows)


def at(offset: int) -> Delivery:
    return Delivery(TP.topic, TP.partition, offset, b"tx")


def rows_in(writer: DatasetWriter) -> list[str]:
    manifest = writer.load_manifest("tx")
    ids: list[str] = []
    for seg in manifest.segments:
        ids += pq.read_table(io.BytesIO(writer.store.get(seg.key))).column("id").to_pylist()
    return ids


async def test_seals_at_row_limit_and_announces(tmp_path: Any, contract: DatasetContract) -> None:
    writer, producer, _ = make(tmp_path, contract, max_rows=10)
    await writer.handle(event(contract, 0, 6), at(0))
    assert writer.barrier(TP) == 0 and producer.events == []
    await writer.handle(event(contract, 6, 6), at(1))
    assert writer.barrier(TP) is None
    [batch] = producer.of(BatchCommitted)
    assert isinstance(batch, BatchCommitted)
    assert batch.row_count == 12 and batch.total_rows == 12 and batch.segment_count == 1
    assert batch.segment_id == "p002-000000000000-000000000001"
    assert batch.snapshot_id == writer.load_manifest("tx").snapshot_id()
    assert batch.stats["amount"].count == 12  # type: ignore[union-attr]
    assert rows_in(writer) == [f"r{i}" for i in range(12)]


async def test_seals_on_age(tmp_path: Any, contract: DatasetContract) -> None:
    writer, producer, clock = make(tmp_path, contract, max_rows=1000, max_age_s=5)
    await writer.handle(event(contract, 0, 3), at(7))
    await writer.tick()
    assert producer.events == []
    clock.now = 6
    await writer.tick()
    assert len(producer.of(BatchCommitted)) == 1
    assert writer.barrier(TP) is None


async def test_redelivered_event_is_not_stored_twice(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer, _, _ = make(tmp_path, contract, max_rows=5)
    ev = event(contract, 0, 5)
    await writer.handle(ev, at(0))
    # A fresh writer (after a crash) reads the manifest and skips the same event.
    again, producer, _ = make(tmp_path, contract, max_rows=5)
    await again.start()
    assert again.seen(ev.event_id)
    await again.handle(ev, at(0))
    await again.flush()
    assert rows_in(again) == [f"r{i}" for i in range(5)]
    assert producer.of(BatchCommitted) == []


async def test_unannounced_segment_is_announced_after_restart(
    tmp_path: Any, contract: DatasetContract
) -> None:
    writer, producer, _ = make(tmp_path, contract, max_rows=5)
    producer.fail = ConnectionError("kafka down")
    with pytest.raises(ConnectionError):
        await writer.handle(event(contract, 0, 5), at(0))
    assert len(writer.load_manifest("tx").segments) == 1  # durable, not yet announced
    again, producer2, _ = make(tmp_path, contract)
    await again.start()
    [batch] = producer2.of(BatchCommitted)
    first_id = batch.event_id
    await again.start()  # idempotent: already announced
    assert len(producer2.of(BatchCommitted)) == 1
    # The event id is derived from the segment: a duplicate publish would be deduped downstream.
    third, producer3, _ = make(tmp_path, contract)
    third.load_manifest("tx").segments[0].announced = False
    await third.tick()
    assert producer3.of(BatchCommitted)[0].event_id == first_id


async def test_revoked_partition_is_sealed(tmp_path: Any, contract: DatasetContract) -> None:
    writer, producer, _ = make(tmp_path, contract, max_rows=1000)
    await writer.handle(event(contract, 0, 3), at(4))
    await writer.on_revoked({TP})
    assert writer.barrier(TP) is None
    assert len(producer.of(BatchCommitted)) == 1


async def test_unknown_dataset_raises(tmp_path: Any, contract: DatasetContract) -> None:
    writer, _, _ = make(tmp_path, contract)
    with pytest.raises(ValueError, match="no contract"):
        await writer.handle(
            RecordsValidated(dataset="nope", records=[{}], correlation_id=uuid4()), at(0)
        )
