"""The monitor's faust app speaks the same Kafka security as the other services."""

from __future__ import annotations

import subprocess
from pathlib import Path

import faust
from faust.types.auth import AuthProtocol

from flywheel_monitor.app import broker_credentials
from flywheel_shared.settings import KafkaSettings


def test_plaintext_sasl_and_ssl_map_to_faust_credentials(tmp_path: Path) -> None:
    assert broker_credentials(KafkaSettings()) is None
    sasl = broker_credentials(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="svc",
            sasl_password="pw",
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert sasl.protocol == AuthProtocol.SASL_PLAINTEXT and sasl.username == "svc"
    assert sasl.mechanism.value == "SCRAM-SHA-512"

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=broker", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", ssl_cafile=str(cert))
    sasl_ssl = broker_credentials(tls)
    assert sasl_ssl.protocol == AuthProtocol.SASL_SSL and sasl_ssl.ssl_context is not None
    ssl_only = broker_credentials(KafkaSettings(security_protocol="SSL", ssl_cafile=str(cert)))
    assert isinstance(ssl_only, faust.SSLCredentials) and ssl_only.protocol == AuthProtocol.SSL
