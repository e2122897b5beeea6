"""The monitor applies an alias move once per event id (the registry's outbox may send it twice)."""

from __future__ import annotations

from typing import Any

from flywheel_monitor.aliases import AliasChanges
from flywheel_shared.events import Event, ModelAliasChanged


class Cache:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


def test_a_redelivered_alias_move_is_applied_once() -> None:
    cache: Any = Cache()
    changes = AliasChanges(cache, group="g", topic="t.model.alias.changed.v1")
    move = ModelAliasChanged(model="fraud", alias="canary", version=2, weight=0.2)
    again = ModelAliasChanged.model_validate_json(move.model_dump_json())  # another record
    assert changes.apply(move)
    assert not changes.apply(again)
    later = ModelAliasChanged(model="fraud", alias="canary", version=2, weight=0.5)
    assert changes.apply(later)
    assert cache.events == [move, later]
