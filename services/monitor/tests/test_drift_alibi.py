"""The alibi-detect drift backend (skipped when alibi-detect is not installed)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
pytest.importorskip("alibi_detect")

from alibi_detect.cd import CVMDriftOnline, FETDriftOnline

from flywheel_fraud.simulator import FraudSimulator
from flywheel_monitor.drift import (
    SCORE,
    Calibration,
    DriftConfig,
    DriftReport,
    calibrate,
    make_detector,
)
from flywheel_monitor.drift import alibi_backend as ab
from flywheel_monitor.drift.alibi_columns import _matrix_keep_negative

KINDS: dict[str, Any] = {
    "amount": "continuous",
    "distance_from_home_km": "continuous",
    "card_present": "binary",
    "merchant_category": "categorical",
}


def score(rows: list[dict[str, Any]]) -> list[float]:
    return [1.0 / (1.0 + math.exp(-(0.8 * math.log1p(r["amount"]) - 4.0))) for r in rows]


def config(**overrides: Any) -> DriftConfig:
    # Small on purpose: alibi's online calibration simulates every bootstrap stream.
    base = DriftConfig(
        backend="alibi",
        mode="online",
        features=tuple(KINDS),
        kinds=dict(KINDS),
        window=30,
        step=10,
        ert=2000,
        n_bootstrap=3000,
        n_ref=150,
        max_update_rate=math.inf,
    )
    return replace(base, **overrides)


def reference(sim: FraudSimulator, n: int = 1000) -> pd.DataFrame:
    rows = sim.batch(n)
    frame = pd.DataFrame([{f: r[f] for f in KINDS} for r in rows])
    frame[SCORE] = score(rows)
    return frame


def features(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{f: r[f] for f in KINDS} for r in rows]


def feed(det: Any, sim: FraudSimulator, n: int, batch: int = 100) -> list[DriftReport]:
    out: list[DriftReport] = []
    for start in range(0, n, batch):
        rows = sim.batch(min(batch, n - start))
        out += det.update(features(rows), score(rows))
    return out


@pytest.fixture(scope="module")
def online() -> Calibration:
    return calibrate(reference(FraudSimulator(seed=1)), config(seed=1))


@pytest.fixture(scope="module")
def batch() -> Calibration:
    cfg = config(
        mode="batch", window=200, step=200, continuous_test="ks", n_bootstrap=300, ert=20_000
    )
    return calibrate(reference(FraudSimulator(seed=1)), cfg)


def test_online_calibration_stores_alibi_thresholds(online: Calibration) -> None:
    v = online.values
    assert online.arrays["cvm/thresholds"].shape == (2 * 30 - 1, 1)
    assert online.arrays["fet/thresholds"].shape == (2 * 30 - 1, 2)  # card_present, as x and 1 - x
    assert v["fet_columns"] == ["card_present"]
    assert 0 < v["cvm_ert"] <= 3 * 2000 and 0 < v["fet_ert"] <= 3 * 2000
    assert 0 < v["window_alpha"] < 0.01 and v["window_threshold"] > 0


def test_round_trip_is_exact_and_never_recalibrates(
    online: Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("recalibrated")

    monkeypatch.setattr(CVMDriftOnline, "_simulate_streams", boom)
    monkeypatch.setattr(FETDriftOnline, "_simulate_streams", boom)
    blob = online.to_bytes()
    started = time.perf_counter()
    loaded = Calibration.from_bytes(blob)
    det = make_detector(loaded)
    assert time.perf_counter() - started < 2.0
    assert loaded.same_as(online) and loaded.to_bytes() == blob
    assert isinstance(det, ab.AlibiDetector)
    np.testing.assert_array_equal(det._cvm.thresholds, online.arrays["cvm/thresholds"])
    np.testing.assert_array_equal(det._fet.thresholds, online.arrays["fet/thresholds"])
    np.testing.assert_array_equal(det._fet.permit_probs, online.arrays["fet/permit_probs"])


def test_calibration_is_deterministic_for_a_seed() -> None:
    ref = reference(FraudSimulator(seed=2), 400)
    cfg = config(seed=4, n_bootstrap=600, ert=200, n_ref=100)
    a, b = calibrate(ref, cfg), calibrate(ref, cfg)
    assert a.same_as(b)
    c = calibrate(ref, replace(cfg, seed=5))
    assert not np.array_equal(a.arrays["cvm/thresholds"], c.arrays["cvm/thresholds"])


def test_online_state_round_trip_gives_identical_reports(online: Calibration) -> None:
    sim = FraudSimulator(seed=1, drift="covariate", drift_at=1000 + 150)
    sim.batch(1000)
    det = make_detector(online)
    feed(det, sim, 95, batch=19)
    restored = make_detector(online, det.state_bytes())
    for _ in range(6):
        rows = sim.batch(23)
        a = det.update(features(rows), score(rows))
        b = restored.update(features(rows), score(rows))
        assert a == b
    assert det.state_bytes() == restored.state_bytes()


def test_online_detects_covariate_drift(online: Calibration) -> None:
    sim = FraudSimulator(seed=1, drift="covariate", drift_at=1000 + 300)
    sim.batch(1000)
    det = make_detector(online)
    reports = feed(det, sim, 300 + 200)
    before = [r for r in reports if r.drift and r.position <= 300]
    after = [r for r in reports if r.drift and r.position > 300]
    assert len(before) <= 1  # a short calibrated ERT: rare false alarms are expected
    assert after and after[0].position - 300 <= 150
    assert after[0].score > after[0].threshold


def test_batch_mode_detects_drift_without_false_alarms(batch: Calibration) -> None:
    assert not batch.arrays  # batch tests keep no alibi threshold arrays, only the joint one
    sim = FraudSimulator(seed=1, drift="covariate", drift_at=1000 + 2000)
    sim.batch(1000)
    det = make_detector(batch)
    reports = feed(det, sim, 2000 + 400, batch=200)
    assert len(reports) == 12 and det.sampling_rate == 1.0
    assert not [r for r in reports if r.drift and r.position <= 2000]
    assert [r for r in reports if r.drift and r.position > 2000]
    assert set(reports[0].p_values) == {
        "amount",
        "distance_from_home_km",
        SCORE,
        "card_present",
        "merchant_category",
    }


def test_sampling_follows_max_update_rate(online: Calibration) -> None:
    cal = replace(online, config=replace(online.config, max_update_rate=100.0))
    det = make_detector(cal)
    now = [0.0]
    det.clock = lambda: now[0]
    sim = FraudSimulator(seed=3)
    for _ in range(5):
        now[0] += 0.1  # 100 rows every 0.1 s: 1000 rows/s
        rows = sim.batch(100)
        det.update(features(rows), score(rows))
    assert det.sampling_rate == pytest.approx(0.1)
    assert det.seen == 500 and det.fed <= 100 + 4 * 10  # first batch: rate unknown, all fed


def test_online_state_stays_bounded(online: Calibration) -> None:
    det = make_detector(online)
    sim = FraudSimulator(seed=4)
    feed(det, sim, 100)
    small = len(det.state_bytes())
    feed(det, sim, 400)
    assert len(det.state_bytes()) <= small + 64
    assert len(det._cvm.xs) <= 30 and len(det._cvm.test_stats) <= 1


def test_malformed_values_are_ignored(online: Calibration) -> None:
    det = make_detector(online)
    rows = features(FraudSimulator(seed=5).batch(60))
    rows[0]["amount"] = None
    rows[1]["amount"] = "x"
    rows[2]["card_present"] = "maybe"
    rows[3]["merchant_category"] = "casino"
    rows[4] = {}
    scores: list[float | None] = [0.1] * 60
    scores[5] = None
    det.update(rows, scores)
    assert det.seen == 60 and det.fed == 60
    cvm_x = _matrix_keep_negative(det._encoder.encode(rows, scores), det.layout.cvm, det._kinds)
    assert np.isnan(cvm_x[[0, 1, 4, 5]]).any(axis=1).all() and not np.isnan(cvm_x[6:]).any()
