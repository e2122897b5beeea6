"""The registry outbox's at-least-once window, end to end: Kafka acknowledged an alias move and
the relay died before marking it, so the next relay publishes it again with the same event id.
Serving (every worker) and the monitor read both copies and apply the move once.

"Applied" is what each service does with a move: serving marks the model for a re-read from
the registry (``alias_applied`` per worker in ``/v1/status``,
``flywheel_serving_alias_changes_applied_total``), the monitor marks its registry copy of the
model outdated (``flywheel_monitor_alias_changes_applied_total``); the skipped copies are
``alias_duplicates`` and ``flywheel_kafka_duplicates_skipped_total``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from e2e_support import fraud_spec

from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_local.stack import LocalStack
from flywheel_shared.events import Event, ModelAliasChanged
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.topics import TopicNamer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKERS = 2
REASON = "acked by kafka, then the relay died"


@lru_cache(maxsize=2)
def trained(c: float) -> bytes:
    spec, _ = fraud_spec()
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=0.05).batch(2000))
    params = {"label": "is_fraud", "features": list(spec.features), "seed": 42, "C": c}
    return dump_model(recipes.logistic_regression(frame, params))


async def register(reg: RegistryClient, model: str, data: bytes) -> int:
    spec, _ = fraud_spec(model)
    art = await reg.upload_artifact(data)
    body = VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=art.sha256,
        lineage=Lineage(
            dataset="transactions",
            snapshot_id="0" * 64,
            snapshot_rows=2000,
            code_version="test",
            recipe=spec.recipe.entrypoint,
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            params={"features": list(spec.features)},
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )
    return (await reg.register_version(model, body)).version


def registry_with(stack: LocalStack, original: ServiceProcess, **env: str) -> ServiceProcess:
    """A new registry process like the stack's ``original`` one (port, database, store,
    topics), with ``env`` on top; ``stack.stop()`` then stops this one."""
    new = ServiceProcess(original.module, {**original.env, **env}, original.port, original.log_path)
    stack.procs["registry"] = new
    return new


async def worker_status(serving: ServiceProcess) -> dict[int, dict[str, Any]]:
    """``/v1/status`` of every worker (a new connection per request reaches either)."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(seen) < WORKERS:
        assert time.monotonic() < deadline, f"only saw workers {sorted(seen)}"
        code, _, body = await asyncio.to_thread(serving.request, "GET", "/v1/status")
        assert code == 200, body
        status = json.loads(body)
        seen[status["worker"]] = status
    return seen


def samples(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.rsplit(" ", 1)[0]))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def outbox_drained(registry: ServiceProcess) -> None:
    """Wait until the relay has published (and marked) every outbox row."""
    deadline = time.monotonic() + 30
    while True:
        code, _, body = await asyncio.to_thread(registry.request, "GET", "/metrics")
        if code == 200 and samples(body.decode(), "flywheel_registry_outbox_pending") == 0:
            return
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.2)


async def monitor_counts(
    monitor: ServiceProcess, alias_topic: str
) -> tuple[float, float, float, float]:
    """The monitor's alias moves applied (canary, production), alias records skipped as
    already applied (any alias), and shadow moves applied."""
    code, _, body = await asyncio.to_thread(monitor.request, "GET", "/metrics")
    assert code == 200
    text = body.decode()
    applied = "flywheel_monitor_alias_changes_applied_total"
    return (
        samples(text, applied, model="fraud", alias="canary"),
        samples(text, applied, model="fraud", alias="production"),
        samples(text, "flywheel_kafka_duplicates_skipped_total", topic=alias_topic),
        samples(text, applied, model="fraud", alias="shadow"),
    )


@pytest.mark.timeout(600)
async def test_a_redelivered_alias_move_is_applied_once_by_serving_and_the_monitor(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = LocalStack(
        tmp_path / "run",
        kafka_bootstrap,
        prefix=f"o{uuid.uuid4().hex[:8]}",
        serving_workers=WORKERS,
        env={"FLYWHEEL_SERVING_RETRY_MAX_S": "1"},
    )
    alias_topic = TopicNamer(stack.prefix)("model.alias.changed")
    original, serving, monitor = (stack.procs[n] for n in ("registry", "serving", "monitor"))

    def moves(events: list[Event]) -> list[ModelAliasChanged]:
        return [e for e in events if isinstance(e, ModelAliasChanged) and e.reason == REASON]

    try:
        await stack.start_registry()
        spec, _ = fraud_spec()
        data = await asyncio.to_thread(trained, 1.0), await asyncio.to_thread(trained, 0.1)
        async with RegistryClient(stack.url("registry"), stack.token) as reg:
            await reg.put_spec(spec)
            v1, v2 = await register(reg, "fraud", data[0]), await register(reg, "fraud", data[1])
            await reg.move_alias("fraud", "production", v1, reason="start")
        # Published and marked before serving starts (it follows the topic from its end).
        await read_events(
            kafka_bootstrap,
            alias_topic,
            until=lambda ev: any(getattr(e, "reason", None) == "start" for e in ev),
        )
        await outbox_drained(original)
        await asyncio.gather(
            asyncio.to_thread(serving.start, 240), asyncio.to_thread(monitor.start, 180)
        )
        before = await worker_status(serving)
        assert all(s["models"]["fraud"]["production"] == v1 for s in before.values()), before
        *_, skipped_before = await monitor_counts(monitor, alias_topic)

        # The move, committed while the relay is off: it waits in the outbox.
        original.stop()
        quiet = registry_with(stack, original, FLYWHEEL_REGISTRY_RELAY_ENABLED="false")
        await asyncio.to_thread(quiet.start)
        async with RegistryClient(stack.url("registry"), stack.token) as reg:
            await reg.move_alias("fraud", "canary", v2, weight=0.25, reason=REASON)
        quiet.stop()
        # A relay that dies once Kafka acknowledged the batch, before marking it published.
        crashing = registry_with(
            stack, original, FLYWHEEL_REGISTRY_FAULT_CRASH_AFTER_PUBLISH="true"
        )
        crashing.start(wait=False)
        deadline = time.monotonic() + 60
        assert crashing.proc is not None
        while crashing.proc.poll() is None:
            assert time.monotonic() < deadline, "the fault did not fire:\n" + crashing.tail()
            await asyncio.sleep(0.1)
        assert crashing.proc.returncode == 137 and "crashing after publish" in crashing.tail()
        [first] = moves(
            await read_events(kafka_bootstrap, alias_topic, until=lambda e: bool(moves(e)))
        )
        # The next registry finds the move still pending and publishes it again.
        healed = registry_with(stack, original)
        await asyncio.to_thread(healed.start)
        copies = moves(
            await read_events(kafka_bootstrap, alias_topic, until=lambda e: len(moves(e)) >= 2)
        )
        assert len(copies) == 2, copies  # two Kafka records ...
        assert copies[0].event_id == copies[1].event_id == first.event_id  # ... one event
        assert copies[0] == copies[1]

        # Serving: each worker read both copies, applied the first, skipped the second.
        deadline = time.monotonic() + 60
        while True:
            after = await worker_status(serving)
            read = {w: s["alias_events"] - before[w]["alias_events"] for w, s in after.items()}
            served = {w: s["models"]["fraud"] for w, s in after.items()}
            if all(n >= 2 for n in read.values()) and all(
                m["canary"] == v2 for m in served.values()
            ):
                break
            assert time.monotonic() < deadline, f"read {read}, serving {served}"
            await asyncio.sleep(0.2)
        applied = {w: s["alias_applied"] - before[w]["alias_applied"] for w, s in after.items()}
        skipped = {
            w: s["alias_duplicates"] - before[w]["alias_duplicates"] for w, s in after.items()
        }
        assert read == dict.fromkeys(after, 2), read
        assert applied == dict.fromkeys(after, 1), applied
        assert skipped == dict.fromkeys(after, 1), skipped
        assert all(
            (m["production"], m["canary"], m["canary_weight"]) == (v1, v2, 0.25)
            for m in served.values()
        ), served

        # The monitor: it reads the topic from its start in one consumer group. A later move of
        # the same model (same partition, read in order) applied means both copies were read.
        async with RegistryClient(healed.url, stack.token) as reg:
            await reg.move_alias("fraud", "shadow", v2, reason="barrier")
        deadline = time.monotonic() + 60
        while (counts := await monitor_counts(monitor, alias_topic))[3] < 1:
            assert time.monotonic() < deadline, f"monitor: {counts}"
            await asyncio.sleep(0.2)
        canary, production, skipped_total, _ = counts
        assert canary == 1  # the redelivered move, applied once
        assert production == 1  # the first move, once (faust may read it again: rebalances)
        assert skipped_total - skipped_before >= 1  # the copy, skipped
        print(
            f"\n{len(copies)} copies of event {first.event_id} on Kafka; serving workers "
            f"read {read}, applied {applied}, skipped {skipped}; the monitor applied the move "
            f"{canary:.0f} time, skipped {skipped_total:.0f} alias records in all"
        )
    finally:
        stack.stop()
