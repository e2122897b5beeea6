"""What the monitor's agents accept: events of their topic, the internal topics' messages.

A message that is neither raises :class:`Poison` (dead-lettered at once, never retried); a
well-formed event that can never be processed raises :class:`Unprocessable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from flywheel_shared.events import Event
from flywheel_shared.kafka.consumer import Poison, decode
from flywheel_shared.topics import TopicNamer

E = TypeVar("E", bound=Event)


class Unprocessable(Exception):
    """A well-formed event that can never be processed (e.g. a model the registry lacks)."""


def decoded(event: Any, cls: type[E], names: TopicNamer) -> E:
    """The event a faust message carries, of its topic's class (else :class:`Poison`)."""
    ev = decode(event.value or b"", event.message.topic, names)  # raises Poison
    if not isinstance(ev, cls):  # its topic's class: only if the topics were miswired
        raise Poison(f"expected {cls.__name__} on {event.message.topic}, got {ev.topic}")
    return ev


def loaded(event: Any, what: str, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """An internal topic's message: a JSON object of the shape the monitor writes there."""
    try:
        body = orjson.loads(event.value or b"")
    except orjson.JSONDecodeError as exc:
        raise Poison(f"undecodable {what}: {exc}") from exc
    if not isinstance(body, dict) or not valid(body):
        raise Poison(f"not a {what}: {bytes(event.value or b'')[:200]!r}")
    return body


def is_join(body: dict[str, Any]) -> bool:
    """A ``monitor.join`` message: predictions ``p``, labels ``l``, or a sweep tick."""
    if set(body) == {"sweep"}:
        return True
    p, lab = body.get("p", []), body.get("l", [])
    return (
        bool(body)
        and set(body) <= {"p", "l"}
        and isinstance(p, list)
        and isinstance(lab, list)
        and all(isinstance(i, list) and len(i) == 8 for i in p)
        and all(isinstance(i, list) and len(i) == 4 for i in lab)
    )


def is_signal(body: dict[str, Any]) -> bool:
    """A ``monitor.signals`` message: one model's finding, joined pairs or arm evidence."""
    return isinstance(body.get("model"), str) and body.get("kind") in (
        "finding",
        "joined",
        "arms",
    )
