"""Two monitor workers split the partitions and decide exactly what one worker decides.

Two consumer groups read the same streams: ``solo`` (one worker) and ``pair`` (two workers of
one application). Both publish their decisions to the same topics; since decisions carry
deterministic event ids, every decision must appear exactly twice, once from each group, with
the same content, and the live metrics of both groups must agree.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from monitor_support import (
    Stack,
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

from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_shared.events import DriftDetected, RetrainRequested

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODELS = ("w-cov", "w-concept")


def _get(proc: ServiceProcess, path: str) -> bytes:
    with urllib.request.urlopen(proc.url + path, timeout=5) as resp:
        return bytes(resp.read())


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("monitor-workers")
    stack = Stack(kafka_bootstrap, tmp)
    stack.registry.start()

    async def seed() -> dict[str, int]:
        async with stack.client() as reg:
            out = {}
            for name in MODELS:
                spec = fraud_spec(name)
                await reg.put_spec(spec)
                out[name] = await register(reg, spec, "good", alias="production")
            return out

    versions = asyncio.run(seed())
    solo = stack.monitor("solo-1", app_id="solo")
    pair = [stack.monitor(f"pair-{i}", app_id="pair") for i in (1, 2)]
    procs = [solo, *pair]
    for p in procs:
        p.start(ready_timeout=120)

    def calibrated() -> bool:
        # The solo group and one pair worker calibrated the version (when it was registered).
        counts = [
            sum(
                metric_values(
                    _get(p, "/metrics").decode(), "flywheel_monitor_calibrations_total"
                ).values()
            )
            for p in procs
        ]
        return counts[0] >= 1 and counts[1] + counts[2] >= 1

    asyncio.run(wait_for(calibrated, 300, "the version calibrated"))
    yield stack, versions, solo, pair
    for p in procs:
        p.stop()
    stack.registry.stop()


def _processed(procs: list[ServiceProcess], model: str) -> float:
    total = 0.0
    for p in procs:
        values = metric_values(_get(p, "/metrics").decode(), "flywheel_monitor_predictions_total")
        total += sum(v for k, v in values.items() if f'model="{model}"' in k)
    return total


def _realised(procs: list[ServiceProcess], model: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in procs:
        values = metric_values(_get(p, "/metrics").decode(), "flywheel_monitor_metric")
        for k, v in values.items():
            if f'model="{model}"' in k and 'kind="realised"' in k:
                out[k] = v
    return out


async def test_two_workers_split_partitions_and_decide_like_one(stack: Any) -> None:
    st, versions, solo, pair = stack

    # Both pair workers own partitions (after the group settled).
    async def split() -> bool:
        # Input partitions only: standby copies of the other worker's changelogs are assigned too.
        inputs = (st.topics("predictions"), f"{st.prefix}.monitor.join.v1")
        assigned = [
            {
                tp
                for tp in orjson.loads(_get(p, "/v1/status"))["assignment"]
                if tp.rsplit(":", 1)[0] in inputs
            }
            for p in pair
        ]
        return all(assigned) and not assigned[0] & assigned[1]

    await wait_for(split, 60, "both pair workers own partitions")
    data = {
        "w-cov": rows(901, 6000, drift="covariate", drift_at=3000),
        "w-concept": rows(902, 6000, drift="concept", drift_at=3000),
    }
    for model, rs in data.items():
        events = predictions(model, rs, [(versions[model], "production", "good")])
        await produce(st.bootstrap, st.topics("predictions"), list(events), model)
        await produce(st.bootstrap, st.topics("data.labels"), list(labels(rs)), "transactions")
    for model in MODELS:
        for group in ([solo], pair):
            await wait_for(lambda g=group, m=model: _processed(g, m) >= 6000, 120, f"{model} read")

    async def decided() -> bool:
        retrains = [
            e
            for e in await read_all(st.bootstrap, st.topics("retrain.requested"))
            if isinstance(e, RetrainRequested)
        ]
        per_model = Counter(e.model for e in retrains)
        return all(per_model[m] == 2 for m in MODELS)

    await wait_for(decided, 120, "each group requested one retrain per model")
    for logical, cls in (
        ("retrain.requested", RetrainRequested),
        ("drift.detected", DriftDetected),
    ):
        events = [e for e in await read_all(st.bootstrap, st.topics(logical)) if isinstance(e, cls)]
        ids = Counter(e.event_id for e in events)
        assert events, logical
        assert all(n == 2 for n in ids.values()), f"{logical}: decided by one group only: {ids}"
        by_id: dict[Any, set[bytes]] = {}
        for e in events:
            body = e.model_dump(mode="json", exclude={"occurred_at"})
            by_id.setdefault(e.event_id, set()).add(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        assert all(len(bodies) == 1 for bodies in by_id.values()), f"{logical}: contents differ"
    # Both groups' live metrics reach the same values once each has joined every label.
    for model in MODELS:
        await wait_for(
            lambda m=model: (s := _realised([solo], m)) and s == _realised(pair, m),
            90,
            f"the same live metrics of {model} in both groups",
        )
