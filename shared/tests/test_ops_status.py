"""``flywheel status``: lag arithmetic and rendering on plain data, then against a real broker
and real (tiny) HTTP servers standing in for the services."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from click.testing import CliRunner
from rich.console import Console

from flywheel_devkit.kafka import pick_free_port
from flywheel_shared.cli import main
from flywheel_shared.events import (
    DriftDetected,
    ModelAliasChanged,
    RolloutVerdict,
    TrainingCompleted,
    TrainingFailed,
)
from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.ops import DEFAULT_URLS
from flywheel_shared.ops.status import (
    AliasSummary,
    EventsSection,
    GroupLag,
    LagSection,
    ModelsSection,
    ModelSummary,
    PartitionLag,
    ServiceStatus,
    Status,
    VersionSummary,
    collect,
    collect_models,
    group_lag,
    latest_steps,
    probe_service,
    readiness_reason,
    render,
)
from flywheel_shared.ops.trace import Step
from flywheel_shared.registry import AliasState, Approval, Lineage, ModelInfo, ModelVersion
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.topics import TopicNamer

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


# -- plain data ------------------------------------------------------------------------------


def test_group_lag_counts_only_this_prefix_and_never_goes_negative() -> None:
    namer = TopicNamer("p")
    tc, dd = namer("training.completed"), namer("drift.detected")
    committed = {
        TopicPartition(tc, 0): 3,
        TopicPartition(tc, 1): 10,  # ahead of the end we read: lag 0, not -3
        TopicPartition(tc, 2): -1,  # no commit on this partition
        TopicPartition(dd, 0): 0,
        TopicPartition("q.training.completed.v1", 0): 0,  # another prefix
        TopicPartition("p.unknown.v1", 0): 0,  # not a Flywheel topic
        TopicPartition(dd, 1): 4,  # no end offset known: left out
    }
    ends = {
        TopicPartition(tc, 0): 8,
        TopicPartition(tc, 1): 7,
        TopicPartition(tc, 2): 50,
        TopicPartition(dd, 0): 6,
        TopicPartition("q.training.completed.v1", 0): 99,
        TopicPartition("p.unknown.v1", 0): 99,
    }
    lag = group_lag("g", committed, ends, namer)
    assert lag is not None
    assert [(p.topic, p.partition, p.lag) for p in lag.partitions] == [
        ("drift.detected", 0, 6),
        ("training.completed", 0, 5),
        ("training.completed", 1, 0),
    ]
    assert lag.topics == {"drift.detected": 6, "training.completed": 5}
    assert lag.lag == 11
    assert lag.to_dict()["partitions"][1] == {
        "topic": "training.completed",
        "partition": 0,
        "committed": 3,
        "end": 8,
        "lag": 5,
    }
    only_foreign = {TopicPartition("q.training.completed.v1", 0): 0}
    assert group_lag("g2", only_foreign, ends, namer) is None


def _resp(status: int, body: Any) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body)
    return httpx.Response(status, json=body)


def test_readiness_reason_reads_every_services_shape() -> None:
    shared = {"status": "not ready", "problems": {"kafka": "producer not connected", "db": "x"}}
    assert readiness_reason(_resp(503, shared)) == "kafka: producer not connected; db: x"
    monitor = {"status": "unready", "checks": {"kafka": "rebalancing"}}
    assert readiness_reason(_resp(503, monitor)) == "kafka: rebalancing"
    assert readiness_reason(_resp(503, {"detail": "warming up"})) == "HTTP 503: warming up"
    assert readiness_reason(_resp(503, "Runner not ready\nmore")) == "HTTP 503: Runner not ready"
    assert readiness_reason(_resp(502, "")) == "HTTP 502"


def _step(event: Any) -> Step:
    return Step.of(event)


def _plain_status(**overrides: Any) -> Status:
    fields: dict[str, Any] = {
        "collected_at": NOW,
        "bootstrap": "k:9092",
        "topic_prefix": "fw",
        "services": [
            ServiceStatus("ingest", "http://i", reachable=True, healthy=True, ready=True),
            ServiceStatus(
                "trainer",
                "http://t",
                reachable=True,
                healthy=True,
                ready=False,
                reason="kafka: consumer not started",
            ),
            ServiceStatus("serving", "http://s", reachable=False, reason="ConnectError: refused"),
            ServiceStatus(
                "monitor",
                "http://m",
                reachable=True,
                healthy=True,
                ready=True,
                detail={
                    "worker": "monitor-7",
                    "assignment": ["a:0", "a:1", "b:0"],
                    "models": {
                        "fraud": {
                            "production": 1,
                            "versions": {},
                            "rollouts": {"canary": {"version": 2, "step": 1, "requests": 1234}},
                        }
                    },
                },
            ),
        ],
        "lag": LagSection(
            groups=[
                GroupLag(
                    "flywheel-trainer",
                    [
                        PartitionLag("data.batch.committed", 0, 10, 13),
                        PartitionLag("data.batch.committed", 1, 4, 4),
                        PartitionLag("retrain.requested", 2, 0, 9),
                    ],
                )
            ]
        ),
        "models": ModelsSection(
            "http://r",
            models=[
                ModelSummary(
                    "fraud",
                    primary="roc_auc",
                    latest_version=3,
                    aliases={"production": AliasSummary(1), "canary": AliasSummary(2, 0.25)},
                    versions=[
                        VersionSummary(3, "rejected", "roc_auc", 0.61, NOW, ("roc_auc < 0.8",)),
                        VersionSummary(2, "candidate", "roc_auc", 0.9123, NOW),
                    ],
                ),
                ModelSummary(
                    "churn",
                    primary="roc_auc",
                    latest_version=2,
                    aliases={"production": AliasSummary(1)},
                    versions=[VersionSummary(2, "candidate", "roc_auc", 0.8, NOW)],
                    awaiting={2: "production"},
                ),
            ],
        ),
        "events": EventsSection(
            drift=[
                _step(
                    DriftDetected(
                        occurred_at=NOW - timedelta(minutes=5),
                        model="fraud",
                        version=1,
                        detector="cvm",
                        features=["amount", "hour"],
                        threshold=0.05,
                        window=500,
                    )
                )
            ],
            rollouts=[
                _step(
                    RolloutVerdict(
                        occurred_at=NOW - timedelta(seconds=30),
                        model="fraud",
                        version=2,
                        alias="canary",
                        decision="rollback",
                        reasons=["error rate 5% > 1%"],
                    )
                ),
                _step(
                    ModelAliasChanged(
                        occurred_at=NOW - timedelta(hours=2),
                        model="fraud",
                        alias="canary",
                        version=2,
                        previous_version=1,
                        weight=0.25,
                        actor="cli:ann",
                        reason="by hand",
                    )
                ),
            ],
            trainings=[
                _step(
                    TrainingCompleted(
                        occurred_at=NOW - timedelta(days=2),
                        model="fraud",
                        run_id="r3",
                        version=3,
                        metrics={"log_loss": 0.5, "roc_auc": 0.61},
                        passed_gate=False,
                        gate_reasons=["roc_auc < 0.8"],
                        duration_s=3,
                    )
                ),
                _step(TrainingFailed(occurred_at=NOW, model="fraud", run_id="r4", error="OOM")),
            ],
        ),
    }
    fields.update(overrides)
    return Status(**fields)


def _text(status: Status) -> str:
    console = Console(record=True, width=220, color_system=None)
    render(console, status)
    return console.export_text()


def test_render_shows_every_section() -> None:
    status = _plain_status()
    text = _text(status)
    lines = text.splitlines()

    def row(*parts: str) -> str:
        return next(line for line in lines if all(p in line for p in parts))

    assert "ready" in row("ingest", "http://i")
    assert "not ready" in row("trainer", "kafka: consumer not started")
    assert "unreachable" in row("serving", "ConnectError: refused")
    assert "monitor worker monitor-7: 3 partitions assigned" in text
    assert "fraud: production v1, canary v2 step 1 (1,234 requests)" in text
    assert "consumer lag (Kafka k:9092, prefix 'fw')" in text
    assert row("flywheel-trainer", "data.batch.committed").rstrip(" │").endswith("3")
    assert row("retrain.requested").rstrip(" │").endswith("9")
    assert row("total").rstrip(" │").endswith("12")
    assert "production=v1, canary=v2 (25%)" in row("fraud", "v3", "rejected")
    assert "v2 awaiting approval → production" in row("churn", "production=v1")
    assert "awaiting approval" not in row("fraud", "v3", "rejected")
    assert "roc_auc 0.610" in row("v3", "rejected")
    assert "roc_auc 0.912" in row("v2 (canary)", "candidate")
    assert "amount, hour" in row("cvm", "(5m ago)")
    assert "error rate 5% > 1%" in row("rollback", "(30s ago)")
    assert "cli:ann" in row("alias v1 → v2 (25%)", "(2h ago)")
    assert "roc_auc < 0.8" in row("gate failed", "roc_auc 0.610", "(2d ago)")
    assert "training failed: OOM" in row("crashed")
    assert lines[-1] == "did not answer: serving unreachable"


def test_render_and_json_when_parts_are_down() -> None:
    status = _plain_status(
        services=[ServiceStatus("ingest", "http://i", reachable=True, healthy=True, ready=True)],
        lag=LagSection(error="cannot reach Kafka at k:9092"),
        models=ModelsSection("http://r", error="cannot reach the registry at http://r"),
        events=EventsSection(error="cannot reach Kafka at k:9092"),
    )
    text = _text(status)
    assert "consumer lag (Kafka k:9092, prefix 'fw'): cannot reach Kafka at k:9092" in text
    assert "models (registry http://r): cannot reach the registry at http://r" in text
    assert "recent decisions: cannot reach Kafka at k:9092" in text
    assert not status.ok
    assert status.problems == ["registry API", "Kafka (consumer groups)", "Kafka (decision topics)"]
    data = json.loads(status.to_json())
    assert data["ok"] is False and data["lag"]["error"] == "cannot reach Kafka at k:9092"
    assert data["services"][0]["state"] == "ready"

    fine = _plain_status(services=status.services)
    assert fine.ok and fine.problems == []
    assert _text(fine).splitlines()[-1] == "everything answered"
    data = json.loads(fine.to_json())
    assert data["lag"]["total"] == 12
    assert data["models"]["models"][0]["aliases"]["canary"] == {"version": 2, "weight": 0.25}
    assert data["events"]["trainings"][1]["event"]["error"] == "OOM"


def test_latest_steps_keeps_the_newest_per_topic() -> None:
    def verdict(minute: int) -> Step:
        return _step(
            RolloutVerdict(
                occurred_at=NOW + timedelta(minutes=minute),
                model="m",
                version=minute,
                alias="shadow",
                decision="hold",
            )
        )

    def move(minute: int) -> Step:
        return _step(
            ModelAliasChanged(
                occurred_at=NOW + timedelta(minutes=minute), model="m", alias="shadow", version=1
            )
        )

    steps = [verdict(m) for m in (3, 1, 4, 2)] + [move(0)]
    kept = latest_steps(steps, 2)
    assert [(s.type, s.at.minute) for s in kept] == [
        ("rollout.verdict", 4),
        ("rollout.verdict", 3),
        ("model.alias.changed", 0),
    ]


# -- tiny real HTTP servers ------------------------------------------------------------------


class FakeService:
    """A real HTTP server answering fixed JSON (or text) per path; 404 elsewhere."""

    def __init__(self, routes: dict[str, tuple[int, Any]]) -> None:
        self.routes = routes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = outer.routes.get(self.path.split("?")[0], (404, {"detail": "no"}))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                ctype = "text/plain" if isinstance(body, str) else "application/json"
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _lineage() -> Lineage:
    return Lineage(
        dataset="transactions",
        snapshot_id="snap",
        snapshot_rows=100,
        code_version="test",
        recipe="m:f",
        recipe_sha256="0" * 64,
        seed=0,
    )


def _registry_routes() -> dict[str, tuple[int, Any]]:
    info = ModelInfo(
        name="fraud",
        spec_sha256="f" * 64,
        latest_version=4,
        aliases={
            "production": AliasState(alias="production", version=1, updated_at=NOW),
            "canary": AliasState(alias="canary", version=3, weight=0.1, updated_at=NOW),
        },
    )
    versions = [
        ModelVersion(
            model="fraud",
            version=v,
            run_id=f"r{v}",
            status="rejected" if v == 4 else "candidate",
            artifact_sha256="a" * 64,
            artifact_uri="file:///a",
            artifact_format="skops",
            metrics={"log_loss": 0.3, "roc_auc": 0.8 + v / 100},
            lineage=_lineage(),
            training_seconds=1,
            correlation_id=str(uuid.uuid4()),
            created_at=NOW,
        )
        for v in (1, 2, 3, 4)
    ]
    return {
        "/v1/models": (200, [info.model_dump(mode="json")]),
        "/v1/models/fraud": (200, info.model_dump(mode="json")),
        "/v1/models/fraud/versions": (200, [v.model_dump(mode="json") for v in versions]),
    }


MONITOR_PAGE = {
    "worker": "monitor-1",
    "assignment": ["x:0", "x:1"],
    "models": {"fraud": {"production": 1, "versions": {}, "rollouts": {}}},
    "recent_decisions": [],
}


@pytest.fixture(scope="module")
def healthy() -> Iterator[FakeService]:
    """Answers like a ready service, the registry's model API and the monitor's page."""
    svc = FakeService(
        {
            "/healthz": (200, {"status": "ok"}),
            "/readyz": (200, {"status": "ready", "checks": ["kafka"]}),
            "/v1/status": (200, MONITOR_PAGE),
            **_registry_routes(),
        }
    )
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def not_ready() -> Iterator[FakeService]:
    svc = FakeService(
        {
            "/healthz": (200, {"status": "ok"}),
            "/readyz": (
                503,
                {"status": "not ready", "problems": {"kafka": "consumer not started"}},
            ),
        }
    )
    yield svc
    svc.close()


async def test_models_name_the_versions_awaiting_approval() -> None:
    pending = Approval(
        id=1,
        model="fraud",
        version=3,
        alias="production",
        source="verdict",
        decision="promote",
        reason="rollout verdict promote",
        state="pending",
        requested_at=NOW,
    )
    registry = FakeService(
        {**_registry_routes(), "/v1/approvals": (200, [pending.model_dump(mode="json")])}
    )
    try:
        section = await collect_models(registry.url, timeout=10)
    finally:
        registry.close()
    assert section.error is None
    (fraud,) = section.models
    assert fraud.awaiting == {3: "production"}
    assert fraud.to_dict()["awaiting_approval"] == [{"version": 3, "alias": "production"}]


async def test_probe_service_states() -> None:
    sick = FakeService({"/healthz": (500, "boom"), "/readyz": (503, "Runner not ready")})
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            st = await probe_service(client, "serving", sick.url)
            assert (st.state, st.reason) == ("unhealthy", "/healthz answered HTTP 500")
            dead = f"http://127.0.0.1:{pick_free_port()}"
            st = await probe_service(client, "ingest", dead)
            assert (
                st.state == "unreachable" and not st.reachable and "ConnectError" in str(st.reason)
            )
            # the monitor's page failing is noted, but the service answered
            st = await probe_service(client, "monitor", sick.url, with_detail=True)
            assert st.reachable and st.detail is not None and "error" in st.detail
    finally:
        sick.close()


# -- against a real broker -------------------------------------------------------------------


@dataclass
class Cluster:
    kafka: KafkaSettings
    group: str
    foreign_group: str


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def cluster(kafka_bootstrap: str) -> AsyncIterator[Cluster]:
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"st{tag}")
    other = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=f"so{tag}")
    topics = ["training.completed", "training.failed", "drift.detected", "rollout.verdict"]
    await ensure_topics(kafka, [*topics, "model.alias.changed"])
    await ensure_topics(other, ["training.completed"])
    producer = EventProducer(kafka, "test-status")
    await producer.start()
    try:
        await producer.publish_all(
            [
                TrainingCompleted(
                    occurred_at=NOW + timedelta(minutes=v),
                    model="fraud",
                    run_id=f"r{v}",
                    version=v,
                    metrics={"roc_auc": 0.8 + v / 100},
                    passed_gate=v % 2 == 1,
                    duration_s=1,
                )
                for v in range(1, 8)
            ]
            + [
                TrainingFailed(occurred_at=NOW, model="fraud", run_id="rx", error="OOM"),
                DriftDetected(
                    occurred_at=NOW,
                    model="fraud",
                    version=1,
                    detector="cvm",
                    features=["amount"],
                    threshold=0.05,
                    window=10,
                ),
            ]
        )
    finally:
        await producer.stop()
    namer = TopicNamer(kafka.topic_prefix)
    tc, dd = namer("training.completed"), namer("drift.detected")
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    try:
        tps = [TopicPartition(t, p) for t in (tc, dd) for p in range(3)]
        ends = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    # every event of "fraud" is on one partition of each topic (they are keyed by model)
    assert sorted(ends[TopicPartition(tc, p)] for p in range(3)) == [0, 0, 7]
    group, foreign = f"g-{tag}", f"gf-{tag}"
    offsets = {tp: (2 if end == 7 else end) for tp, end in ends.items()}  # lag 5, on one partition
    foreign_tp = TopicPartition(TopicNamer(other.topic_prefix)("training.completed"), 0)
    await _commit(kafka_bootstrap, group, {**offsets, foreign_tp: 0})
    await _commit(kafka_bootstrap, foreign, {foreign_tp: 0})
    yield Cluster(kafka, group, foreign)


def _urls(healthy: FakeService, **over: str) -> dict[str, str]:
    return {name: over.get(name, healthy.url) for name in DEFAULT_URLS}


@pytest.mark.integration
async def test_collect_against_a_real_broker(
    cluster: Cluster, healthy: FakeService, not_ready: FakeService
) -> None:
    dead = f"http://127.0.0.1:{pick_free_port()}"
    status = await collect(
        cluster.kafka, _urls(healthy, trainer=not_ready.url, serving=dead), timeout=10
    )
    states = {s.name: (s.state, s.reason) for s in status.services}
    assert states["ingest"] == ("ready", None)
    assert states["trainer"] == ("not ready", "kafka: consumer not started")
    assert states["serving"][0] == "unreachable"
    monitor = next(s for s in status.services if s.name == "monitor")
    assert monitor.detail == MONITOR_PAGE
    assert status.problems == ["serving unreachable"] and not status.ok

    assert status.lag.error is None
    groups = {g.group: g for g in status.lag.groups}
    assert cluster.foreign_group not in groups  # offsets only on another prefix's topics
    mine = groups[cluster.group]
    assert mine.topics == {"drift.detected": 0, "training.completed": 5}
    assert mine.lag == 5
    assert len(mine.partitions) == 6  # the other prefix's partition is not counted

    assert status.models.error is None
    (fraud,) = status.models.models
    assert [(v.version, v.status) for v in fraud.versions] == [
        (4, "rejected"),
        (3, "candidate"),
        (2, "candidate"),
    ]
    assert fraud.versions[0].metric == "roc_auc" and fraud.versions[0].value == pytest.approx(0.84)
    assert fraud.aliases == {"production": AliasSummary(1), "canary": AliasSummary(3, 0.1)}

    assert status.events.error is None
    trainings = status.events.trainings
    assert [(s.type, getattr(s.event, "version", None)) for s in trainings] == [
        ("training.completed", 7),
        ("training.completed", 6),
        ("training.completed", 5),
        ("training.completed", 4),
        ("training.completed", 3),
        ("training.failed", None),
    ]
    assert [s.summary for s in status.events.drift] == ["drift on v1: amount (cvm)"]
    assert status.events.rollouts == []
    assert json.loads(status.to_json())["lag"]["groups"]


def _status_cli(cluster: Cluster, urls: dict[str, str], *args: str) -> Any:
    flags = [x for name, url in urls.items() for x in (f"--{name}-url", url)]
    return CliRunner().invoke(
        main,
        [
            "status",
            *flags,
            "--bootstrap",
            cluster.kafka.bootstrap,
            "--topic-prefix",
            cluster.kafka.topic_prefix,
            "--timeout",
            "10",
            *args,
        ],
        env={"COLUMNS": "250"},
    )


@pytest.mark.integration
def test_cli_exit_code_follows_what_answered(cluster: Cluster, healthy: FakeService) -> None:
    everything = _status_cli(cluster, _urls(healthy), "--json")
    assert everything.exit_code == 0, everything.output
    data = json.loads(everything.stdout)
    assert data["ok"] is True and data["problems"] == []
    assert {g["group"]: g["lag"] for g in data["lag"]["groups"]}[cluster.group] == 5

    dead = f"http://127.0.0.1:{pick_free_port()}"
    text = _status_cli(cluster, _urls(healthy, ingest=dead))
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    assert "unreachable" in next(line for line in lines if "ingest" in line and dead in line)
    at = next(i for i, line in enumerate(lines) if cluster.group in line)
    cells = [[c.strip() for c in line.strip()[1:-1].split("│")] for line in lines[at : at + 3]]
    assert cells == [
        [cluster.group, "drift.detected", "3", "0"],
        ["", "training.completed", "3", "5"],
        ["", "total", "", "5"],
    ]
    assert lines[-1] == "did not answer: ingest unreachable"


@pytest.mark.integration
def test_cli_each_section_degrades_alone(cluster: Cluster, healthy: FakeService) -> None:
    # Kafka down: the services and the registry still show, and the exit code says so
    down = KafkaSettings(bootstrap=f"127.0.0.1:{pick_free_port()}")
    result = CliRunner().invoke(
        main,
        [
            "status",
            *[x for n in DEFAULT_URLS for x in (f"--{n}-url", healthy.url)],
            "--bootstrap",
            down.bootstrap,
            "--json",
        ],
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["problems"] == ["Kafka (consumer groups)", "Kafka (decision topics)"]
    assert data["lag"]["error"].startswith("cannot reach Kafka at 127.0.0.1:")
    assert data["events"]["error"].startswith("cannot reach Kafka at 127.0.0.1:")
    assert {s["state"] for s in data["services"]} == {"ready"}
    assert [m["name"] for m in data["models"]["models"]] == ["fraud"]

    # the registry down: only the models section says so
    dead = f"http://127.0.0.1:{pick_free_port()}"
    result = _status_cli(cluster, _urls(healthy, registry=dead), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["problems"] == ["registry unreachable", "registry API"]
    assert data["models"]["error"] == f"cannot reach the registry at {dead}"
    assert data["lag"]["error"] is None and data["events"]["error"] is None
