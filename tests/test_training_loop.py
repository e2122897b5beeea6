"""Data in → model out: ingest, trainer and registry as real processes on a real broker."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from e2e_support import ROOT, Stack, fraud_spec, post_records

from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.postgres import UNAVAILABLE, fresh_database
from flywheel_shared.events import (
    BatchCommitted,
    Event,
    ModelVersionRegistered,
    RetrainRequested,
    TrainingCompleted,
    TrainingStarted,
)
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.registry import RegistryClient
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.spec import ModelSpec
from flywheel_trainer.cli import train_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def start(stack: Stack, spec: ModelSpec) -> None:
    """Registry first (it holds the contract), then ingest and the trainer."""
    await asyncio.to_thread(stack.registry.start)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        await reg.put_spec(spec)
    await asyncio.gather(
        asyncio.to_thread(stack.ingest.start), asyncio.to_thread(stack.trainer.start)
    )


async def events(stack: Stack, topic: str, n: int, timeout: float = 120) -> list[Event]:
    return await read_events(
        stack.bootstrap, stack.topics(topic), until=lambda ev: len(ev) >= n, timeout=timeout
    )


async def no_more(stack: Stack, topic: str, n: int, within: float) -> None:
    """Assert that a topic does not reach ``n`` events within ``within`` seconds."""
    with pytest.raises(TimeoutError):
        await events(stack, topic, n, timeout=within)


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"flywheel_trainer.worker" in cmd:
                pids.append(int(entry.name))
    return pids


async def test_committed_rows_train_gate_register_and_reproduce(stack: Stack) -> None:
    spec, _ = fraud_spec()
    await start(stack, spec)
    await asyncio.to_thread(post_records, stack)

    [registered] = await events(stack, "model.version.registered", 1)
    batches = [
        e for e in await events(stack, "data.batch.committed", 1) if isinstance(e, BatchCommitted)
    ]
    assert isinstance(registered, ModelVersionRegistered)
    assert (
        registered.model == "fraud" and registered.version == 1 and registered.status == "candidate"
    )
    trigger = next(b for b in batches if b.total_rows >= spec.training.min_new_rows)
    latency = (registered.occurred_at - trigger.occurred_at).total_seconds()
    print(f"\ndata.batch.committed → model.version.registered: {latency:.2f} s")

    async with RegistryClient(stack.registry_url, stack.token) as reg:
        version = await reg.get_version("fraud", 1)
        info = await reg.get_model("fraud")
        reference = await reg.download_artifact(version.reference_sha256 or "")
    assert version.metrics["roc_auc"] > 0.8, version.metrics
    assert set(version.metrics) >= {"roc_auc", "pr_auc", "log_loss", "accuracy", "ece"}
    assert any(r.startswith("ok: roc_auc") for r in version.gate_reasons)
    lin = version.lineage
    assert lin.dataset == "transactions" and lin.snapshot_id in {b.snapshot_id for b in batches}
    assert lin.snapshot_rows == next(
        b.total_rows for b in batches if b.snapshot_id == lin.snapshot_id
    )
    assert lin.recipe == spec.recipe.entrypoint and len(lin.recipe_sha256) == 64
    assert lin.lock_sha256 == hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    assert lin.seed == spec.recipe.seed and lin.params["features"] == list(spec.features)
    assert version.correlation_id in {str(b.correlation_id) for b in batches}
    assert info.aliases["production"].version == 1  # the first good model goes live
    ref = pd.read_parquet(io.BytesIO(reference))
    assert {"_score", "is_fraud", *spec.features} <= set(ref.columns) and len(ref) > 100

    started = [
        e for e in await events(stack, "training.started", 1) if isinstance(e, TrainingStarted)
    ]
    completed = [
        e for e in await events(stack, "training.completed", 1) if isinstance(e, TrainingCompleted)
    ]
    assert started[0].correlation_id == completed[0].correlation_id == registered.correlation_id
    assert completed[0].passed_gate and completed[0].version == 1

    result = await asyncio.to_thread(
        CliRunner().invoke,
        train_group,
        [
            "reproduce",
            "fraud",
            "1",
            "--registry-url",
            stack.registry_url,
            "--storage-uri",
            str(stack.store),
        ],
        env={"FLYWHEEL_REGISTRY_TOKEN": stack.token},
    )
    assert result.exit_code == 0, result.output
    assert "identical metrics" in result.output


async def test_bad_recipe_is_gated_out_with_a_reason(stack: Stack) -> None:
    spec, _ = fraud_spec(name="fraud")
    spec = spec.model_copy(
        update={
            "recipe": spec.recipe.model_copy(
                update={"entrypoint": "flywheel_test_recipes:constant"}
            )
        }
    )
    await start(stack, spec)
    await asyncio.to_thread(post_records, stack)
    [registered] = await events(stack, "model.version.registered", 1)
    assert registered.status == "rejected"  # type: ignore[attr-defined]
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        version = await reg.get_version("fraud", 1)
        info = await reg.get_model("fraud")
    assert any(r.startswith("FAILED: roc_auc 0.5000 >= 0.8") for r in version.gate_reasons), (
        version.gate_reasons
    )
    assert "production" not in info.aliases
    [done] = await events(stack, "training.completed", 1)
    assert isinstance(done, TrainingCompleted) and not done.passed_gate


async def publish(stack: Stack, *evs: Event) -> None:
    producer = EventProducer(
        KafkaSettings(bootstrap=stack.bootstrap, topic_prefix=stack.prefix), "test"
    )
    await producer.start()
    try:
        await producer.publish_all(list(evs))
    finally:
        await producer.stop()


async def test_five_triggers_during_a_training_cause_exactly_one_follow_up(stack: Stack) -> None:
    spec, data = fraud_spec(min_new_rows=10_000_000)  # only retrain requests trigger here
    data["recipe"].update({"entrypoint": "flywheel_test_recipes:slow", "params": {"sleep_s": 4}})
    spec = ModelSpec.model_validate(data)
    await start(stack, spec)
    await asyncio.to_thread(post_records, stack)
    await events(stack, "data.batch.committed", 1)
    # The first request comes from `flywheel train now`, as an operator would send it.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        train_group,
        ["now", "fraud", "--reason", "first", "--bootstrap", stack.bootstrap],
        env={"FLYWHEEL_KAFKA_TOPIC_PREFIX": stack.prefix},
    )
    assert result.exit_code == 0, result.output
    [started] = await events(stack, "training.started", 1)
    assert isinstance(started, TrainingStarted) and started.trigger == "manual"
    await publish(stack, *(RetrainRequested(model="fraud", reason=f"during {i}") for i in range(5)))
    await events(stack, "training.completed", 2)
    await no_more(stack, "training.started", 3, within=8)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        versions = await reg.list_versions("fraud")
        info = await reg.get_model("fraud")
    assert [v.version for v in versions] == [1, 2]
    # v2 was scored against the champion (v1) on the same holdout: same data, same metrics.
    assert versions[1].parent_version == 1 and versions[1].champion_metrics == versions[0].metrics
    assert info.aliases["production"].version == 1
    assert info.aliases[spec.rollout.first_alias].version == 2  # the rollout's first step


async def test_a_drift_retrain_skips_the_cooldown_and_waits_for_fresh_rows(stack: Stack) -> None:
    spec, _ = fraud_spec(cooldown_s=3600, fresh_rows=3000)
    await start(stack, spec)
    await asyncio.to_thread(post_records, stack)
    [first] = await events(stack, "training.completed", 1)
    await publish(stack, RetrainRequested(model="fraud", reason="drift"))
    # The data the drifting model was trained on would not help: nothing starts yet ...
    await no_more(stack, "training.started", 2, within=6)
    await asyncio.to_thread(post_records, stack, 3000, 7)
    # ... until 3,000 fresh rows are in; the hour of cooldown does not hold a retrain back.
    started = await events(stack, "training.started", 2)
    assert isinstance(started[1], TrainingStarted) and started[1].trigger == "retrain"
    completed = await events(stack, "training.completed", 2)
    assert isinstance(completed[1], TrainingCompleted) and completed[1].version == 2
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        [_, v2] = await reg.list_versions("fraud")
    assert v2.lineage.snapshot_rows >= 9000  # trained on the fresh rows too
    assert isinstance(first, TrainingCompleted) and first.version == 1
    # The trainer's JSON log lines of that run carry the loop iteration's correlation id.
    logged = [json.loads(line) for line in stack.trainer.log_path.read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    done = [r for r in logged if r.get("msg") == "training completed" and r.get("version") == 2]
    assert [r.get("correlation_id") for r in done] == [str(completed[1].correlation_id)]


async def test_a_stale_model_retrains_on_fewer_rows_than_min_new_rows(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(
        kafka_bootstrap, tmp_path, trainer_env={"FLYWHEEL_TRAINER_STALENESS_CHECK_S": "1"}
    )
    try:
        spec, _ = fraud_spec(min_new_rows=6000)
        await start(stack, spec)
        await asyncio.to_thread(post_records, stack)
        await events(stack, "training.completed", 1)
        # Only now a staleness limit (a model never trained is stale at once): 3 s.
        stale_spec, _ = fraud_spec(min_new_rows=6000, max_staleness_s=3)
        async with RegistryClient(stack.registry_url, stack.token) as reg:
            await reg.put_spec(stale_spec)
        # 500 rows are far below min_new_rows: only the model's age can start a training.
        await asyncio.to_thread(post_records, stack, 500, 8)
        started = await events(stack, "training.started", 2)
        assert isinstance(started[1], TrainingStarted) and started[1].trigger == "staleness"
        completed = await events(stack, "training.completed", 2)
        assert isinstance(completed[1], TrainingCompleted) and completed[1].version == 2
    finally:
        stack.stop()


async def test_sigkill_mid_training_still_ends_in_a_trained_version(stack: Stack) -> None:
    spec, data = fraud_spec()
    data["recipe"].update({"entrypoint": "flywheel_test_recipes:slow", "params": {"sleep_s": 5}})
    spec = ModelSpec.model_validate(data)
    await start(stack, spec)
    await asyncio.to_thread(post_records, stack)
    await events(stack, "training.started", 1)
    await until(lambda: bool(worker_pids()), 20, "a worker process training")
    stack.trainer.kill()
    # The worker notices its parent died and exits: no orphan may register a version.
    # (30 s: on a loaded machine the worker may still be importing pandas/sklearn when its
    # parent dies, and it checks its parent only once its imports are done.)
    await until(lambda: not worker_pids(), 30, "the orphaned worker to exit")
    await no_more(stack, "model.version.registered", 1, within=1)
    await asyncio.to_thread(stack.trainer.start)
    [registered] = await events(stack, "model.version.registered", 1)
    assert registered.version == 1  # type: ignore[attr-defined]
    await no_more(stack, "model.version.registered", 2, within=5)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        assert len(await reg.list_versions("fraud")) == 1


@pytest.fixture
def pg_stack(kafka_bootstrap: str, tmp_path: Path, postgres_url: str | None) -> Any:
    if postgres_url is None:
        pytest.skip(UNAVAILABLE)
    with fresh_database(postgres_url) as url:
        s = Stack(kafka_bootstrap, tmp_path, database_url=url)
        yield s
        s.stop()


async def test_training_loop_on_postgresql(pg_stack: Stack) -> None:
    spec, _ = fraud_spec()
    await start(pg_stack, spec)
    await asyncio.to_thread(post_records, pg_stack)
    [registered] = await events(pg_stack, "model.version.registered", 1)
    assert registered.status == "candidate"  # type: ignore[attr-defined]
    async with RegistryClient(pg_stack.registry_url, pg_stack.token) as reg:
        assert (await reg.get_model("fraud")).aliases["production"].version == 1
