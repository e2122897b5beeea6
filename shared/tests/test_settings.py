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


def test_the_sasl_password_is_never_shown_and_may_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("from-the-file\n")
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="from-the-env",
        sasl_password_file=str(secret),
    )
    assert "from-the" not in repr(settings) and "from-the" not in str(settings)
    assert settings.sasl_password == "from-the-file"  # the file wins (faust reads this field)
    assert settings.client_kwargs()["sasl_plain_password"] == "from-the-file"
    secret.write_text("rotated\n")  # a Secret updated in place: the next connection uses it
    assert settings.client_kwargs()["sasl_plain_password"] == "rotated"


def test_an_unreadable_password_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the SASL password file .*nope"):
        KafkaSettings(sasl_password_file=str(tmp_path / "nope"))


def test_sasl_without_a_mechanism_is_plain_and_still_logs_in() -> None:
    kw = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password="pw"
    ).client_kwargs()
    assert kw["sasl_mechanism"] == "PLAIN" and kw["sasl_plain_username"] == "svc"
    assert kw["sasl_plain_password"] == "pw"


def test_the_password_file_variable_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret")
    monkeypatch.setenv("FLYWHEEL_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    assert KafkaSettings().sasl_password == "s3cret"
