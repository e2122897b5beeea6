"""Poison input on every topic a service consumes, through the real processes on a real broker.

One stack for the module (registry, ingest, trainer, monitor and serving on one topic prefix).
For each consumed topic the test sends every poison kind that makes sense there, then a valid
event on the same partition, and checks that

(a) each poison is on the dead-letter topic, from each consumer of the topic, with a reason that
    names the problem and the original bytes (the first MiB of them); records breaking their
    dataset contract on ``data.raw`` go to ``data.rejected``, ingest's dead-letter topic for
    data, with the reason per field;
(b) the valid event behind them had its effect;
(c) every consumer is still alive and ready.

The kinds: not JSON; a valid event of the wrong type; a wrong schema version; a record over
1 MiB; an event that breaks its contract (records, features or labels against the dataset
contract on the data topics, a payload field that fails validation on the others). The monitor's
internal topics (``monitor.join``, ``monitor.signals``) carry plain JSON objects: no type or
schema version to get wrong there, a message of the wrong shape instead.

Size limits: ``data.raw``, ``data.validated``, ``data.labels`` and ``predictions`` take records
up to 16 MiB. The other topics keep the broker's 1 MiB default, which bounds the *compressed*
batch: an incompressible 1.2 MiB record is refused by the broker (it never reaches a consumer:
the test checks the refusal), a compressible one gets in and must be dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from e2e_support import HERE, ROOT

from flywheel_devkit.stack import LocalStack
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.datasets import Manifest
from flywheel_shared.events import (
    BatchCommitted,
    DeadLetter,
    Event,
    Label,
    LabelsReceived,
    ModelAliasChanged,
    ModelVersionRegistered,
    Prediction,
    PredictionsLogged,
    RawRecords,
    RecordsRejected,
    RecordsValidated,
    RetrainRequested,
    RolloutVerdict,
    TrainingFailed,
    derived_id,
    encode_event,
    parse_event,
)
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.spec import ModelSpec
from flywheel_shared.storage import ObjectStore
from flywheel_shared.topics import TOPICS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
BIG = MIB + MIB // 5  # 1.2 MiB
TOKEN = "poison-test-token"
SERVED = "fraud"  # the model serving serves
TRAINED = "pt-train"  # the trainer's triggers are counted for it
WATCHED = "pt-mon"  # the monitor's predictions are about it
ROLLED = "pt-rollout"  # the registry's verdicts are about it


def spec(name: str) -> ModelSpec:
    """The example fraud spec renamed; never stale (no training starts by itself)."""
    data = yaml.safe_load((ROOT / "examples" / "fraud" / "flywheel.yaml").read_text())
    data["name"] = name
    data["training"]["max_staleness_s"] = None
    return ModelSpec.model_validate(data)


def model_bytes() -> bytes:
    features = list(spec(SERVED).features)
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=0.05).batch(3000))
    params = {"label": "is_fraud", "features": features, "seed": 42, "C": 1.0}
    return dump_model(recipes.logistic_regression(frame, params))


def version_body(model: str, sha256: str) -> VersionCreate:
    s = spec(model)
    return VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=sha256,
        lineage=Lineage(
            dataset="transactions",
            snapshot_id="0" * 64,
            snapshot_rows=3000,
            code_version="test",
            recipe=s.recipe.entrypoint,
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            params={"features": list(s.features)},
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in (" ", "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


class Stack(LocalStack):
    """The five services as real processes on one topic prefix, one store, one registry (the
    local stack's launcher); ingest reads the example spec files, not the registry, and the
    monitor runs with its own defaults (its consumer group is ``<prefix>-monitor``)."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        super().__init__(
            run_dir=tmp,
            bootstrap=bootstrap,
            prefix=f"p{uuid.uuid4().hex[:8]}",
            token="test-token",
            env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
            services=("registry", "ingest", "trainer", "monitor", "serving"),
            service_env={
                "registry": {"FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.1"},
                "ingest": {
                    "FLYWHEEL_INGEST_REGISTRY_URL": None,
                    "FLYWHEEL_INGEST_SPECS": str(ROOT / "examples" / "*" / "flywheel.yaml"),
                },
                "trainer": {
                    "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "1",
                    "FLYWHEEL_TRAINER_RETRY_S": "1",
                    "FLYWHEEL_TRAINER_STALENESS_CHECK_S": "3600",
                },
                "monitor": {
                    "FLYWHEEL_MONITOR_REGISTRY_TOKEN": None,
                    "FLYWHEEL_MONITOR_REGISTRY_REFRESH_S": "1",
                    "FLYWHEEL_MONITOR_APP_ID": None,
                    "FLYWHEEL_MONITOR_VERDICT_HOLD_INTERVAL_S": None,
                    "FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP": None,
                },
                "serving": {"FLYWHEEL_SERVING_MODELS": SERVED},
            },
        )
        self.tmp = tmp
        self.store = tmp / "store"
        self.registry = self.procs["registry"]
        self.ingest = self.procs["ingest"]
        self.trainer = self.procs["trainer"]
        self.monitor = self.procs["monitor"]
        self.serving = self.procs["serving"]
        self.versions: dict[str, list[int]] = {}

    def client(self) -> RegistryClient:
        return RegistryClient(self.registry_url, self.token, actor="poison-test")

    def metrics(self, service: str) -> str:
        status, _, body = self.procs[service].request("GET", "/metrics")
        assert status == 200, body[:200]
        return body.decode()

    def json(self, service: str, path: str) -> Any:
        status, _, body = self.procs[service].request("GET", path)
        assert status == 200, body[:200]
        return json.loads(body)

    def full(self, topic: str) -> str:
        """The broker name of a logical topic, or of the monitor's internal ``monitor.*``."""
        if topic.startswith("monitor."):
            return f"{self.prefix}.{topic}.v1"
        return self.topics(topic)

    async def seed(self) -> None:
        """Specs and versions: serving's model in production, the others for their cases."""
        async with self.client() as reg:
            for name in (SERVED, TRAINED, WATCHED, ROLLED):
                await reg.put_spec(spec(name))
            real = await reg.upload_artifact(await asyncio.to_thread(model_bytes))
            dummy = await reg.upload_artifact(b"not a model: nobody loads it")
            for name, sha, n in ((SERVED, real, 2), (WATCHED, dummy, 1), (ROLLED, dummy, 2)):
                self.versions[name] = [
                    (await reg.register_version(name, version_body(name, sha.sha256))).version
                    for _ in range(n)
                ]
            await reg.move_alias(SERVED, "production", self.versions[SERVED][0])
            await reg.move_alias(ROLLED, "production", self.versions[ROLLED][0])
            await reg.move_alias(ROLLED, "shadow", self.versions[ROLLED][1])

    def stop(self) -> None:
        """SIGTERM to every process at once (each drains on its own), then the registry."""
        others = (self.serving, self.monitor, self.trainer, self.ingest)
        with ThreadPoolExecutor(len(others)) as pool:
            list(pool.map(lambda proc: proc.stop(), others))
        self.registry.stop()


#: Version and alias events the seed publishes (the monitor must have read them first).
SEEDED_VERSIONS, SEEDED_ALIASES = 5, 3


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


class Collector:
    """Reads the dead-letter, data.rejected and data.validated topics for the whole module."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.events: dict[str, list[Event]] = defaultdict(list)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        names = [self.stack.topics(t) for t in ("deadletter", "data.rejected", "data.validated")]
        self._consumer = AIOKafkaConsumer(
            *names,
            bootstrap_servers=self.stack.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * MIB,
            fetch_max_bytes=32 * MIB,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        self.events[rec.topic].append(parse_event(rec.value or b""))
                    except ValueError:
                        pass

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def of(self, topic: str) -> list[Event]:
        return self.events[self.stack.topics(topic)]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(kafka_bootstrap, tmp_path_factory.mktemp("poison"))
    try:
        # All at once (the others wait for the registry on their own), then the seed.
        for proc in s.procs.values():
            proc.start(wait=False)
        s.registry.wait_ready(120)
        asyncio.run(s.seed())
        for proc in s.procs.values():
            proc.wait_ready(180)

        def serving_loaded() -> bool:
            models = s.json("serving", "/v1/status")["models"]
            return SERVED in models and models[SERVED]["production"] == s.versions[SERVED][0]

        def monitor_caught_up() -> bool:
            text = s.metrics("monitor")
            return (
                metric(text, "flywheel_monitor_event_seconds_count", agent="versions")
                >= SEEDED_VERSIONS
                and metric(text, "flywheel_monitor_event_seconds_count", agent="aliases")
                >= SEEDED_ALIASES
            )

        # Generous: on a loaded machine the faust worker may take a rebalance or two.
        asyncio.run(until(monitor_caught_up, 180, "the monitor read the seeded registry events"))
        asyncio.run(until(serving_loaded, 120, "serving loaded the production version"))
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
async def seen(stack: Stack) -> Any:
    collector = Collector(stack)
    await collector.start()
    yield collector
    await collector.stop()


@pytest.fixture(scope="module")
async def producer(stack: Stack) -> Any:
    """Sends like any service producer (zstd, up to 16 MiB), without idempotence so a refused
    record fails alone."""
    p = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap,
        compression_type="zstd",
        max_request_size=16 * MIB,
        acks="all",
        linger_ms=0,
    )
    await p.start()
    yield p
    await p.stop()


# -- poison ------------------------------------------------------------------------------------


@dataclass
class Poison:
    """One hostile record and what must become of it."""

    kind: str
    value: bytes
    token: str
    """Unique text in the first bytes of ``value``: finds its letter."""
    reason: tuple[str, ...]
    """Every one of these must be in the letter's error."""
    refused: bool = False
    """Over the topic's max.message.bytes even compressed: the broker must refuse it."""
    rejected: bool = False
    """Records breaking their contract on data.raw: a business rejection, on data.rejected
    (ingest's dead-letter topic for data) with the reason per field, not a dead letter."""


def other_event(topic: str, token: str) -> Event:
    """A valid event that does not belong on ``topic``."""
    if topic == "retrain.requested":
        return TrainingFailed(event_id=uuid.UUID(token), model=WATCHED, run_id="r", error="x")
    return RetrainRequested(event_id=uuid.UUID(token), model=WATCHED, reason="wrong topic")


def big_limit(topic: str) -> bool:
    """Topics created with a max.message.bytes over 1.2 MiB (the data events: 16 MiB)."""
    limit = TOPICS[topic].configs.get("max.message.bytes")
    return limit is not None and int(limit) > BIG + 1024


def event_poisons(
    topic: str,
    template: Event,
    broken: dict[str, Any],
    broken_reason: tuple[str, ...],
    *,
    rejected: bool = False,
) -> list[Poison]:
    """The five kinds for a topic of ``template``'s class; ``broken`` replaces payload fields
    so that the event breaks its contract (``broken_reason``: what the letter must say)."""
    out = []

    def shaped(**change: Any) -> tuple[str, bytes]:
        token = str(uuid.uuid4())
        body = {**template.model_dump(mode="json"), "event_id": token, **change}
        return token, orjson.dumps(body)

    token = str(uuid.uuid4())
    out.append(Poison("not-json", f"{token} \x00\xff not json".encode(), token, ("undecodable",)))
    token = str(uuid.uuid4())
    other = other_event(topic, token)
    # Its type is named after its topic: the reason must say which type it is.
    out.append(Poison("wrong-type", encode_event(other), token, ("wrong event type", other.topic)))
    token, value = shaped(schema_version=2)
    out.append(Poison("schema-version", value, token, ("undecodable", "schema_version")))
    token, value = shaped(padding="x" * BIG)
    out.append(Poison("over-1-mib", value, token, ("undecodable", "padding", "truncated")))
    token = str(uuid.uuid4())
    noise = token.encode() + os.urandom(BIG)
    if big_limit(topic):
        out.append(Poison("over-1-mib-incompressible", noise, token, ("undecodable", "truncated")))
    else:
        out.append(Poison("over-1-mib-incompressible", noise, token, (), refused=True))
    token, value = shaped(**broken)
    out.append(Poison("breaks-contract", value, token, broken_reason, rejected=rejected))
    return out


def raw_poisons(what: str) -> list[Poison]:
    """For the monitor's internal topics (JSON objects, no event envelope, 1 MiB limit): no
    event type or schema version to get wrong, a message of the wrong shape instead."""
    out = []
    token = str(uuid.uuid4())
    value = f"{token} \x00\xff not json".encode()
    out.append(Poison("not-json", value, token, (f"undecodable {what}",)))
    token = str(uuid.uuid4())
    value = orjson.dumps({"token": token, "p": 5, "model": 5})
    out.append(Poison("wrong-shape", value, token, (f"not a {what}",)))
    token = str(uuid.uuid4())
    value = orjson.dumps({"token": token, "padding": "x" * BIG})
    out.append(Poison("over-1-mib", value, token, (f"not a {what}", "truncated")))
    token = str(uuid.uuid4())
    value = token.encode() + os.urandom(BIG)
    out.append(Poison("over-1-mib-incompressible", value, token, (), refused=True))
    return out


# -- cases: one per consumed topic ---------------------------------------------------------------

Effect = Callable[[], Awaitable[bool]]


@dataclass
class Case:
    """A consumed topic: who consumes it, what poison it gets, which valid event follows."""

    topic: str
    consumers: tuple[str, ...]
    """Services reading it (each must dead-letter every poison)."""
    key: bytes
    poisons: Callable[[], list[Poison]]
    then: Callable[[Stack, Any, Collector], Awaitable[Effect]]
    """Sends the valid event behind the poison; returns the check of its effect."""
    partition: int | None = None


def good_records(n: int, prefix: str) -> list[dict[str, Any]]:
    rows = FraudSimulator(seed=17).batch(n)
    return [{**r, "transaction_id": f"{prefix}-{i}"} for i, r in enumerate(rows)]


BAD_RECORD_FIELDS = {"amount": -5.0, "merchant_category": "casino", "hour": "noon"}
CONTRACT_REASON = (
    "amount: range",
    "below the minimum",
    "merchant_category: category",
    "casino",
    "hour: type",
)


def template_raw() -> RawRecords:
    return RawRecords(dataset="transactions", records=good_records(1, "tmpl"), source="poison")


def bad_records() -> list[dict[str, Any]]:
    return [{**good_records(1, "bad")[0], **BAD_RECORD_FIELDS}]


async def send(producer: AIOKafkaProducer, topic: str, event: Event, key: bytes) -> None:
    await producer.send_and_wait(topic, encode_event(event), key=key)


async def then_raw(stack: Stack, producer: Any, seen: Collector) -> Effect:
    records = good_records(3, f"raw-{uuid.uuid4().hex[:6]}")
    ids = {r["transaction_id"] for r in records}
    event = RawRecords(dataset="transactions", records=records, source="poison-test")
    await send(producer, stack.topics("data.raw"), event, b"transactions")

    async def effect() -> bool:
        got = {
            r["transaction_id"]
            for e in seen.of("data.validated")
            if isinstance(e, RecordsValidated)
            for r in e.records
        }
        return ids <= got

    return effect


def manifest_event_ids(stack: Stack) -> set[str]:
    store = ObjectStore(str(stack.store))
    key = "datasets/transactions/manifest.json"
    if not store.exists(key):
        return set()
    return Manifest.model_validate_json(store.get(key)).event_ids()


async def then_validated(stack: Stack, producer: Any, seen: Collector) -> Effect:
    event = RecordsValidated(
        dataset="transactions", records=good_records(2, f"val-{uuid.uuid4().hex[:6]}")
    )
    await send(producer, stack.topics("data.validated"), event, b"transactions")

    async def effect() -> bool:
        return str(event.event_id) in manifest_event_ids(stack)

    return effect


def trainer_triggers(stack: Stack, kind: str) -> float:
    return metric(
        stack.metrics("trainer"), "flywheel_trainer_triggers_total", model=TRAINED, kind=kind
    )


def committed(**over: Any) -> BatchCommitted:
    body: dict[str, Any] = {
        "dataset": "transactions",
        "segment_id": "p000-000000000000-000000000000",
        "segment_uri": "file:///nowhere.parquet",
        "row_count": 1,
        "content_hash": "0" * 64,
        "snapshot_id": "0" * 64,
        "total_rows": 10_000_000,
        "segment_count": 1,
        **over,
    }
    return BatchCommitted(**body)


async def then_committed(stack: Stack, producer: Any, seen: Collector) -> Effect:
    before = trainer_triggers(stack, "new_data")
    await send(producer, stack.topics("data.batch.committed"), committed(), b"transactions")

    async def effect() -> bool:
        return trainer_triggers(stack, "new_data") > before

    return effect


async def then_retrain(stack: Stack, producer: Any, seen: Collector) -> Effect:
    # requested_by monitor: a retrain that waits for fresh rows (none come: nothing trains).
    before = trainer_triggers(stack, "retrain")
    event = RetrainRequested(model=TRAINED, reason="poison test", requested_by="monitor")
    await send(producer, stack.topics("retrain.requested"), event, TRAINED.encode())

    async def effect() -> bool:
        return trainer_triggers(stack, "retrain") > before

    return effect


async def then_verdict(stack: Stack, producer: Any, seen: Collector) -> Effect:
    v2 = stack.versions[ROLLED][1]
    event = RolloutVerdict(
        model=ROLLED, version=v2, alias="shadow", decision="advance", reasons=["healthy"]
    )
    await send(producer, stack.topics("rollout.verdict"), event, ROLLED.encode())

    async def effect() -> bool:
        async with stack.client() as reg:
            aliases = (await reg.get_model(ROLLED)).aliases
        return "canary" in aliases and aliases["canary"].version == v2

    return effect


def monitor_metric(stack: Stack, name: str, **labels: str) -> float:
    return metric(stack.metrics("monitor"), name, **labels)


async def then_labels(stack: Stack, producer: Any, seen: Collector) -> Effect:
    name = "flywheel_monitor_labels_total"
    before = monitor_metric(stack, name, dataset="transactions")
    event = LabelsReceived(
        dataset="transactions", labels=[Label(record_id=f"lab-{uuid.uuid4().hex}", label=True)]
    )
    await send(producer, stack.topics("data.labels"), event, b"transactions")

    async def effect() -> bool:
        return monitor_metric(stack, name, dataset="transactions") > before

    return effect


def prediction(features: dict[str, Any], version: int = 1) -> Prediction:
    rid = f"pred-{uuid.uuid4().hex}"
    return Prediction(
        prediction_id=rid,
        request_id=rid,
        record_id=rid,
        version=version,
        route="production",
        features=features,
        output={"label": False, "score": 0.1},
        latency_ms=1.0,
        at=datetime.now(UTC),
    )


def features() -> dict[str, Any]:
    row = good_records(1, "feat")[0]
    return {f: row[f] for f in spec(WATCHED).features}


async def then_predictions(stack: Stack, producer: Any, seen: Collector) -> Effect:
    name = "flywheel_monitor_predictions_total"
    v1 = stack.versions[WATCHED][0]
    event = PredictionsLogged(model=WATCHED, predictions=[prediction(features(), v1)])
    await send(producer, stack.topics("predictions"), event, WATCHED.encode())

    async def effect() -> bool:
        return monitor_metric(stack, name, model=WATCHED) >= 1

    return effect


def handled(stack: Stack, agent: str) -> float:
    return monitor_metric(stack, "flywheel_monitor_event_seconds_count", agent=agent)


async def then_join(stack: Stack, producer: Any, seen: Collector) -> Effect:
    name = "flywheel_monitor_label_join_total"
    before = monitor_metric(stack, name, side="label", result="received")
    body = {"l": [["transactions", f"join-{uuid.uuid4().hex}", True, time.time()]]}
    await producer.send_and_wait(stack.full("monitor.join"), orjson.dumps(body), partition=0)

    async def effect() -> bool:
        return monitor_metric(stack, name, side="label", result="received") > before

    return effect


async def then_signals(stack: Stack, producer: Any, seen: Collector) -> Effect:
    before = handled(stack, "signals")
    body = {"kind": "joined", "model": WATCHED, "items": [], "src": [0, 10**9]}
    await producer.send_and_wait(
        stack.full("monitor.signals"), orjson.dumps(body), key=WATCHED.encode(), partition=0
    )

    async def effect() -> bool:
        return handled(stack, "signals") > before

    return effect


async def then_version(stack: Stack, producer: Any, seen: Collector) -> Effect:
    # The registry announces a new version (its outbox relay publishes it, keyed by model).
    before = handled(stack, "versions")
    async with stack.client() as reg:
        art = await reg.upload_artifact(b"another dummy")
        await reg.register_version(WATCHED, version_body(WATCHED, art.sha256))

    async def effect() -> bool:
        return handled(stack, "versions") > before

    return effect


async def then_alias(stack: Stack, producer: Any, seen: Collector) -> Effect:
    # The registry moves serving's shadow alias: serving loads it, the monitor reads it.
    before = handled(stack, "aliases")
    events_before = stack.json("serving", "/v1/status")["alias_events"]
    v2 = stack.versions[SERVED][1]
    async with stack.client() as reg:
        await reg.move_alias(SERVED, "shadow", v2)

    async def effect() -> bool:
        status = stack.json("serving", "/v1/status")
        return (
            handled(stack, "aliases") > before
            and status["alias_events"] > events_before
            and status["models"][SERVED]["shadow"] == v2
        )

    return effect


def alias_template() -> ModelAliasChanged:
    return ModelAliasChanged(model=SERVED, alias="canary", version=1, weight=0.1)


CASES = [
    Case(
        "data.raw",
        ("ingest-raw",),
        b"transactions",
        lambda: event_poisons(
            "data.raw", template_raw(), {"records": bad_records()}, CONTRACT_REASON, rejected=True
        ),
        then_raw,
    ),
    Case(
        "data.validated",
        ("ingest-writer",),
        b"transactions",
        lambda: event_poisons(
            "data.validated",
            RecordsValidated(dataset="transactions", records=good_records(1, "tmpl")),
            {"records": bad_records()},
            CONTRACT_REASON,
        ),
        then_validated,
    ),
    Case(
        "data.batch.committed",
        ("trainer",),
        b"transactions",
        lambda: event_poisons(
            "data.batch.committed",
            committed(),
            {"row_count": "many"},
            ("undecodable", "row_count"),
        ),
        then_committed,
    ),
    Case(
        "retrain.requested",
        ("trainer",),
        TRAINED.encode(),
        lambda: event_poisons(
            "retrain.requested",
            RetrainRequested(model=TRAINED, reason="tmpl"),
            {"cause_event_id": "not-a-uuid"},
            ("undecodable", "cause_event_id"),
        ),
        then_retrain,
    ),
    Case(
        "data.labels",
        ("monitor",),
        b"transactions",
        lambda: event_poisons(
            "data.labels",
            LabelsReceived(dataset="transactions", labels=[Label(record_id="x", label=True)]),
            {"labels": [{"record_id": "x", "label": "banana"}]},
            ("is_fraud", "expected a boolean"),
        ),
        then_labels,
    ),
    Case(
        "predictions",
        ("monitor",),
        WATCHED.encode(),
        lambda: event_poisons(
            "predictions",
            PredictionsLogged(model=WATCHED, predictions=[prediction(features())]),
            {
                "predictions": [
                    prediction({**features(), **BAD_RECORD_FIELDS}).model_dump(mode="json")
                ]
            },
            CONTRACT_REASON,
        ),
        then_predictions,
    ),
    Case(
        "monitor.join",
        ("monitor",),
        b"",
        lambda: raw_poisons("join message"),
        then_join,
        partition=0,
    ),
    Case(
        "monitor.signals",
        ("monitor",),
        WATCHED.encode(),
        lambda: raw_poisons("signal"),
        then_signals,
        partition=0,
    ),
    Case(
        "model.version.registered",
        ("monitor",),
        WATCHED.encode(),
        lambda: event_poisons(
            "model.version.registered",
            ModelVersionRegistered(
                model=WATCHED,
                version=99,
                status="candidate",
                artifact_uri="file:///x",
                artifact_sha256="0" * 64,
            ),
            {"status": "bogus"},
            ("undecodable", "status"),
        ),
        then_version,
    ),
    Case(
        "model.alias.changed",
        ("monitor", "serving"),
        SERVED.encode(),
        lambda: event_poisons(
            "model.alias.changed", alias_template(), {"weight": 7}, ("undecodable", "weight")
        ),
        then_alias,
    ),
    Case(
        "rollout.verdict",
        ("registry",),
        ROLLED.encode(),
        lambda: event_poisons(
            "rollout.verdict",
            RolloutVerdict(model=ROLLED, version=2, alias="shadow", decision="hold"),
            {"decision": "explode"},
            ("undecodable", "decision"),
        ),
        then_verdict,
    ),
]


def group_of(stack: Stack, consumer: str) -> str:
    """The consumer_group a consumer writes in its dead letters."""
    return {
        "ingest-raw": "flywheel-ingest-raw",
        "ingest-writer": "flywheel-ingest-writer",
        "trainer": "flywheel-trainer",
        "registry": "flywheel-registry",
        "monitor": f"{stack.prefix}-monitor",
        "serving": "flywheel-serving",
    }[consumer]


def service_of(consumer: str) -> str:
    return consumer.split("-")[0]


def letter_of(
    seen: Collector, stack: Stack, topic: str, group: str, poison: Poison
) -> DeadLetter | None:
    for e in seen.of("deadletter"):
        if (
            isinstance(e, DeadLetter)
            and e.consumer_group == group
            and e.source_topic == topic
            and poison.token.encode() in base64.b64decode(e.value_b64[:1024])
        ):
            return e
    return None


async def rejected(seen: Collector, stack: Stack, group: str, poison: Poison) -> None:
    """``poison``'s records are on data.rejected, each field's reason given, and no letter."""
    # Ingest derives the rejection's id from the raw event's (a redelivery rejects once).
    event_id = derived_id("data.rejected", "transactions", poison.token)

    def rejection() -> RecordsRejected | None:
        found = [e for e in seen.of("data.rejected") if e.event_id == event_id]
        return found[0] if found and isinstance(found[0], RecordsRejected) else None

    event = await until(rejection, 30, f"the {poison.kind} records on data.rejected")
    [only] = event.rejections
    text = "; ".join(f"{e.field}: {e.reason}" for e in only.errors)
    assert {e.field for e in only.errors} == set(BAD_RECORD_FIELDS), text
    for words in poison.reason:
        assert words in text, text
    topic = stack.topics("data.raw")
    assert letter_of(seen, stack, topic, group, poison) is None, "a rejection is no dead letter"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.topic)
async def test_poison_is_dead_lettered_with_its_reason_and_the_valid_event_behind_it_lands(
    stack: Stack, seen: Collector, producer: AIOKafkaProducer, case: Case
) -> None:
    topic = stack.full(case.topic)
    poisons = case.poisons()
    for p in poisons:
        kw: dict[str, Any] = {"key": case.key or None, "partition": case.partition}
        if p.refused:
            with pytest.raises(MessageSizeTooLargeError):
                await producer.send_and_wait(topic, p.value, **kw)
        else:
            await producer.send_and_wait(topic, p.value, **kw)
    effect = await case.then(stack, producer, seen)

    # (b) the valid event behind the poison was processed
    await until(effect, 60, f"the valid event on {case.topic} had its effect")

    # (a) each poison is dead-lettered by each consumer, with its reason and its bytes
    for consumer in case.consumers:
        group = group_of(stack, consumer)
        for p in poisons:
            if p.refused:
                continue
            if p.rejected:
                await rejected(seen, stack, group, p)
                continue
            letter = await until(
                lambda p=p, group=group: letter_of(seen, stack, topic, group, p),  # type: ignore[misc]
                30,
                f"{consumer} dead-lettered the {p.kind} record of {case.topic}",
            )
            assert isinstance(letter, DeadLetter)
            for words in p.reason:
                assert words in letter.error, (p.kind, letter.error[:600])
            assert base64.b64decode(letter.value_b64) == p.value[:MIB], p.kind
            if len(p.value) > MIB:
                assert f"value of {len(p.value)} bytes truncated" in letter.error

    # (c) every consumer is still alive and ready
    for consumer in case.consumers:
        proc = stack.procs[service_of(consumer)]
        assert proc.proc is not None and proc.proc.poll() is None, proc.tail()
        assert proc.ready(), proc.tail()
    if "serving" in case.consumers:
        assert stack.json("serving", "/v1/status")["alias_follower"] == "following"
