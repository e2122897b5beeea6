"""The rollout guardrails: one check per limit of the spec's ``Rollout`` policy, each with
the one-sided bound it uses (see :mod:`.rollout` for why the bounds hold over repeated looks).

Each check returns a :class:`Check` (``ok``, ``breach``, ``suspect`` = beyond the limit but
not significant yet, or ``skip``) and records its numbers in the verdict's evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy.special import betaincinv

from flywheel_shared.spec import Rollout

from .arms import ArmStats
from .metrics import LOG_LOSS_CLIP, ks_distance

#: The statistical guardrails (error rate, score distance, metric delta) share each look's alpha.
GUARDRAILS = 3
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


# -- the checks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One guardrail's outcome and, for a breach, suspect or skip, why."""

    status: Literal["ok", "breach", "suspect", "skip"]
    message: str = ""


def put(evidence: dict[str, float], **values: float | None) -> None:
    """Record the finite ones of ``values`` in a verdict's evidence."""
    for key, value in values.items():
        if value is not None and math.isfinite(value):
            evidence[key] = float(value)


def latency(policy: Rollout, arm: ArmStats, evidence: dict[str, float]) -> Check:
    p99 = arm.latency.p99()
    put(evidence, p99_ms=p99, latency_n=arm.latency.count)
    if p99 is None:
        return Check("skip", "latency not checked: no latencies recorded")
    if p99 > policy.max_latency_p99_ms:
        return Check(
            "breach",
            f"p99 latency {p99:.1f} ms > {policy.max_latency_p99_ms:g} ms "
            f"(point estimate on {arm.latency.count} requests)",
        )
    return Check("ok")


def error_rate(policy: Rollout, arm: ArmStats, delta: float, evidence: dict[str, float]) -> Check:
    n, errors = arm.requests, arm.errors
    if n == 0:
        return Check("skip", "error rate not checked: no requests")
    rate = errors / n
    lower = error_rate_lower_bound(errors, n, delta)
    put(evidence, errors=errors, error_rate=rate, error_rate_lower=lower)
    limit = policy.max_error_rate
    if lower > limit:
        return Check(
            "breach",
            f"error rate {rate:.2%} > {limit:.2%} with confidence "
            f"(lower bound {lower:.2%}, {errors}/{n})",
        )
    if rate > limit:
        return Check(
            "suspect",
            f"error rate {rate:.2%} > {limit:.2%} but not significant yet "
            f"(lower bound {lower:.2%}, {errors}/{n})",
        )
    return Check("ok")


def score_distance(
    policy: Rollout, cand: ArmStats, champ: ArmStats, delta: float, evidence: dict[str, float]
) -> Check:
    nc, nh = cand.scores.count, champ.scores.count
    if nc == 0 or nh == 0:
        return Check("skip", "score distance not checked: an arm has no scores yet")
    if cand.scores.bins != champ.scores.bins:
        raise ValueError("candidate and champion score histograms have different bins")
    distance = ks_distance(cand.scores.hist, champ.scores.hist, cand.scores.bins)
    assert distance is not None  # both histograms are non-empty
    margin = dkw_margin(nc, delta / 2) + dkw_margin(nh, delta / 2)
    lower = max(0.0, distance - margin)
    put(evidence, score_distance=distance, score_distance_lower=lower)
    limit = policy.max_score_distance
    if lower > limit:
        return Check(
            "breach",
            f"score distance to champion {distance:.3f} > {limit:g} with confidence "
            f"(lower bound {lower:.3f}, KS on {nc} vs {nh} scores)",
        )
    if distance > limit:
        return Check(
            "suspect",
            f"score distance to champion {distance:.3f} > {limit:g} but not significant yet "
            f"(lower bound {lower:.3f})",
        )
    return Check("ok")


def metric_delta(
    policy: Rollout,
    cand: ArmStats,
    champ: ArmStats,
    primary_metric: str,
    delta: float,
    min_labels: int,
    evidence: dict[str, float],
) -> Check:
    metric = primary_metric if primary_metric in _HIGHER_IS_BETTER else "roc_auc"
    note = "" if metric == primary_metric else f" ({primary_metric} has no live estimate)"
    c, h = cand.labels, champ.labels
    put(evidence, labels_n=c.count, champion_labels_n=h.count)
    if min(c.count, h.count) < max(min_labels, 1):
        return Check(
            "skip",
            f"{metric} delta not checked: {c.count} and {h.count} labels, need {min_labels}",
        )
    if metric == "roc_auc" and min(c.positives, c.negatives, h.positives, h.negatives) == 0:
        return Check("skip", "roc_auc delta not checked: an arm lacks one class of labels")
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
    put(
        evidence,
        metric_candidate=cv,
        metric_champion=hv,
        metric_delta=point,
        metric_delta_upper=upper,
    )
    limit = policy.min_metric_delta
    if upper < limit:
        return Check(
            "breach",
            f"{metric} delta {point:+.4f} < {limit:+g} with confidence (upper bound "
            f"{upper:+.4f}; candidate {cv:.4f} vs champion {hv:.4f}){note}",
        )
    if point < limit:
        return Check(
            "suspect",
            f"{metric} delta {point:+.4f} < {limit:+g} but not significant yet "
            f"(upper bound {upper:+.4f}){note}",
        )
    return Check("ok", note.strip())
