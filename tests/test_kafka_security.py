"""Kafka security for real: the loop over SASL/SCRAM-SHA-512 on TLS, and how a bad login looks.

The module starts its own broker (``LocalKafka`` with ``KafkaSecurity``): a SASL_SSL client
listener with a certificate from a throwaway CA, and one SCRAM user the services log in as.
Every service gets nothing but the ``FLYWHEEL_KAFKA_*`` variables an operator would set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from e2e_support import Stack, fraud_spec, post_records

from flywheel_devkit.kafka import SCRAM_MECHANISM, KafkaSecurity, LocalKafka, pick_free_port
from flywheel_devkit.testing.kafka import start_local_broker
from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.procs import ServiceProcess, metric_sum
from flywheel_devkit.testing.waiting import eventually
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.events import Event, ModelVersionRegistered, PredictionsLogged
from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.kafka.problems import connection_problem
from flywheel_shared.registry import RegistryClient
from flywheel_shared.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "flywheel-svc"
PASSWORD = secrets.token_urlsafe(18)
WRONG = "not-" + secrets.token_urlsafe(8)
STARTUP_S = 180.0


@pytest.fixture(scope="module")
def kafka() -> Iterator[LocalKafka]:
    """A broker of this module's own: SASL_SSL, one SCRAM user."""
    handle = start_local_broker(security=KafkaSecurity({USER: PASSWORD}, tls=True))
    assert handle.local is not None
    try:
        yield handle.local
    finally:
        handle.close()


def settings(kafka: LocalKafka, prefix: str, **overrides: Any) -> KafkaSettings:
    """What a service would read from ``kafka.client_env(USER)``, as a settings object."""
    values: dict[str, Any] = {
        "bootstrap": kafka.bootstrap,
        "topic_prefix": prefix,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_username": USER,
        "sasl_password": PASSWORD,
        "ssl_cafile": str(kafka.ca_file),
    }
    return KafkaSettings(**{**values, **overrides})


def readyz(proc: ServiceProcess) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and JSON body; (0, {}) while nothing listens yet."""
    try:
        code, _, body = proc.request("GET", "/readyz")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}
    return code, json.loads(body or b"{}")


def kafka_reason(proc: ServiceProcess) -> str:
    return str(readyz(proc)[1].get("problems", {}).get("kafka", ""))


def connect_failures(proc: ServiceProcess) -> float:
    try:
        _, _, body = proc.request("GET", "/metrics")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0.0
    return metric_sum(
        "\n".join(line for line in body.decode().splitlines() if 'task="kafka-connect"' in line),
        "flywheel_task_failures_total",
    )


def predict(serving: ServiceProcess, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    code, _, body = serving.request(
        "POST",
        "/v1/models/fraud/predict",
        json.dumps({"records": records}).encode(),
        {"content-type": "application/json"},
    )
    return code, json.loads(body)


@pytest.mark.timeout(600)  # five services and a training: minutes when the machine is busy
async def test_the_loop_trains_serves_and_monitors_over_sasl_ssl(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    stack = Stack(kafka.bootstrap, tmp_path)
    serving = stack.process("serving", {"FLYWHEEL_SERVING_RETRY_MAX_S": "1"}, label="serving")
    monitor = stack.process(
        "monitor", {"FLYWHEEL_MONITOR_REGISTRY_REFRESH_S": "1"}, label="monitor"
    )
    services = (stack.registry, stack.ingest, stack.trainer, serving, monitor)
    env = kafka.client_env(USER)
    assert env["FLYWHEEL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    for proc in services:
        proc.env.update(env)
    client = kafka.client_options(USER)
    try:
        # The topics, created by a client with the credentials before any service runs.
        created = await ensure_topics(settings(kafka, stack.prefix))
        assert stack.topics("model.version.registered") in created
        assert stack.topics("predictions") in created

        # Serving and the monitor wait for the registry themselves: they start loading now.
        serving.start(wait=False)
        monitor.start(wait=False)
        # Registry first (it holds the contract), then ingest and the trainer. The deadlines
        # are generous: on a loaded machine five services importing at once take a while.
        spec, _ = fraud_spec()
        await asyncio.to_thread(stack.registry.start, STARTUP_S)
        async with RegistryClient(stack.registry_url, stack.token) as reg:
            await reg.put_spec(spec)
        await asyncio.gather(
            asyncio.to_thread(stack.ingest.start, STARTUP_S),
            asyncio.to_thread(stack.trainer.start, STARTUP_S),
        )
        await asyncio.to_thread(post_records, stack)
        [registered] = await read_events(
            kafka.bootstrap,
            stack.topics("model.version.registered"),
            until=lambda ev: len(ev) >= 1,
            timeout=180,
            client=client,
        )
        assert isinstance(registered, ModelVersionRegistered) and registered.version == 1
        await asyncio.gather(
            asyncio.to_thread(serving.wait_ready, STARTUP_S),
            asyncio.to_thread(monitor.wait_ready, STARTUP_S),
        )

        records = [
            {k: r[k] for k in (*spec.features, "transaction_id")}
            for r in FraudSimulator(seed=9).batch(3)
        ]
        answers: list[tuple[int, dict[str, Any]]] = []

        def served() -> bool:
            answers.append(predict(serving, records))
            return answers[-1][0] == 200

        await eventually(served, timeout=60, every=0.2)
        body = answers[-1][1]
        assert body["version"] == 1 and body["route"] == "production", body
        assert len(body["predictions"]) == 3

        # Serving's prediction log reached Kafka through its own SASL_SSL producer ...
        def has_request(events: list[Event]) -> bool:
            return any(
                p.request_id == body["request_id"]
                for e in events
                if isinstance(e, PredictionsLogged)
                for p in e.predictions
            )

        topic = stack.topics("predictions")
        await read_events(kafka.bootstrap, topic, until=has_request, timeout=30, client=client)

        # ... and the monitor's faust consumer read it with the same credentials.
        def monitored() -> float:
            _, _, text = monitor.request("GET", "/metrics")
            return metric_sum(text.decode(), "flywheel_monitor_predictions_total")

        await eventually(lambda: monitored() >= 3, timeout=60, every=0.5)
        for proc in services:
            assert PASSWORD not in proc.log_path.read_text(errors="replace"), proc.module
    finally:
        for proc in (monitor, serving):
            proc.stop()
        stack.stop()


async def test_a_wrong_password_is_named_and_the_service_waits_for_the_right_one(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    secret = tmp_path / "kafka-password"  # as a Kubernetes Secret mounted as a file
    secret.write_text(WRONG + "\n")
    port = pick_free_port()
    env = {
        **kafka.client_env(USER),
        "FLYWHEEL_KAFKA_SASL_PASSWORD": "",
        "FLYWHEEL_KAFKA_SASL_PASSWORD_FILE": str(secret),
        "FLYWHEEL_KAFKA_TOPIC_PREFIX": f"w{secrets.token_hex(4)}",
        "FLYWHEEL_STORAGE_URI": str(tmp_path / "store"),
        "FLYWHEEL_INGEST_PORT": str(port),
        "FLYWHEEL_INGEST_REGISTRY_URL": f"http://127.0.0.1:{pick_free_port()}",
    }
    ingest = ServiceProcess("flywheel_ingest", env, port, tmp_path / "ingest.log")
    ingest.start(wait=False)
    try:
        await eventually(lambda: "authentication failed" in kafka_reason(ingest), 60, 0.2)
        code, body = readyz(ingest)
        reason = body["problems"]["kafka"]
        assert code == 503 and body["status"] == "not ready"
        expected = f"connecting to kafka: authentication failed: Kafka at {kafka.bootstrap}"
        assert reason.startswith(expected), reason
        assert f"{SCRAM_MECHANISM} credentials of user {USER!r}" in reason, reason
        # Not a crash loop: the same process keeps trying, with a pause that grows to 10 s.
        await eventually(lambda: connect_failures(ingest) >= 3, 30, 0.2)
        assert ingest.proc is not None and ingest.proc.poll() is None
        log = ingest.log_path.read_text(errors="replace")
        assert "authentication failed" in log and USER in log
        assert WRONG not in log and PASSWORD not in log

        # The secret is fixed in place: the next attempt reads the file again and logs in.
        secret.write_text(PASSWORD + "\n")
        await eventually(lambda: readyz(ingest)[0] and not kafka_reason(ingest), 30, 0.2)
        assert "connected to kafka" in ingest.log_path.read_text(errors="replace")
        assert ingest.proc.poll() is None
    finally:
        ingest.stop()


async def test_plaintext_and_untrusting_clients_are_refused(kafka: LocalKafka) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(admin.start(), 30)
    with contextlib.suppress(Exception):
        await admin.close()
    plaintext = await connection_problem(KafkaSettings(bootstrap=kafka.bootstrap))
    assert plaintext is not None and "closed the connection" in plaintext
    assert "PLAINTEXT" in plaintext

    # The right password, but the system CAs: the throwaway CA is not among them.
    untrusting = await connection_problem(settings(kafka, "x", ssl_cafile=None))
    assert untrusting is not None and "not trusted" in untrusting, untrusting
    wrong = await connection_problem(settings(kafka, "x", sasl_password=WRONG))
    assert wrong is not None and wrong.startswith("authentication failed"), wrong
    assert await connection_problem(settings(kafka, "x")) is None
