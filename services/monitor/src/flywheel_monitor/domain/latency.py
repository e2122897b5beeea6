"""Latency quantiles of live traffic: a fixed log-spaced histogram, mergeable, within 1 %."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from .sparse import count_into, counts_in, merge_into, sparse_out

#: Quantiles are within this relative error of a true sample value.
LATENCY_RELATIVE_ACCURACY = 0.01
_GAMMA = (1.0 + LATENCY_RELATIVE_ACCURACY) / (1.0 - LATENCY_RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
#: Latencies at or below this many milliseconds share one bucket reported as 0.
LATENCY_MIN_MS = 1e-3
#: Latencies above this share the top bucket (the exact maximum is kept separately).
LATENCY_MAX_MS = 1e7
_MIN_INDEX = math.ceil(math.log(LATENCY_MIN_MS) / _LOG_GAMMA)
_MAX_INDEX = math.ceil(math.log(LATENCY_MAX_MS) / _LOG_GAMMA)


@dataclass
class LatencySketch:
    """Latency quantiles from a fixed log-spaced histogram (deterministic, mergeable).

    Bucket ``i`` holds latencies in (g^(i-1), g^i] ms with g = 1.01/0.99, and reports them
    as 2g^i/(g+1): any quantile is within 1 % of a latency that was observed. The buckets
    are fixed, so at most ~1,150 of them exist whatever the traffic.
    """

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    #: Latencies at or below LATENCY_MIN_MS (negative ones included).
    low: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, latencies_ms: ArrayLike) -> Self:
        """Add latencies in milliseconds (in place; NaN ignored); returns ``self``."""
        x = np.asarray(latencies_ms, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        if x.size == 0:
            return self
        self.count += int(x.size)
        self.total_ms += float(np.sum(np.clip(x, 0.0, None)))
        self.max_ms = max(self.max_ms, float(np.max(x)))
        small = x <= LATENCY_MIN_MS
        self.low += int(np.count_nonzero(small))
        big = np.minimum(x[~small], LATENCY_MAX_MS)
        idx = np.ceil(np.log(big) / _LOG_GAMMA).astype(np.int64)
        count_into(self.counts, np.clip(idx, _MIN_INDEX, _MAX_INDEX), offset=_MIN_INDEX)
        return self

    def merge(self, other: LatencySketch) -> Self:
        """Fold ``other``'s latencies into these (in place); returns ``self``."""
        merge_into(self.counts, other.counts)
        self.count += other.count
        self.low += other.low
        self.total_ms += other.total_ms
        self.max_ms = max(self.max_ms, other.max_ms)
        return self

    def copy(self) -> LatencySketch:
        """An independent copy."""
        return replace(self, counts=dict(self.counts))

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile: the smallest latency with at least a share q at or below it."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))
        seen = self.low
        if seen >= rank:
            return 0.0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(2.0 * _GAMMA**i / (_GAMMA + 1.0), self.max_ms)
        return self.max_ms

    def p99(self) -> float | None:
        """The 99th percentile in milliseconds (None when empty)."""
        return self.quantile(0.99)

    def mean_ms(self) -> float | None:
        """Mean latency in milliseconds (None when empty)."""
        return self.total_ms / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, buckets sparse."""
        return {
            "counts": sparse_out(self.counts),
            "count": self.count,
            "low": self.low,
            "total_ms": self.total_ms,
            "max_ms": self.max_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySketch:
        """Inverse of ``to_dict``."""
        return cls(
            counts=counts_in(data["counts"]),
            count=int(data["count"]),
            low=int(data["low"]),
            total_ms=float(data["total_ms"]),
            max_ms=float(data["max_ms"]),
        )
