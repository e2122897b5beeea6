"""A field marked ``personal: true`` never leaves a service in clear (issue 13, governance).

Registry, ingest, serving and the monitor as real processes on a real broker, with a dataset
whose ``email`` (a model feature) and ``age`` are personal. Records go through ingest (valid
and invalid, over HTTP and on ``data.raw``, one of them not even JSON), predictions through
serving (valid and invalid), and a broken ``predictions`` event straight to the monitor. Then
the test reads the ``predictions``, ``data.rejected``, ``deadletter`` and
``data.batch.committed`` topics byte for byte, the HTTP answers, and every service's log: no
personal value is in any of them, and the prediction log carries the keyed hash instead.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from flywheel_devkit.testing.waiting import eventually
from flywheel_local.stack import LocalStack
from flywheel_shared.events import (
    Prediction,
    PredictionsLogged,
    RawRecords,
    encode_event,
)
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.spec import ModelSpec
from flywheel_shared.topics import TopicNamer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "personal-test-key"
MODEL = "people"
FEATURES = ["email", "amount", "age"]


def spec() -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": MODEL,
            "dataset": {
                "name": "people",
                "id_field": "id",
                "time_field": "t",
                "label_field": "y",
                "fields": {
                    "id": {"type": "string"},
                    "t": {"type": "datetime"},
                    "y": {"type": "bool", "required": False, "nullable": True},
                    "email": {"type": "string", "personal": True, "max_length": 40},
                    "age": {"type": "int", "min": 0, "max": 120, "personal": True},
                    "amount": {"type": "float", "min": 0},
                },
            },
            "features": FEATURES,
            "recipe": {"entrypoint": "flywheel_fraud.recipes:logistic_regression"},
            "training": {"max_staleness_s": None},
        }
    )


def model_bytes() -> bytes:
    """A model that reads only ``amount`` (the personal features are inputs it ignores)."""
    frame = pd.DataFrame(
        {"email": ["x@example.com"] * 40, "age": [30] * 40, "amount": [float(i) for i in range(40)]}
    )
    labels = [i >= 20 for i in range(40)]
    model = Pipeline(
        [
            ("cols", ColumnTransformer([("num", "passthrough", ["amount"])])),
            ("lr", LogisticRegression()),
        ]
    )
    return dump_model(model.fit(frame[FEATURES], labels))


def version_body(sha256: str) -> VersionCreate:
    return VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=sha256,
        lineage=Lineage(
            dataset="people",
            snapshot_id="0" * 64,
            snapshot_rows=40,
            code_version="test",
            recipe="flywheel_fraud.recipes:logistic_regression",
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            params={"features": FEATURES},
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )


def keyed(value: str) -> str:
    return "hmac:" + hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def now() -> str:
    return datetime.now(UTC).isoformat()


class Topics:
    """Every message of some topics, as raw bytes (nothing parsed, nothing skipped)."""

    def __init__(self, bootstrap: str, names: TopicNamer, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.full = {names(t): t for t in topics}
        self.raw: dict[str, list[bytes]] = defaultdict(list)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.full,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    self.raw[self.full[rec.topic]].append(rec.value or b"")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for v in self.raw[topic]]


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[LocalStack]:
    s = LocalStack(
        run_dir=tmp_path,
        bootstrap=kafka_bootstrap,
        prefix=f"pd{uuid.uuid4().hex[:8]}",
        token="test-token",
        env={"FLYWHEEL_PERSONAL_KEY": KEY},
        services=("registry", "ingest", "serving", "monitor"),
        service_env={
            "serving": {"FLYWHEEL_SERVING_MODELS": MODEL},
            "ingest": {"FLYWHEEL_INGEST_CONTRACTS_REFRESH_S": "1"},
        },
    )
    try:
        await s.start_registry()
        async with RegistryClient(s.url("registry"), s.token, actor="personal-test") as reg:
            await reg.put_spec(spec())
            artifact = await reg.upload_artifact(await asyncio.to_thread(model_bytes))
            version = await reg.register_version(MODEL, version_body(artifact.sha256))
            await reg.move_alias(MODEL, "production", version.version)
        await s.start_rest()
        yield s
    finally:
        await asyncio.to_thread(s.stop)


def post(s: LocalStack, service: str, path: str, body: Any) -> tuple[int, bytes]:
    status, _, data = s.procs[service].request(
        "POST", path, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    return status, data


async def test_personal_values_never_leave_in_clear(stack: LocalStack) -> None:
    tag = uuid.uuid4().hex[:10]
    alice = f"alice-{tag}@example.com"  # a valid personal value (HTTP, data.raw, serving)
    carol = f"carol-{tag}@example.com.overlong.example"  # breaks max_length
    bob = f"bob-{tag}@example.com"  # in a broken event a producer puts on predictions
    dave = f"dave-{tag}"  # in a message that is not even JSON
    age = 987654321  # out of range for the personal age
    secrets = [alice, carol, bob, dave, str(age)]
    names = TopicNamer(stack.prefix)
    topics = Topics(
        stack.bootstrap,
        names,
        ["predictions", "data.rejected", "deadletter", "data.batch.committed"],
    )
    await topics.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        good = {"id": "r1", "t": now(), "email": alice, "age": 30, "amount": 5.0}
        bad = [
            {**good, "id": "r2", "email": carol},  # personal value too long
            {**good, "id": "r3", "age": age},  # personal value out of range
            {**good, "id": "r4", "amount": -1.0},  # another field breaks the contract
        ]
        # 1. ingest over HTTP: the good record is stored, the bad ones refused (202 + reasons).
        status, body = await asyncio.to_thread(
            post, stack, "ingest", "/v1/datasets/people/records", [good, *bad]
        )
        assert status == 202, body
        answer = json.loads(body)
        assert answer["accepted"] == 1 and answer["rejected"] == 3
        assert "<withheld>" in body.decode()

        # 2. ingest on data.raw: the same, plus a broken event and a message that is not JSON.
        raw = RawRecords(dataset="people", records=[good, *bad], source="personal-test")
        await producer.send_and_wait(names("data.raw"), encode_event(raw))
        broken = orjson.loads(encode_event(raw))
        broken["source"] = 5  # not a string: the event cannot be decoded
        await producer.send_and_wait(names("data.raw"), orjson.dumps(broken))
        await producer.send_and_wait(names("data.raw"), b'{"email": "' + dave.encode() + b'"')

        # 3. serving: a prediction (logged) and a refused request.
        records = [{"id": "p1", "email": alice, "age": 30, "amount": 25.0}]
        status, body = await asyncio.to_thread(
            post, stack, "serving", f"/v1/models/{MODEL}/predict", {"records": records}
        )
        assert status == 200, body
        status, body = await asyncio.to_thread(
            post,
            stack,
            "serving",
            f"/v1/models/{MODEL}/predict",
            {"records": [{**records[0], "age": age}]},
        )
        assert status == 422 and b"<withheld>" in body, body

        # 4. a broken producer's predictions event: the monitor dead-letters it.
        bogus = PredictionsLogged(
            model=MODEL,
            predictions=[
                Prediction(
                    prediction_id="x1",
                    request_id="x1",
                    version=1,
                    route="production",
                    features={"email": bob, "age": 30, "amount": -3.0},
                    output={"score": 0.5},
                    latency_ms=1.0,
                    at=datetime.now(UTC),
                )
            ],
        )
        await producer.send_and_wait(names("predictions"), encode_event(bogus))

        def letters() -> list[dict[str, Any]]:
            return topics.events("deadletter")

        def done() -> bool:
            groups = [letter["consumer_group"] for letter in letters()]
            return (
                len(topics.raw["data.rejected"]) >= 2  # one per path
                and groups.count("flywheel-ingest-raw") >= 2
                and any("monitor" in g for g in groups)
                and len(topics.raw["predictions"]) >= 2  # the bogus one and serving's
                and len(topics.raw["data.batch.committed"]) >= 1
            )

        # rejections, dead letters, predictions and a committed batch
        await eventually(done, 90, 0.2)
    finally:
        await producer.stop()
        await topics.stop()

    # The prediction log: serving's prediction carries the keyed hash of the email, no age.
    logged = [
        p
        for ev in topics.events("predictions")
        if ev["event_id"] != str(bogus.event_id)
        for p in ev["predictions"]
    ]
    assert [p["features"] for p in logged] == [{"email": keyed(alice), "amount": 25.0}]

    # Rejections keep the record, redacted, and the reasons, withheld.
    rejected = [r for ev in topics.events("data.rejected") for r in ev["rejections"]]
    assert len(rejected) == 6
    assert {r["record"]["email"] for r in rejected} == {keyed(alice), keyed(carol)}
    assert all("age" not in r["record"] for r in rejected)
    reasons = " ".join(e["reason"] for r in rejected for e in r["errors"])
    assert "range: <withheld> is above the maximum 120" in reasons
    assert "range: -1.0 is below the minimum 0" in reasons  # not personal: quoted

    # Dead letters: the broken event redacted, the non-JSON one without its payload.
    payloads = [base64.b64decode(letter["value_b64"]) for letter in letters()]
    by_group: dict[str, list[tuple[dict[str, Any], bytes]]] = defaultdict(list)
    for letter, payload in zip(letters(), payloads, strict=True):
        by_group[letter["consumer_group"]].append((letter, payload))
    ingest_letters = by_group["flywheel-ingest-raw"]
    assert sorted(len(p) == 0 for _, p in ingest_letters) == [False, True]
    [(_, redacted)] = [(lt, p) for lt, p in ingest_letters if p]
    assert [r["email"] for r in orjson.loads(redacted)["records"]] == [
        keyed(alice),
        keyed(carol),
        keyed(alice),
        keyed(alice),
    ]
    [(monitor_letter, monitor_payload)] = [
        lp for group, lps in by_group.items() if "monitor" in group for lp in lps
    ]
    assert "features break the contract" in monitor_letter["error"]
    features = orjson.loads(monitor_payload)["predictions"][0]["features"]
    assert features == {"email": keyed(bob), "amount": -3.0}

    # Nowhere in clear: not on the topics (the bogus event put bob on predictions itself),
    # not in the services' logs.
    seen = {**topics.raw, "deadletter payloads": payloads}
    for topic, values in seen.items():
        for value in values:
            for secret in secrets:
                if topic == "predictions" and secret == bob:
                    continue
                assert secret.encode() not in value, (topic, secret, value[:500])
    for name, proc in stack.procs.items():
        text = proc.log_path.read_text(errors="replace")
        assert text, name
        for secret in secrets:
            assert secret not in text, (name, secret)
