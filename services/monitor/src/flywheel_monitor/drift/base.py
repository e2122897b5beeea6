"""What every drift backend produces and exposes: reports and the detector port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one test run of one detector.

    ``statistics``/``thresholds``/``p_values`` are per monitored column (features and
    ``_score``); each backend documents their units. ``score`` and ``threshold`` are the joint
    statistic and the threshold it is compared with (``drift`` is ``score > threshold``), so
    ``score / threshold`` is a unit-free "how close to an alarm". ``window`` is the number of
    rows in the tested window and ``position`` the number of rows this detector had seen when
    the test ran (counting every row given to ``update``, sampled or not).
    """

    detector: str
    drift: bool
    statistics: dict[str, float]
    thresholds: dict[str, float]
    p_values: dict[str, float]
    drifted_features: list[str]
    window: int
    position: int
    score: float
    threshold: float


class Detector(Protocol):
    """A stateful drift detector over one model version's prediction stream."""

    seen: int
    """Rows given to :meth:`update` since the detector was created (survives restores)."""

    @property
    def sampling_rate(self) -> float:
        """Share of the rows actually fed to the statistical tests (1.0 when all are)."""
        ...

    def update(
        self, rows: Sequence[Mapping[str, Any]], scores: Sequence[float | None]
    ) -> list[DriftReport]:
        """Feed rows (feature dicts) and their model scores; one report per test run."""
        ...

    def state_bytes(self) -> bytes:
        """The detector's state: ``make_detector(cal, state)`` continues exactly from here."""
        ...

    def reset(self) -> None:
        """Forget the current windows (keeps ``seen``)."""
        ...
