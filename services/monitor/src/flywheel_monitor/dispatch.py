"""The one path every message of every agent takes: decode, handle, retry, dead-letter.

- :class:`.messages.Unprocessable` (a well-formed event that can never be processed, or
  features or labels that break their contract) is dead-lettered at once;
- ``Poison`` (not an event of its topic, not a message of an internal topic) is dead-lettered
  at once, with ``attempts=1``;
- ``RegistryUnavailable`` is waited out: the message is retried, its attempts not counted;
- any other exception is retried with backoff, then dead-lettered after ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust

from flywheel_shared.events import Event, encode_event
from flywheel_shared.kafka.consumer import LetterRedact, Poison, dead_letter
from flywheel_shared.registry import RegistryUnavailable

from .messages import Unprocessable
from .metrics import DEADLETTERED, EVENT_SECONDS

# The records these log keep the logger name they had when this code lived in app.py.
log = logging.getLogger("flywheel_monitor.app")

Handler = Callable[[Any], Awaitable[None]]
"""One agent's work on one faust event (``event.value`` the bytes, ``event.message`` where)."""


@dataclass
class Dispatcher:
    """Sends decisions and dead letters; runs each message through the retry/dead-letter path."""

    group: str
    out: dict[str, faust.TopicT]  # by logical name: the decision topics and "deadletter"
    recent: deque[dict[str, Any]]
    max_attempts: int
    redact: LetterRedact | None = None
    """Takes personal values out of dead letters (see :func:`.lookups.letter_redactor`)."""

    async def publish(self, events: list[Event]) -> None:
        """Send decisions and wait for the broker's acknowledgement of each."""
        futures = []
        for ev in events:
            futures.append(
                await self.out[ev.topic].send(key=ev.key().encode(), value=encode_event(ev))
            )
            self.recent.appendleft(
                {
                    "type": ev.topic,
                    "model": ev.key(),
                    "event_id": str(ev.event_id),
                    **{
                        f: getattr(ev, f)
                        for f in ("version", "decision", "reason", "features")
                        if hasattr(ev, f)
                    },
                }
            )
        for fut in futures:
            await fut

    async def send_dead_letter(self, event: Any, error: str, attempts: int) -> None:
        """Dead-letter one input message (acknowledged before its offset can be committed)."""
        msg = event.message
        letter = dead_letter(
            group=self.group,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=event.value or b"",
            error=error,
            attempts=attempts,
            redact=self.redact,
        )
        error = letter.error
        await (await self.out["deadletter"].send(key=None, value=encode_event(letter)))
        DEADLETTERED.labels(msg.topic).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "error": error[:300],
            },
        )

    async def process(self, agent: str, event: Any, handler: Handler) -> None:
        """Run one message's work: retry, wait out outages, dead-letter what cannot be done."""
        attempt, backoff = 0, 0.5
        started = time.perf_counter()
        while True:
            attempt += 1
            try:
                await handler(event)
                EVENT_SECONDS.labels(agent).observe(time.perf_counter() - started)
                return
            except RegistryUnavailable as exc:
                log.warning("registry unavailable; waiting", extra={"error": str(exc)})
                attempt -= 1
            except Poison as exc:  # not an event at all: no retry helps
                await self.send_dead_letter(event, str(exc), 1)
                return
            except Unprocessable as exc:
                await self.send_dead_letter(event, str(exc), attempt)
                return
            except Exception as exc:  # a bug or bad data: retry, then dead-letter
                if attempt >= self.max_attempts:
                    log.error("handler failed, dead-lettering", exc_info=True)
                    await self.send_dead_letter(event, f"{type(exc).__name__}: {exc}", attempt)
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def agent(self, name: str, handler: Handler) -> Callable[[Any], Awaitable[None]]:
        """A faust agent function (``on_<name>``) feeding each event of its stream to
        :meth:`process`."""

        async def consume(stream: Any) -> None:
            async for event in stream.events():
                await self.process(name, event, handler)

        consume.__name__ = consume.__qualname__ = f"on_{name}"
        return consume
