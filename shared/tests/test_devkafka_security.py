"""The local broker's security options, without starting a broker: parsing, the generated
``server.properties``, what clients are told, and the checks made before a start."""

from __future__ import annotations

import json
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flywheel_devkit.kafka import (
    SCRAM_MECHANISM,
    KafkaSecurity,
    KafkaStartError,
    LocalKafka,
    parse_scram_user,
)
from flywheel_devkit.kafka.cli import _build_parser, main


def test_user_password_pairs_parse_and_the_password_may_hold_colons() -> None:
    assert parse_scram_user("alice:s3cret") == ("alice", "s3cret")
    assert parse_scram_user("svc.ingest@prod:a:b=c") == ("svc.ingest@prod", "a:b=c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice", "expected USER:PASSWORD"),
        ("alice:", "expected USER:PASSWORD for user 'alice'"),
        (":hunter2x", "expected USER:PASSWORD"),
        ("al ice:pw", "SCRAM user name 'al ice'"),
        ("alice:pa,ss", "password of 'alice' must be non-empty, without commas"),
        ('alice:pa"ss', "without commas, quotes"),
        ("alice:pa ss", "whitespace"),
        ("devkafka-broker:pw", "is the broker's own"),
    ],
)
def test_bad_users_are_refused_without_repeating_the_password(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_scram_user(text)
    password = text.partition(":")[2]
    if len(password) > 2:
        assert password not in str(err.value)


def test_the_protocol_follows_from_users_and_tls_and_repr_hides_passwords() -> None:
    assert KafkaSecurity().protocol == "PLAINTEXT"
    assert KafkaSecurity(tls=True).protocol == "SSL"
    assert KafkaSecurity({"a": "pw"}).protocol == "SASL_PLAINTEXT"
    sasl_ssl = KafkaSecurity({"b": "pw-b", "a": "pw-a"}, tls=True)
    assert sasl_ssl.protocol == "SASL_SSL" and sasl_ssl.sasl
    assert repr(sasl_ssl) == "KafkaSecurity(scram_users=['a', 'b'], tls=True)"
    assert sasl_ssl == KafkaSecurity({"a": "pw-a", "b": "pw-b"}, tls=True)
    assert sasl_ssl.digest("salt") != KafkaSecurity({"a": "pw-a", "b": "other"}).digest("salt")


def test_the_cli_takes_repeated_users_and_tls() -> None:
    args = _build_parser().parse_args(
        ["start", "--sasl-scram", "alice:pw1", "--sasl-scram", "bob:pw:2", "--tls"]
    )
    assert args.sasl_scram == [("alice", "pw1"), ("bob", "pw:2")] and args.tls
    plain = _build_parser().parse_args(["start"])
    assert plain.sasl_scram == [] and not plain.tls


def test_start_help_explains_the_security_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["start", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--sasl-scram USER:PASSWORD" in help_text and "--tls" in help_text
    assert "<data-dir>/security/ca.pem" in help_text and f"SASL/{SCRAM_MECHANISM}" in help_text


def test_the_cli_refuses_a_bad_user_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["start", "--data-dir", str(tmp_path), "--sasl-scram", "alice:top,secret"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --sasl-scram" in err and "top,secret" not in err
    with pytest.raises(SystemExit):
        main(["start", "--data-dir", str(tmp_path), "--sasl-scram", "a:x1", "--sasl-scram", "a:x2"])
    assert "user 'a' given twice" in capsys.readouterr().err
    assert not (tmp_path / "server.properties").exists()


def _properties(kafka: LocalKafka) -> dict[str, str]:
    kafka._write_config()
    lines = kafka.properties_file.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def test_plaintext_properties_are_unchanged(tmp_path: Path) -> None:
    props = _properties(LocalKafka(tmp_path, port=19092, controller_port=19093))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.", "listener.name.")) for k in props)
    assert not (tmp_path / "security").exists()


def test_sasl_ssl_secures_the_client_and_inter_broker_listener(tmp_path: Path) -> None:
    security = KafkaSecurity({"alice": "pw-alice"}, tls=True)
    kafka = LocalKafka(tmp_path, port=19092, controller_port=19093, security=security)
    props = _properties(kafka)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19092"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    secrets = json.loads((tmp_path / "security" / "secrets.json").read_text())
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert f'username="devkafka-broker" password="{secrets["broker_password"]}";' in jaas
    assert "pw-alice" not in kafka.properties_file.read_text()  # users live in the metadata log
    assert props["ssl.keystore.location"] == str(tmp_path / "security" / "broker.p12")
    assert props["ssl.truststore.location"] == str(tmp_path / "security" / "ca.pem")
    # Secrets are for the owner only.
    assert stat.S_IMODE(kafka.properties_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "security").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "security" / "secrets.json").stat().st_mode) == 0o600


def test_clients_are_told_the_protocol_the_user_and_the_ca(tmp_path: Path) -> None:
    security = KafkaSecurity({"alice": "pw-alice", "bob": "pw-bob"}, tls=True)
    kafka = LocalKafka(tmp_path, port=19092, controller_port=19093, security=security)
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.ca_file == tmp_path / "security" / "ca.pem"
    assert kafka.client_env("bob") == {
        "FLYWHEEL_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
        "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FLYWHEEL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "FLYWHEEL_KAFKA_SASL_USERNAME": "bob",
        "FLYWHEEL_KAFKA_SASL_PASSWORD": "pw-bob",
        "FLYWHEEL_KAFKA_SSL_CAFILE": str(tmp_path / "security" / "ca.pem"),
    }
    assert kafka.client_env()["FLYWHEEL_KAFKA_SASL_USERNAME"] == "alice"  # the first user
    with pytest.raises(KeyError, match="no SCRAM user 'carol'"):
        kafka.client_env("carol")
    sasl_only = LocalKafka(tmp_path / "b", port=1, security=KafkaSecurity({"a": "pw"}))
    options = sasl_only.client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in options
    assert options["sasl_plain_username"] == "a" and options["sasl_mechanism"] == SCRAM_MECHANISM
    plain = LocalKafka(tmp_path / "c", port=2)
    assert plain.client_env() == {"FLYWHEEL_KAFKA_BOOTSTRAP": "127.0.0.1:2"}
    assert plain.client_options() == {"bootstrap_servers": "127.0.0.1:2"}
    assert plain.ca_file is None and plain.security_protocol == "PLAINTEXT"


def test_tls_client_options_verify_the_broker_against_the_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "security" / "ca.pem"
    ca.parent.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=devkafka-test-ca", "-keyout",
         str(tmp_path / "ca.key"), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    kafka = LocalKafka(tmp_path, port=19092, security=KafkaSecurity(tls=True))
    context = kafka.client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "devkafka-test-ca"),),)
    ]
    assert "sasl_mechanism" not in kafka.client_options()


def test_users_are_only_created_when_the_storage_is_formatted(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text("cluster.id=abc\n")  # formatted before
    kafka = LocalKafka(tmp_path, port=1, security=KafkaSecurity({"alice": "pw"}))
    with pytest.raises(KafkaStartError, match="first started without SCRAM users"):
        kafka._format_storage("java-never-run", tmp_path)
    secret = kafka._secrets()
    formatted_with = KafkaSecurity({"alice": "old-pw"})
    kafka._write_secrets(
        {**secret, "scram_users": formatted_with.digest(secret["salt"]), "scram_names": ["alice"]}
    )
    with pytest.raises(KafkaStartError, match=r"other SCRAM users or passwords \(alice\)"):
        kafka._format_storage("java-never-run", tmp_path)
    same = LocalKafka(tmp_path, port=1, security=KafkaSecurity({"alice": "old-pw"}))
    same._format_storage("java-never-run", tmp_path)  # the same users: nothing to do
    # PLAINTEXT starts never care about the users.
    LocalKafka(tmp_path, port=1)._format_storage("java-never-run", tmp_path)


@pytest.mark.integration
@pytest.mark.slow
async def test_cli_starts_a_sasl_ssl_broker_that_keeps_its_ca_and_users_across_restarts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "kafka"
    cli = [sys.executable, "-m", "flywheel_devkit.kafka"]
    flags = ["--data-dir", str(data), "--sasl-scram", "alice:pw-alice", "--tls"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=180)

    started = run("start", "--port", "0", *flags)
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()  # stdout stays the bootstrap address alone
        assert "services take: FLYWHEEL_KAFKA_BOOTSTRAP=" in started.stderr
        assert "FLYWHEEL_KAFKA_SASL_PASSWORD=<password of alice>" in started.stderr
        assert "pw-alice" not in started.stderr + started.stdout
        status = run("status", "--data-dir", str(data))
        assert status.returncode == 0 and "security=SASL_SSL" in status.stdout, status
        ca = (data / "security" / "ca.pem").read_bytes()

        restarted = run("restart", *flags)
        assert restarted.returncode == 0 and restarted.stdout.strip() == bootstrap, restarted
        assert (data / "security" / "ca.pem").read_bytes() == ca  # clients keep trusting it
        kafka = LocalKafka(data, security=KafkaSecurity({"alice": "pw-alice"}, tls=True))
        admin = AIOKafkaAdminClient(**kafka.client_options("alice"))
        await admin.start()
        try:
            await admin.create_topics([NewTopic("secured", 1, 1)])
            assert "secured" in await admin.list_topics()
        finally:
            await admin.close()
        other = run("restart", "--data-dir", str(data), "--sasl-scram", "bob:pw-bob")
        assert other.returncode == 2 and "first started with other SCRAM users" in other.stderr
    finally:
        run("stop", "--data-dir", str(data))
