"""Read events back from Kafka in tests (no consumer group: from the beginning)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from flywheel_shared.events import Event, parse_event


async def read_events(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Event]], bool],
    timeout: float = 30.0,
    raw: list[bytes] | None = None,
    client: Mapping[str, Any] | None = None,
) -> list[Event]:
    """Events on ``topic`` (full name) until ``until(events)`` holds, else TimeoutError.

    Undecodable messages are appended to ``raw`` if given (and otherwise ignored); ``client``
    adds aiokafka connection arguments (security: e.g. ``LocalKafka.client_options()``).
    """
    consumer = AIOKafkaConsumer(
        topic,
        **{"bootstrap_servers": bootstrap, **(client or {})},
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(events):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: condition not met in {timeout} s ({len(events)} events)"
                )
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        events.append(parse_event(rec.value or b""))
                    except ValueError:
                        if raw is not None:
                            raw.append(rec.value or b"")
        return events
    finally:
        await asyncio.shield(consumer.stop())
