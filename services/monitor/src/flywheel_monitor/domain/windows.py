"""Event-time buckets and a bounded series of mergeable statistics per bucket.

Time here is always *event time* (when the prediction or record happened, as carried by the
message), never the wall clock: replaying a topic gives the same buckets, the same closed
windows and therefore the same decisions.

A bucket ``b`` of width ``w`` covers ``[b*w, (b+1)*w)`` seconds since the epoch. The
*watermark* is the largest event time seen minus the allowed lateness; a bucket is *closed*
once its end is at or below the watermark. Data for a closed bucket is counted as late and
dropped, so a closed bucket's statistics never change after they were reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, Self, TypeVar


def epoch_seconds(ts: datetime | float) -> float:
    """``ts`` as seconds since the epoch; datetimes must carry a timezone."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"naive datetime {ts.isoformat()}: event times must be timezone-aware")
        return ts.timestamp()
    value = float(ts)
    if not math.isfinite(value):
        raise ValueError(f"event time must be finite, got {value}")
    return value


def bucket_of(ts: datetime | float, width_s: float) -> int:
    """Index of the ``width_s``-second bucket holding event time ``ts``."""
    if not width_s > 0:
        raise ValueError(f"bucket width must be positive, got {width_s}")
    return math.floor(epoch_seconds(ts) / width_s)


class Mergeable(Protocol):
    """What a bucket's statistics must offer: an in-place merge and a JSON form."""

    def merge(self, other: Self) -> Self:
        """Fold ``other`` into ``self`` (``other`` unchanged) and return ``self``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        ...


S = TypeVar("S", bound=Mergeable)


@dataclass(eq=True)
class BucketSeries(Generic[S]):
    """The statistics of the last ``keep`` event-time buckets of one stream.

    Use: ``stats = series.observe(ts)`` then update ``stats`` in place (None: the event is
    late and dropped); after each batch, ``for b in series.take_closed(): ...`` reports each
    closed bucket exactly once, and ``series.window(b, n)`` merges the sliding window of the
    ``n`` buckets ending at ``b``.

    Bounded: buckets older than ``keep`` buckets before the newest are dropped once they were
    reported by ``take_closed`` (or, if nobody takes them, beyond ``keep`` more), so the series
    never holds more than ``2 * keep`` buckets. ``keep`` must cover the allowed lateness, so a
    bucket is always closed before it can be dropped.
    """

    width_s: float
    keep: int
    factory: Callable[[], S] = field(repr=False, compare=False)
    lateness_s: float = 0.0
    buckets: dict[int, S] = field(default_factory=dict)
    max_event_time: float | None = None
    #: Highest bucket already returned by ``take_closed`` (None: none yet).
    emitted_through: int | None = None
    #: Events dropped because their bucket was closed or already dropped.
    late: int = 0

    def __post_init__(self) -> None:
        if not self.width_s > 0:
            raise ValueError(f"width_s must be positive, got {self.width_s}")
        if self.lateness_s < 0:
            raise ValueError(f"lateness_s must be >= 0, got {self.lateness_s}")
        needed = math.ceil(self.lateness_s / self.width_s) + 1
        if self.keep < needed:
            raise ValueError(
                f"keep={self.keep} buckets cannot hold {self.lateness_s}s of lateness at "
                f"{self.width_s}s per bucket; keep at least {needed}"
            )

    # -- time ----------------------------------------------------------------------------
    def watermark(self) -> float | None:
        """Largest event time seen minus the allowed lateness (None before any event)."""
        if self.max_event_time is None:
            return None
        return self.max_event_time - self.lateness_s

    def is_closed(self, bucket: int) -> bool:
        """True once the watermark has passed the end of ``bucket``."""
        mark = self.watermark()
        return mark is not None and (bucket + 1) * self.width_s <= mark

    # -- updates -------------------------------------------------------------------------
    def observe(self, ts: datetime | float) -> S | None:
        """Advance event time to ``ts``; the stats of ``ts``'s bucket, or None if it is late.

        The returned object is stored in the series: update it in place.
        """
        t = epoch_seconds(ts)
        if self.max_event_time is None or t > self.max_event_time:
            self.max_event_time = t
        b = bucket_of(t, self.width_s)
        if self.is_closed(b) or (self.emitted_through is not None and b <= self.emitted_through):
            self.late += 1
            return None
        stats = self.buckets.get(b)
        if stats is None:
            stats = self.factory()
            self.buckets[b] = stats
        self._prune()
        return stats

    def closed(self) -> list[int]:
        """Buckets holding data whose end the watermark has passed, oldest first."""
        return [b for b in sorted(self.buckets) if self.is_closed(b)]

    def take_closed(self) -> list[int]:
        """Closed buckets not returned before, oldest first; each is returned only once."""
        fresh = [
            b for b in self.closed() if self.emitted_through is None or b > self.emitted_through
        ]
        if fresh:
            self.emitted_through = fresh[-1]
        self._prune()
        return fresh

    def window(self, end: int, n: int = 1) -> S:
        """Merged statistics of the buckets ``end - n + 1 .. end`` that are still held.

        A new object: the buckets themselves are left unchanged.
        """
        if n < 1:
            raise ValueError(f"a window needs at least one bucket, got n={n}")
        merged = self.factory()
        for b in range(end - n + 1, end + 1):
            stats = self.buckets.get(b)
            if stats is not None:
                merged.merge(stats)
        return merged

    def newest(self) -> int | None:
        """The bucket of the largest event time seen (None before any event)."""
        if self.max_event_time is None:
            return None
        return bucket_of(self.max_event_time, self.width_s)

    def _prune(self) -> None:
        newest = self.newest()
        if newest is None:
            return
        floor = newest - self.keep + 1
        old = sorted(b for b in self.buckets if b < floor)
        if not old:
            return
        done = self.emitted_through
        reported = [b for b in old if done is not None and b <= done]
        pending = [b for b in old if done is None or b > done]
        # Unreported buckets survive until taken, but never more than ``keep`` of them.
        drop = reported + pending[: max(0, len(pending) - self.keep)]
        for b in drop:
            del self.buckets[b]

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (bucket stats via their own ``to_dict``)."""
        return {
            "width_s": self.width_s,
            "keep": self.keep,
            "lateness_s": self.lateness_s,
            "buckets": [[b, self.buckets[b].to_dict()] for b in sorted(self.buckets)],
            "max_event_time": self.max_event_time,
            "emitted_through": self.emitted_through,
            "late": self.late,
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        factory: Callable[[], S],
        decode: Callable[[dict[str, Any]], S],
    ) -> BucketSeries[S]:
        """Inverse of ``to_dict``; ``decode`` rebuilds one bucket's stats."""
        max_t = data.get("max_event_time")
        emitted = data.get("emitted_through")
        return cls(
            width_s=float(data["width_s"]),
            keep=int(data["keep"]),
            factory=factory,
            lateness_s=float(data.get("lateness_s", 0.0)),
            buckets={int(b): decode(s) for b, s in data.get("buckets", [])},
            max_event_time=None if max_t is None else float(max_t),
            emitted_through=None if emitted is None else int(emitted),
            late=int(data.get("late", 0)),
        )
