"""Helpers shared by ingest's tests (a uniquely named module: see the root conftest note)."""

from __future__ import annotations

from collections.abc import Sequence

from flywheel_shared.events import Event
from flywheel_shared.spec import DatasetContract


def fraudless_contract() -> DatasetContract:
    """A small contract with one field of every type."""
    return DatasetContract.model_validate(
        {
            "name": "tx",
            "id_field": "id",
            "time_field": "ts",
            "label_field": "fraud",
            "fields": {
                "id": {"type": "string", "max_length": 20},
                "ts": {"type": "datetime"},
                "amount": {"type": "float", "min": 0, "max": 1000},
                "count": {"type": "int", "min": 0, "required": False},
                "kind": {"type": "category", "categories": ["a", "b"]},
                "online": {"type": "bool"},
                "fraud": {"type": "bool", "nullable": True, "required": False},
            },
        }
    )


def good(i: int = 0, **over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "id": f"r{i}",
        "ts": "2026-01-01T00:00:00Z",
        "amount": 10.5 + i,
        "count": i,
        "kind": "a" if i % 2 else "b",
        "online": bool(i % 3),
        "fraud": None,
    }
    rec.update(over)
    return rec


class FakeProducer:
    """Collects published events; can be told to fail."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.started = True
        self.fail: Exception | None = None

    async def publish(self, event: Event) -> None:
        await self.publish_all([event])

    async def publish_all(self, events: Sequence[Event]) -> None:
        if self.fail is not None:
            raise self.fail
        self.events.extend(events)

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]
