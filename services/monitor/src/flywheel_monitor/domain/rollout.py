"""Shadow and canary verdicts on live evidence, valid however often they are asked for.

``judge`` compares the candidate's live traffic (``ArmStats``) with the champion's under the
spec's ``Rollout`` policy and answers ``hold``, ``rollback``, ``advance`` or ``promote``:

1. Before the step's minimum sample (shadow: ``shadow_min_requests``; canary step i: its
   ``min_requests`` and ``min_duration_s`` since the alias took this step) → hold.
2. Guardrails. The monitor judges again and again as traffic accumulates, so a plain test at
   level alpha would, over many looks, eventually roll back a perfectly good candidate.
   Each look ``k`` (1, 2, ...) therefore spends only alpha_k = alpha·6/(π²k²) (their sum is
   alpha), split evenly over the three statistical guardrails, and each guardrail uses a
   one-sided bound valid at its share whatever the sample size. By the union bound, a
   candidate that truly is within every limit is rolled back with probability at most alpha
   over its whole rollout, however many looks there are and whenever they happen:

   - error rate ≤ ``max_error_rate``: exact (Clopper-Pearson) lower bound on the error rate;
   - score distance ≤ ``max_score_distance``: Kolmogorov-Smirnov distance between the two
     score histograms, minus the DKW-Massart margins of both samples;
   - metric delta ≥ ``min_metric_delta`` (once both arms have ``min_labels`` labels):
     candidate - champion on the primary metric (for log loss: champion - candidate, so that
     positive is better), plus Hoeffding margins (accuracy, log loss with the clipped loss's
     range) or McDiarmid margins (ROC AUC, conditional on the class counts).

   A bound beyond the limit → rollback, with the numbers. A point estimate beyond the limit
   whose bound is not → hold (not significant yet).
   Latency is a *point check*: p99 above ``max_latency_p99_ms`` on at least the step's
   minimum sample → rollback. It carries no confidence statement.
3. All within limits → shadow: advance (to the first canary step); canary step i before the
   last: advance; the last step: promote.

Pure and deterministic; ``Verdict.state`` is the state to persist (one more look).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

from numpy.typing import ArrayLike
from scipy.special import betaincinv

from flywheel_shared.spec import CanaryStep, Rollout

from .metrics import (
    DEFAULT_BINS,
    LOG_LOSS_CLIP,
    LabelStats,
    LatencySketch,
    ScoreStats,
    ks_distance,
)

Alias = Literal["shadow", "canary"]
Decision = Literal["advance", "promote", "rollback", "hold"]

#: Probability of rolling back a candidate that is truly within every limit, whole rollout.
DEFAULT_ALPHA = 0.05
#: Labels each arm needs before the metric delta is judged at all.
DEFAULT_MIN_LABELS = 100
_GUARDRAILS = 3  # error rate, score distance, metric delta share each look's alpha
_LOG_LOSS_RANGE = -math.log(LOG_LOSS_CLIP)
_HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "log_loss": False}


# -- bounds -----------------------------------------------------------------------------------
def spent_alpha(alpha: float, look: int) -> float:
    """The share of ``alpha`` spent at look ``look`` (from 1): alpha·6/(π²k²), summing to alpha."""
    if look < 1:
        raise ValueError(f"looks count from 1, got {look}")
    return alpha * 6.0 / (math.pi**2 * look**2)


def error_rate_lower_bound(errors: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson lower bound: P(true rate < bound) ≤ ``delta``."""
    if n <= 0 or errors <= 0:
        return 0.0
    return float(betaincinv(errors, n - errors + 1, delta))


def dkw_margin(n: int, delta: float) -> float:
    """ε with P(sup |F̂_n - F| > ε) ≤ ``delta`` (Dvoretzky-Kiefer-Wolfowitz-Massart)."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def hoeffding_margin(n: int, delta: float, span: float = 1.0) -> float:
    """One-sided ε for a mean of ``n`` values in a range of width ``span``, at ``delta``."""
    return span * math.sqrt(math.log(1.0 / delta) / (2.0 * n))


def auc_margin(positives: int, negatives: int, delta: float) -> float:
    """One-sided ε for a ROC AUC at ``delta`` (McDiarmid; class counts held fixed)."""
    return math.sqrt(math.log(1.0 / delta) * (1.0 / positives + 1.0 / negatives) / 2.0)


# -- evidence ---------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class RolloutState:
    """Where a candidate is in its rollout; ``since`` is the event time it got there."""

    model: str
    version: int
    alias: Alias
    step_index: int
    since: float
    looks: int = 0

    def looked(self) -> RolloutState:
        """The same state after one more look."""
        return replace(self, looks=self.looks + 1)

    def advanced(self, now: float) -> RolloutState:
        """The next step, entered at event time ``now``: shadow → canary step 0 → step 1 ...

        ``looks`` carries on, so the alpha spent over the whole rollout stays within alpha.
        """
        if self.alias == "shadow":
            return replace(self, alias="canary", step_index=0, since=now)
        return replace(self, step_index=self.step_index + 1, since=now)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "model": self.model,
            "version": self.version,
            "alias": self.alias,
            "step_index": self.step_index,
            "since": self.since,
            "looks": self.looks,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """Inverse of ``to_dict``."""
        alias = data["alias"]
        if alias not in ("shadow", "canary"):
            raise ValueError(f"a rollout is judged on shadow or canary, not {alias!r}")
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            alias=alias,
            step_index=int(data["step_index"]),
            since=float(data["since"]),
            looks=int(data.get("looks", 0)),
        )


@dataclass(frozen=True)
class Verdict:
    """A decision, why, and the numbers behind it; ``state`` is the state to persist."""

    decision: Decision
    reasons: list[str]
    evidence: dict[str, float]
    state: RolloutState

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "decision": self.decision,
            "reasons": list(self.reasons),
            "evidence": dict(self.evidence),
            "state": self.state.to_dict(),
        }


@dataclass(frozen=True)
class _Check:
    status: Literal["ok", "breach", "suspect", "skip"]
    message: str = ""


# -- the verdict ------------------------------------------------------------------------------
def judge(
    policy: Rollout,
    state: RolloutState,
    candidate: ArmStats,
    champion: ArmStats,
    now: float,
    primary_metric: str,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_labels: int = DEFAULT_MIN_LABELS,
) -> Verdict:
    """The verdict on ``candidate`` at event time ``now`` (see the module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    look = state.looks + 1
    alpha_k = spent_alpha(alpha, look)
    delta = alpha_k / _GUARDRAILS
    step = _step(policy, state)
    evidence: dict[str, float] = {}
    _put(evidence, look=look, alpha_look=alpha_k, step_index=state.step_index)
    if step is not None:
        _put(evidence, weight=step.weight)

    n = candidate.requests
    duration = now - state.since
    min_requests = policy.shadow_min_requests if step is None else step.min_requests
    min_duration = 0.0 if step is None else step.min_duration_s
    _put(
        evidence,
        n=n,
        champion_n=champion.requests,
        duration_s=duration,
        min_requests=min_requests,
        min_duration_s=min_duration,
    )

    checks = [
        _latency(policy, candidate, evidence),
        _error_rate(policy, candidate, delta, evidence),
        _score_distance(policy, candidate, champion, delta, evidence),
        _metric_delta(policy, candidate, champion, primary_metric, delta, min_labels, evidence),
    ]

    waiting: list[str] = []
    if n < max(min_requests, 1):
        more = max(min_requests, 1) - n
        waiting.append(f"waiting for {more} more request{'s' * (more != 1)} ({n} so far)")
    if duration < min_duration:
        waiting.append(
            f"waiting for {math.ceil(min_duration - duration)}s more ({duration:.0f}s so far)"
        )
    after = state.looked()
    if waiting:
        return Verdict("hold", waiting, evidence, after)

    breaches = [c.message for c in checks if c.status == "breach"]
    if breaches:
        return Verdict("rollback", breaches, evidence, after)
    suspects = [c.message for c in checks if c.status == "suspect"]
    if suspects:
        return Verdict("hold", suspects, evidence, after)

    notes = [c.message for c in checks if c.message]
    summary = f"all guardrails within limits after {n} requests and {duration:.0f}s"
    last = len(policy.canary_steps) - 1
    if state.alias == "shadow" and last >= 0:
        return Verdict("advance", [f"{summary}: shadow → canary step 0", *notes], evidence, after)
    if state.alias == "canary" and state.step_index < last:
        reason = f"{summary}: canary step {state.step_index} → {state.step_index + 1}"
        return Verdict("advance", [reason, *notes], evidence, after)
    return Verdict("promote", [f"{summary}: promote to production", *notes], evidence, after)


def _step(policy: Rollout, state: RolloutState) -> CanaryStep | None:
    if state.alias == "shadow" or not policy.canary_steps:
        return None
    return policy.canary_steps[min(state.step_index, len(policy.canary_steps) - 1)]


def _put(evidence: dict[str, float], **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and math.isfinite(value):
            evidence[key] = float(value)


def _latency(policy: Rollout, arm: ArmStats, evidence: dict[str, float]) -> _Check:
    p99 = arm.latency.p99()
    _put(evidence, p99_ms=p99, latency_n=arm.latency.count)
    if p99 is None:
        return _Check("skip", "latency not checked: no latencies recorded")
    if p99 > policy.max_latency_p99_ms:
        return _Check(
            "breach",
            f"p99 latency {p99:.1f} ms > {policy.max_latency_p99_ms:g} ms "
            f"(point estimate on {arm.latency.count} requests)",
        )
    return _Check("ok")


def _error_rate(policy: Rollout, arm: ArmStats, delta: float, evidence: dict[str, float]) -> _Check:
    n, errors = arm.requests, arm.errors
    if n == 0:
        return _Check("skip", "error rate not checked: no requests")
    rate = errors / n
    lower = error_rate_lower_bound(errors, n, delta)
    _put(evidence, errors=errors, error_rate=rate, error_rate_lower=lower)
    limit = policy.max_error_rate
    if lower > limit:
        return _Check(
            "breach",
            f"error rate {rate:.2%} > {limit:.2%} with confidence "
            f"(lower bound {lower:.2%}, {errors}/{n})",
        )
    if rate > limit:
        return _Check(
            "suspect",
            f"error rate {rate:.2%} > {limit:.2%} but not significant yet "
            f"(lower bound {lower:.2%}, {errors}/{n})",
        )
    return _Check("ok")


def _score_distance(
    policy: Rollout, cand: ArmStats, champ: ArmStats, delta: float, evidence: dict[str, float]
) -> _Check:
    nc, nh = cand.scores.count, champ.scores.count
    if nc == 0 or nh == 0:
        return _Check("skip", "score distance not checked: an arm has no scores yet")
    if cand.scores.bins != champ.scores.bins:
        raise ValueError("candidate and champion score histograms have different bins")
    distance = ks_distance(cand.scores.hist, champ.scores.hist, cand.scores.bins)
    assert distance is not None  # both histograms are non-empty
    margin = dkw_margin(nc, delta / 2) + dkw_margin(nh, delta / 2)
    lower = max(0.0, distance - margin)
    _put(evidence, score_distance=distance, score_distance_lower=lower)
    limit = policy.max_score_distance
    if lower > limit:
        return _Check(
            "breach",
            f"score distance to champion {distance:.3f} > {limit:g} with confidence "
            f"(lower bound {lower:.3f}, KS on {nc} vs {nh} scores)",
        )
    if distance > limit:
        return _Check(
            "suspect",
            f"score distance to champion {distance:.3f} > {limit:g} but not significant yet "
            f"(lower bound {lower:.3f})",
        )
    return _Check("ok")


def _metric_delta(
    policy: Rollout,
    cand: ArmStats,
    champ: ArmStats,
    primary_metric: str,
    delta: float,
    min_labels: int,
    evidence: dict[str, float],
) -> _Check:
    metric = primary_metric if primary_metric in _HIGHER_IS_BETTER else "roc_auc"
    note = "" if metric == primary_metric else f" ({primary_metric} has no live estimate)"
    c, h = cand.labels, champ.labels
    _put(evidence, labels_n=c.count, champion_labels_n=h.count)
    if min(c.count, h.count) < max(min_labels, 1):
        return _Check(
            "skip",
            f"{metric} delta not checked: {c.count} and {h.count} labels, need {min_labels}",
        )
    if metric == "roc_auc" and min(c.positives, c.negatives, h.positives, h.negatives) == 0:
        return _Check("skip", "roc_auc delta not checked: an arm lacks one class of labels")
    cv, hv = c.metric(metric), h.metric(metric)
    assert cv is not None and hv is not None  # both arms have labels of both classes
    point = cv - hv if _HIGHER_IS_BETTER[metric] else hv - cv
    if metric == "roc_auc":
        margin = auc_margin(c.positives, c.negatives, delta / 2) + auc_margin(
            h.positives, h.negatives, delta / 2
        )
    else:
        span = 1.0 if metric == "accuracy" else _LOG_LOSS_RANGE
        margin = hoeffding_margin(c.count, delta / 2, span) + hoeffding_margin(
            h.count, delta / 2, span
        )
    upper = point + margin
    _put(
        evidence,
        metric_candidate=cv,
        metric_champion=hv,
        metric_delta=point,
        metric_delta_upper=upper,
    )
    limit = policy.min_metric_delta
    if upper < limit:
        return _Check(
            "breach",
            f"{metric} delta {point:+.4f} < {limit:+g} with confidence (upper bound "
            f"{upper:+.4f}; candidate {cv:.4f} vs champion {hv:.4f}){note}",
        )
    if point < limit:
        return _Check(
            "suspect",
            f"{metric} delta {point:+.4f} < {limit:+g} but not significant yet "
            f"(upper bound {upper:+.4f}){note}",
        )
    return _Check("ok", note.strip())
