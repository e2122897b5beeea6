"""The per-model decision maker (the ``signals`` side).

Every signal about a model reaches one place, keyed by model: drift and estimated-metric
findings and rollout evidence from the predictions side, joined (prediction, label) pairs from
the label join. Here live, label-based metrics are computed per version and route over an
event-time window, retrain requests go through one state machine per model (confirmation,
cooldown, hysteresis: one request per episode, whatever its causes), and shadows and canaries
are judged against production. Like the predictions side, the state is one table value per
model written with the offset it has applied, so a redelivered signal is not applied twice;
every decision has a deterministic event id, so a re-emitted one is dropped downstream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from flywheel_shared.events import Event, RetrainRequested, RolloutVerdict, derived_id
from flywheel_shared.spec import ModelSpec

from .buckets import Buckets
from .domain.episodes import EpisodeState, Finding, RetrainPolicy
from .domain.metrics import LabelStats
from .domain.rollout import ArmStats, RolloutState, judge
from .live import bucket_of, buckets_to_close, floor_findings, report_window
from .metrics import RETRAINS, VERDICTS


@dataclass
class Rollout:
    """What the decision maker tracks for one shadow or canary step."""

    version: int
    step: int
    since: float
    looks: int = 0
    decided: str | None = None
    last_hold: float | None = None
    cand_labels: LabelStats = field(default_factory=LabelStats)
    champ_labels: LabelStats = field(default_factory=LabelStats)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "s": self.step,
            "t": self.since,
            "n": self.looks,
            "d": self.decided,
            "h": self.last_hold,
            "cl": self.cand_labels.to_dict(),
            "pl": self.champ_labels.to_dict(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rollout:
        return cls(
            version=d["v"],
            step=d["s"],
            since=d["t"],
            looks=d["n"],
            decided=d["d"],
            last_hold=d["h"],
            cand_labels=LabelStats.from_dict(d["cl"]),
            champ_labels=LabelStats.from_dict(d["pl"]),
        )


@dataclass
class BrainState:
    """Everything the decision maker keeps for one model (one table value)."""

    applied: dict[str, int] = field(default_factory=dict)
    labels: Buckets[LabelStats] = field(default_factory=lambda: _label_buckets())
    """``"version/route"`` → bucket → LabelStats."""
    watermark: float = 0.0
    closed: int | None = None
    episode: EpisodeState | None = None
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    production: int | None = None
    correlations: dict[str, str] = field(default_factory=dict)
    """version → correlation id of the version (from findings)."""
    joined_from: dict[str, int] = field(default_factory=dict)
    """Join partition → last join message applied (a re-sent batch of pairs is dropped)."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "applied": self.applied,
                "labels": self.labels.to_json(),
                "watermark": self.watermark,
                "closed": self.closed,
                "episode": self.episode.to_dict() if self.episode else None,
                "rollouts": {k: r.to_json() for k, r in self.rollouts.items()},
                "production": self.production,
                "correlations": self.correlations,
                "joined_from": self.joined_from,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BrainState:
        d = orjson.loads(data)
        return cls(
            applied=d["applied"],
            labels=_label_buckets().load(d["labels"]),
            watermark=d["watermark"],
            closed=d["closed"],
            episode=EpisodeState.from_dict(d["episode"]) if d["episode"] else None,
            rollouts={k: Rollout.from_json(r) for k, r in d["rollouts"].items()},
            production=d["production"],
            correlations=d["correlations"],
            joined_from=d["joined_from"],
        )


def _label_buckets() -> Buckets[LabelStats]:
    return Buckets(LabelStats, LabelStats.from_dict)


def _cid(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        return {"correlation_id": UUID(value)}
    except ValueError:
        return {}


class Brain:
    """Applies signals of one model to its :class:`BrainState` and returns the decisions."""

    def __init__(
        self,
        model: str,
        *,
        hold_interval_s: float = 60.0,
        correlation_of: Callable[[int], str | None] | None = None,
    ) -> None:
        self.model = model
        self.hold_interval_s = hold_interval_s
        self.correlation_of = correlation_of or (lambda _v: None)

    def apply(self, state: BrainState, signal: dict[str, Any], spec: ModelSpec) -> list[Event]:
        """Apply one signal; return the events to publish (retrain requests, verdicts)."""
        kind = signal.get("kind")
        if kind == "finding":
            return self._finding(state, Finding.from_dict(signal["finding"]), spec)
        if kind == "joined":
            part, offset = (str(x) for x in signal["src"])
            if state.joined_from.get(part, -1) >= int(offset):
                return []
            state.joined_from[part] = int(offset)
            return self._joined(state, signal["items"], spec)
        if kind == "arms":
            return self._arms(state, signal, spec)
        raise ValueError(f"unknown signal kind {kind!r}")

    # -- retrain episodes ---------------------------------------------------------------------

    def _finding(self, state: BrainState, finding: Finding, spec: ModelSpec) -> list[Event]:
        if finding.correlation_id:
            state.correlations[str(finding.version)] = finding.correlation_id
        if state.episode is None:
            state.episode = EpisodeState(model=self.model)
        state.production = max(state.production or 0, finding.version)
        decision = state.episode.observe(finding, RetrainPolicy.from_spec(spec))
        if decision is None:
            return []
        RETRAINS.labels(self.model).inc()
        return [
            RetrainRequested(
                event_id=derived_id("retrain.requested", self.model, decision.key),
                model=self.model,
                reason=decision.reason,
                requested_by="monitor",
                cause_event_id=UUID(decision.cause_event_id) if decision.cause_event_id else None,
                **_cid(decision.correlation_id),
            )
        ]

    # -- live metrics from labels -------------------------------------------------------------

    def _joined(self, state: BrainState, items: list[list[Any]], spec: ModelSpec) -> list[Event]:
        mon = spec.monitoring
        width = mon.bucket_s
        n_window = max(1, int(mon.window_s // width))
        grouped: dict[tuple[str, int], tuple[list[Any], list[bool]]] = {}
        arms: dict[str, tuple[list[Any], list[bool], list[Any], list[bool]]] = {
            alias: ([], [], [], []) for alias in state.rollouts
        }
        for version, route, score, label, at, _pid in items:
            state.watermark = max(state.watermark, float(at))
            key = (f"{version}/{route}", bucket_of(float(at), width))
            scores, labels = grouped.setdefault(key, ([], []))
            scores.append(score)
            labels.append(bool(label))
            for alias, ro in state.rollouts.items():
                if float(at) < ro.since:
                    continue
                cs, cl, ps, pl = arms[alias]
                if route == alias and version == ro.version:
                    cs.append(score)
                    cl.append(bool(label))
                elif route == "production":
                    ps.append(score)
                    pl.append(bool(label))
        for alias, (cs, cl, ps, pl) in arms.items():
            if cs:
                state.rollouts[alias].cand_labels.add(cs, cl)
            if ps:
                state.rollouts[alias].champ_labels.add(ps, pl)
        floor_bucket = (state.closed - n_window) if state.closed is not None else None
        late = False
        for (arm, bucket), (scores, labels) in grouped.items():
            if floor_bucket is not None and bucket <= floor_bucket:
                continue  # older than the window: nothing would read it
            state.labels.get(arm, bucket).add(scores, labels)
            # Labels come late and in any order: a closed bucket still in the window grows.
            late = late or (state.closed is not None and bucket <= state.closed)
        closable = bucket_of(state.watermark - mon.lateness_s, width) - 1
        out: list[Event] = []
        state.closed, ends = buckets_to_close(state.labels, state.closed, closable)
        if late and not ends:
            ends = [state.closed]  # report the current window again (same window id)
        for end in ends:
            state.closed = end
            out.extend(self._close(state, end, n_window, spec))
        state.labels.drop_through(state.closed - n_window)
        return out

    def _close(self, state: BrainState, bucket: int, n_window: int, spec: ModelSpec) -> list[Event]:
        mon = spec.monitoring
        out: list[Event] = []
        for arm, _ in list(state.labels.arms()):
            window = state.labels.window(arm, bucket, n_window)
            values = {
                "accuracy": window.accuracy(),
                "roc_auc": window.roc_auc(),
                "log_loss": window.log_loss(),
            }
            version, route = report_window(self.model, arm, "realised", window.count, values)
            if route != "production" or window.count < mon.min_labels:
                continue
            cid = state.correlations.get(str(version)) or self.correlation_of(version)
            for finding in floor_findings(mon, "realised", bucket, version, values, cid):
                out.extend(self._finding(state, finding, spec))
        return out

    # -- shadow and canary verdicts -----------------------------------------------------------

    def _arms(self, state: BrainState, signal: dict[str, Any], spec: ModelSpec) -> list[Event]:
        alias, version, step = signal["alias"], int(signal["version"]), int(signal["step"])
        since, now = float(signal["since"]), float(signal["at"])
        ro = state.rollouts.get(alias)
        if ro is None or (ro.version, ro.step, ro.since) != (version, step, since):
            ro = Rollout(version=version, step=step, since=since)
            state.rollouts[alias] = ro
        if ro.decided is not None:
            return []
        candidate = ArmStats.from_dict(signal["candidate"])
        champion = ArmStats.from_dict(signal["champion"])
        candidate.labels = ro.cand_labels
        champion.labels = ro.champ_labels
        rstate = RolloutState(
            model=self.model,
            version=version,
            alias=alias,
            step_index=step,
            since=since,
            looks=ro.looks,
        )
        ro.looks += 1
        verdict = judge(spec.rollout, rstate, candidate, champion, now, spec.metrics.primary)
        if verdict.decision == "hold":
            if ro.last_hold is not None and now - ro.last_hold < self.hold_interval_s:
                return []
            ro.last_hold = now
            event_id = derived_id(
                "rollout.verdict", self.model, version, alias, step, "hold", ro.looks
            )
        else:
            ro.decided = verdict.decision
            event_id = derived_id(
                "rollout.verdict", self.model, version, alias, step, verdict.decision
            )
        VERDICTS.labels(self.model, verdict.decision).inc()
        return [
            RolloutVerdict(
                event_id=event_id,
                model=self.model,
                version=version,
                alias=alias,
                decision=verdict.decision,
                reasons=list(verdict.reasons),
                evidence={k: float(v) for k, v in verdict.evidence.items() if math.isfinite(v)},
                **_cid(self.correlation_of(version)),
            )
        ]
