"""One arm's live traffic in a rollout (the candidate's or the champion's): what is judged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from numpy.typing import ArrayLike

from .latency import LatencySketch
from .metrics import DEFAULT_BINS, LabelStats, ScoreStats


@dataclass
class ArmStats:
    """One arm's live traffic (candidate or champion): requests, latency, scores, labels."""

    scores: ScoreStats = field(default_factory=ScoreStats)
    latency: LatencySketch = field(default_factory=LatencySketch)
    labels: LabelStats = field(default_factory=LabelStats)

    @classmethod
    def empty(cls, bins: int = DEFAULT_BINS) -> ArmStats:
        """No traffic yet, histograms with ``bins`` bins."""
        return cls(ScoreStats(bins=bins), LatencySketch(), LabelStats(bins=bins))

    @property
    def requests(self) -> int:
        """Predictions served, failed ones included."""
        return self.scores.requests

    @property
    def errors(self) -> int:
        """Predictions whose output failed (score missing, NaN or out of range)."""
        return self.scores.errors

    def add_predictions(self, scores: ArrayLike, latencies_ms: ArrayLike | None = None) -> Self:
        """Add served predictions and their latencies (in place); returns ``self``."""
        self.scores.add(scores)
        if latencies_ms is not None:
            self.latency.add(latencies_ms)
        return self

    def add_labels(self, scores: ArrayLike, labels: ArrayLike) -> Self:
        """Add predictions whose label arrived (in place); returns ``self``."""
        self.labels.add(scores, labels)
        return self

    def merge(self, other: ArmStats) -> Self:
        """Fold ``other``'s traffic into this arm's (in place); returns ``self``."""
        self.scores.merge(other.scores)
        self.latency.merge(other.latency)
        self.labels.merge(other.labels)
        return self

    def copy(self) -> ArmStats:
        """An independent copy."""
        return ArmStats(self.scores.copy(), self.latency.copy(), self.labels.copy())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "scores": self.scores.to_dict(),
            "latency": self.latency.to_dict(),
            "labels": self.labels.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        """Inverse of ``to_dict``."""
        return cls(
            ScoreStats.from_dict(data["scores"]),
            LatencySketch.from_dict(data["latency"]),
            LabelStats.from_dict(data["labels"]),
        )
