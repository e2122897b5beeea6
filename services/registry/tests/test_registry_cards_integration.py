"""Model cards of a real registry process on a real Kafka broker (SQLite and PostgreSQL):
lineage, gates, the alias history with token names, verdict evidence and drift episodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from flywheel_registry.cli import models as models_cli
from flywheel_shared.cards import ModelCard
from flywheel_shared.events import (
    DeadLetter,
    DriftDetected,
    NumericStats,
    RetrainRequested,
    RolloutVerdict,
)
from flywheel_shared.registry import RegistryClient, VersionCreate
from flywheel_shared.snapshots import Snapshot, write_snapshot
from flywheel_shared.storage import ObjectStore

from .registry_support import spec_text, unique, version_body
from .test_registry_integration import TOKEN, Registry, secret, tokens_file, wait_for

pytestmark = pytest.mark.integration
SNAP = "3e" * 32
GATES = ["roc_auc 0.9 >= 0.8", "roc_auc 0.9 >= champion 0.88 - 0.005"]


@pytest.fixture(scope="module")
def registry(
    module_db: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry-cards")
    svc = Registry(
        kafka_bootstrap,
        tmp,
        module_db,
        FLYWHEEL_REGISTRY_TOKENS_FILE=str(tokens_file(tmp)),
        FLYWHEEL_REGISTRY_READ_AUTH="true",
    )
    svc.proc.start()
    yield svc
    svc.proc.stop()
    assert "registry stopped" in svc.proc.tail(), svc.proc.tail()


def body(run_id: str, artifact: str, *, parent: int | None = None) -> VersionCreate:
    data = version_body(run_id, artifact, parent_version=parent).model_dump()
    data["lineage"]["snapshot_id"] = SNAP
    data["gate_reasons"] = GATES
    return VersionCreate.model_validate(data)


async def card_when(
    client: RegistryClient, name: str, version: int, what: str, ready: Any
) -> ModelCard:
    found: list[ModelCard] = []

    async def check() -> bool:
        found[:] = [await client.card(name, version)]
        return bool(ready(found[0]))

    await wait_for(check, what)
    return found[0]


async def test_a_card_tells_lineage_gates_alias_history_evidence_and_drift(
    registry: Registry,
) -> None:
    name = unique()
    write_snapshot(
        ObjectStore(str(registry.store_dir)),
        Snapshot(
            id=SNAP,
            dataset="transactions",
            segments=["seg-1", "seg-2"],
            rows=1000,
            stats={"amount": NumericStats(count=1000, nulls=2, min=0.5, max=950.0, mean=40.0)},
            created_at=datetime(2026, 12, 1, tzinfo=UTC),
        ),
    )
    async with registry.client(secret("trainer-svc")) as trainer:
        await trainer.put_spec(spec_text(name))
        artifact = (await trainer.upload_artifact(name.encode())).sha256
        await trainer.register_version(name, body(f"{name}-r1", artifact))
        await trainer.register_version(name, body(f"{name}-r2", artifact, parent=1))
    async with registry.client(secret("ops-alice")) as alice:
        await alice.move_alias(name, "production", 1, reason="first model")
        await alice.move_alias(name, "canary", 2, weight=0.1, reason="try v2")
    episode = DriftDetected(
        model=name,
        version=1,
        detector="cvm",
        features=["amount", "hour"],
        statistics={"amount": 4.1},
        p_values={"amount": 0.0004, "hour": 0.02},
        threshold=0.01,
        window=500,
    )
    retrain = RetrainRequested(
        model=name, reason="drift on amount", cause_event_id=episode.event_id
    )
    await registry.publish(episode, retrain, episode)  # redelivered: kept once
    async with registry.client(secret("reader-bob")) as bob:
        v1 = await card_when(bob, name, 1, "the drift episode", lambda c: c.drift_episodes)
        assert len(v1.drift_episodes) == 1 and v1.retired is None
        verdict = RolloutVerdict(
            model=name,
            version=2,
            alias="canary",
            decision="promote",
            reasons=["error rate 0.1% <= 1%", "roc_auc +0.02 vs champion"],
            evidence={"error_rate": 0.001, "latency_p99_ms": 14.0, "requests": 2500.0},
        )
        await registry.publish(verdict)
        v2 = await card_when(bob, name, 2, "v2 in production", lambda c: "production" in c.aliases)
        v2 = await card_when(bob, name, 2, "the verdict's evidence", lambda c: c.live_metrics)
        v1 = await bob.card(name, 1)
        markdown = await bob.card(name, 1, markdown=True)

    lineage = v1.lineage
    assert (lineage.snapshot_id, lineage.recipe, lineage.recipe_sha256) == (
        SNAP,
        "flywheel_fraud.recipes:logistic_regression",
        "ab" * 32,
    )
    assert (lineage.params, lineage.seed) == ({"C": 1.0}, 42)
    assert v1.snapshot.found and v1.snapshot.segments == 2
    assert v1.gate_reasons == GATES and v1.passed_gate
    assert (v1.metrics["roc_auc"], v1.champion_metrics) == (0.9, {"roc_auc": 0.88})
    assert v1.gates == ["roc_auc >= 0.8", "roc_auc >= champion - 0.005"]
    history = [(e.action, e.alias, e.to_version, e.token) for e in v1.alias_history]
    assert history == [
        ("register", None, 1, "trainer-svc"),
        ("move", "production", 1, "ops-alice"),
        ("verdict", "production", 2, None),
    ]
    [drifted] = v1.drift_episodes
    assert (drifted.event_id, drifted.p_values["amount"]) == (str(episode.event_id), 0.0004)
    assert [r.event_id for r in v1.retrain_requests] == [str(retrain.event_id)]
    assert v1.retired is not None and v1.retired.by_version == 2
    assert v1.retired.drift_event_id == str(episode.event_id)
    assert v1.retired.cause.startswith("retired by drift episode")

    assert v2.parent_version == 1 and v2.aliases == {"production": None}
    [live] = v2.live_metrics
    assert (live.decision, live.evidence) == ("promote", verdict.evidence)
    moves = [(e.action, e.alias, e.weight, e.actor, e.token) for e in v2.alias_history]
    assert ("move", "canary", 0.1, "integration", "ops-alice") in moves
    assert ("verdict", "production", None, "monitor", None) in moves

    for text in (
        f"# Model card: {name} v1",
        "## Evaluation & gates",
        f"`{SNAP}`",
        f"`{'ab' * 32}`",
        "| roc_auc | 0.9 | 0.88 | +0.02 |",
        "| move | production | - → v1 |  | integration | ops-alice | first model |",
        "| register | - | - → v1 |  | integration | trainer-svc |",
        "| cvm | amount, hour | amount=0.0004, hour=0.02 | 0.01 | 500 |",
        "retired by drift episode",
        "replaced by v2",
        "| amount | numeric | 1000 | 2 |",
    ):
        assert text in markdown, text

    def cli(*args: str) -> Any:  # in a thread: the CLI runs its own event loop
        env = {"FLYWHEEL_REGISTRY_URL": registry.proc.url, "FLYWHEEL_REGISTRY_TOKEN": TOKEN}
        return CliRunner().invoke(models_cli, list(args), env=env)

    printed = await asyncio.to_thread(cli, "card", name, "2")
    assert printed.exit_code == 0, printed.output
    assert printed.output.startswith(f"# Model card: {name} v2\n")
    assert "error_rate=0.001, latency_p99_ms=14, requests=2500" in printed.output
    as_json = await asyncio.to_thread(cli, "card", name, "2", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["live_metrics"][0]["evidence"]["requests"] == 2500.0
    missing = await asyncio.to_thread(cli, "card", name, "9")
    assert missing.exit_code == 1 and "404 unknown_version" in missing.output


async def test_a_malformed_fact_is_dead_lettered_and_the_facts_go_on(registry: Registry) -> None:
    name = unique()
    async with registry.client() as admin:
        await admin.put_spec(spec_text(name))
        artifact = (await admin.upload_artifact(name.encode())).sha256
        await admin.register_version(name, body(f"{name}-r1", artifact))
    producer = AIOKafkaProducer(bootstrap_servers=registry.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            registry.topics("drift.detected"), b'{"type": "drift.detected"}', key=name.encode()
        )
    finally:
        await producer.stop()
    episode = DriftDetected(
        model=name, version=1, detector="ks", features=["amount"], threshold=0.01, window=100
    )
    await registry.publish(episode)
    async with registry.client() as admin:
        card = await card_when(admin, name, 1, "the later episode", lambda c: c.drift_episodes)
    assert [d.detector for d in card.drift_episodes] == ["ks"]
    letters = await registry.read(
        "deadletter",
        lambda ev: any(
            isinstance(e, DeadLetter) and e.source_topic == registry.topics("drift.detected")
            for e in ev
        ),
    )
    [letter] = [
        e
        for e in letters
        if isinstance(e, DeadLetter) and e.source_topic == registry.topics("drift.detected")
    ]
    assert letter.consumer_group.endswith("-facts")
