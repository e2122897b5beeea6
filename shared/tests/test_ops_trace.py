"""``flywheel trace``: one loop iteration's decisions, read back from a real broker."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from click.testing import CliRunner

from flywheel_devkit.kafka import pick_free_port
from flywheel_shared.cli import main
from flywheel_shared.events import (
    BatchCommitted,
    DriftDetected,
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    Prediction,
    PredictionsLogged,
    RetrainRequested,
    RolloutVerdict,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    encode_event,
)
from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.ops import trace as ops_trace
from flywheel_shared.ops.trace import (
    DECISION_TOPICS,
    KafkaReadError,
    RawRecord,
    Step,
    actor_of,
    build_trace,
    clock,
    collect,
    latest_iteration,
    summarize,
)
from flywheel_shared.settings import KafkaSettings

T0 = datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def loop_events(cid: UUID) -> list[Event]:
    """One full fake loop iteration of model ``fraud``, in time order."""
    return [
        BatchCommitted(
            correlation_id=cid,
            occurred_at=at(0),
            dataset="transactions",
            segment_id="s-0007",
            segment_uri="file:///store/s-0007.parquet",
            row_count=2000,
            content_hash="c" * 64,
            snapshot_id="snap-1",
            total_rows=8000,
            segment_count=4,
        ),
        TrainingStarted(
            correlation_id=cid,
            occurred_at=at(1.25),
            model="fraud",
            run_id="r-1",
            trigger="new_data",
        ),
        TrainingCompleted(
            correlation_id=cid,
            occurred_at=at(5.5),
            model="fraud",
            run_id="r-1",
            version=2,
            metrics={"log_loss": 0.21, "roc_auc": 0.9123},
            champion_metrics={"roc_auc": 0.9051},
            passed_gate=True,
            duration_s=4.2,
        ),
        ModelVersionRegistered(
            correlation_id=cid,
            occurred_at=at(6),
            model="fraud",
            version=2,
            status="candidate",
            artifact_uri="file:///a",
            artifact_sha256="a" * 64,
        ),
        ModelAliasChanged(
            correlation_id=cid,
            occurred_at=at(6.5),
            model="fraud",
            alias="shadow",
            version=2,
            reason="first alias of a candidate",
        ),
        DriftDetected(
            correlation_id=cid,
            occurred_at=at(20),
            model="fraud",
            version=1,
            detector="cvm",
            features=["amount", "hour"],
            threshold=0.05,
            window=500,
        ),
        RetrainRequested(correlation_id=cid, occurred_at=at(20.5), model="fraud", reason="drift"),
        RolloutVerdict(
            correlation_id=cid,
            occurred_at=at(30),
            model="fraud",
            version=2,
            alias="shadow",
            decision="advance",
            reasons=["agreement 0.97 >= 0.95", "2,000 requests"],
        ),
        ModelAliasChanged(
            correlation_id=cid,
            occurred_at=at(31),
            model="fraud",
            alias="canary",
            version=2,
            previous_version=None,
            weight=0.1,
            actor="monitor",
            reason="verdict advance",
        ),
    ]


EXPECTED_TYPES = [
    "data.batch.committed",
    "training.started",
    "training.completed",
    "model.version.registered",
    "model.alias.changed",
    "drift.detected",
    "retrain.requested",
    "rollout.verdict",
    "model.alias.changed",
]
EXPECTED_ACTORS = [
    "ingest",
    "trainer",
    "trainer",
    "registry",
    "registry",
    "monitor",
    "monitor",
    "monitor",
    "monitor",
]
EXPECTED_SUMMARIES = [
    "segment s-0007: 2,000 rows → dataset transactions 8,000 rows",
    "training started (trigger new_data)",
    "v2 trained: roc_auc 0.912 (champion 0.905), gate passed",
    "v2 registered (candidate)",
    "shadow → v2: first alias of a candidate",
    "drift on v1: amount, hour (cvm)",
    "retrain requested: drift",
    "verdict on v2 (shadow): advance — agreement 0.97 >= 0.95; 2,000 requests",
    "canary → v2 (10%): verdict advance",
]


# -- without Kafka ---------------------------------------------------------------------------


def test_summaries_and_actors_of_every_decision() -> None:
    cid = uuid.uuid4()
    events = loop_events(cid)
    assert [summarize(e) for e in events] == EXPECTED_SUMMARIES
    assert [actor_of(e) for e in events] == EXPECTED_ACTORS
    # the retrain's requested_by and the alias change's actor name the decider
    assert actor_of(RetrainRequested(model="m", reason="x", requested_by="cli:ann")) == "cli:ann"
    assert actor_of(ModelAliasChanged(model="m", alias="production", version=3)) == "registry"
    failed_gate = TrainingCompleted(
        model="m",
        run_id="r",
        version=None,
        metrics={"pr_auc": 0.4},
        passed_gate=False,
        gate_reasons=["pr_auc 0.400 < 0.5"],
        duration_s=1,
    )
    assert summarize(failed_gate) == "run r trained: pr_auc 0.400, gate failed: pr_auc 0.400 < 0.5"
    assert summarize(failed_gate, primary="nope") == summarize(failed_gate)
    crash = TrainingFailed(model="m", run_id="r", error="MemoryError: boom\nTraceback ...")
    assert summarize(crash) == "training failed: MemoryError: boom"
    removed = ModelAliasChanged(model="m", alias="canary", version=None, previous_version=2)
    assert summarize(removed) == "canary removed (was v2)"


def _raw(topic: str, event: Event | bytes, header: str | None, offset: int = 0) -> RawRecord:
    value = event if isinstance(event, bytes) else encode_event(event)
    key = None if isinstance(event, bytes) else event.key().encode()
    return RawRecord(topic, 0, offset, key, value, header)


def test_build_trace_trusts_the_header_decodes_the_rest_and_dedupes() -> None:
    cid, other = uuid.uuid4(), uuid.uuid4()
    started = TrainingStarted(
        correlation_id=cid, occurred_at=at(1), model="m", run_id="r", trigger="retrain"
    )
    drift = DriftDetected(
        correlation_id=cid,
        occurred_at=at(1),  # same time as the training: the causal topic order decides
        model="m",
        version=1,
        detector="ks",
        features=["x"],
        threshold=0.1,
        window=10,
    )
    foreign = TrainingStarted(
        correlation_id=other, occurred_at=at(0), model="m", run_id="r0", trigger="manual"
    )
    records = [
        _raw("drift.detected", drift, None),  # no header (faust): decoded
        _raw("training.started", started, str(cid), 1),
        _raw("training.started", started, str(cid), 2),  # republished: same event_id
        _raw("training.started", foreign, None, 3),  # decoded, other id
        _raw("training.started", b"\x00not json", str(other), 4),  # skipped undecoded
        _raw("training.started", b"\x00not json", None, 5),  # undecodable: ignored
        # header says another iteration: not decoded even though the body matches
        _raw("training.started", started.model_copy(update={"event_id": uuid.uuid4()}), str(other)),
    ]
    trace = build_trace(records, cid)
    assert [s.type for s in trace.steps] == ["training.started", "drift.detected"]
    assert [s.event.event_id for s in trace.steps] == [started.event_id, drift.event_id]
    assert trace.duration_s == 0.0
    assert build_trace(records, cid, model="other").steps == []


def test_latest_iteration_prefers_the_newest_training_started() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    older = TrainingStarted(
        correlation_id=a, occurred_at=at(1), model="m", run_id="1", trigger="manual"
    )
    newer = TrainingStarted(
        correlation_id=b, occurred_at=at(2), model="m", run_id="2", trigger="manual"
    )
    late_verdict = RolloutVerdict(
        correlation_id=c, occurred_at=at(9), model="m", version=1, alias="canary", decision="hold"
    )
    records = [
        _raw("training.started", newer, None),
        _raw("training.started", older, None),
        _raw("rollout.verdict", late_verdict, None),
    ]
    assert latest_iteration(records, "m") == b
    assert latest_iteration(records[2:], "m") == c  # no training: the newest event
    assert latest_iteration(records, "n") is None


async def test_unreachable_kafka_is_a_readable_error() -> None:
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{pick_free_port()}", topic_prefix="nowhere")
    with pytest.raises(KafkaReadError, match=r"cannot reach Kafka at 127\.0\.0\.1:"):
        await collect(kafka, uuid.uuid4(), timeout=5)


def test_cli_refuses_bad_arguments() -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["trace", "not-a-uuid"])
    assert bad.exit_code == 2
    assert "not a valid UUID" in bad.output
    assert runner.invoke(main, ["trace"]).exit_code == 2
    assert runner.invoke(main, ["trace", "--last"]).exit_code == 2
    assert (
        runner.invoke(main, ["trace", str(uuid.uuid4()), "--model", "m", "--last"]).exit_code == 2
    )
    down = runner.invoke(
        main, ["trace", str(uuid.uuid4()), "--bootstrap", f"127.0.0.1:{pick_free_port()}"]
    )
    assert down.exit_code == 1
    assert "cannot reach Kafka" in down.stderr


# -- against a real broker -------------------------------------------------------------------


@dataclass
class Loop:
    kafka: KafkaSettings
    main: UUID
    newer: UUID
    other_model: UUID
    lonely: UUID


@pytest.fixture(scope="module")
async def loop(kafka_bootstrap: str) -> AsyncIterator[Loop]:
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"tr{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka, [*DECISION_TOPICS, "predictions"])
    ids = Loop(kafka, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    main_events = loop_events(ids.main)
    noise: list[Event] = [
        TrainingStarted(
            correlation_id=ids.newer,
            occurred_at=at(100),
            model="fraud",
            run_id="r-2",
            trigger="retrain",
        ),
        TrainingCompleted(
            correlation_id=ids.newer,
            occurred_at=at(104),
            model="fraud",
            run_id="r-2",
            version=3,
            metrics={"roc_auc": 0.7},
            passed_gate=False,
            gate_reasons=["roc_auc 0.700 < champion - 0.005"],
            duration_s=4,
        ),
        TrainingStarted(
            correlation_id=ids.other_model,
            occurred_at=at(200),
            model="other",
            run_id="o-1",
            trigger="manual",
        ),
        DriftDetected(
            correlation_id=ids.lonely,
            occurred_at=at(50),
            model="lonely",
            version=1,
            detector="ks",
            features=["z"],
            threshold=0.1,
            window=10,
        ),
        # the same iteration, but on a topic that is not a decision topic
        PredictionsLogged(
            correlation_id=ids.main,
            occurred_at=at(7),
            model="fraud",
            predictions=[
                Prediction(
                    prediction_id="p",
                    request_id="q",
                    version=2,
                    route="shadow",
                    features={},
                    output=0.1,
                    latency_ms=1,
                    at=at(7),
                )
            ],
        ),
    ]
    producer = EventProducer(kafka, "test-trace")
    await producer.start()
    try:
        # the monitor publishes through faust: no headers; do the same for its drift finding
        drift = next(e for e in main_events if isinstance(e, DriftDetected))
        published = [e for e in main_events if e is not drift] + noise
        random.Random(7).shuffle(published)  # the trace must sort, not rely on arrival
        await producer.publish_all(published)
        await producer.publish(main_events[2])  # an at-least-once duplicate
        namer = producer.topics
        await producer.send_bytes(namer("drift.detected"), encode_event(drift), key=b"fraud")
        noise_drift = drift.model_copy(
            update={"event_id": uuid.uuid4(), "correlation_id": ids.newer, "occurred_at": at(105)}
        )
        await producer.send_bytes(namer("drift.detected"), encode_event(noise_drift), key=b"fraud")
        await producer.send_bytes(namer("rollout.verdict"), b"not an event", key=b"fraud")
    finally:
        await producer.stop()
    yield ids


@pytest.mark.integration
async def test_collect_returns_exactly_one_iteration_in_time_order(loop: Loop) -> None:
    trace = await collect(loop.kafka, loop.main)
    assert trace.correlation_id == loop.main
    assert [s.type for s in trace.steps] == EXPECTED_TYPES
    assert [s.actor for s in trace.steps] == EXPECTED_ACTORS
    assert [s.summary for s in trace.steps] == EXPECTED_SUMMARIES
    assert [s.at for s in trace.steps] == [e.occurred_at for e in loop_events(loop.main)]
    assert {s.event.correlation_id for s in trace.steps} == {loop.main}
    assert [s.topic for s in trace.steps] == EXPECTED_TYPES  # type == logical topic
    completed = trace.steps[2].event
    assert isinstance(completed, TrainingCompleted)
    assert completed.version == 2 and completed.passed_gate
    canary = trace.steps[-1].event
    assert isinstance(canary, ModelAliasChanged) and canary.weight == 0.1
    assert trace.duration_s == 31.0
    data = json.loads(trace.to_json())
    assert [s["offset_s"] for s in data["steps"]] == [0, 1.25, 5.5, 6, 6.5, 20, 20.5, 30, 31]


@pytest.mark.integration
async def test_collect_last_picks_the_models_newest_iteration(loop: Loop) -> None:
    newest = await collect(loop.kafka, model="fraud", last=True)
    assert newest.correlation_id == loop.newer
    assert [s.type for s in newest.steps] == [
        "training.started",
        "training.completed",
        "drift.detected",
    ]
    assert newest.steps[1].summary == (
        "v3 trained: roc_auc 0.700, gate failed: roc_auc 0.700 < champion - 0.005"
    )
    other = await collect(loop.kafka, model="other", last=True)
    assert other.correlation_id == loop.other_model
    assert [s.event.model for s in other.steps] == ["other"]  # type: ignore[attr-defined]
    lonely = await collect(loop.kafka, model="lonely", last=True)  # no training: newest event
    assert lonely.correlation_id == loop.lonely
    nobody = await collect(loop.kafka, model="nobody", last=True)
    assert nobody.correlation_id is None and nobody.steps == []


@pytest.mark.integration
async def test_collect_unknown_id_and_model_filter(loop: Loop) -> None:
    assert (await collect(loop.kafka, uuid.uuid4())).steps == []
    only_batch = await collect(loop.kafka, loop.main, model="someone-else")
    assert [s.type for s in only_batch.steps] == ["data.batch.committed"]
    with pytest.raises(ValueError):
        await collect(loop.kafka)
    with pytest.raises(ValueError):
        await collect(loop.kafka, loop.main, model="fraud", last=True)


def _cli(loop: Loop, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        [
            "trace",
            *args,
            "--bootstrap",
            loop.kafka.bootstrap,
            "--topic-prefix",
            loop.kafka.topic_prefix,
        ],
        env={"COLUMNS": "250"},
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.integration
def test_cli_prints_the_timeline(loop: Loop) -> None:
    code, out, _ = _cli(loop, str(loop.main))
    assert code == 0, out
    assert f"trace {loop.main}: 9 steps over 31.000 s" in out
    lines = out.splitlines()
    offsets = (0, 1.25, 5.5, 6, 6.5, 20, 20.5, 30, 31)
    for summary, actor, offset in zip(EXPECTED_SUMMARIES, EXPECTED_ACTORS, offsets, strict=True):
        row = next(line for line in lines if summary in line)
        assert clock(at(offset)) in row and f"+{offset:.3f}" in row and f" {actor} " in row
    assert clock(T0) == "09:26:53.589"
    assert "predictions" not in out


@pytest.mark.integration
def test_cli_json_last_and_unknown_id(loop: Loop) -> None:
    code, out, _ = _cli(loop, str(loop.main), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["correlation_id"] == str(loop.main)
    assert [s["type"] for s in data["steps"]] == EXPECTED_TYPES
    assert data["steps"][4]["event"]["alias"] == "shadow"
    assert data["steps"][0]["actor"] == "ingest" and data["steps"][0]["model"] is None

    code, out, _ = _cli(loop, "--model", "fraud", "--last", "--json")
    assert code == 0
    assert json.loads(out)["correlation_id"] == str(loop.newer)

    unknown = uuid.uuid4()
    code, out, err = _cli(loop, str(unknown))
    assert code == 1
    assert f"no events with correlation id {unknown}" in err
    code, _, err = _cli(loop, "--model", "nobody", "--last")
    assert code == 1 and "no events of model 'nobody'" in err


def test_step_of_keeps_the_decoded_event() -> None:
    event = loop_events(uuid.uuid4())[3]
    step = Step.of(event)
    assert step.event is event and step.topic == "model.version.registered"
    assert step.to_dict()["offset_s"] == 0
    assert ops_trace.PUBLISHERS.keys() == set(DECISION_TOPICS)
