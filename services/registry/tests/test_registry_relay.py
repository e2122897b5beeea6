"""The outbox relay: in order, retried until Kafka acknowledges, marked only after the ack."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import REGISTRY

from flywheel_registry.metrics import OUTBOX_PENDING
from flywheel_registry.relay import OutboxRelay
from flywheel_registry.store import RegistryStore
from flywheel_shared.events import Event
from flywheel_shared.spec import load_spec

from .registry_support import sha, spec_text, unique, version_body


class FlakyProducer:
    """Fails the first ``failures`` publish calls, then records what it is sent."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.events: list[Event] = []

    async def publish_all(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("broker down")
        self.events.extend(events)


async def wait_until(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def fill(store: RegistryStore, n: int) -> str:
    name = unique()
    store.put_spec(load_spec(spec_text(name)))
    digest = sha(b"x")
    store.record_artifact(digest, 1, "file:///x")
    for i in range(n):
        store.register_version(name, version_body(f"r{i}", digest))
    return name


async def test_relay_retries_until_acknowledged_and_keeps_order(store: RegistryStore) -> None:
    fill(store, 5)
    expected = [p.event_id for p in store.pending_events(100)]
    producer = FlakyProducer(failures=2)
    relay = OutboxRelay(store, producer, poll_s=0.05, batch=2, max_backoff_s=0.05)
    relay.start()
    try:
        await wait_until(lambda: len(producer.events) == 5)
        await wait_until(lambda: store.pending_count() == 0)
    finally:
        await relay.stop()
    assert [str(e.event_id) for e in producer.events] == expected
    assert producer.calls == 2 + 3  # two failures, then batches of 2, 2, 1


async def test_notify_wakes_the_relay_and_disabled_relay_publishes_nothing(
    store: RegistryStore,
) -> None:
    producer = FlakyProducer()
    fill(store, 2)
    OUTBOX_PENDING.set(-1)
    disabled = OutboxRelay(store, producer, enabled=False, poll_s=0.05)
    disabled.start()
    # A disabled relay still counts the backlog (an ops gauge); wait for two passes.
    await wait_until(lambda: REGISTRY.get_sample_value("flywheel_registry_outbox_pending") == 2)
    OUTBOX_PENDING.set(-1)
    await wait_until(lambda: REGISTRY.get_sample_value("flywheel_registry_outbox_pending") == 2)
    await disabled.stop()
    assert producer.events == [] and store.pending_count() == 2

    relay = OutboxRelay(store, producer, poll_s=60)
    store.notify = relay.notify
    relay.start()
    try:
        await wait_until(lambda: len(producer.events) == 2)
        fill(store, 1)  # a commit from another thread wakes the relay (poll is 60 s)
        await wait_until(lambda: len(producer.events) == 3, timeout=5)
    finally:
        await relay.stop()
