"""Every agent's message takes one path: Poison and Unprocessable are dead-lettered at once,
a registry outage is waited out uncounted, other failures are retried up to ``max_attempts``."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from flywheel_monitor.dispatch import Dispatcher
from flywheel_monitor.messages import Unprocessable
from flywheel_shared.events import parse_event
from flywheel_shared.kafka.consumer import Poison
from flywheel_shared.registry import RegistryUnavailable


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _event(value: bytes = b"not json") -> Any:
    message = SimpleNamespace(topic="t.predictions.v1", partition=2, offset=7, key=b"m")
    return SimpleNamespace(value=value, message=message)


def _dispatcher(max_attempts: int = 2) -> tuple[Dispatcher, FakeTopic]:
    deadletter = FakeTopic()
    return Dispatcher("g", {"deadletter": deadletter}, deque(maxlen=10), max_attempts), deadletter


def _letters(topic: FakeTopic) -> list[Any]:
    return [parse_event(value) for _, value in topic.sent]


@pytest.mark.parametrize(
    ("exc", "error"),
    [(Poison("not an event"), "not an event"), (Unprocessable("no such model"), "no such model")],
)
async def test_poison_and_unprocessable_are_dead_lettered_at_once(
    exc: Exception, error: str
) -> None:
    dispatcher, deadletter = _dispatcher()
    calls = 0

    async def handler(event: Any) -> None:
        nonlocal calls
        calls += 1
        raise exc

    await dispatcher.process("predictions", _event(), handler)
    assert calls == 1
    (letter,) = _letters(deadletter)
    assert letter.error == error and letter.attempts == 1
    assert (letter.source_topic, letter.partition, letter.offset) == ("t.predictions.v1", 2, 7)
    assert letter.consumer_group == "g"


async def test_a_registry_outage_is_waited_out_and_not_counted() -> None:
    dispatcher, deadletter = _dispatcher(max_attempts=1)
    calls = 0

    async def handler(event: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RegistryUnavailable(503, "unavailable", "down")

    await dispatcher.process("labels", _event(), handler)
    assert calls == 2 and deadletter.sent == []


async def test_a_failing_handler_is_retried_then_dead_lettered() -> None:
    dispatcher, deadletter = _dispatcher(max_attempts=2)
    calls = 0

    async def handler(event: Any) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    await dispatcher.process("join", _event(), handler)
    assert calls == 2
    (letter,) = _letters(deadletter)
    assert letter.error == "ValueError: boom" and letter.attempts == 2


async def test_the_agent_function_is_named_after_its_agent() -> None:
    dispatcher, _ = _dispatcher()
    seen: list[Any] = []

    async def handler(event: Any) -> None:
        seen.append(event)

    consume = dispatcher.agent("signals", handler)
    assert consume.__name__ == "on_signals"

    class Stream:
        async def events(self) -> Any:
            for e in (_event(b"1"), _event(b"2")):
                yield e

    await consume(Stream())
    assert [e.value for e in seen] == [b"1", b"2"]
