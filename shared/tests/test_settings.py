"""Kafka connection settings: what aiokafka gets for each security protocol."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from flywheel_shared.settings import KafkaSettings


def test_plaintext_has_no_tls_and_no_sasl() -> None:
    kw = KafkaSettings(bootstrap="k:9092").client_kwargs()
    assert kw == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_gets_a_verifying_context_with_the_ca_and_the_credentials(tmp_path: Path) -> None:
    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=flywheel-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    settings = KafkaSettings(
        bootstrap="k:9096",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="pw",
        ssl_cafile=str(cert),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    kw = settings.client_kwargs()
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "flywheel-test"),),)]
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512" and kw["sasl_plain_username"] == "svc"


def test_a_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(FileNotFoundError):
        settings.client_kwargs()
