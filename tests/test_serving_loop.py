"""Data in → model out → served: serving follows what the trainer registers, from a cold start."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from e2e_support import Stack, fraud_spec, post_records

from flywheel_devkit.testing.kafka_io import read_events
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import ModelVersionRegistered
from flywheel_shared.registry import RegistryClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _predict(url: str, records: list[dict[str, object]]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        url + "/v1/models/fraud/predict",
        data=json.dumps({"records": records}).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_serving_started_before_the_registry_serves_the_trained_model(
    stack: Stack,
) -> None:
    serving = stack.process(
        "serving",
        {"FLYWHEEL_SERVING_STARTUP_WAIT_S": "1", "FLYWHEEL_SERVING_RETRY_MAX_S": "1"},
        label="serving",
    )
    serving.start(wait=False)  # not ready, at first: nothing to serve yet
    try:
        # The registry is not there yet: serving is up, says so, and is not ready.
        deadline = time.monotonic() + 90
        while _status(serving.url + "/healthz") != 200:
            assert time.monotonic() < deadline, serving.tail()
            assert serving.proc.poll() is None, serving.tail()
            await asyncio.sleep(0.2)
        assert _status(serving.url + "/readyz") == 503
        assert _status(serving.url + "/v2/health/ready") == 503

        spec, _ = fraud_spec()
        await asyncio.to_thread(stack.registry.start)
        async with RegistryClient(stack.registry_url, stack.token) as reg:
            await reg.put_spec(spec)
        await asyncio.gather(
            asyncio.to_thread(stack.ingest.start), asyncio.to_thread(stack.trainer.start)
        )
        await asyncio.to_thread(serving.wait_ready, 30)
        code, body = _predict(serving.url, FraudSimulator(seed=9).batch(1))
        assert code == 503 and "no production version" in str(body["error"])

        await asyncio.to_thread(post_records, stack)
        [registered] = await read_events(
            stack.bootstrap,
            stack.topics("model.version.registered"),
            until=lambda ev: len(ev) >= 1,
            timeout=120,
        )
        assert isinstance(registered, ModelVersionRegistered)
        version = registered.version
        records = [
            {k: r[k] for k in (*spec.features, "transaction_id")}
            for r in FraudSimulator(seed=9).batch(3)
        ]
        deadline = time.monotonic() + 30
        while (code := _predict(serving.url, records)[0]) != 200:
            assert code == 503 and time.monotonic() < deadline, serving.tail()
            await asyncio.sleep(0.2)
        code, body = _predict(serving.url, records)
        assert body["version"] == version and body["route"] == "production"
    finally:
        serving.stop()
