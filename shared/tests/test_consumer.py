"""The kernel's consumer loop against a real broker: retries, dead letters, dedupe, commits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from flywheel_devkit.testing.kafka_io import read_events
from flywheel_shared.events import (
    DeadLetter,
    Event,
    ModelAliasChanged,
    RawRecords,
    RetrainRequested,
    encode_event,
)
from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.kafka.consumer import (
    ConsumerConfig,
    Delivery,
    EventConsumer,
    Poison,
    TransientError,
)
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.settings import KafkaSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[tuple[KafkaSettings, EventProducer]]:
    settings = KafkaSettings(
        bootstrap=kafka_bootstrap, topic_prefix=f"k{uuid.uuid4().hex[:8]}", session_timeout_ms=6000
    )
    await ensure_topics(settings, ["retrain.requested", "deadletter"])
    producer = EventProducer(settings, "test")
    await producer.start()
    yield settings, producer
    await producer.stop()


def consumer(
    settings: KafkaSettings, producer: EventProducer, handler: Any, **kw: Any
) -> EventConsumer:
    cfg = ConsumerConfig(
        group_id="g-" + settings.topic_prefix, topics=["retrain.requested"], backoff_s=0.01
    )
    return EventConsumer(settings, cfg, handler, producer, **kw)


async def until(predicate: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def ask(reason: str) -> RetrainRequested:
    return RetrainRequested(model="m", reason=reason)


async def test_failing_handler_is_retried_then_dead_lettered_and_loop_continues(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    settings, producer = kafka
    calls: list[str] = []

    async def handler(event: Event, _: Delivery) -> None:
        assert isinstance(event, RetrainRequested)
        calls.append(event.reason)
        if event.reason == "poison":
            raise ValueError("cannot handle this one")

    c = consumer(settings, producer, handler)
    await c.start()
    try:
        await producer.publish_all([ask("poison"), ask("fine")])
        await until(lambda: "fine" in calls)
    finally:
        await c.stop()
    assert calls == ["poison", "poison", "poison", "fine"]
    [letter] = await read_events(
        settings.bootstrap, producer.topics("deadletter"), until=lambda ev: len(ev) >= 1
    )
    assert isinstance(letter, DeadLetter)
    assert letter.attempts == 3 and "cannot handle this one" in letter.error
    assert letter.source_topic == producer.topics("retrain.requested")


async def test_a_handler_raising_poison_dead_letters_at_once_without_retries(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    settings, producer = kafka
    calls: list[str] = []

    async def handler(event: Event, _: Delivery) -> None:
        assert isinstance(event, RetrainRequested)
        calls.append(event.reason)
        if event.reason == "poison":
            raise Poison("breaks the contract: no retry can help")

    c = consumer(settings, producer, handler)
    await c.start()
    try:
        await producer.publish_all([ask("poison"), ask("fine")])
        await until(lambda: "fine" in calls)
    finally:
        await c.stop()
    assert calls == ["poison", "fine"]
    [letter] = await read_events(
        settings.bootstrap, producer.topics("deadletter"), until=lambda ev: len(ev) >= 1
    )
    assert isinstance(letter, DeadLetter)
    assert letter.attempts == 1 and letter.error == "breaks the contract: no retry can help"


async def test_transient_errors_are_retried_without_dead_letter(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    settings, producer = kafka
    attempts: list[int] = []

    async def handler(event: Event, _: Delivery) -> None:
        attempts.append(1)
        if len(attempts) <= 5:  # more than max_attempts: only transient errors may exceed it
            raise TransientError("registry down")

    c = consumer(settings, producer, handler)
    await c.start()
    try:
        await producer.publish(ask("x"))
        await until(lambda: len(attempts) == 6)
    finally:
        await c.stop()
    with pytest.raises(TimeoutError):
        await read_events(
            settings.bootstrap,
            producer.topics("deadletter"),
            until=lambda ev: len(ev) >= 1,
            timeout=2,
        )


async def test_duplicate_event_ids_are_processed_once(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    settings, producer = kafka
    seen: list[str] = []

    async def handler(event: Event, _: Delivery) -> None:
        seen.append(str(event.event_id))

    c = consumer(settings, producer, handler)
    await c.start()
    try:
        ev = ask("once")
        await producer.publish_all([ev, ev, ask("other")])
        await until(lambda: len(seen) == 2)
    finally:
        await c.stop()
    assert seen[0] == str(ev.event_id) and len(set(seen)) == 2


async def test_offsets_are_committed_only_up_to_the_durable_barrier(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    settings, producer = kafka
    first: list[str] = []
    await producer.publish_all([ask("a"), ask("b"), ask("c")])

    async def keep(event: Event, _: Delivery) -> None:
        first.append(event.reason)  # type: ignore[attr-defined]

    # Nothing is durable yet: the barrier holds every partition at offset 0.
    c = consumer(settings, producer, keep, commit_barrier=lambda tp: 0)
    await c.start()
    await until(lambda: len(first) == 3)
    await c.stop()

    second: list[str] = []

    async def again(event: Event, _: Delivery) -> None:
        second.append(event.reason)  # type: ignore[attr-defined]

    c2 = consumer(settings, producer, again)
    await c2.start()
    try:
        await until(lambda: len(second) == 3)
    finally:
        await c2.stop()
    assert sorted(second) == ["a", "b", "c"]

    # c2 committed everything: a third consumer of the group gets nothing old.
    third: list[str] = []

    async def none(event: Event, _: Delivery) -> None:
        third.append(event.reason)  # type: ignore[attr-defined]

    c3 = consumer(settings, producer, none)
    await c3.start()
    try:
        await producer.publish(ask("d"))
        await until(lambda: len(third) >= 1)
    finally:
        await c3.stop()
    assert third == ["d"]


async def test_hostile_input_is_dead_lettered_with_its_reason_and_nothing_behind_it_is_lost(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    """Every consumer runs this loop: what it cannot decode, or what does not belong on its
    topic, goes to the dead-letter topic once, with the reason, and the handler never sees it."""
    settings, producer = kafka
    seen: list[str] = []

    async def handler(event: Event, _: Delivery) -> None:
        assert isinstance(event, RetrainRequested)
        seen.append(event.reason)

    topic = producer.topics("retrain.requested")
    valid = ask("before").model_dump(mode="json")
    poison = {
        b"\x00\xff not json at all": "undecodable event",
        b'{"type": "retrain.requested"': "undecodable event",  # cut off
        orjson.dumps({**valid, "schema_version": 99}): "undecodable event",
        orjson.dumps({k: v for k, v in valid.items() if k != "model"}): "undecodable event",
        orjson.dumps({**valid, "type": "no.such.event"}): "undecodable event",
        encode_event(ModelAliasChanged(model="m", alias="production", version=1)): (
            "wrong event type"
        ),
    }
    c = consumer(settings, producer, handler)
    await c.start()
    try:
        await producer.publish(ask("before"))
        for raw in poison:
            await producer.send_bytes(topic, raw, key=b"m")
        await producer.publish(ask("after"))
        await until(lambda: "after" in seen)
    finally:
        await c.stop()
    assert seen == ["before", "after"]  # in order, nothing valid lost, no poison handled
    letters = await read_events(
        settings.bootstrap, producer.topics("deadletter"), until=lambda ev: len(ev) >= len(poison)
    )
    by_value = {base64.b64decode(e.value_b64): e for e in letters}  # type: ignore[attr-defined]
    assert set(by_value) == set(poison)
    for raw, reason in poison.items():
        letter = by_value[raw]
        assert isinstance(letter, DeadLetter) and letter.attempts == 1
        assert letter.error.startswith(reason), letter.error
        assert letter.source_topic == topic
    assert "schema_version" in by_value[orjson.dumps({**valid, "schema_version": 99})].error


async def test_a_13_mib_poison_record_is_dead_lettered_truncated_and_the_partition_moves_on(
    kafka: tuple[KafkaSettings, EventProducer],
) -> None:
    """data.raw takes records up to 16 MiB. Whole in a letter, a 13 MiB one would be 17 MiB of
    base64, over the dead-letter topic's limit: the letter could never be published and the
    partition would be stuck retrying it. The letter keeps its head and names the rest."""
    settings, producer = kafka
    await ensure_topics(settings, ["data.raw"])
    seen: list[int] = []

    async def handler(event: Event, _: Delivery) -> None:
        assert isinstance(event, RawRecords)
        seen.append(len(event.records))

    cfg = ConsumerConfig(
        group_id="big-" + settings.topic_prefix, topics=["data.raw"], backoff_s=0.01
    )
    c = EventConsumer(settings, cfg, handler, producer)
    huge = b"\x00" + uuid.uuid4().bytes * (13 * 1024 * 1024 // 16)
    await c.start()
    try:
        await producer.send_bytes(producer.topics("data.raw"), huge, key=b"d")
        await producer.publish(RawRecords(dataset="d", records=[{"a": 1}, {"a": 2}]))
        await until(lambda: seen == [2], timeout=60)
    finally:
        await c.stop()
    [letter] = await read_events(
        settings.bootstrap, producer.topics("deadletter"), until=lambda ev: len(ev) >= 1
    )
    assert isinstance(letter, DeadLetter) and letter.error.startswith("undecodable event")
    assert f"value of {len(huge)} bytes truncated" in letter.error
    assert hashlib.sha256(huge).hexdigest() in letter.error
    assert base64.b64decode(letter.value_b64) == huge[: 1024 * 1024]
