"""The monitor as a real faust worker process, with a real registry process and a real broker.

The tests play serving's part: they publish prediction-log events (the features, the fraud
model's real scores, the version and route) and late labels, and read what the monitor decides.
Each scenario uses its own model, so they do not disturb each other in the one monitor process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from monitor_support import (
    RATE,
    Stack,
    dead_letters,
    fraud_spec,
    labels,
    metric_values,
    predictions,
    produce,
    read_all,
    register,
    rows,
    wait_for,
)
from sklearn.metrics import roc_auc_score

from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import (
    DeadLetter,
    DriftDetected,
    Event,
    RetrainRequested,
    RolloutVerdict,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Env:
    """The module's stack: registry, one monitor worker, the versions of every scenario."""

    def __init__(self, stack: Stack, monitor: ServiceProcess, versions: dict[str, dict[str, int]]):
        self.stack = stack
        self.monitor = monitor
        self.versions = versions

    def metrics(self) -> str:
        with urllib.request.urlopen(self.monitor.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())


SCENARIOS: dict[str, dict[str, Any]] = {
    "m-clean": {},
    "m-cov": {},
    "m-concept": {},
    "m-acc": {"monitoring": {"window_s": 1_000_000.0}},
    "m-bad": {},
    "m-good": {},
    "m-kill": {"monitoring": {"window_s": 1_000_000.0}},
    "m-dlq": {},
}


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("monitor")
    stack = Stack(kafka_bootstrap, tmp)
    stack.registry.start()

    async def seed() -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        async with stack.client() as reg:
            for name, overrides in SCENARIOS.items():
                spec = fraud_spec(name, **overrides)
                await reg.put_spec(spec)
                out[name] = {"v1": await register(reg, spec, "good", alias="production")}
            out["m-bad"]["v2"] = await register(
                reg, fraud_spec("m-bad"), "bad", alias="canary", weight=0.2
            )
            out["m-good"]["v2"] = await register(reg, fraud_spec("m-good"), "good", alias="shadow")
        return out

    versions = asyncio.run(seed())
    monitor = stack.monitor().start(ready_timeout=120)
    env = Env(stack, monitor, versions)
    # Versions are calibrated when they are registered (two distinct references here: the
    # good and the bad model's), as in production before traffic reaches them.
    asyncio.run(wait_for(lambda: calibrated(env) >= 2, 300, "both references calibrated"))
    yield env
    env.monitor.stop()
    stack.registry.stop()


def calibrated(env: Env) -> float:
    """Calibrations the monitor computed or loaded."""
    return sum(metric_values(env.metrics(), "flywheel_monitor_calibrations_total").values())


def processed(env: Env, model: str) -> float:
    """Predictions of ``model`` the monitor has read."""
    values = metric_values(env.metrics(), "flywheel_monitor_predictions_total")
    return sum(v for k, v in values.items() if f'model="{model}"' in k)


def gauge(env: Env, name: str, **labels: str) -> float | None:
    for key, value in metric_values(env.metrics(), name).items():
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    return None


async def events_of(env: Env, logical: str, model: str, cls: type[Event]) -> list[Any]:
    events = await read_all(env.stack.bootstrap, env.stack.topics(logical))
    return [e for e in events if isinstance(e, cls) and getattr(e, "model", None) == model]


def later(data: list[dict[str, Any]], record_id: str) -> list[dict[str, Any]]:
    """One row an hour of event time after ``data``: it closes every bucket before it."""
    last = datetime.fromisoformat(data[-1]["event_time"].replace("Z", "+00:00"))
    row = {**data[-1], "transaction_id": record_id}
    row["event_time"] = (last + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return [row]


async def stream(env: Env, model: str, data: list[dict[str, Any]], *, with_labels: bool) -> None:
    v1 = env.versions[model]["v1"]
    topics = env.stack.topics
    await produce(
        env.stack.bootstrap,
        topics("predictions"),
        list(predictions(model, data, [(v1, "production", "good")])),
        model,
    )
    if with_labels:
        await produce(
            env.stack.bootstrap, topics("data.labels"), list(labels(data)), "transactions"
        )


async def settle(env: Env, model: str, n: int, *, realised: bool) -> None:
    """Wait until the monitor read ``n`` predictions of ``model`` (and joined labels)."""
    await wait_for(lambda: processed(env, model) >= n, 90, f"{n} predictions of {model} read")
    if realised:
        await wait_for(
            lambda: (
                (gauge(env, "flywheel_monitor_window_count", model=model, kind="realised") or 0) > 0
            ),
            90,
            f"labels of {model} joined",
        )


# -- drift, retrain requests ------------------------------------------------------------------


async def test_clean_stream_yields_no_drift_and_no_retrain(env: Env) -> None:
    data = rows(101, 6000)
    await stream(env, "m-clean", data, with_labels=True)
    await settle(env, "m-clean", 6000, realised=True)
    # Let the signals drain: the realised window keeps moving until the last bucket closed.
    await wait_for(
        lambda: (
            (
                gauge(
                    env,
                    "flywheel_monitor_metric",
                    model="m-clean",
                    kind="realised",
                    metric="roc_auc",
                )
                or 0
            )
            > 0.75
        ),
        60,
        "live roc_auc of m-clean",
    )
    assert await events_of(env, "drift.detected", "m-clean", DriftDetected) == []
    assert await events_of(env, "retrain.requested", "m-clean", RetrainRequested) == []


async def test_covariate_drift_yields_drift_and_exactly_one_retrain(env: Env) -> None:
    data = rows(202, 6000, drift="covariate", drift_at=3000)
    await stream(env, "m-cov", data, with_labels=False)
    await settle(env, "m-cov", 6000, realised=False)
    drift = await wait_for(
        lambda: events_of(env, "drift.detected", "m-cov", DriftDetected), 60, "drift.detected"
    )
    assert drift[0].version == env.versions["m-cov"]["v1"]
    assert drift[0].features, "the drifted features are named"
    retrains = await wait_for(
        lambda: events_of(env, "retrain.requested", "m-cov", RetrainRequested), 60, "retrain"
    )
    # More drifted traffic within the same episode asks for nothing more.
    more = rows(202, 9000, drift="covariate", drift_at=3000)[6000:]
    await stream(env, "m-cov", more, with_labels=False)
    await settle(env, "m-cov", 9000, realised=False)
    retrains = await events_of(env, "retrain.requested", "m-cov", RetrainRequested)
    assert len(retrains) == 1, [r.reason for r in retrains]
    assert "drift" in retrains[0].reason
    assert retrains[0].cause_event_id in {d.event_id for d in drift} | {None}


async def test_concept_drift_is_caught_by_the_label_metrics(env: Env) -> None:
    data = rows(303, 6000, drift="concept", drift_at=3000)
    await stream(env, "m-concept", data, with_labels=True)
    retrains = await wait_for(
        lambda: events_of(env, "retrain.requested", "m-concept", RetrainRequested),
        90,
        "retrain on concept drift",
    )
    assert len(retrains) == 1
    assert "realised" in retrains[0].reason
    assert await events_of(env, "drift.detected", "m-concept", DriftDetected) == []


async def test_live_accuracy_equals_offline_computation(env: Env) -> None:
    from monitor_support import scores

    data = rows(404, 2000)
    await stream(env, "m-acc", data, with_labels=True)
    # One more labelled prediction far later in event time closes every bucket before it.
    closer = later(data, "closer-acc")
    await stream(env, "m-acc", closer, with_labels=True)
    await wait_for(
        lambda: (
            gauge(
                env,
                "flywheel_monitor_window_count",
                model="m-acc",
                kind="realised",
                route="production",
            )
            == 2000
        ),
        90,
        "2000 labelled predictions in the window",
    )
    s = scores("good", data)
    y = [bool(r["is_fraud"]) for r in data]
    accuracy = sum((p >= 0.5) == t for p, t in zip(s, y, strict=True)) / len(y)
    live_acc = gauge(
        env, "flywheel_monitor_metric", model="m-acc", kind="realised", metric="accuracy"
    )
    live_auc = gauge(
        env, "flywheel_monitor_metric", model="m-acc", kind="realised", metric="roc_auc"
    )
    assert live_acc == pytest.approx(accuracy, abs=1e-12)
    assert live_auc == pytest.approx(roc_auc_score(y, s), abs=0.002)
    estimated = gauge(
        env, "flywheel_monitor_metric", model="m-acc", kind="estimated", metric="accuracy"
    )
    assert estimated is not None and abs(estimated - accuracy) < 0.05


# -- canary and shadow ------------------------------------------------------------------------


def _canary_bucket(request_id: str) -> float:
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


async def test_bad_canary_is_rolled_back(env: Env) -> None:
    v1, v2 = env.versions["m-bad"]["v1"], env.versions["m-bad"]["v2"]
    data = rows(505, 3000)
    canary = [r for r in data if _canary_bucket(r["transaction_id"]) < 0.2]
    prod = [r for r in data if _canary_bucket(r["transaction_id"]) >= 0.2]
    topic = env.stack.topics("predictions")
    events = predictions("m-bad", prod, [(v1, "production", "good")]) + predictions(
        "m-bad", canary, [(v2, "canary", "bad")]
    )
    events.sort(key=lambda e: e.predictions[0].at)
    await produce(env.stack.bootstrap, topic, list(events), "m-bad")

    async def rolled_back() -> list[RolloutVerdict]:
        vs = await events_of(env, "rollout.verdict", "m-bad", RolloutVerdict)
        return [v for v in vs if v.decision == "rollback"]

    verdicts = await wait_for(rolled_back, 90, "a rollback verdict")
    assert verdicts[0].version == v2 and verdicts[0].alias == "canary"
    assert verdicts[0].reasons

    async def canary_gone() -> bool:
        async with env.stack.client() as reg:
            return "canary" not in (await reg.get_model("m-bad")).aliases

    await wait_for(canary_gone, 30, "the registry removed the canary alias")


async def test_good_shadow_advances_to_canary_and_is_promoted(env: Env) -> None:
    _v1, v2 = env.versions["m-good"]["v1"], env.versions["m-good"]["v2"]
    sim = FraudSimulator(seed=606, rate_per_s=RATE, fraud_rate=0.05)
    topic = env.stack.topics("predictions")
    deadline = time.monotonic() + 180
    async with env.stack.client() as reg:
        while True:
            aliases = (await reg.get_model("m-good")).aliases
            if aliases["production"].version == v2:
                break
            assert time.monotonic() < deadline, f"not promoted; aliases {aliases}"
            batch = sim.batch(200)
            events: list[Any] = []
            production = aliases["production"].version
            if "shadow" in aliases:
                events += predictions(
                    "m-good",
                    batch,
                    [
                        (production, "production", "good"),
                        (aliases["shadow"].version, "shadow", "good"),
                    ],
                )
            elif "canary" in aliases:
                w = aliases["canary"].weight or 0.0
                can = [r for r in batch if _canary_bucket(r["transaction_id"]) < w]
                prod = [r for r in batch if _canary_bucket(r["transaction_id"]) >= w]
                events += predictions("m-good", prod, [(production, "production", "good")])
                events += predictions(
                    "m-good", can, [(aliases["canary"].version, "canary", "good")]
                )
            else:
                events += predictions("m-good", batch, [(production, "production", "good")])
            await produce(env.stack.bootstrap, topic, events, "m-good")
            await asyncio.sleep(0.2)  # pace the stream like live traffic
    verdicts = await events_of(env, "rollout.verdict", "m-good", RolloutVerdict)
    decisions = [(v.alias, v.decision) for v in verdicts if v.decision != "hold"]
    assert decisions == [("shadow", "advance"), ("canary", "advance"), ("canary", "promote")]


# -- bad input, crash ---------------------------------------------------------------------------


async def test_malformed_events_are_dead_lettered_and_the_monitor_goes_on(env: Env) -> None:
    topics = env.stack.topics
    producer = AIOKafkaProducer(bootstrap_servers=env.stack.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics("predictions"), b"\x00not json", key=b"m-dlq")
        await producer.send_and_wait(
            topics("data.labels"), b'{"type": "data.labels"}', key=b"transactions"
        )
    finally:
        await producer.stop()
    data = rows(707, 300)
    await stream(env, "m-dlq", data, with_labels=False)
    await settle(env, "m-dlq", 300, realised=False)

    sources = (topics("predictions"), topics("data.labels"))

    async def both() -> list[DeadLetter] | None:
        found = await dead_letters(env.stack.bootstrap, topics, sources)
        return found if len({d.source_topic for d in found}) == 2 else None

    found = await wait_for(both, 30, "both poison records dead-lettered")
    assert {d.source_topic for d in found} == {topics("predictions"), topics("data.labels")}
    assert all("undecodable" in d.error for d in found)


async def test_sigkill_resumes_without_recalibrating_or_losing_join_state(env: Env) -> None:
    data = rows(808, 1000)
    await stream(env, "m-kill", data, with_labels=False)
    await settle(env, "m-kill", 1000, realised=False)
    # The predictions wait in the join table; the commit interval passes before the kill.
    await asyncio.sleep(2.5)
    env.monitor.kill()
    env.monitor = env.stack.monitor().start(ready_timeout=120)
    await produce(
        env.stack.bootstrap, env.stack.topics("data.labels"), list(labels(data)), "transactions"
    )
    closer = later(data, "closer-kill")
    await stream(env, "m-kill", closer, with_labels=True)
    await wait_for(
        lambda: (
            gauge(
                env,
                "flywheel_monitor_window_count",
                model="m-kill",
                kind="realised",
                route="production",
            )
            == 1000
        ),
        90,
        "the 1000 predictions from before the kill joined with their labels",
    )
    text = env.metrics()
    computed = metric_values(text, "flywheel_monitor_calibrations_total")
    assert not any('how="computed"' in k and v > 0 for k, v in computed.items()), computed
    assert any('how="loaded"' in k and v > 0 for k, v in computed.items()), computed
