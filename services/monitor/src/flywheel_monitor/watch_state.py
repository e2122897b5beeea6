"""What the predictions side keeps for one model: one ``watch`` table value per model.

:class:`WatchState` holds the drift state per version (:class:`VersionWatch`), the score
buckets behind the label-free estimates, and the live evidence of a running shadow or canary
(:class:`Arm`); it round-trips through ``to_bytes()`` / ``from_bytes()`` (compact JSON keys).
:class:`.watch.Watcher` applies prediction batches to it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from .buckets import Buckets
from .domain.metrics import ScoreStats
from .domain.rollout import ArmStats


def _score_buckets() -> Buckets[ScoreStats]:
    return Buckets(ScoreStats, ScoreStats.from_dict)


@dataclass
class VersionWatch:
    """Drift state of one version."""

    correlation_id: str | None = None
    detector_state: bytes | None = None
    pending: list[list[Any]] = field(default_factory=list)
    """Rows (features, score) waiting for the calibration; bounded by the window."""
    alert_at: float | None = None
    """Event time of the last drift.detected (alerts are spaced by the drift cooldown)."""
    clean_rows: int = 0
    clean_max: float = 0.0
    windows: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "c": self.correlation_id,
            "d": base64.b64encode(self.detector_state).decode() if self.detector_state else None,
            "p": self.pending,
            "a": self.alert_at,
            "r": self.clean_rows,
            "m": self.clean_max,
            "w": self.windows,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VersionWatch:
        return cls(
            correlation_id=d["c"],
            detector_state=base64.b64decode(d["d"]) if d["d"] else None,
            pending=d["p"],
            alert_at=d["a"],
            clean_rows=d["r"],
            clean_max=d["m"],
            windows=d["w"],
        )


@dataclass
class Arm:
    """Live evidence of one shadow or canary against production since it took its step."""

    version: int
    alias: str
    step: int
    since: float
    candidate: ArmStats = field(default_factory=ArmStats)
    champion: ArmStats = field(default_factory=ArmStats)
    unsent: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "a": self.alias,
            "s": self.step,
            "t": self.since,
            "c": self.candidate.to_dict(),
            "p": self.champion.to_dict(),
            "u": self.unsent,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Arm:
        return cls(
            version=d["v"],
            alias=d["a"],
            step=d["s"],
            since=d["t"],
            candidate=ArmStats.from_dict(d["c"]),
            champion=ArmStats.from_dict(d["p"]),
            unsent=d["u"],
        )


@dataclass
class WatchState:
    """Everything the predictions side keeps for one model (one table value)."""

    applied: dict[str, int] = field(default_factory=dict)
    """Last input offset applied, per input partition."""
    versions: dict[str, VersionWatch] = field(default_factory=dict)
    scores: Buckets[ScoreStats] = field(default_factory=lambda: _score_buckets())
    """``"version/route"`` → bucket index → ScoreStats."""
    watermark: float = 0.0
    closed: int | None = None
    """Last event-time bucket closed."""
    arms: dict[str, Arm] = field(default_factory=dict)
    """alias → running rollout evidence."""
    production: int | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "applied": self.applied,
                "versions": {k: v.to_json() for k, v in self.versions.items()},
                "scores": self.scores.to_json(),
                "watermark": self.watermark,
                "closed": self.closed,
                "arms": {k: a.to_json() for k, a in self.arms.items()},
                "production": self.production,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WatchState:
        d = orjson.loads(data)
        return cls(
            applied=d["applied"],
            versions={k: VersionWatch.from_json(v) for k, v in d["versions"].items()},
            scores=_score_buckets().load(d["scores"]),
            watermark=d["watermark"],
            closed=d["closed"],
            arms={k: Arm.from_json(a) for k, a in d["arms"].items()},
            production=d["production"],
        )
