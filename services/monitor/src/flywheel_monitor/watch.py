"""What the monitor does with one model's predictions (the ``predictions`` side).

All predictions of a model share a partition (the topic is keyed by model), so one worker owns
a model's :class:`WatchState`: its drift detectors per version, the label-free performance
estimate per version and route, and the live evidence of a running shadow or canary. The state
is one table value per model, written after each input message together with the input's
offset, so a message redelivered after a crash is recognised and not applied twice.

Outputs are plain data: ``drift.detected`` events to publish, and *signals* for the model's
decision maker (:mod:`flywheel_monitor.brain`) — drift and estimated-metric findings, rollout
evidence snapshots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from flywheel_shared.events import DriftDetected, Prediction, derived_id
from flywheel_shared.spec import ModelSpec

from .domain.episodes import Finding
from .drift import Calibration, Detector, DriftReport, make_detector
from .live import bucket_of, buckets_to_close, floor_findings, report_window
from .metrics import (
    DRIFT_EVENTS,
    DRIFT_FLAG,
    DRIFT_SAMPLING,
    DRIFT_STATISTIC,
    DRIFT_THRESHOLD,
    PREDICTIONS,
)
from .watch_state import Arm, VersionWatch, WatchState

__all__ = [
    "SNAPSHOT_EVERY",
    "Arm",
    "VersionInfo",
    "VersionWatch",
    "WatchOutput",
    "WatchState",
    "Watcher",
    "score_of",
]

SNAPSHOT_EVERY = 100
"""Candidate predictions between two rollout-evidence snapshots sent to the decision maker."""


def score_of(output: Any) -> float | None:
    """P(positive) from a logged output (``{"label", "score"}``); None if there is none."""
    if isinstance(output, dict):
        value = output.get("score")
        if isinstance(value, int | float) and not isinstance(value, bool):
            f = float(value)
            return f if math.isfinite(f) and 0.0 <= f <= 1.0 else None
    return None


def _finite(values: dict[str, float]) -> dict[str, float]:
    """JSON has no infinity: an overwhelming statistic is capped, a NaN left out."""
    out = {}
    for k, v in values.items():
        f = float(v)
        if math.isnan(f):
            continue
        out[k] = max(-1e12, min(1e12, f))
    return out


@dataclass
class WatchOutput:
    """What one input message produced."""

    drift: list[DriftDetected] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VersionInfo:
    """What the watcher needs to know about a version (from the registry)."""

    correlation_id: str | None
    calibration: Calibration | None
    step: int = 0
    """Canary step index (from the alias weight); 0 for shadow."""


class Watcher:
    """Applies prediction batches of one model to its state; keeps detectors in memory."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._detectors: dict[int, tuple[Calibration, Detector]] = {}

    def forget(self) -> None:
        """Drop in-memory detectors (after a rebalance the table is the truth)."""
        self._detectors.clear()

    def _detector(self, version: int, vw: VersionWatch, cal: Calibration) -> Detector:
        held = self._detectors.get(version)
        if held is not None and held[0] is cal:
            return held[1]
        det = make_detector(cal, vw.detector_state)
        self._detectors[version] = (cal, det)
        return det

    def apply(
        self,
        state: WatchState,
        preds: list[Prediction],
        spec: ModelSpec,
        info: dict[int, VersionInfo],
    ) -> WatchOutput:
        """Apply one message's predictions (all of this model) to ``state``."""
        out = WatchOutput()
        by_version: dict[int, list[Prediction]] = {}
        counts: dict[tuple[int, str], int] = {}
        for p in preds:
            by_version.setdefault(p.version, []).append(p)
            counts[(p.version, p.route)] = counts.get((p.version, p.route), 0) + 1
            if p.route == "production" and state.production != p.version:
                # A promoted candidate's rollout is over.
                state.production = p.version
                for alias in [a for a, arm in state.arms.items() if arm.version == p.version]:
                    del state.arms[alias]
        for (version, route), n in counts.items():
            PREDICTIONS.labels(self.model, str(version), route).inc(n)
        for version, vpreds in sorted(by_version.items()):
            self._drift(state, version, vpreds, spec, info.get(version), out)
        self._estimates(state, preds, spec, out)
        self._arms(state, preds, info, out)
        return out

    # -- drift --------------------------------------------------------------------------------

    def _drift(
        self,
        state: WatchState,
        version: int,
        preds: list[Prediction],
        spec: ModelSpec,
        info: VersionInfo | None,
        out: WatchOutput,
    ) -> None:
        vw = state.versions.setdefault(str(version), VersionWatch())
        if info is not None and info.correlation_id:
            vw.correlation_id = info.correlation_id
        rows = [[p.features, score_of(p.output), p.at.timestamp()] for p in preds]
        cal = info.calibration if info else None
        if cal is None:
            # Not calibrated yet: keep the newest rows (a window's worth) for when it is.
            vw.pending.extend(rows)
            del vw.pending[: max(0, len(vw.pending) - spec.drift.window)]
            return
        det = self._detector(version, vw, cal)
        if vw.pending:
            rows = vw.pending + rows
            vw.pending = []
        reports = det.update([r[0] for r in rows], [r[1] for r in rows])
        vw.detector_state = det.state_bytes()
        DRIFT_SAMPLING.labels(self.model, str(version)).set(det.sampling_rate)
        last_at = rows[-1][2]
        is_production = any(p.route == "production" for p in preds)
        for report in reports:
            self._gauges(version, report)
            ratio = report.score / report.threshold if report.threshold > 0 else 0.0
            if report.drift:
                event = self._drift_event(version, vw, report, last_at, spec)
                if event is not None:
                    out.drift.append(event)
                vw.windows += 1
                if is_production:
                    out.signals.append(
                        self._finding(version, vw, True, ratio, last_at, event, kind="drift")
                    )
                vw.clean_rows, vw.clean_max = 0, 0.0
            else:
                vw.clean_max = max(vw.clean_max, ratio)
        vw.clean_rows += len(rows)
        if vw.clean_rows >= spec.drift.window:
            vw.windows += 1
            if is_production:
                out.signals.append(
                    self._finding(version, vw, False, vw.clean_max, last_at, None, kind="drift")
                )
            vw.clean_rows, vw.clean_max = 0, 0.0

    def _gauges(self, version: int, report: DriftReport) -> None:
        v = str(version)
        for feature, value in report.statistics.items():
            DRIFT_STATISTIC.labels(self.model, v, feature).set(value)
            if feature in report.thresholds:
                DRIFT_THRESHOLD.labels(self.model, v, feature).set(report.thresholds[feature])
        DRIFT_FLAG.labels(self.model, v).set(1 if report.drift else 0)

    def _drift_event(
        self, version: int, vw: VersionWatch, report: DriftReport, at: float, spec: ModelSpec
    ) -> DriftDetected | None:
        if vw.alert_at is not None and at - vw.alert_at < spec.drift.cooldown_s:
            return None
        vw.alert_at = at
        DRIFT_EVENTS.labels(self.model).inc()
        kwargs: dict[str, Any] = {}
        if vw.correlation_id:
            kwargs["correlation_id"] = vw.correlation_id
        return DriftDetected(
            event_id=derived_id(
                "drift.detected", self.model, version, report.detector, report.position
            ),
            model=self.model,
            version=version,
            detector=report.detector,
            features=list(report.drifted_features),
            statistics=_finite(report.statistics),
            p_values=_finite(report.p_values),
            threshold=float(report.threshold),
            window=int(report.window),
            **kwargs,
        )

    def _finding(
        self,
        version: int,
        vw: VersionWatch,
        alarm: bool,
        ratio: float,
        at: float,
        event: DriftDetected | None,
        *,
        kind: str,
    ) -> dict[str, Any]:
        finding = Finding(
            kind="drift",
            source=f"drift:v{version}",
            window_id=vw.windows,
            alarm=alarm,
            value=float(ratio),
            threshold=1.0,
            at=at,
            version=version,
            cause_event_id=str(event.event_id) if event else None,
            correlation_id=vw.correlation_id,
            higher_is_worse=True,
        )
        return {"kind": "finding", "finding": finding.to_dict()}

    # -- label-free performance estimate (CBPE) -----------------------------------------------

    def _estimates(
        self, state: WatchState, preds: list[Prediction], spec: ModelSpec, out: WatchOutput
    ) -> None:
        mon = spec.monitoring
        width = mon.bucket_s
        grouped: dict[tuple[str, int], list[Any]] = {}
        for p in preds:
            at = p.at.timestamp()
            state.watermark = max(state.watermark, at)
            grouped.setdefault((f"{p.version}/{p.route}", bucket_of(at, width)), []).append(
                score_of(p.output)
            )
        for (arm, bucket), scores in grouped.items():
            if state.closed is not None and bucket <= state.closed:
                continue  # later than the allowed lateness: the bucket is closed
            state.scores.get(arm, bucket).add(scores)
        closable = bucket_of(state.watermark - mon.lateness_s, width) - 1
        n_window = max(1, int(mon.window_s // width))
        state.closed, ends = buckets_to_close(state.scores, state.closed, closable)
        for end in ends:
            state.closed = end
            self._close_bucket(state, end, n_window, spec, out)
        state.scores.drop_through(state.closed - n_window)

    def _close_bucket(
        self, state: WatchState, bucket: int, n_window: int, spec: ModelSpec, out: WatchOutput
    ) -> None:
        mon = spec.monitoring
        for arm, _ in state.scores.arms():
            window = state.scores.window(arm, bucket, n_window)
            values = {
                "accuracy": window.expected_accuracy(),
                "roc_auc": window.expected_roc_auc(),
            }
            version, route = report_window(self.model, arm, "estimated", window.count, values)
            if route != "production" or not mon.estimated or window.count < mon.min_predictions:
                continue
            vw = state.versions.get(str(version))
            cid = vw.correlation_id if vw else None
            for finding in floor_findings(mon, "estimated", bucket, version, values, cid):
                out.signals.append({"kind": "finding", "finding": finding.to_dict()})

    # -- rollout evidence ---------------------------------------------------------------------

    def _arms(
        self,
        state: WatchState,
        preds: list[Prediction],
        info: dict[int, VersionInfo],
        out: WatchOutput,
    ) -> None:
        for p in preds:
            if p.route == "production":
                continue
            vi = info.get(p.version)
            step = vi.step if vi is not None and p.route == "canary" else 0
            arm = state.arms.get(p.route)
            if arm is None or (arm.version, arm.step) != (p.version, step):
                arm = Arm(version=p.version, alias=p.route, step=step, since=p.at.timestamp())
                state.arms[p.route] = arm
        if not state.arms:
            return
        for arm in state.arms.values():
            cand_s: list[Any] = []
            cand_l: list[float] = []
            champ_s: list[Any] = []
            champ_l: list[float] = []
            for p in preds:
                if p.at.timestamp() < arm.since:
                    continue
                if p.route == "production":
                    champ_s.append(score_of(p.output))
                    champ_l.append(p.latency_ms)
                elif p.route == arm.alias and p.version == arm.version:
                    cand_s.append(score_of(p.output))
                    cand_l.append(p.latency_ms)
            if cand_s:
                arm.candidate.add_predictions(cand_s, cand_l)
                arm.unsent += len(cand_s)
            if champ_s:
                arm.champion.add_predictions(champ_s, champ_l)
        for alias, arm in list(state.arms.items()):
            if arm.unsent >= SNAPSHOT_EVERY:
                arm.unsent = 0
                out.signals.append(
                    {
                        "kind": "arms",
                        "alias": alias,
                        "version": arm.version,
                        "step": arm.step,
                        "since": arm.since,
                        "at": state.watermark,
                        "production": state.production,
                        "candidate": arm.candidate.to_dict(),
                        "champion": arm.champion.to_dict(),
                    }
                )
