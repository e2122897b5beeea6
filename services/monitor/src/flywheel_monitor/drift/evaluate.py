"""Measure a drift backend on the fraud simulator: throughput, calibration, delay, false alarms.

``python -m flywheel_monitor.drift.evaluate [--backend permissive|alibi] [--seeds 10]
[--clean-rows 200000]`` prints one line per measurement and a summary. For each seed the
reference is 2000 fresh rows of ``FraudSimulator(seed)`` before any drift, scored by a logistic
regression trained on another seed's rows (numeric-encoded features); the stream continues the
same simulator. Needs the ``flywheel-fraud`` example package and scikit-learn (dev tools only).

* false alarms: a non-drifting stream of ``--clean-rows`` rows per seed, window detector and
  score detector counted separately, reported per 100,000 rows;
* detection delay: ``FraudSimulator(drift="covariate", drift_at=onset)`` with ``onset`` =
  reference + 3000 rows; delay = position of the first window alarm after the onset minus the
  onset (alarms before it are counted as false alarms);
* throughput: rows per CPU second of ``Detector.update`` on batches of 500 rows (one core;
  CPU time rather than wall time, so that a shared machine does not distort it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .base import Detector
from .calibration import Calibration
from .config import DEFAULT_BOOTSTRAP, SCORE, DriftConfig, FeatureKind
from .engine import calibrate, make_detector

N_REF = 2000
BATCH = 500
FRAUD_KINDS: dict[str, FeatureKind] = {
    "amount": "continuous",
    "avg_amount_30d": "continuous",
    "distance_from_home_km": "continuous",
    "minutes_since_last_tx": "continuous",
    "hour": "continuous",
    "tx_count_24h": "continuous",
    "account_age_days": "continuous",
    "card_present": "binary",
    "foreign": "binary",
    "merchant_category": "categorical",
}
Scorer = Callable[[Sequence[dict[str, Any]]], list[float]]


def fraud_config(backend: str = "permissive", **overrides: Any) -> DriftConfig:
    """The config of ``examples/fraud/flywheel.yaml`` (window 500, step 50), with overrides."""
    base = DriftConfig(
        backend="permissive",
        mode="online",
        features=tuple(FRAUD_KINDS),
        kinds=dict(FRAUD_KINDS),
        window=500,
        step=50,
        ert=5000,
    )
    overrides.setdefault("n_bootstrap", DEFAULT_BOOTSTRAP[backend])  # type: ignore[index]
    return replace(base, backend=backend, **overrides)  # type: ignore[arg-type]


def _numeric(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    from flywheel_fraud.simulator import MERCHANT_CATEGORIES

    out = np.zeros((len(rows), 9 + len(MERCHANT_CATEGORIES)))
    for i, r in enumerate(rows):
        out[i, 0] = np.log1p(r["amount"])
        out[i, 1] = np.log1p(r["avg_amount_30d"])
        out[i, 2] = np.log1p(r["distance_from_home_km"])
        out[i, 3] = np.log1p(r["minutes_since_last_tx"])
        out[i, 4] = r["hour"] / 23.0
        out[i, 5] = np.log1p(r["tx_count_24h"])
        out[i, 6] = np.log1p(r["account_age_days"])
        out[i, 7] = float(r["card_present"])
        out[i, 8] = float(r["foreign"])
        out[i, 9 + MERCHANT_CATEGORIES.index(r["merchant_category"])] = 1.0
    return out


def logistic_scorer(seed: int = 10_000, rows: int = 20_000) -> Scorer:
    """A LogisticRegression fitted on ``rows`` records of another simulator seed."""
    from sklearn.linear_model import LogisticRegression

    from flywheel_fraud.simulator import FraudSimulator

    train = FraudSimulator(seed=seed).batch(rows)
    model = LogisticRegression(max_iter=1000).fit(
        _numeric(train), [bool(r["is_fraud"]) for r in train]
    )

    def score(batch: Sequence[dict[str, Any]]) -> list[float]:
        return [float(p) for p in model.predict_proba(_numeric(batch))[:, 1]]

    return score


def reference_frame(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> pd.DataFrame:
    """The trainer's reference sample: feature columns, the label, and ``_score``."""
    frame = pd.DataFrame([{f: r[f] for f in (*FRAUD_KINDS, "is_fraud")} for r in rows])
    frame[SCORE] = list(scores)
    return frame


def _features(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{f: r[f] for f in FRAUD_KINDS} for r in rows]


def run_stream(
    det: Detector, sim: Any, scorer: Scorer, n: int, batch: int = BATCH
) -> tuple[list[tuple[str, int, bool]], float]:
    """Feed ``n`` rows; returns ((detector, position, drift) per report, CPU seconds in update)."""
    out: list[tuple[str, int, bool]] = []
    spent = 0.0
    now = [0.0]
    if hasattr(det, "clock"):  # alibi's sampling follows the arrival rate: simulate it
        det.clock = lambda: now[0]
    for start in range(0, n, batch):
        now[0] += batch / sim.rate_per_s
        rows = sim.batch(min(batch, n - start))
        feats = _features(rows)
        scores = scorer(rows)
        t0 = time.process_time()  # CPU time: the machine may be shared
        reports = det.update(feats, scores)
        spent += time.process_time() - t0
        out.extend((r.detector, r.position, r.drift) for r in reports)
    return out, spent


def seed_setup(
    seed: int, config: DriftConfig, scorer: Scorer, *, drift_at: int | None
) -> tuple[Calibration, Any, float]:
    """Calibrate on a fresh reference of seed ``seed``; returns (cal, simulator, CPU seconds)."""
    from flywheel_fraud.simulator import FraudSimulator

    if drift_at is None:
        sim = FraudSimulator(seed=seed)
    else:
        sim = FraudSimulator(seed=seed, drift="covariate", drift_at=drift_at)
    ref_rows = sim.batch(N_REF)
    frame = reference_frame(ref_rows, scorer(ref_rows))
    t0 = time.process_time()
    cal = calibrate(frame, replace(config, seed=seed))
    return cal, sim, time.process_time() - t0


def main(argv: Sequence[str] | None = None) -> None:
    """Print the measurements (see module docstring)."""
    from flywheel_fraud.simulator import FraudSimulator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="permissive", choices=["permissive", "alibi"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--clean-rows", type=int, default=200_000)
    parser.add_argument("--drift-rows", type=int, default=3000)
    parser.add_argument("--n-bootstrap", type=int, default=None)
    parser.add_argument("--max-update-rate", type=float, default=None)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--n-ref", type=int, default=None)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.n_bootstrap:
        overrides["n_bootstrap"] = args.n_bootstrap
    if args.max_update_rate:
        overrides["max_update_rate"] = args.max_update_rate
    if args.window:
        overrides["window"] = args.window
        overrides["step"] = max(1, args.window // 10)
    if args.n_ref:
        overrides["n_ref"] = args.n_ref
    config = fraud_config(args.backend, **overrides)
    scorer = logistic_scorer()
    onset = N_REF + 3000
    cal_times: list[float] = []
    delays: list[float] = []
    score_delays: list[float] = []
    missed = 0
    fa_window = fa_score = 0
    clean_total = 0
    rates: list[float] = []
    sampling: list[float] = []
    for seed in range(args.seeds):
        cal, sim, secs = seed_setup(seed, config, scorer, drift_at=None)
        cal_times.append(secs)
        det = make_detector(cal)
        reports, spent = run_stream(det, sim, scorer, args.clean_rows)
        rates.append(args.clean_rows / spent)
        sampling.append(det.sampling_rate)
        fw = sum(1 for d, _, x in reports if x and not d.startswith("score"))
        fs = sum(1 for d, _, x in reports if x and d.startswith("score"))
        fa_window += fw
        fa_score += fs
        clean_total += args.clean_rows
        # Same seed: the drifting simulator emits the same records before the onset, so the
        # reference (and its calibration) is the same.
        sim2 = FraudSimulator(seed=seed, drift="covariate", drift_at=onset)
        sim2.batch(N_REF)
        det2 = make_detector(cal)
        reports2, _ = run_stream(det2, sim2, scorer, onset - N_REF + args.drift_rows)
        after = [p for d, p, x in reports2 if x and not d.startswith("score") and p > onset - N_REF]
        before = [
            p for d, p, x in reports2 if x and not d.startswith("score") and p <= onset - N_REF
        ]
        score_after = [
            p for d, p, x in reports2 if x and d.startswith("score") and p > onset - N_REF
        ]
        delay = (after[0] - (onset - N_REF)) if after else None
        if delay is None:
            missed += 1
        else:
            delays.append(delay)
        if score_after:
            score_delays.append(score_after[0] - (onset - N_REF))
        print(
            f"seed {seed}: calibration {secs:.1f} s, clean {args.clean_rows} rows: "
            f"{fw} window / {fs} score false alarms, {rates[-1]:,.0f} rows/s "
            f"(sampling {det.sampling_rate:.3f}); drift: window delay {delay}, "
            f"score delay {score_after[0] - (onset - N_REF) if score_after else None}, "
            f"{len(before)} alarms before onset",
            flush=True,
        )
    per100k = 1e5 / clean_total
    print(f"backend: {args.backend}; config: {config.to_dict()}")
    print(f"calibration: median {statistics.median(cal_times):.1f} s, max {max(cal_times):.1f} s")
    print(f"throughput: median {statistics.median(rates):,.0f} rows/s")
    print(f"sampling rate: median {statistics.median(sampling):.3f}")
    if delays:
        print(
            f"detection delay (rows after onset): p50 {statistics.median(delays):.0f}, "
            f"max {max(delays)}, missed {missed}/{args.seeds}"
        )
    else:
        print(f"detection delay: all {missed} missed")
    if score_delays:
        print(
            f"score detector delay: p50 {statistics.median(score_delays):.0f}, "
            f"detected {len(score_delays)}/{args.seeds}"
        )
    print(
        f"false alarms per 100k clean rows: window {fa_window * per100k:.2f} "
        f"({fa_window} in {clean_total} rows), score {fa_score * per100k:.2f} ({fa_score})"
    )


if __name__ == "__main__":
    main()
