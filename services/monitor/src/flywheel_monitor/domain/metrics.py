"""Mergeable statistics of a binary classifier's live traffic.

A prediction's ``score`` is P(positive) in [0, 1]; a missing, NaN or out-of-range score is a
failed output and counted as an *error*, never as a prediction. Labels are booleans.

Three accumulators, each updated in place by ``add`` and by ``merge`` (which folds another
accumulator into this one and returns ``self``, leaving the other unchanged; ``copy()``
first to keep the original), each a plain JSON document via ``to_dict`` / ``from_dict``
(histograms are stored sparsely):

- ``LabelStats``: labelled predictions → accuracy, log loss, ROC AUC.
- ``ScoreStats``: scores alone → expected accuracy and expected ROC AUC (confidence-based
  performance estimation), score mean, error count, and a score histogram for
  distribution distances.
- ``LatencySketch`` (:mod:`.latency`, re-exported here): a fixed log-spaced histogram →
  latency quantiles within 1 %.

Score histograms use bins that are uniform on the *logit* scale between 1e-6 and 1 - 1e-6,
not on [0, 1]: a fraud model puts most of its scores below 0.01, where uniform bins would
lump them into a handful of bins and a histogram AUC would be off by a few points. Logit
bins keep resolution in both tails (about 0.007 wide at 0.5, 3e-5 wide at 0.001) for the
same number of bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .latency import LATENCY_MAX_MS, LATENCY_MIN_MS, LATENCY_RELATIVE_ACCURACY, LatencySketch
from .sparse import count_into, counts_in, dense, merge_into, same_bins, sparse_out, weights_in

__all__ = [
    "DEFAULT_BINS",
    "LATENCY_MAX_MS",
    "LATENCY_MIN_MS",
    "LATENCY_RELATIVE_ACCURACY",
    "LOG_LOSS_CLIP",
    "THRESHOLD",
    "LabelStats",
    "LatencySketch",
    "ScoreStats",
    "as_scores",
    "bin_edges",
    "histogram_auc",
    "ks_distance",
    "score_bins",
]

DEFAULT_BINS = 1000
#: Predicted positive when score >= THRESHOLD.
THRESHOLD = 0.5
#: Scores are clipped to [LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP] for log loss.
LOG_LOSS_CLIP = 1e-15
_TAIL = 1e-6
_LOGIT_MAX = math.log((1.0 - _TAIL) / _TAIL)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# -- scores and bins -------------------------------------------------------------------------
def as_scores(scores: ArrayLike) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Scores as floats (None → NaN) and the mask of valid ones (finite, within [0, 1])."""
    arr = np.asarray(scores, dtype=np.float64).ravel()
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(arr) & (arr >= 0.0) & (arr <= 1.0)
    return arr, valid


def score_bins(scores: ArrayLike, bins: int = DEFAULT_BINS) -> IntArray:
    """Histogram bin of each (valid) score: ``bins`` bins uniform in logit(score)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _TAIL, 1.0 - _TAIL)
    z = np.log(p) - np.log1p(-p)
    idx = np.floor((z + _LOGIT_MAX) * (bins / (2.0 * _LOGIT_MAX))).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def bin_edges(bins: int = DEFAULT_BINS) -> FloatArray:
    """The ``bins + 1`` bin edges in score space (first 0, last 1)."""
    z = np.linspace(-_LOGIT_MAX, _LOGIT_MAX, bins + 1)
    edges = 1.0 / (1.0 + np.exp(-z))
    edges[0], edges[-1] = 0.0, 1.0
    return edges


def histogram_auc(pos: ArrayLike, neg: ArrayLike) -> float | None:
    """ROC AUC from per-class histograms over the same ordered bins, ties within a bin half.

    ``pos[b]`` / ``neg[b]`` may be counts or weights. None when a class is empty.
    """
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    p_total, n_total = float(p.sum()), float(n.sum())
    if p_total <= 0.0 or n_total <= 0.0:
        return None
    below = np.concatenate(([0.0], np.cumsum(n)[:-1]))
    return float(np.dot(p, below + 0.5 * n) / (p_total * n_total))


def ks_distance(a: Mapping[int, float], b: Mapping[int, float], bins: int) -> float | None:
    """Kolmogorov-Smirnov distance between two sparse histograms over the same bins.

    Evaluated at bin edges, so it is at most the distance between the raw samples.
    None when either histogram is empty.
    """
    da, db = dense(a, bins), dense(b, bins)
    na, nb = float(da.sum()), float(db.sum())
    if na <= 0.0 or nb <= 0.0:
        return None
    return float(np.max(np.abs(np.cumsum(da) / na - np.cumsum(db) / nb)))


# -- labelled metrics ------------------------------------------------------------------------
@dataclass
class LabelStats:
    """Labelled predictions: count, correct at threshold 0.5, log-loss sum, class histograms.

    ``count`` holds valid scores only; a labelled prediction whose output failed is counted
    in ``errors`` and in no metric.
    """

    bins: int = DEFAULT_BINS
    count: int = 0
    correct: int = 0
    errors: int = 0
    log_loss_sum: float = 0.0
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)

    def add(self, scores: ArrayLike, labels: ArrayLike) -> Self:
        """Add labelled predictions (in place); returns ``self``."""
        arr, valid = as_scores(scores)
        y = np.asarray(labels, dtype=bool).ravel()
        if y.shape != arr.shape:
            raise ValueError(f"{arr.size} scores but {y.size} labels")
        self.errors += int(arr.size - np.count_nonzero(valid))
        s, y = arr[valid], y[valid]
        if s.size == 0:
            return self
        self.count += int(s.size)
        self.correct += int(np.count_nonzero((s >= THRESHOLD) == y))
        p = np.clip(s, LOG_LOSS_CLIP, 1.0 - LOG_LOSS_CLIP)
        self.log_loss_sum += float(-np.sum(np.where(y, np.log(p), np.log1p(-p))))
        idx = score_bins(s, self.bins)
        count_into(self.pos, idx[y])
        count_into(self.neg, idx[~y])
        return self

    def merge(self, other: LabelStats) -> Self:
        """Fold ``other``'s predictions into these (in place); returns ``self``."""
        same_bins(self.bins, other.bins)
        self.count += other.count
        self.correct += other.correct
        self.errors += other.errors
        self.log_loss_sum += other.log_loss_sum
        merge_into(self.pos, other.pos)
        merge_into(self.neg, other.neg)
        return self

    def copy(self) -> LabelStats:
        """An independent copy."""
        return replace(self, pos=dict(self.pos), neg=dict(self.neg))

    @property
    def positives(self) -> int:
        """Labelled positives with a valid score."""
        return sum(self.pos.values())

    @property
    def negatives(self) -> int:
        """Labelled negatives with a valid score."""
        return sum(self.neg.values())

    def accuracy(self) -> float | None:
        """Share of correct predictions at threshold 0.5 (None when empty)."""
        return self.correct / self.count if self.count else None

    def log_loss(self) -> float | None:
        """Mean log loss, scores clipped to [1e-15, 1 - 1e-15] (None when empty)."""
        return self.log_loss_sum / self.count if self.count else None

    def roc_auc(self) -> float | None:
        """ROC AUC from the class histograms (None until both classes were seen)."""
        return histogram_auc(dense(self.pos, self.bins), dense(self.neg, self.bins))

    def metric(self, name: str) -> float | None:
        """``accuracy``, ``log_loss`` or ``roc_auc`` by name (None if unknown or empty)."""
        if name == "accuracy":
            return self.accuracy()
        if name == "log_loss":
            return self.log_loss()
        if name == "roc_auc":
            return self.roc_auc()
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, histograms sparse."""
        return {
            "bins": self.bins,
            "count": self.count,
            "correct": self.correct,
            "errors": self.errors,
            "log_loss_sum": self.log_loss_sum,
            "pos": sparse_out(self.pos),
            "neg": sparse_out(self.neg),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelStats:
        """Inverse of ``to_dict``."""
        return cls(
            bins=int(data["bins"]),
            count=int(data["count"]),
            correct=int(data["correct"]),
            errors=int(data["errors"]),
            log_loss_sum=float(data["log_loss_sum"]),
            pos=counts_in(data["pos"]),
            neg=counts_in(data["neg"]),
        )


# -- label-free estimates ---------------------------------------------------------------------
@dataclass
class ScoreStats:
    """Scores without labels: counts, a score histogram, and expected performance.

    Confidence-based performance estimation (the idea behind NannyML's CBPE): if the scores
    are *calibrated* (among predictions scored p, a share p is positive), each prediction is
    correct at threshold 0.5 with probability max(p, 1 - p) and counts as p of a positive and
    1 - p of a negative. Expected accuracy is then the mean of max(p, 1 - p), and the
    expected ROC AUC is the histogram AUC of those weighted class histograms.

    Limitation: the estimate is only as good as the calibration. A miscalibrated model (for
    instance one that became overconfident after drift, or whose base rate moved) gets an
    estimate that differs from its realised performance; compare it with ``LabelStats`` as
    labels arrive. It cannot see *concept* drift that leaves the score distribution unchanged.
    """

    bins: int = DEFAULT_BINS
    count: int = 0
    errors: int = 0
    score_sum: float = 0.0
    expected_correct: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)
    pos_w: dict[int, float] = field(default_factory=dict)
    neg_w: dict[int, float] = field(default_factory=dict)

    def add(self, scores: ArrayLike) -> Self:
        """Add scores (in place; None/NaN/out of range count as errors); returns ``self``."""
        arr, valid = as_scores(scores)
        self.errors += int(arr.size - np.count_nonzero(valid))
        s = arr[valid]
        if s.size == 0:
            return self
        self.count += int(s.size)
        self.score_sum += float(np.sum(s))
        self.expected_correct += float(np.sum(np.maximum(s, 1.0 - s)))
        idx = score_bins(s, self.bins)
        counts = np.bincount(idx)
        keys = np.flatnonzero(counts)
        pos = np.bincount(idx, weights=s)[keys]
        neg = np.bincount(idx, weights=1.0 - s)[keys]
        counts = counts[keys]
        hist, pos_w, neg_w = self.hist, self.pos_w, self.neg_w
        for k, c, p, q in zip(
            keys.tolist(), counts.tolist(), pos.tolist(), neg.tolist(), strict=True
        ):
            hist[k] = hist.get(k, 0) + c
            pos_w[k] = pos_w.get(k, 0.0) + p
            neg_w[k] = neg_w.get(k, 0.0) + q
        return self

    def merge(self, other: ScoreStats) -> Self:
        """Fold ``other``'s scores into these (in place); returns ``self``."""
        same_bins(self.bins, other.bins)
        self.count += other.count
        self.errors += other.errors
        self.score_sum += other.score_sum
        self.expected_correct += other.expected_correct
        merge_into(self.hist, other.hist)
        merge_into(self.pos_w, other.pos_w)
        merge_into(self.neg_w, other.neg_w)
        return self

    def copy(self) -> ScoreStats:
        """An independent copy."""
        return replace(self, hist=dict(self.hist), pos_w=dict(self.pos_w), neg_w=dict(self.neg_w))

    @property
    def requests(self) -> int:
        """Valid scores plus errors."""
        return self.count + self.errors

    def error_rate(self) -> float | None:
        """Share of failed outputs (None when empty)."""
        return self.errors / self.requests if self.requests else None

    def score_mean(self) -> float | None:
        """Mean of the valid scores (None when empty)."""
        return self.score_sum / self.count if self.count else None

    def expected_accuracy(self) -> float | None:
        """Mean of max(p, 1 - p): the accuracy at 0.5 if the scores are calibrated."""
        return self.expected_correct / self.count if self.count else None

    def expected_roc_auc(self) -> float | None:
        """ROC AUC of the score-weighted class histograms, if the scores are calibrated."""
        return histogram_auc(dense(self.pos_w, self.bins), dense(self.neg_w, self.bins))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, histograms sparse."""
        return {
            "bins": self.bins,
            "count": self.count,
            "errors": self.errors,
            "score_sum": self.score_sum,
            "expected_correct": self.expected_correct,
            "hist": sparse_out(self.hist),
            "pos_w": sparse_out(self.pos_w),
            "neg_w": sparse_out(self.neg_w),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreStats:
        """Inverse of ``to_dict``."""
        return cls(
            bins=int(data["bins"]),
            count=int(data["count"]),
            errors=int(data["errors"]),
            score_sum=float(data["score_sum"]),
            expected_correct=float(data["expected_correct"]),
            hist=counts_in(data["hist"]),
            pos_w=weights_in(data["pos_w"]),
            neg_w=weights_in(data["neg_w"]),
        )
