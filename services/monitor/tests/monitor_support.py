"""Helpers of the monitor tests: a fraud model, its reference sample, a registry, monitor
processes, prediction/label streams shaped like serving's prediction log, and Kafka I/O
(produce, read a topic, wait for a condition)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from flywheel_devkit.stack import RegistryStack
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import (
    DeadLetter,
    Event,
    Label,
    LabelsReceived,
    Prediction,
    PredictionsLogged,
    encode_event,
    parse_event,
)
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.spec import ModelSpec, load_spec
from flywheel_shared.topics import TopicNamer

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "test-token"
START = datetime(2026, 1, 1, tzinfo=UTC)
RATE = 20.0  # simulated transactions per second of event time


def fraud_spec(name: str, **overrides: Any) -> ModelSpec:
    """The example fraud spec under another name, with small windows for tests.

    ``overrides`` replace top-level sections (dicts are merged into the example's section).
    """
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    data = spec.model_dump(by_alias=True)
    data["name"] = name
    data["drift"].update({"cooldown_s": 3600.0})
    data["monitoring"].update(
        {
            "bucket_s": 10.0,
            "window_s": 60.0,
            "lateness_s": 0.0,
            "min_labels": 100,
            "min_predictions": 200,
            "min_metric": {"roc_auc": 0.7},
        }
    )
    data["rollout"].update(
        {
            "shadow_min_requests": 300,
            "canary_steps": [
                {"weight": 0.2, "min_requests": 200, "min_duration_s": 0},
                {"weight": 0.5, "min_requests": 200, "min_duration_s": 0},
            ],
            "max_latency_p99_ms": 1000.0,
        }
    )
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return ModelSpec.model_validate(data)


@lru_cache(maxsize=4)
def model_bytes(kind: str = "good") -> bytes:
    """A skops fraud model: ``good`` (logistic regression), or ``bad`` (trained on noise)."""
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=0.05).batch(4000))
    if kind == "bad":
        frame["is_fraud"] = np.random.default_rng(0).random(len(frame)) < 0.5
    params = {"label": "is_fraud", "features": list(spec.features), "seed": 42, "C": 1.0}
    return dump_model(recipes.logistic_regression(frame, params))


@lru_cache(maxsize=4)
def _model(kind: str) -> Any:
    from flywheel_shared.modelio import load_model

    data = model_bytes(kind)
    return load_model(data, hashlib.sha256(data).hexdigest())


FEATURES = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml").features


def scores(kind: str, rows: Sequence[dict[str, Any]]) -> list[float]:
    """The model's P(fraud) for ``rows``."""
    frame = pd.DataFrame([{f: r[f] for f in FEATURES} for r in rows])
    return [float(s) for s in _model(kind).predict_proba(frame)[:, 1]]


def reference_parquet(kind: str = "good", seed: int = 11) -> bytes:
    """What the trainer stores with a version: 2000 holdout rows, label and score."""
    rows = FraudSimulator(seed=seed, fraud_rate=0.05).batch(2000)
    frame = pd.DataFrame(rows)[[*FEATURES, "is_fraud"]]
    frame["_score"] = scores(kind, rows)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


async def register(
    reg: RegistryClient,
    spec: ModelSpec,
    kind: str = "good",
    *,
    alias: str | None = None,
    weight: float | None = None,
) -> int:
    """Register a version of ``spec``'s model with a reference sample; optionally alias it."""
    art = await reg.upload_artifact(model_bytes(kind))
    ref = await reg.upload_artifact(reference_parquet(kind))
    body = VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=art.sha256,
        reference_sha256=ref.sha256,
        lineage=Lineage(
            dataset="transactions",
            snapshot_id="0" * 64,
            snapshot_rows=4000,
            code_version="test",
            recipe=spec.recipe.entrypoint,
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )
    version = (await reg.register_version(spec.name, body)).version
    if alias is not None:
        await reg.move_alias(spec.name, alias, version, weight=weight)  # type: ignore[arg-type]
    return version


def predictions(
    model: str,
    rows: Sequence[dict[str, Any]],
    routes: Sequence[tuple[int, str, str]],
    *,
    batch: int = 100,
    latency_ms: float = 3.0,
) -> list[PredictionsLogged]:
    """Prediction-log events for ``rows``: each row answered by every (version, route, kind)."""
    by_kind = {kind: scores(kind, rows) for kind in {k for _v, _r, k in routes}}
    preds: list[Prediction] = []
    for i, r in enumerate(rows):
        at = datetime.fromisoformat(r["event_time"].replace("Z", "+00:00"))
        for version, route, kind in routes:
            s = by_kind[kind][i]
            preds.append(
                Prediction(
                    prediction_id=f"{r['transaction_id']}/{version}/{route}",
                    request_id=r["transaction_id"],
                    record_id=r["transaction_id"],
                    version=version,
                    route=route,  # type: ignore[arg-type]
                    features={f: r[f] for f in FEATURES},
                    output={"label": s >= 0.5, "score": s},
                    latency_ms=latency_ms,
                    at=at,
                )
            )
    return [
        PredictionsLogged(model=model, predictions=preds[i : i + batch])
        for i in range(0, len(preds), batch)
    ]


def labels(rows: Sequence[dict[str, Any]], *, batch: int = 200) -> list[LabelsReceived]:
    """Late labels of ``rows`` (observed at the row's event time)."""
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        out.append(
            LabelsReceived(
                dataset="transactions",
                labels=[
                    Label(
                        record_id=r["transaction_id"],
                        label=r["is_fraud"],
                        observed_at=datetime.fromisoformat(r["event_time"].replace("Z", "+00:00")),
                    )
                    for r in chunk
                ],
            )
        )
    return out


class Stack(RegistryStack):
    """A registry process and the environment of monitor processes on one topic prefix."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        super().__init__(bootstrap, tmp, TOKEN, prefix_letter="m")

    def monitor(
        self, name: str = "monitor-1", *, app_id: str = "monitor", **env: str
    ) -> ServiceProcess:
        """A monitor worker process (not started), its log ``logs/<name>.log``: the monitor's
        own defaults for drift calibration and verdict pacing, not the demo's."""
        return self.process(
            "monitor",
            {
                "FLYWHEEL_MONITOR_REGISTRY_TOKEN": None,
                "FLYWHEEL_MONITOR_REGISTRY_REFRESH_S": "1",
                "FLYWHEEL_MONITOR_WORKER_NAME": name,
                "FLYWHEEL_MONITOR_APP_ID": app_id,
                "FLYWHEEL_MONITOR_VERDICT_HOLD_INTERVAL_S": "0",
                "FLYWHEEL_MONITOR_DRIFT_N_BOOTSTRAP": None,
                **env,
            },
            label=name,
        )


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of a Prometheus metric: label text → value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) :]] = float(value)
    return out


def rows(seed: int, n: int, **kw: Any) -> list[dict[str, Any]]:
    return FraudSimulator(seed=seed, rate_per_s=RATE, fraud_rate=0.05, **kw).batch(n)


# -- Kafka I/O ----------------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, events: list[Event], key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        for ev in events:
            await producer.send(topic, encode_event(ev), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Event]:
    """Every event on ``topic`` so far (up to the end offsets at the time of the call)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"no partitions of {topic}"
            await asyncio.sleep(0.1)
        tps = list(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Event] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, f"{topic}: not read to its end in 30 s"
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    try:
                        out.append(parse_event(rec.value or b""))
                    except ValueError:
                        pass
        return out
    finally:
        await consumer.stop()


async def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not seen within {timeout} s: {what}")
        await asyncio.sleep(interval)


async def dead_letters(
    bootstrap: str, topics: TopicNamer, sources: Sequence[str]
) -> list[DeadLetter]:
    """The dead letters so far of records read from the ``sources`` topics (full names)."""
    events = await read_all(bootstrap, topics("deadletter"))
    return [e for e in events if isinstance(e, DeadLetter) and e.source_topic in sources]
