"""The demo's numbers: loop latency, the all-traffic point, quality, and the report file."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from flywheel_local import report
from flywheel_local.record import (
    Quality,
    RunRecord,
    Sample,
    Served,
    all_traffic_from,
    loop_latency,
    outcome,
    roc_auc,
)
from flywheel_shared.events import (
    DriftDetected,
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RetrainRequested,
    TrainingCompleted,
    TrainingStarted,
)

T0 = 1_800_000_000.0


def at(s: float) -> datetime:
    return datetime.fromtimestamp(T0 + s, UTC)


def loop_events() -> list[Event]:
    """v1 live at t=5; drift at t=30; v2 trained, rolled out, promoted at t=70."""
    cid = uuid.uuid4()
    run1, run2 = "r1", "r2"

    def alias(t: float, name: str, v: int | None, prev: int | None = None, w: float | None = None):
        return ModelAliasChanged(
            occurred_at=at(t),
            correlation_id=cid,
            model="fraud",
            alias=name,
            version=v,
            previous_version=prev,
            weight=w,
        )

    return [
        TrainingStarted(
            occurred_at=at(1),
            correlation_id=cid,
            model="fraud",
            run_id=run1,
            trigger="new_data",
            snapshot_id="s1",
        ),
        ModelVersionRegistered(
            occurred_at=at(4),
            correlation_id=cid,
            model="fraud",
            version=1,
            status="candidate",
            artifact_uri="a",
            artifact_sha256="0" * 64,
        ),
        TrainingCompleted(
            occurred_at=at(4.5),
            correlation_id=cid,
            model="fraud",
            run_id=run1,
            version=1,
            metrics={"roc_auc": 0.88},
            passed_gate=True,
            duration_s=3,
        ),
        alias(5, "production", 1),
        RetrainRequested(occurred_at=at(36), correlation_id=cid, model="fraud", reason="metric"),
        DriftDetected(
            occurred_at=at(34),
            correlation_id=cid,
            model="fraud",
            version=1,
            detector="cvm",
            features=["amount"],
            threshold=1.0,
            window=500,
        ),
        DriftDetected(
            occurred_at=at(35),
            correlation_id=cid,
            model="fraud",
            version=1,
            detector="cvm",
            features=["hour"],
            threshold=1.0,
            window=500,
        ),
        TrainingStarted(
            occurred_at=at(45),
            correlation_id=cid,
            model="fraud",
            run_id=run2,
            trigger="retrain",
            snapshot_id="s2",
        ),
        ModelVersionRegistered(
            occurred_at=at(50),
            correlation_id=cid,
            model="fraud",
            version=2,
            status="candidate",
            artifact_uri="a",
            artifact_sha256="1" * 64,
        ),
        alias(50.2, "shadow", 2),
        TrainingCompleted(
            occurred_at=at(51),
            correlation_id=cid,
            model="fraud",
            run_id=run2,
            version=2,
            metrics={"roc_auc": 0.95},
            passed_gate=True,
            duration_s=5,
        ),
        alias(55, "canary", 2, w=0.25),
        alias(70, "production", 2, prev=1),
    ]


def served(rng: np.random.Generator) -> list[Served]:
    out = []
    for i in range(0, 900):
        t = T0 + 10 + i * 0.1  # t = 10 … 100
        drifted = t >= T0 + 30
        version = 2 if t >= T0 + 70.3 else 1
        label = bool(rng.random() < 0.1)
        good = version == 2 or not drifted
        score = (0.7 if label else 0.2) if good else (0.2 if label else 0.7)
        out.append(Served(t, version, "production", score + rng.normal(0, 0.01), label, drifted))
    return out


def record() -> RunRecord:
    rec = RunRecord(model="fraud", started=T0, scoring_from=T0 + 10, onset=T0 + 30)
    rec.events = loop_events()
    rec.served = served(np.random.default_rng(0))
    rec.requests = 900
    return rec


def test_loop_latency_is_measured_step_by_step() -> None:
    lat = loop_latency(record())
    assert lat is not None and lat.complete
    assert lat.detection == pytest.approx(4.0)  # the first drift finding, t=34
    assert lat.requested == T0 + 36 and lat.training_started == T0 + 45
    assert lat.registered == T0 + 50 and lat.first_alias == T0 + 50.2
    assert lat.promoted == T0 + 70 and lat.old_version == 1 and lat.new_version == 2
    assert lat.all_traffic == pytest.approx(
        T0 + 70.3, abs=0.01
    )  # the first answer of v2's final run
    assert lat.total == pytest.approx(40.3, abs=0.01)
    assert lat.training == pytest.approx(14.0) and lat.rollout == pytest.approx(20.3, abs=0.01)
    spans = [v for _, v in lat.steps()]
    assert sum(spans) == pytest.approx(lat.total)  # type: ignore[arg-type]
    assert lat.line() == "loop latency: 40.3 s (detection 4.0, training 14.0, rollout 20.3)"


def test_an_open_loop_says_where_it_stopped() -> None:
    rec = record()
    rec.events = [e for e in rec.events if not isinstance(e, TrainingStarted | TrainingCompleted)]
    lat = loop_latency(rec)
    assert lat is not None and not lat.complete and lat.training_started is None
    assert lat.line() == "loop latency: n/a s (detection 4.0, training n/a, rollout n/a)"
    rec.onset = None
    assert loop_latency(rec) is None


def test_all_traffic_needs_the_last_answers_from_the_new_version() -> None:
    s = [
        Served(float(t), v, "production", 0.5, False, False)
        for t, v in [(1, 1), (2, 2), (3, 1), (4, 2), (5, 2)]
    ]
    assert all_traffic_from(s, 2, since=0) == 4  # the canary's earlier v2 answer does not count
    assert all_traffic_from(s, 2, since=4.5) == 4.5  # never before the promotion itself
    assert all_traffic_from(s[:3], 2, since=0) is None


def test_outcome_sees_the_drop_and_the_recovery() -> None:
    rec = record()
    out = outcome(rec, loop_latency(rec))
    assert out.before.roc_auc == 1.0 and out.after.roc_auc == 1.0
    assert out.during.roc_auc == 0.0 and out.during.n > 0
    assert out.retrain_requests == 1 and out.drift_findings == 2 and out.failed_requests == 0


def test_roc_auc_by_ranks() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([False, False, True, True])
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)
    assert math.isnan(roc_auc(np.array([0.5]), np.array([True])))
    assert math.isnan(Quality.of([]).accuracy)


def test_the_report_is_one_html_file_with_its_charts(tmp_path: Path) -> None:
    rec = record()
    rec.samples = [
        Sample(T0 + t, {"v1/production/roc_auc/realised": 0.9 if t < 35 else 0.2}, {1: t / 40}, 1.0)
        for t in range(10, 100, 2)
    ]
    lat = loop_latency(rec)
    path = report.write(rec, lat, outcome(rec, lat), tmp_path / "report.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3  # accuracy, drift, traffic share
    assert "loop latency: 40.3 s" in text and "production v2" not in text.split("<h2>")[0]
    assert "verdict" not in text or "hold" not in text
    assert (tmp_path / "run.json").exists()
    marks = [label for _, label, _ in report.marks(rec)]
    assert marks[:2] == ["drift injected", "drift detected"] and "production v2" in marks


def test_the_live_view_draws_every_panel_and_lists_the_decisions() -> None:
    from rich.console import Console

    from flywheel_local.live import View

    rec = record()
    rec.samples = [Sample(T0, {"v1/production/roc_auc/estimated": 0.9}, {1: 2.5}, 5.0)]
    rec.health = {"registry": "ready", "serving": "unreachable"}
    rec.topic_counts = {"predictions": 1234}
    console = Console(width=140, record=True)
    view = View(rec, console, live=False)
    for e in rec.events:
        view.event(e)
    printed = console.export_text()
    assert "drift on v1: amount (cvm)" in printed and "production → v2" in printed
    console.print(view.render(), height=40)
    screen = console.export_text()
    for text in (
        "services",
        "unreachable",
        "1,234",
        "versions and aliases",
        "v1 estimated",
        "2.50 / 5.00",
        "decisions",
        "canary → v2 (25%)",
    ):
        assert text in screen, text


def test_roc_auc_standard_error_matches_a_bootstrap() -> None:
    import numpy as np

    from flywheel_local.record import Quality, roc_auc

    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.05
    scores = np.where(labels, rng.normal(1.6, 1, 2000), rng.normal(0, 1, 2000))
    q = Quality(2000, 0.0, roc_auc(scores, labels), int(labels.sum()))
    boot = []
    for _ in range(300):
        i = rng.integers(0, 2000, 2000)
        boot.append(roc_auc(scores[i], labels[i]))
    assert 0.7 < q.roc_auc_se() / float(np.std(boot)) < 1.3
    assert math.isnan(Quality(10, 1.0, 0.9, positives=0).roc_auc_se())  # one class: undefined
