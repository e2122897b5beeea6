"""Event-time buckets of mergeable statistics per arm (``"version/route"``), kept as objects.

The per-model state is written after every input message; re-encoding an hour of histograms
each time would cost more than the work itself. Each bucket's encoded form is cached and only
the buckets a message touched are encoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, Self, TypeVar


class Stats(Protocol):
    """What a bucket holds: mergeable, serialisable statistics."""

    def merge(self, other: Self) -> Self: ...

    def to_dict(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=Stats)


class Buckets(Generic[S]):
    """arm → bucket index → stats, with cached serialisation."""

    def __init__(self, factory: Callable[[], S], decode: Callable[[dict[str, Any]], S]) -> None:
        self.factory = factory
        self.decode = decode
        self.data: dict[str, dict[int, S]] = {}
        self._encoded: dict[tuple[str, int], dict[str, Any]] = {}

    def get(self, arm: str, bucket: int) -> S:
        """The stats of one bucket, created if missing, to update in place."""
        self._encoded.pop((arm, bucket), None)
        stats = self.data.setdefault(arm, {}).get(bucket)
        if stats is None:
            stats = self.data[arm][bucket] = self.factory()
        return stats

    def arms(self) -> Iterator[tuple[str, dict[int, S]]]:
        """Every arm with its buckets."""
        yield from self.data.items()

    def window(self, arm: str, end: int, n: int) -> S:
        """The merge of the arm's buckets in ``(end - n, end]``."""
        out = self.factory()
        for b, stats in self.data.get(arm, {}).items():
            if end - n < b <= end:
                out.merge(stats)
        return out

    def first(self) -> int | None:
        """The oldest bucket index of any arm."""
        return min((b for bs in self.data.values() for b in bs), default=None)

    def drop_through(self, bucket: int) -> None:
        """Forget every bucket up to and including ``bucket``."""
        for arm, bs in self.data.items():
            for b in [b for b in bs if b <= bucket]:
                del bs[b]
                self._encoded.pop((arm, b), None)

    def to_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Serialisable form (unchanged buckets are not encoded again)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for arm, bs in self.data.items():
            enc = out[arm] = {}
            for b, stats in bs.items():
                cached = self._encoded.get((arm, b))
                if cached is None:
                    cached = self._encoded[(arm, b)] = stats.to_dict()
                enc[str(b)] = cached
        return out

    def load(self, data: dict[str, dict[str, dict[str, Any]]]) -> Self:
        """Fill from :meth:`to_json` output."""
        for arm, bs in data.items():
            self.data[arm] = {int(b): self.decode(d) for b, d in bs.items()}
            for b, d in bs.items():
                self._encoded[(arm, int(b))] = d
        return self
