"""A sequential change detector on the model-score stream (river), the engine's second detector.

The window tests see the score's distribution every ``step`` rows; this detector reacts to a
shift of its mean row by row. Default: river's Page-Hinkley on the score's *normal scores*
``z = Φ⁻¹(F_ref(score))`` (``F_ref``: the reference scores' mid-rank ECDF, clipped to
``[0.5/n, 1 - 0.5/n]``). Under no drift ``z`` is close to N(0, 1) whatever the score's shape
(fraud scores are very skewed), so the threshold can be set from theory: Page-Hinkley with
``delta = k`` is a CUSUM with reference value k, whose in-control average run length is, by
Siegmund's approximation for N(0, 1) data, ``ARL0(h) ≈ (e^{2k(h+1.166)} - 1 - 2k(h+1.166)) / 2k²``.
Both directions are watched, so each side gets ``ARL0 = 2 · SAFETY · ERT_eff`` rows (ERT_eff as
in :mod:`.permissive`): with k = 0.5 (tuned for a shift of one standard deviation) this gives
h ≈ 11.7. The fraud evaluation measures the realised rate (see :mod:`.evaluate`).

``score_detector="adwin"`` uses river's ADWIN on the raw score (bounded in [0, 1]) with
``delta = score_delta`` instead: no normalisation needed, but ≈ 7 µs per row instead of ≈ 1.5.

State is a river object (pickled: river has no other serialisation; it is only ever read back
from our own store) plus two counters, O(1) for Page-Hinkley and O(log n) for ADWIN; it is
reset after every alarm and every ``ERT_eff`` rows.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from .base import DriftReport
from .config import SCORE, DriftConfig

FloatArray = npt.NDArray[np.float64]

PH_K = 0.5
PH_MIN_INSTANCES = 100
SAFETY = 2.0


def siegmund_arl(h: float, k: float = PH_K) -> float:
    """In-control ARL of a one-sided CUSUM (N(0,1) data, reference k, threshold h)."""
    a = 2.0 * k * (h + 1.166)
    return (math.exp(a) - 1.0 - a) / (2.0 * k * k)


def ph_threshold(arl: float, k: float = PH_K) -> float:
    """The CUSUM threshold whose in-control ARL is ``arl`` (bisection on Siegmund's formula)."""
    lo, hi = 0.0, 200.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if siegmund_arl(mid, k) < arl:
            lo = mid
        else:
            hi = mid
    return hi


class ScoreWatch:
    """Page-Hinkley (or ADWIN) on the score stream; reports only its alarms."""

    def __init__(self, config: DriftConfig, reference_scores: FloatArray, ert_eff: int) -> None:
        self.kind = config.score_detector
        self.delta = config.score_delta
        ref = np.sort(reference_scores[np.isfinite(reference_scores)])
        self._ref = ref
        self._n = max(len(ref), 1)
        self.reset_every = int(ert_eff)
        self.threshold = ph_threshold(2.0 * SAFETY * ert_eff)
        self.name = f"score.{self.kind}"
        self._det: Any = None
        self.reset(0)

    def reset(self, start: int) -> None:
        """Forget everything; the reset schedule restarts at row ``start``."""
        self._start = start
        self._det = None
        if self.kind == "page_hinkley":
            from river.drift import PageHinkley

            self._det = PageHinkley(
                min_instances=PH_MIN_INSTANCES,
                delta=PH_K,
                threshold=self.threshold,
                alpha=1.0,
                mode="both",
            )
        elif self.kind == "adwin":
            from river.drift import ADWIN

            self._det = ADWIN(delta=self.delta)

    def normal_scores(self, x: FloatArray) -> FloatArray:
        """``Φ⁻¹`` of the reference mid-rank ECDF of ``x``."""
        if not len(self._ref):
            return np.zeros(len(x))
        ranks = np.searchsorted(self._ref, x, "left") + np.searchsorted(self._ref, x, "right")
        f = np.clip(ranks / (2.0 * self._n), 0.5 / self._n, 1.0 - 0.5 / self._n)
        z: FloatArray = ndtri(f)
        return z

    def update(self, scores: FloatArray, first: int) -> list[DriftReport]:
        """Feed one batch's scores (NaN: skipped); ``first`` = rows seen before the batch."""
        if self._det is None:
            return []
        valid = np.flatnonzero(~np.isnan(scores))
        raw = scores[valid]
        values = self.normal_scores(raw) if self.kind == "page_hinkley" else raw
        reports: list[DriftReport] = []
        det = self._det
        for i, x in zip(valid.tolist(), values.tolist(), strict=True):
            pos = first + i + 1
            if pos - self._start > self.reset_every:
                self.reset(pos - 1)
                det = self._det
            det.update(x)
            if det.drift_detected:
                reports.append(self._report(pos))
                self.reset(pos)
                det = self._det
        return reports

    def _report(self, position: int) -> DriftReport:
        det = self._det
        if self.kind == "page_hinkley":
            up = float(det._sum_increase - det._min_increase)
            down = float(det._max_decrease - det._sum_decrease)
            score, threshold = max(up, down), self.threshold
            window = int(det._x_mean.n)
        else:
            score = float(det.estimation)
            threshold = 0.0
            window = int(det.width)
        return DriftReport(
            detector=self.name,
            drift=True,
            statistics={SCORE: score},
            thresholds={SCORE: threshold},
            p_values={},
            drifted_features=[SCORE],
            window=window,
            position=position,
            score=score,
            threshold=threshold,
        )

    def state(self) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
        """(meta, arrays) for :mod:`.codec`."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        if self._det is not None:
            arrays["score_watch"] = np.frombuffer(pickle.dumps(self._det), dtype=np.uint8)
        return {"score_watch_start": self._start}, arrays

    def load(self, meta: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Inverse of :meth:`state`."""
        self._start = int(meta["score_watch_start"])
        if "score_watch" in arrays:
            # The monitor's own state, from its own table (RocksDB, changelog topic): whoever
            # can write there already controls the monitor. Never fed from outside input.
            self._det = pickle.loads(arrays["score_watch"].tobytes())  # noqa: S301
