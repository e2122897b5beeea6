from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.datasets import SegmentEntry
from flywheel_shared.spec import Gate, ModelSpec, Training, Window, load_spec
from flywheel_trainer.domain.dataset import training_split, window_segments
from flywheel_trainer.domain.evaluation import (
    apply_gates,
    compute_metrics,
    expected_calibration_error,
)
from flywheel_trainer.domain.triggers import TrainedState, enough_new_rows, stale

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    df = pd.DataFrame(FraudSimulator(seed=seed).batch(n))
    df["event_time"] = pd.to_datetime(df["event_time"])
    return df


def test_metrics_on_known_scores() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = compute_metrics(y, p, ["roc_auc", "accuracy", "log_loss", "pr_auc", "ece"])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["log_loss"] > 0 and 0 < m["pr_auc"] <= 1
    assert math.isnan(
        compute_metrics(np.array([1, 1]), np.array([0.2, 0.9]), ["roc_auc"])["roc_auc"]
    )
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(y, p, ["nope"])


def test_ece_is_zero_when_calibrated() -> None:
    y = np.array([0] * 50 + [1] * 50)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.where(y == 1, 0.0, 1.0)) == pytest.approx(1.0)


def test_gates_absolute_and_against_champion() -> None:
    gates = [
        Gate.model_validate("roc_auc >= 0.8"),
        Gate.model_validate("roc_auc >= champion - 0.005"),
    ]
    ok = apply_gates(gates, {"roc_auc": 0.85}, None)
    assert ok.passed and "no champion" in ok.reasons[1]
    worse = apply_gates(gates, {"roc_auc": 0.85}, {"roc_auc": 0.9})
    assert not worse.passed and worse.reasons[1].startswith(
        "FAILED: roc_auc 0.8500 >= champion 0.9000 - 0.005"
    )
    assert apply_gates(gates, {"roc_auc": 0.897}, {"roc_auc": 0.9}).passed
    assert not apply_gates(gates, {"roc_auc": 0.7}, None).passed
    assert not apply_gates(gates, {"roc_auc": math.nan}, None).passed


def test_split_holds_out_the_newest_labelled_rows() -> None:
    df = frame(1000)
    df["is_fraud"] = df["is_fraud"].astype(object)
    df.loc[::10, "is_fraud"] = None  # unlabelled rows are not trained on
    split = training_split(SPEC, df.sample(frac=1, random_state=1))  # order must not matter
    assert split.info["labelled_rows"] == 900
    assert len(split.holdout) == round(900 * SPEC.training.holdout_fraction)
    assert (
        split.holdout["event_time"].min()
        >= df[df["is_fraud"].notna()]["event_time"].sort_values().iloc[len(split.train) - 1]
    )
    assert list(split.train.columns) == [*SPEC.features, "is_fraud"]
    assert set(split.train["is_fraud"].unique()) <= {0, 1}


def test_windows() -> None:
    df = frame(1000)
    assert (
        training_split(SPEC, df, Window(kind="last_rows", value=300)).info["rows_in_window"] == 300
    )
    last = training_split(SPEC, df, Window(kind="last_seconds", value=2.0)).info["rows_in_window"]
    assert 0 < int(last) < 1000  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="too few"):
        training_split(SPEC, df.head(2))


def test_trigger_policy() -> None:
    policy = Training(min_new_rows=100, max_staleness_s=60)
    assert not enough_new_rows(policy, TrainedState(rows=50), 149)
    assert enough_new_rows(policy, TrainedState(rows=50), 150)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert stale(policy, TrainedState(rows=10, at=now - timedelta(seconds=61)), now, 11)
    assert not stale(policy, TrainedState(rows=10, at=now - timedelta(seconds=61)), now, 10)
    assert not stale(policy, TrainedState(rows=10, at=now - timedelta(seconds=5)), now, 500)
    assert not stale(Training(), TrainedState(), now, 500)


def test_a_last_rows_window_reads_only_the_segments_it_needs() -> None:
    df = frame(4000)
    # Four partitions sealing in turn: segments overlap in event time, one arrives late.
    chunks = [df.iloc[i::4].iloc[j : j + 100] for j in range(0, 1000, 100) for i in range(4)]
    chunks.append(chunks.pop(5))  # an old segment committed last
    segs, frames = [], {}
    for n, chunk in enumerate(chunks):
        sid = f"s{n}"
        frames[sid] = chunk
        segs.append(
            SegmentEntry(
                segment_id=sid,
                key=sid,
                uri=sid,
                content_hash=sid,
                rows=len(chunk),
                partition=0,
                first_offset=0,
                last_offset=0,
                event_ids=[],
                created_at=datetime.now(UTC),
                min_event_time=chunk["event_time"].min(),
                max_event_time=chunk["event_time"].max(),
            )
        )
    window = Window(kind="last_rows", value=700)
    needed = window_segments(segs, window)
    assert 7 <= len(needed) < len(segs) and "s39" not in {s.segment_id for s in needed}
    part = training_split(SPEC, pd.concat([frames[s.segment_id] for s in needed]), window)
    whole = training_split(SPEC, df, window)
    pd.testing.assert_frame_equal(part.train, whole.train)
    pd.testing.assert_frame_equal(part.holdout, whole.holdout)
    assert window_segments(segs, Window(kind="all")) == segs
    assert window_segments(segs, Window(kind="last_rows", value=10**6)) == segs


def test_the_drift_reference_leaves_personal_features_out() -> None:
    from flywheel_trainer.worker import reference_sample

    path = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "flywheel.yaml"
    data = load_spec(path).model_dump(by_alias=True)
    data["dataset"]["fields"]["merchant_category"]["personal"] = True
    spec = ModelSpec.model_validate(data)
    holdout = pd.DataFrame([{f: 1 for f in spec.features} | {"is_fraud": False}] * 3)
    ref = reference_sample(spec, holdout, np.zeros(3))
    assert "merchant_category" not in ref.columns
    assert set(ref.columns) == {*spec.features, "is_fraud", "_score"} - {"merchant_category"}
