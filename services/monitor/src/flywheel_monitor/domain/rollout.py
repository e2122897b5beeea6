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
from dataclasses import dataclass, replace
from typing import Any, Literal

from flywheel_shared.spec import CanaryStep, Rollout

from .arms import ArmStats
from .guardrails import (
    GUARDRAILS,
    auc_margin,
    dkw_margin,
    error_rate,
    error_rate_lower_bound,
    hoeffding_margin,
    latency,
    metric_delta,
    put,
    score_distance,
    spent_alpha,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_LABELS",
    "Alias",
    "ArmStats",
    "Decision",
    "RolloutState",
    "Verdict",
    "auc_margin",
    "dkw_margin",
    "error_rate_lower_bound",
    "hoeffding_margin",
    "judge",
    "spent_alpha",
]

Alias = Literal["shadow", "canary"]
Decision = Literal["advance", "promote", "rollback", "hold"]

#: Probability of rolling back a candidate that is truly within every limit, whole rollout.
DEFAULT_ALPHA = 0.05
#: Labels each arm needs before the metric delta is judged at all.
DEFAULT_MIN_LABELS = 100


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
    delta = alpha_k / GUARDRAILS
    step = _step(policy, state)
    evidence: dict[str, float] = {}
    put(evidence, look=look, alpha_look=alpha_k, step_index=state.step_index)
    if step is not None:
        put(evidence, weight=step.weight)

    n = candidate.requests
    duration = now - state.since
    min_requests = policy.shadow_min_requests if step is None else step.min_requests
    min_duration = 0.0 if step is None else step.min_duration_s
    put(
        evidence,
        n=n,
        champion_n=champion.requests,
        duration_s=duration,
        min_requests=min_requests,
        min_duration_s=min_duration,
    )

    checks = [
        latency(policy, candidate, evidence),
        error_rate(policy, candidate, delta, evidence),
        score_distance(policy, candidate, champion, delta, evidence),
        metric_delta(policy, candidate, champion, primary_metric, delta, min_labels, evidence),
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
