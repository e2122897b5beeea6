"""The predictions side and the decision maker without Kafka: the same code the agents run."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import pandas as pd
from monitor_support import fraud_spec, labels, predictions, reference_parquet

from flywheel_fraud.simulator import FraudSimulator
from flywheel_monitor.brain import Brain, BrainState
from flywheel_monitor.drift import Calibration, calibrate, config_from_spec
from flywheel_monitor.joiner import JoinPartition, join_partition
from flywheel_monitor.watch import VersionInfo, Watcher, WatchState, score_of
from flywheel_shared.events import RetrainRequested

SPEC = fraud_spec("unit")


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    frame = pd.read_parquet(io.BytesIO(reference_parquet("good")))
    config = config_from_spec(SPEC, backend="permissive", seed=0, n_bootstrap=20_000)
    return Calibration.from_bytes(calibrate(frame, config).to_bytes())


def stream(seed: int, n: int, **kw: Any) -> list[dict[str, Any]]:
    return FraudSimulator(seed=seed, rate_per_s=20.0, fraud_rate=0.05, **kw).batch(n)


def run(events: list[Any], *, roundtrip: bool) -> tuple[list[Any], list[Any], list[Any]]:
    """Feed prediction events through a Watcher and its signals through a Brain."""
    watcher, brain = Watcher("unit"), Brain("unit", hold_interval_s=0)
    wstate, bstate = WatchState(), BrainState()
    info = {
        1: VersionInfo(
            correlation_id="00000000-0000-0000-0000-000000000001", calibration=calibration()
        )
    }
    drift, decisions, signals = [], [], []
    for ev in events:
        out = watcher.apply(wstate, list(ev.predictions), SPEC, info)
        drift.extend(out.drift)
        for sig in out.signals:
            signals.append(sig)
            decisions.extend(brain.apply(bstate, sig, SPEC))
        if roundtrip:
            # What a restart does: the state comes back from the table, detectors are rebuilt.
            wstate = WatchState.from_bytes(wstate.to_bytes())
            bstate = BrainState.from_bytes(bstate.to_bytes())
            watcher.forget()
    return drift, decisions, signals


def test_covariate_drift_gives_one_retrain_and_a_restart_changes_nothing() -> None:
    events = predictions(
        "unit", stream(1, 6000, drift="covariate", drift_at=3000), [(1, "production", "good")]
    )
    drift, decisions, signals = run(events, roundtrip=False)
    assert drift and all(d.version == 1 for d in drift)
    first = drift[0]
    assert first.features
    retrains = [d for d in decisions if isinstance(d, RetrainRequested)]
    assert len(retrains) == 1 and "drift" in retrains[0].reason
    assert str(retrains[0].correlation_id) == "00000000-0000-0000-0000-000000000001"
    # Restoring every state from bytes after each message gives the very same decisions.
    drift2, decisions2, signals2 = run(events, roundtrip=True)
    assert [d.event_id for d in drift2] == [d.event_id for d in drift]
    assert [d.event_id for d in decisions2] == [d.event_id for d in decisions]
    assert signals2 == signals


def test_clean_stream_gives_no_drift_and_no_retrain() -> None:
    events = predictions("unit", stream(2, 6000), [(1, "production", "good")])
    drift, decisions, _ = run(events, roundtrip=False)
    assert drift == [] and decisions == []


def test_join_then_brain_gives_live_accuracy_of_the_rows() -> None:
    rows = stream(3, 1500)
    events = predictions("unit", rows, [(1, "production", "good")])
    parts = [JoinPartition(p) for p in range(6)]
    pairs: list[Any] = []
    for ev in events:
        for p in ev.predictions:
            part = parts[join_partition("transactions", p.record_id or "", 6)]
            item = [
                "transactions",
                p.record_id,
                "unit",
                p.version,
                p.route,
                score_of(p.output),
                p.at.timestamp(),
                p.prediction_id,
            ]
            pairs += part.apply({"p": [item]})
    for lab_ev in labels(rows):
        for lab in lab_ev.labels:
            part = parts[join_partition("transactions", lab.record_id or "", 6)]
            assert lab.observed_at is not None
            pairs += part.apply(
                {"l": [["transactions", lab.record_id, lab.label, lab.observed_at.timestamp()]]}
            )
    assert len(pairs) == 1500
    brain, state = Brain("unit"), BrainState()
    spec = fraud_spec("unit", monitoring={"window_s": 1_000_000.0})
    brain.apply(
        state, {"kind": "joined", "items": [list(p[1]) for p in pairs], "src": [0, 1]}, spec
    )
    # The same batch again (a redelivery) is dropped.
    brain.apply(
        state, {"kind": "joined", "items": [list(p[1]) for p in pairs], "src": [0, 1]}, spec
    )
    window = state.labels.window("1/production", 10**9, 10**9)
    assert window.count == 1500
    truth = {r["transaction_id"]: bool(r["is_fraud"]) for r in rows}
    hits = [
        ((score_of(p.output) or 0.0) >= 0.5) == truth[p.record_id or ""]
        for ev in events
        for p in ev.predictions
    ]
    assert window.accuracy() == sum(hits) / len(hits)
