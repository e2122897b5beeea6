"""The shortcuts of ingest's hot path give what the long ways give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from ingest_support import FakeProducer, good
from pydantic import ValidationError

from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.handlers import IngestService
from flywheel_ingest.writer import DatasetWriter
from flywheel_shared.events import (
    _ADAPTER,
    RawRecords,
    RecordsValidated,
    encode_event,
    parse_event,
)
from flywheel_shared.kafka.consumer import Delivery, Poison
from flywheel_shared.spec import DatasetContract
from flywheel_shared.storage import ObjectStore

TP = TopicPartition("flywheel.data.validated.v1", 0)


def _validated(**over: Any) -> RecordsValidated:
    fields: dict[str, Any] = {
        "dataset": "tx",
        "records": [good(0), good(1, amount=1e-300), {"nested": [1, {"a": None}], "s": "é\n"}],
        **over,
    }
    return RecordsValidated(**fields)


@pytest.mark.parametrize(
    "event",
    [
        _validated(),
        _validated(source="bench"),
        _validated(records=[]),
        _validated(occurred_at=datetime(2026, 1, 1, tzinfo=UTC)),
        _validated(occurred_at=datetime(2026, 1, 1, 5, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_fast_decode_equals_pydantic(event: RecordsValidated) -> None:
    data = encode_event(event)
    fast, slow = parse_event(data), _ADAPTER.validate_json(data)
    assert fast == slow == event
    assert type(fast) is RecordsValidated and fast.model_fields_set == slow.model_fields_set
    assert parse_event(data.decode()) == event


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 2},
        {"event_id": "not-a-uuid"},
        {"occurred_at": "2026-01-01T00:00:00"},  # no time zone
        {"records": [1]},
        {"records": {"a": 1}},
        {"surprise": 1},
        {"dataset": None},
    ],
)
def test_fast_decode_refuses_what_pydantic_refuses(change: dict[str, Any]) -> None:
    obj = orjson.loads(encode_event(_validated()))
    obj.update(change)
    with pytest.raises(ValidationError):
        parse_event(orjson.dumps(obj))


def test_other_shapes_take_the_full_path() -> None:
    obj = orjson.loads(encode_event(_validated()))
    del obj["source"]  # optional: valid, but not the exact shape encode_event writes
    event = parse_event(orjson.dumps(obj))
    assert isinstance(event, RecordsValidated) and event.source is None
    raw = RawRecords(dataset="tx", records=[{"type": "data.validated"}])
    assert parse_event(encode_event(raw)) == raw


async def test_writer_trusts_only_what_this_process_validated(
    tmp_path: Any, contract: DatasetContract
) -> None:
    contracts = StaticContracts([contract])
    producer = FakeProducer()
    plane = IngestService(contracts, producer)  # type: ignore[arg-type]
    writer = DatasetWriter(
        ObjectStore(str(tmp_path)),
        contracts,
        producer,
        vouched=plane.vouched,  # type: ignore[arg-type]
    )
    await plane.submit("tx", [good(i) for i in range(3)], path="http")
    [published] = producer.events
    assert isinstance(published, RecordsValidated)
    back = parse_event(encode_event(published))
    assert isinstance(back, RecordsValidated)
    assert plane.vouched.vouches(back, contract)
    # another contract object (changed since), or another event under the same id: checked
    assert not plane.vouched.vouches(back, DatasetContract.model_validate(contract.model_dump()))
    forged = back.model_copy(update={"records": [*back.records, {"id": 1}]})
    assert not plane.vouched.vouches(forged, contract)
    with pytest.raises(Poison):
        await writer.handle(forged, Delivery(TP.topic, TP.partition, 0, b"tx"))
    await writer.handle(back, Delivery(TP.topic, TP.partition, 1, b"tx"))
    await writer.flush()
    assert writer.load_manifest("tx").total_rows == 3


async def test_manifest_bytes_are_pydantics(tmp_path: Any, contract: DatasetContract) -> None:
    store = ObjectStore(str(tmp_path))
    writer = DatasetWriter(store, StaticContracts([contract]), FakeProducer(), max_rows=2)  # type: ignore[arg-type]
    for offset in range(7):
        event = RecordsValidated(dataset="tx", records=[good(offset), good(offset + 100)])
        await writer.handle(event, Delivery(TP.topic, TP.partition, offset, b"tx"))
        manifest = writer.load_manifest("tx")
        assert store.get("datasets/tx/manifest.json") == manifest.model_dump_json().encode()
    assert len(manifest.segments) == 7 and all(s.announced for s in manifest.segments)


def test_memo_hands_back_the_encoded_event_for_the_same_bytes() -> None:
    from flywheel_shared import events

    events.remember_encoded(2)
    try:
        first, second, third = _validated(), _validated(), _validated()
        data = [encode_event(e) for e in (first, second, third)]
        assert parse_event(data[0]) == first and parse_event(data[0]) is not first  # evicted
        assert parse_event(data[2]) is third
        assert parse_event(data[2]) is not third  # taken once, then decoded
        other = data[1].replace(b'"tx"', b'"ty"')
        back = parse_event(other)
        assert isinstance(back, RecordsValidated) and back.dataset == "ty"
        assert parse_event(data[1]) == second
    finally:
        events.remember_encoded(0)
