"""Holdout metrics and the gate (absolute thresholds + margins against the champion)."""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score

from flywheel_shared.spec import Gate

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(total)


_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": lambda y, p: float(roc_auc_score(y, p)),
    "pr_auc": lambda y, p: float(average_precision_score(y, p)),
    "log_loss": lambda y, p: float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
    "accuracy": lambda y, p: float(accuracy_score(y, p >= 0.5)),
    "ece": expected_calibration_error,
}
METRIC_NAMES = tuple(_METRICS)


def compute_metrics(
    y: Sequence[int] | np.ndarray, p: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """The named metrics of scores ``p`` against labels ``y`` (NaN when undefined)."""
    y_arr = np.asarray(y, dtype=int)
    out = {}
    for name in names:
        if name not in _METRICS:
            raise ValueError(f"unknown metric '{name}'; known: {', '.join(METRIC_NAMES)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # undefined metrics become NaN, said once by the gate
                out[name] = _METRICS[name](y_arr, p)
        except ValueError:  # e.g. one class only in the holdout
            out[name] = math.nan
    return out


@dataclass(frozen=True)
class GateResult:
    """Whether a challenger passed, and why (one line per gate)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


def apply_gates(
    gates: Sequence[Gate], challenger: Mapping[str, float], champion: Mapping[str, float] | None
) -> GateResult:
    """Check every gate; a champion gate passes when there is no champion yet."""
    passed, reasons = True, []
    for g in gates:
        value = challenger.get(g.metric, math.nan)
        if g.vs_champion:
            if champion is None:
                reasons.append(f"ok: {g.metric} — no champion to compare with")
                continue
            base = champion.get(g.metric, math.nan)
            threshold = base + g.value
            label = f"champion {base:.4f} {'+' if g.value >= 0 else '-'} {abs(g.value):g}"
        else:
            threshold, label = g.value, f"{g.value:g}"
        ok = not math.isnan(value) and not math.isnan(threshold) and _OPS[g.op](value, threshold)
        reasons.append(f"{'ok' if ok else 'FAILED'}: {g.metric} {value:.4f} {g.op} {label}")
        passed &= ok
    return GateResult(passed, reasons)
