"""What a demo run saw, and the numbers computed from it (pure: no I/O, unit-tested).

Times are Unix seconds. Events carry their producer's ``occurred_at`` (same machine, same
clock); served records carry the time their response arrived at the client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from flywheel_shared.events import (
    DriftDetected,
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RetrainRequested,
    TrainingCompleted,
    TrainingStarted,
)


@dataclass(frozen=True)
class Served:
    """One record the load generator had scored, with its true label."""

    at: float
    version: int
    route: str
    score: float
    label: bool
    drifted: bool


@dataclass
class Sample:
    """The monitor's gauges at one moment: live metrics and the drift statistic."""

    at: float
    metrics: dict[str, float] = field(default_factory=dict)  # "v1/production/roc_auc/realised"
    drift: dict[int, float] = field(default_factory=dict)  # version → max normalised statistic
    threshold: float | None = None


@dataclass
class RunRecord:
    """Everything a run recorded; the report and the latency are computed from it."""

    model: str
    started: float
    scoring_from: float | None = None
    onset: float | None = None
    ended: float | None = None
    served: list[Served] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    topic_counts: dict[str, int] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)
    phase: str = "starting"

    def of(self, kind: type[Event]) -> list[Any]:
        """This model's events of one type, oldest first."""
        return sorted(
            (
                e
                for e in self.events
                if isinstance(e, kind) and getattr(e, "model", None) in (self.model, None)
            ),
            key=lambda e: e.occurred_at,
        )

    def production(self) -> int | None:
        """The version the production alias points at now."""
        moves = [e for e in self.of(ModelAliasChanged) if e.alias == "production"]
        return moves[-1].version if moves else None


def ts(event: Event) -> float:
    """An event's time as Unix seconds."""
    return event.occurred_at.timestamp()


@dataclass(frozen=True)
class LoopLatency:
    """From the drift's onset to the new version serving all traffic, step by step."""

    onset: float
    detected: float | None = None  # first drift finding (or retrain request) after the onset
    requested: float | None = None  # the retrain request
    training_started: float | None = None
    registered: float | None = None  # the new version exists (trained, gated)
    first_alias: float | None = None  # shadow or canary
    promoted: float | None = None  # production alias moved to the new version
    all_traffic: float | None = None  # from here on every answer came from the new version
    old_version: int | None = None
    new_version: int | None = None

    @property
    def complete(self) -> bool:
        """Whether the loop closed: the new version answers all traffic."""
        return self.all_traffic is not None

    def span(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    @property
    def total(self) -> float | None:
        return self.span(self.onset, self.all_traffic)

    @property
    def detection(self) -> float | None:
        return self.span(self.onset, self.detected)

    @property
    def training(self) -> float | None:
        """Retrain request → new version registered (waiting for fresh data included)."""
        return self.span(self.requested, self.registered)

    @property
    def rollout(self) -> float | None:
        """New version registered → every answer from it (shadow, canary, promotion, swap)."""
        return self.span(self.registered, self.all_traffic)

    def steps(self) -> list[tuple[str, float | None]]:
        """Named spans, in order; they add up to the total."""
        return [
            ("detection (onset → first finding)", self.detection),
            ("finding → retrain request", self.span(self.detected, self.requested)),
            (
                "retrain request → training start (fresh data)",
                self.span(self.requested, self.training_started),
            ),
            ("training, gate and registration", self.span(self.training_started, self.registered)),
            ("registration → shadow/canary", self.span(self.registered, self.first_alias)),
            ("shadow and canary steps → promotion", self.span(self.first_alias, self.promoted)),
            (
                "promotion → every answer from the new version",
                self.span(self.promoted, self.all_traffic),
            ),
        ]

    def line(self) -> str:
        """``loop latency: <s> s (detection <s>, training <s>, rollout <s>)``."""

        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1f}"

        return (
            f"loop latency: {f(self.total)} s (detection {f(self.detection)}, "
            f"training {f(self.training)}, rollout {f(self.rollout)})"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            total=self.total,
            detection_s=self.detection,
            training_s=self.training,
            rollout_s=self.rollout,
        )
        return out


def loop_latency(rec: RunRecord) -> LoopLatency | None:
    """Measure the loop of ``rec`` (None before the drift started)."""
    if rec.onset is None:
        return None
    onset = rec.onset
    after = [e for e in rec.events if ts(e) >= onset - 1.0]  # same clock; allow rounding
    findings = [e for e in after if isinstance(e, DriftDetected) and e.model == rec.model]
    requests = [e for e in after if isinstance(e, RetrainRequested) and e.model == rec.model]
    first = lambda es: min(es, key=ts) if es else None  # noqa: E731
    finding, request = first(findings), first(requests)
    # Detection: the first finding, by drift or by a live metric below its floor.
    detected = min((ts(e) for e in (finding, request) if e is not None), default=None)
    if request is None:
        return LoopLatency(onset, detected)
    runs = [
        e
        for e in after
        if isinstance(e, TrainingStarted)
        and e.model == rec.model
        and e.trigger == "retrain"
        and ts(e) >= ts(request)
    ]
    started = first(runs)
    if started is None:
        return LoopLatency(onset, detected, ts(request))
    # The first retrain run that passed its gate: an earlier one may have died with its
    # trainer (and been run again) or failed the gate; the training time counts from the first.
    run_ids = {e.run_id for e in runs}
    done = first(
        [
            e
            for e in after
            if isinstance(e, TrainingCompleted) and e.run_id in run_ids and e.passed_gate
        ]
    )
    new = done.version if done else None
    if new is None:
        return LoopLatency(onset, detected, ts(request), ts(started))
    reg = first(
        [
            e
            for e in after
            if isinstance(e, ModelVersionRegistered) and e.model == rec.model and e.version == new
        ]
    )
    moves = [
        e
        for e in after
        if isinstance(e, ModelAliasChanged) and e.model == rec.model and e.version == new
    ]
    alias_first = first([m for m in moves if m.alias in ("shadow", "canary")])
    promoted = first([m for m in moves if m.alias == "production"])
    old = promoted.previous_version if promoted else None
    swapped = all_traffic_from(rec.served, new, ts(promoted)) if promoted else None
    return LoopLatency(
        onset,
        detected,
        ts(request),
        ts(started),
        ts(reg) if reg else (ts(done) if done else None),
        ts(alias_first) if alias_first else (ts(promoted) if promoted else None),
        ts(promoted) if promoted else None,
        swapped,
        old,
        new,
    )


def all_traffic_from(served: Sequence[Served], version: int, since: float) -> float | None:
    """The time from which every answer came from ``version`` (None if the last did not)."""
    ordered = sorted(served, key=lambda s: s.at)
    if not ordered or ordered[-1].version != version:
        return None
    i = len(ordered) - 1
    while i > 0 and ordered[i - 1].version == version:
        i -= 1
    return max(ordered[i].at, since)


@dataclass(frozen=True)
class Quality:
    """Accuracy (threshold 0.5) and ROC AUC of served records against their true labels."""

    n: int
    accuracy: float
    roc_auc: float
    positives: int = 0

    @classmethod
    def of(cls, served: Iterable[Served]) -> Quality:
        s = list(served)
        if not s:
            return cls(0, math.nan, math.nan)
        scores = np.array([x.score for x in s])
        labels = np.array([x.label for x in s], dtype=bool)
        accuracy = float(((scores >= 0.5) == labels).mean())
        return cls(len(s), accuracy, roc_auc(scores, labels), int(labels.sum()))

    def roc_auc_se(self) -> float:
        """Standard error of the ROC AUC (Hanley & McNeil, 1982): a few thousand rows with a
        few percent positives measure it to about ±0.02, which comparisons must allow for."""
        a, pos, neg = self.roc_auc, self.positives, self.n - self.positives
        if math.isnan(a) or pos == 0 or neg == 0:
            return math.nan
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        var = (a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a)) / (pos * neg)
        return math.sqrt(max(var, 0.0))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ROC AUC; NaN with one class only."""
    from sklearn.metrics import roc_auc_score

    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class Outcome:
    """What the run shows: the drop, the recovery, the decisions and the failures."""

    before: Quality  # production answers in the warm-up before the drift
    during: Quality  # the old version's answers on drifted data
    after: Quality  # answers once the new version served all traffic
    retrain_requests: int
    drift_findings: int
    failed_requests: int
    requests: int


def outcome(rec: RunRecord, latency: LoopLatency | None) -> Outcome:
    """Quality before, during and after the drift episode, from the client's side."""
    onset = rec.onset or math.inf
    start = rec.scoring_from or rec.started
    old = latency.old_version if latency else None
    swap = latency.all_traffic if latency and latency.all_traffic else math.inf
    before = [s for s in rec.served if start <= s.at < onset and s.route == "production"]
    during = [s for s in rec.served if s.drifted and s.at < swap and s.version == old]
    after = [s for s in rec.served if s.at >= swap]
    since = [e for e in rec.events if ts(e) >= onset - 1.0]
    return Outcome(
        Quality.of(before),
        Quality.of(during),
        Quality.of(after),
        sum(1 for e in since if isinstance(e, RetrainRequested) and e.model == rec.model),
        sum(1 for e in since if isinstance(e, DriftDetected) and e.model == rec.model),
        rec.failed,
        rec.requests,
    )
