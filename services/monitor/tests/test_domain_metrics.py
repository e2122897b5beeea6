"""Mergeable statistics: labelled metrics vs sklearn, CBPE estimates, latency quantiles."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from flywheel_monitor.domain.metrics import (
    LATENCY_RELATIVE_ACCURACY,
    LabelStats,
    LatencySketch,
    ScoreStats,
    bin_edges,
    histogram_auc,
    ks_distance,
    score_bins,
)


def _json(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, allow_nan=False))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _fraud_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """~3 % positives, most scores far below 0.01: the case uniform bins get wrong."""
    x = rng.normal(size=n)
    y = rng.random(n) < _sigmoid(-4.5 + 1.6 * x + rng.normal(scale=0.6, size=n))
    return _sigmoid(-4.5 + 1.6 * x), y


def _separated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random(n) < 0.3
    return np.where(y, rng.beta(4, 2, n), rng.beta(2, 4, n)), y


def _tied(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores rounded to 2 decimals: many exact ties, as from a small tree model."""
    y = rng.random(n) < 0.5
    return np.round(np.clip(rng.normal(0.5 + 0.15 * y, 0.2), 0, 1), 2), y


@pytest.mark.parametrize("make", [_fraud_like, _separated, _tied])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_stats_agree_with_sklearn(make: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, labels = make(rng, 20_000)
    stats = LabelStats().add(scores, labels)
    assert stats.count == 20_000
    assert stats.errors == 0
    assert abs(stats.roc_auc() - roc_auc_score(labels, scores)) <= 0.002
    assert stats.accuracy() == pytest.approx(accuracy_score(labels, scores >= 0.5), abs=1e-12)
    clipped = np.clip(scores, 1e-15, 1 - 1e-15)
    assert stats.log_loss() == pytest.approx(log_loss(labels, clipped), rel=1e-9)
    assert stats.positives == int(labels.sum())


def test_label_stats_merge_folds_in_place_and_equals_one_pass() -> None:
    rng = np.random.default_rng(3)
    scores, labels = _separated(rng, 5000)
    whole = LabelStats().add(scores, labels)
    a = LabelStats().add(scores[:2000], labels[:2000])
    b = LabelStats().add(scores[2000:], labels[2000:])
    a_before, b_before = a.copy(), b.to_dict()
    merged = a.merge(b)
    assert merged is a  # in place, like add
    assert b.to_dict() == b_before  # the other side is left alone
    assert a_before.count == 2000  # and a copy is independent
    assert (merged.count, merged.correct, merged.pos, merged.neg) == (
        whole.count,
        whole.correct,
        whole.pos,
        whole.neg,
    )
    assert merged.log_loss_sum == pytest.approx(whole.log_loss_sum, rel=1e-12)
    assert merged.roc_auc() == whole.roc_auc()
    with pytest.raises(ValueError, match="bins"):
        a.merge(LabelStats(bins=10))


def test_failed_outputs_are_errors_not_predictions() -> None:
    stats = LabelStats().add([0.9, None, float("nan"), 1.5, -0.1, 0.2], [1, 1, 0, 1, 0, 0])
    assert (stats.count, stats.errors, stats.correct) == (2, 4, 2)
    scores = ScoreStats().add([0.9, None, float("nan"), 0.2])
    assert (scores.count, scores.errors, scores.requests) == (2, 2, 4)
    assert scores.error_rate() == 0.5
    assert scores.score_mean() == pytest.approx(0.55)
    with pytest.raises(ValueError, match="labels"):
        LabelStats().add([0.1, 0.2], [True])


def test_empty_stats_report_none() -> None:
    assert LabelStats().accuracy() is None
    assert LabelStats().log_loss() is None
    assert LabelStats().add([0.2, 0.7], [True, True]).roc_auc() is None  # one class only
    assert ScoreStats().expected_accuracy() is None
    assert ScoreStats().expected_roc_auc() is None
    assert LatencySketch().p99() is None
    assert ks_distance({}, {1: 3}, 10) is None
    assert histogram_auc([0, 0], [1, 1]) is None


def test_cbpe_estimates_match_realised_performance_when_calibrated() -> None:
    rng = np.random.default_rng(4)
    for scores in (rng.beta(0.6, 2.5, 60_000), rng.beta(2, 2, 60_000), _fraud_like(rng, 60_000)[0]):
        labels = rng.random(scores.size) < scores  # calibrated by construction
        estimate = ScoreStats().add(scores)
        realised = LabelStats().add(scores, labels)
        assert abs(estimate.expected_accuracy() - realised.accuracy()) < 0.01
        assert abs(estimate.expected_roc_auc() - realised.roc_auc()) < 0.015


def test_cbpe_is_wrong_when_the_model_is_miscalibrated() -> None:
    """Documented limitation: CBPE trusts the scores; an overconfident model fools it."""
    rng = np.random.default_rng(5)
    scores = rng.beta(0.5, 0.5, 60_000)  # confident scores near 0 and 1
    z = np.log(scores) - np.log1p(-scores)
    truth = _sigmoid(z / 4)  # ... but the true probabilities are much closer to 0.5
    labels = rng.random(scores.size) < truth
    estimate = ScoreStats().add(scores)
    realised = LabelStats().add(scores, labels)
    assert estimate.expected_accuracy() - realised.accuracy() > 0.1
    assert estimate.expected_roc_auc() - realised.roc_auc() > 0.1


def test_score_stats_merge_and_counts() -> None:
    rng = np.random.default_rng(6)
    s = rng.random(3000)
    whole = ScoreStats().add(s)
    merged = ScoreStats().add(s[:1000]).merge(ScoreStats().add(s[1000:]))
    assert merged.hist == whole.hist
    assert merged.count == whole.count
    assert merged.expected_accuracy() == pytest.approx(whole.expected_accuracy(), rel=1e-12)
    assert merged.expected_roc_auc() == pytest.approx(whole.expected_roc_auc(), abs=1e-12)
    assert sum(whole.hist.values()) == 3000


def test_ks_distance_between_histograms() -> None:
    rng = np.random.default_rng(7)
    a = ScoreStats().add(rng.beta(2, 5, 20_000))
    same = ScoreStats().add(rng.beta(2, 5, 20_000))
    shifted = ScoreStats().add(rng.beta(5, 2, 20_000))
    assert ks_distance(a.hist, same.hist, a.bins) < 0.03
    assert ks_distance(a.hist, shifted.hist, a.bins) > 0.6


def test_score_bins_are_ordered_and_cover_the_unit_interval() -> None:
    s = np.array([0.0, 1e-9, 1e-4, 0.001, 0.01, 0.3, 0.5, 0.7, 0.99, 0.9999, 1.0])
    idx = score_bins(s, 1000)
    assert idx[0] == 0 and idx[-1] == 999
    assert np.all(np.diff(idx) >= 0)
    edges = bin_edges(1000)
    assert edges[0] == 0.0 and edges[-1] == 1.0
    assert np.all(np.diff(edges) > 0)
    mids = (edges[:-1] + edges[1:]) / 2
    assert np.array_equal(score_bins(mids, 1000), np.arange(1000))
    assert (edges[501] - edges[500]) < 0.01  # fine in the middle ...
    assert (edges[300] - edges[299]) < 1e-3  # ... and finer in the tails


def test_latency_p99_within_relative_accuracy() -> None:
    rng = np.random.default_rng(8)
    lat = rng.lognormal(2.5, 0.8, 50_000)
    sketch = LatencySketch().add(lat)
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = float(np.quantile(lat, q, method="inverted_cdf"))
        assert sketch.quantile(q) == pytest.approx(exact, rel=LATENCY_RELATIVE_ACCURACY)
    assert sketch.quantile(1.0) == pytest.approx(lat.max(), rel=LATENCY_RELATIVE_ACCURACY)
    assert sketch.mean_ms() == pytest.approx(lat.mean())
    assert len(sketch.counts) < 1200
    small = LatencySketch().add([0.0, 0.0005, 5.0, float("nan")])
    assert small.count == 3 and small.quantile(0.5) == 0.0
    with pytest.raises(ValueError):
        small.quantile(1.5)


def test_latency_sketch_merge_is_exact() -> None:
    rng = np.random.default_rng(9)
    lat = rng.exponential(20, 10_000)
    whole = LatencySketch().add(lat)
    merged = LatencySketch().add(lat[:3000]).merge(LatencySketch().add(lat[3000:]))
    assert merged.counts == whole.counts
    assert merged.p99() == whole.p99()
    assert merged.max_ms == whole.max_ms


def test_every_stats_object_round_trips_through_json() -> None:
    rng = np.random.default_rng(10)
    scores, labels = _fraud_like(rng, 2000)
    scores = scores.astype(object)
    scores[::97] = None
    label_stats = LabelStats(bins=200).add(scores, labels)
    score_stats = ScoreStats(bins=200).add(scores)
    sketch = LatencySketch().add(rng.lognormal(2, 1, 2000))
    for obj, cls in ((label_stats, LabelStats), (score_stats, ScoreStats), (sketch, LatencySketch)):
        data = _json(obj.to_dict())
        back = cls.from_dict(data)
        assert back == obj
        assert back.to_dict() == obj.to_dict()
    assert LabelStats.from_dict(_json(LabelStats().to_dict())) == LabelStats()
    # sparse: only bins holding data are stored
    assert len(label_stats.to_dict()["pos"]) < 200


def test_updates_are_deterministic() -> None:
    rng = np.random.default_rng(11)
    scores, labels = _separated(rng, 4000)
    runs = []
    for _ in range(2):
        s = ScoreStats()
        ls = LabelStats()
        for i in range(0, 4000, 250):
            s.add(scores[i : i + 250])
            ls.add(scores[i : i + 250], labels[i : i + 250])
        runs.append((json.dumps(s.to_dict()), json.dumps(ls.to_dict())))
    assert runs[0] == runs[1]
