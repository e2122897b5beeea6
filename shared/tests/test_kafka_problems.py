"""Why Kafka cannot be reached, said in one line, and shown by a service's readiness."""

from __future__ import annotations

import ssl

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from flywheel_devkit.kafka import pick_free_port
from flywheel_shared.kafka.problems import KafkaUnavailable, connection_problem, explain
from flywheel_shared.runtime import KafkaRuntime
from flywheel_shared.settings import KafkaSettings

SASL = KafkaSettings(
    bootstrap="k:9093",
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="svc",
    sasl_password="hunter2-secret",
)


def test_each_cause_gets_its_own_sentence() -> None:
    auth = explain(SaslAuthenticationFailed("invalid credentials"), SASL, "k:9093")
    assert auth.startswith("authentication failed: Kafka at k:9093 refused the SCRAM-SHA-512")
    assert "user 'svc'" in auth and "hunter2" not in auth
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate in certificate chain"
    tls = explain(untrusted, SASL, "k:9093")
    assert "not trusted (self-signed certificate in certificate chain)" in tls
    assert "FLYWHEEL_KAFKA_SSL_CAFILE" in tls
    closed = explain(KafkaConnectionError("Connection at k:9093 closed"), KafkaSettings(), "k:9093")
    assert "closed the connection" in closed and "than PLAINTEXT" in closed
    refused = explain(ConnectionRefusedError(111, "refused"), KafkaSettings(), "k:9092")
    assert refused == "cannot reach Kafka at k:9092: connection refused"


async def test_a_closed_port_is_refused_and_readiness_says_so() -> None:
    port = pick_free_port()  # nothing listens there
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{port}")
    assert await connection_problem(settings) == (
        f"cannot reach Kafka at 127.0.0.1:{port}: connection refused"
    )

    runtime = KafkaRuntime(settings)
    assert await runtime.kafka_ready() == "connecting to kafka"
    with pytest.raises(KafkaUnavailable, match="connection refused"):
        await runtime._connect_once()
    assert await runtime.kafka_ready() == (
        f"connecting to kafka: cannot reach Kafka at 127.0.0.1:{port}: connection refused"
    )
    await runtime.producer.stop()
